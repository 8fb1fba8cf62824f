"""Checkpoints: round trip, atomic writes, clear errors on bad files."""

import zipfile

import numpy as np
import pytest

import tinyfcn


def test_round_trip_of_nested_arrays_and_json(tmp_path):
    obj = {"model": {"conv1_1.weight": np.arange(6, dtype=np.float32).reshape(2, 3)},
           "epoch": 3, "names": ["background", "cat"], "lr": 0.01, "flag": None,
           "opt": {"state": {"0": {"momentum_buffer": np.ones(2)}}}}
    tinyfcn.save(obj, tmp_path / "c.npz")
    back = tinyfcn.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back["model"]["conv1_1.weight"], obj["model"]["conv1_1.weight"])
    assert back["model"]["conv1_1.weight"].dtype == np.float32
    assert back["epoch"] == 3 and back["names"] == ["background", "cat"] and back["flag"] is None
    np.testing.assert_array_equal(back["opt"]["state"]["0"]["momentum_buffer"], np.ones(2))


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    tinyfcn.save({"epoch": 1}, path)

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        tinyfcn.save({"epoch": 2}, path)
    monkeypatch.undo()
    assert tinyfcn.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_bad_files_raise_clear_errors(tmp_path):
    good = tmp_path / "good.npz"
    tinyfcn.save({"w": np.zeros(1000)}, good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.npz"):
        tinyfcn.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, w=np.zeros(3))
    with pytest.raises(ValueError, match="foreign.npz is not a tinyfcn checkpoint"):
        tinyfcn.load(foreign)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        tinyfcn.load(garbage)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        tinyfcn.load(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(good)


def test_wrong_version_is_named(tmp_path, monkeypatch):
    from tinyfcn import serialization
    monkeypatch.setattr(serialization, "VERSION", 99)
    tinyfcn.save({"a": 1}, tmp_path / "v.npz")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="version 99"):
        tinyfcn.load(tmp_path / "v.npz")


def test_pytorch_state_dict_loads(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"conv1_1.weight": torch.randn(2, 3, 3, 3), "conv1_1.bias": torch.zeros(2)}
    torch.save(state, tmp_path / "w.pth")
    loaded = tinyfcn.load(tmp_path / "w.pth")
    np.testing.assert_array_equal(loaded["conv1_1.weight"], state["conv1_1.weight"].numpy())
