"""PyTorch checkpoints read without torch (both formats), refused when they would run
code; safetensors through tinyfcn.save / load."""

import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import tinyfcn
from tinyfcn.torchfile import LEGACY_MAGIC, LEGACY_PROTOCOL, read_torch_file

FORMATS = {"zip": True, "legacy": False}


def torch_checkpoint(torch):
    """Every storage dtype, views with offsets and strides, shared storages, nesting."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = {
        "float32": base,
        "transposed": base.t(),                         # a strided view of the same storage
        "offset_and_step": base[1:, ::2],               # offset, step
        "float64": torch.randn(3, generator=g, dtype=torch.float64),
        "float16": torch.randn(5, generator=g).half(),
        "bfloat16": torch.randn(5, generator=g).bfloat16(),
        "int8": torch.tensor([-3, 4], dtype=torch.int8),
        "int16": torch.tensor([-300, 4], dtype=torch.int16),
        "int32": torch.tensor([7, -8], dtype=torch.int32),
        "int64": torch.tensor([2 ** 40, -1]),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
        "nested": {"list": [torch.arange(3), {"deep": base[2]}], "number": 3, "text": "x"},
    }
    return sd


def as_numpy(obj, torch):
    if isinstance(obj, torch.Tensor):
        obj = obj.detach()
        return (obj.float() if obj.dtype == torch.bfloat16 else obj).numpy()
    if isinstance(obj, dict):
        return {k: as_numpy(v, torch) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_numpy(v, torch) for v in obj]
    return obj


def assert_same(ours, expected, where="root"):
    if isinstance(expected, dict):
        assert isinstance(ours, dict) and list(ours) == list(expected), where
        for k in expected:
            assert_same(ours[k], expected[k], f"{where}/{k}")
    elif isinstance(expected, list):
        assert len(ours) == len(expected), where
        for i, (a, b) in enumerate(zip(ours, expected)):
            assert_same(a, b, f"{where}/{i}")
    elif isinstance(expected, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == expected.dtype, where
        np.testing.assert_array_equal(ours, expected, err_msg=where)
    else:
        assert ours == expected, where


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_pytorch_formats_read_as_torch_load_gives_them(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    sd = torch_checkpoint(torch)
    path = tmp_path / f"{fmt}.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=FORMATS[fmt])
    expected = as_numpy(torch.load(path, weights_only=True), torch)
    ours = read_torch_file(path)
    assert_same(ours, expected)
    assert ours["bfloat16"].dtype == np.float32
    # as torch.load gives them, tensors are views of their storage (read-only here): views
    # of one storage share it instead of each copying it out
    assert np.shares_memory(ours["float32"], ours["transposed"])
    assert not ours["float32"].flags.writeable and not ours["nested"]["list"][0].flags.writeable


def test_the_same_files_load_where_torch_cannot_be_imported(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {"w": torch.randn(3, 2).t(), "b": torch.arange(4, dtype=torch.int32)[1:]}
    for fmt, zipped in FORMATS.items():
        torch.save({"state_dict": sd}, tmp_path / f"{fmt}.pth",
                   _use_new_zipfile_serialization=zipped)
    np.savez(tmp_path / "expected.npz", **{k: v.numpy() for k, v in sd.items()})
    code = f"""
import sys
sys.modules["torch"] = None          # `import torch` now raises ImportError
import numpy as np, tinyfcn
expected = np.load({str(tmp_path / "expected.npz")!r})
for fmt in ("zip", "legacy"):
    got = tinyfcn.load({str(tmp_path)!r} + f"/{{fmt}}.pth")   # the wrapper is unwrapped
    assert sorted(got) == ["b", "w"], got
    for k in got:
        np.testing.assert_array_equal(got[k], expected[k])
try:
    import torch
except ImportError:
    print("ok without torch")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok without torch"


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def legacy_file(path, payload: bytes):
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(payload)
        pickle.dump([], f, protocol=2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path, fmt):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"w": RunsAShellCommand(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
            archive.writestr("evil/version", "3\n")
    else:
        legacy_file(path, payload)
    with pytest.raises(ValueError, match=r"refusing to load posix\.system") as info:
        tinyfcn.load(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_any_other_global_is_refused_too(tmp_path):
    path = tmp_path / "g.pth"
    legacy_file(path, pickle.dumps({"f": io.BytesIO}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load _io\.BytesIO"):
        tinyfcn.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_and_foreign_files_name_the_file(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(100, 100)}, good, _use_new_zipfile_serialization=FORMATS[fmt])
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 40):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.pth"):
            tinyfcn.load(bad)
    jpeg = tmp_path / "photo.pth"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    with pytest.raises(ValueError, match="photo.pth"):
        tinyfcn.load(jpeg)


def test_safetensors_round_trip_and_nested_dicts_refused(tmp_path):
    state = {"conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
             "steps": np.array([3], np.int64), "bias": tinyfcn.Tensor(np.ones(2, np.float64))}
    tinyfcn.save(state, tmp_path / "w.safetensors")
    back = tinyfcn.load(tmp_path / "w.safetensors")
    assert sorted(back) == sorted(state)
    np.testing.assert_array_equal(back["conv.weight"], state["conv.weight"])
    assert back["bias"].dtype == np.float64
    with pytest.raises(TypeError, match=r"\.npz"):
        tinyfcn.save({"model": {"w": np.ones(2)}}, tmp_path / "n.safetensors")
    assert not (tmp_path / "n.safetensors").exists()
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(ValueError, match="bad.safetensors"):
        tinyfcn.load(tmp_path / "bad.safetensors")
