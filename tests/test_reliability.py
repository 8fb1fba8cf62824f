"""Nothing a user points tinyfcn at is lost, every file it reads is treated as untrusted."""

import json
import zipfile

import numpy as np
import pytest

import tinyfcn


# ----------------------------------------------------------------- save / load
@pytest.mark.parametrize("state", [
    {"a/b": np.ones(2), "a": {"b": np.zeros(3)}},                     # "/" in keys
    {"x": {"__array__": "a0"}, "y": {"a": 0}, "z": {"d": {}}},        # shaped like markers
    {"file": np.arange(3), "allow_pickle": np.ones(1), "args": [np.zeros(2), "s"]},
    {"nested": [{"k": [1, 2.5, None, True, "t"]}, np.float32(1.5)], "": np.ones(1)},
])
def test_every_dict_save_accepts_loads_back_exactly(tmp_path, state):
    tinyfcn.save(state, tmp_path / "c.npz")
    back = tinyfcn.load(tmp_path / "c.npz")

    def same(a, b):
        if isinstance(a, dict):
            assert isinstance(b, dict) and list(a) == list(b)
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            assert isinstance(b, list) and len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        elif isinstance(a, np.ndarray):
            assert isinstance(b, np.ndarray) and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b and type(a if not isinstance(a, np.generic) else a.item()) is type(b)

    same(state, back)


def test_what_save_cannot_store_it_refuses(tmp_path):
    with pytest.raises(TypeError, match="keys must be strings"):
        tinyfcn.save({"a": {1: np.ones(1)}}, tmp_path / "c.npz")
    with pytest.raises(TypeError, match="set"):
        tinyfcn.save({"a": {1, 2}}, tmp_path / "c.npz")
    deep = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ValueError, match="nested deeper"):
        tinyfcn.save(deep, tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


def test_version_1_checkpoints_still_load(tmp_path):
    header = {"format": "tinyfcn-checkpoint", "version": 1,
              "structure": {"model": {"w": {"__array__": "model/w"}}, "epoch": 3}}
    np.savez(tmp_path / "v1.npz", **{"model/w": np.arange(4.0),
                                     "__tinyfcn__": np.frombuffer(json.dumps(header).encode(),
                                                                  np.uint8)})
    back = tinyfcn.load(tmp_path / "v1.npz")
    assert back["epoch"] == 3
    np.testing.assert_array_equal(back["model"]["w"], np.arange(4.0))


def forged(path, header=None, entries=None):
    entries = dict(entries or {})
    if header is not None:
        entries["__tinyfcn__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **entries)
    return path


HEADER = {"format": "tinyfcn-checkpoint", "version": 2}


@pytest.mark.parametrize("make, message", [
    (lambda p: forged(p, {**HEADER, "structure": {"d": {"w": {"a": 7}}}}), "does not hold"),
    (lambda p: forged(p, {**HEADER, "structure": {"d": {"w": {"a": "x", "b": 1}}}}),
     "malformed"),
    (lambda p: forged(p, {**HEADER, "structure": json.loads("[" * 200 + "]" * 200)}),
     "nested deeper"),
    (lambda p: forged(p, None, {"w": np.ones(2)}), "no __tinyfcn__ header"),
    (lambda p: np.save(p, np.ones(3)), "not an .npz"),
    (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100)), "not an .npz"),
])
def test_malformed_checkpoints_give_one_clear_error(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    if not path.exists():  # np.save appends .npy
        (tmp_path / "bad.npz.npy").rename(path)
    with pytest.raises(ValueError) as info:
        tinyfcn.load(path)
    text = str(info.value)
    assert str(path) in text and message in text and "allow_pickle" not in text


def test_a_forged_array_size_is_refused_before_anything_is_allocated(tmp_path):
    path = forged(tmp_path / "f.npz", {**HEADER, "structure": {"d": {"w": {"a": 0}}}},
                  {"a0": np.ones(4, np.float32)})
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    # claim 10^12 elements in a 16-byte entry
    entries["a0.npy"] = entries["a0.npy"].replace(b"(4,)", b"(1000000000000,)")
    with zipfile.ZipFile(path, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match="declares"):
        tinyfcn.load(path)


# ----------------------------------------------------------------- folders users own
def test_generating_the_built_in_set_never_replaces_a_users_folder(tmp_path):
    from tinyfcn.data import DataError, synthetic
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    for sibling in ("photos.old", "photos.partial"):
        (tmp_path / sibling).mkdir()
        (tmp_path / sibling / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="did not generate"):
        synthetic.ensure(mine, sizes={"train": 2, "val": 1})
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    for sibling in ("photos.old", "photos.partial"):
        assert (tmp_path / sibling / "keep.txt").read_text() == "mine"
    # an empty folder, and then its own data set (regenerated with other sizes), are fine
    empty = tmp_path / "empty"
    empty.mkdir()
    stale = tmp_path / ".empty.0123456789ab.partial"  # left by a killed generation
    stale.mkdir()
    synthetic.ensure(empty, sizes={"train": 2, "val": 1})
    synthetic.ensure(empty, sizes={"train": 3, "val": 1})
    assert len(list((empty / "JPEGImages").iterdir())) == 4 and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "photos", "photos.old",
                                                         "photos.partial"]


def test_the_training_script_refuses_a_data_dir_it_did_not_write(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "examples" / "train_voc_subset.py"
    spec = importlib.util.spec_from_file_location("train_voc_subset", script)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    assert train.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "o")]) == 2
    assert "did not generate" in capsys.readouterr().err
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


def test_predict_never_overwrites_inputs_and_gives_every_input_its_own_outputs(tmp_path,
                                                                               capsys):
    import importlib.util
    from pathlib import Path

    from tinyfcn import models
    from tinyfcn.data import read_label, write_image
    examples = Path(__file__).resolve().parents[1] / "examples"
    spec = importlib.util.spec_from_file_location("predict", examples / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    model = models.fcn8s(3, backbone="lite", fc_width=8)
    tinyfcn.save({"config": model.config, "model": model.state_dict(),
                  "class_names": ["a", "b", "c"]}, tmp_path / "m.npz")
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "sub/a.jpg"):
        write_image(photos / name, rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    ckpt = str(tmp_path / "m.npz")
    for out in (photos, photos / "masks"):
        assert predict.main([ckpt, str(photos), "--out", str(out)]) == 2
        assert "inside the input folder" in capsys.readouterr().err
    assert predict.main([ckpt, str(photos / "a.png"), "--out", str(photos)]) == 2
    assert "would replace an input image" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before
    out = tmp_path / "masks"
    assert predict.main([ckpt, str(photos), "--out", str(out)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a-jpg-overlay.png", "a-jpg.png", "a-png-overlay.png", "a-png.png",
                       "sub/a-overlay.png", "sub/a.png"]
    assert read_label(out / "sub" / "a.png").shape == (20, 24)
