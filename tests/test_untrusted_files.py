"""Files are untrusted input: a reader bounds memory and work by what the file legitimately
describes, shares what the file shares, and fails with one ValueError naming the file.

The hostile files are built here, byte by byte (pickle opcodes, zip entries, npz headers),
tiny and without torch; each would exhaust memory or time, crash, or silently change
results on the readers before these fixes."""

import io
import json
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import tinyfcn
from tinyfcn import models
from tinyfcn.torchfile import LEGACY_MAGIC, LEGACY_PROTOCOL, read_torch_file

# ------------------------------------------------------------ building .pth files by hand


def value(obj) -> bytes:
    """The pickle opcodes that build a plain Python value (no header, no STOP)."""
    return pickletools.optimize(pickle.dumps(obj, protocol=2))[2:-1]


def global_(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def tensor(key, numel, size, stride, offset=0, kind="FloatStorage", legacy=False) -> bytes:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`
    with the storage a persistent reference, as torch.save writes it (the legacy format's
    reference ends in a view, None)."""
    storage = (b"(" + value("storage") + global_("torch", kind) + value(key) + value("cpu")
               + value(numel) + (value(None) if legacy else b"") + b"tQ")  # MARK, TUPLE, BINPERSID
    args = (b"(" + storage + value(offset) + value(tuple(size)) + value(tuple(stride))
            + value(False) + global_("collections", "OrderedDict") + b")R" + b"t")
    return global_("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def dict_of(**items) -> bytes:
    """A dict whose values are opcode strings."""
    return b"}(" + b"".join(value(k) + v for k, v in items.items()) + b"u"


def pickled(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def zip_pth(path, body: bytes, storages=None, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled(body))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw, compress_type=compress)
    return path


def legacy_pth(path, body: bytes, storages=()):
    """`storages`: (key, element count, raw bytes) in file order."""
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(pickled(body))
        pickle.dump([key for key, _, _ in storages], f, protocol=2)
        for _, count, raw in storages:
            f.write(struct.pack("<q", count) + raw)
    return path


FLOATS = np.array([1.5, -2.0, 3.25, 4.0], np.float32)


def good_file(tmp_path, name="good.pth"):
    """A float32 checkpoint, {"w": 2 x 2}."""
    return zip_pth(tmp_path / name, dict_of(w=tensor("0", 4, (2, 2), (2, 1))),
                   {"0": FLOATS.tobytes()})


def test_the_hand_made_files_are_pytorch_files(tmp_path):
    """The builders above write what torch.load reads, in both formats."""
    torch = pytest.importorskip("torch")
    files = [zip_pth(tmp_path / "z.pth", dict_of(w=tensor("0", 4, (2, 2), (1, 2))),
                     {"0": FLOATS.tobytes()}),
             legacy_pth(tmp_path / "l.pth", dict_of(w=tensor("0", 4, (2, 2), (1, 2), legacy=True)),
                        [("0", 4, FLOATS.tobytes())])]
    for path in files:
        expected = torch.load(path, weights_only=True)["w"].numpy()
        np.testing.assert_array_equal(read_torch_file(path)["w"], expected)
        np.testing.assert_array_equal(expected, FLOATS.reshape(2, 2).T)


# ---------------------------------------------------------------- item 3: exhaustion


def test_what_the_pickle_shares_stays_shared(tmp_path):
    """30 lists, each holding the next one twice through the pickle's memo: ~400 bytes that
    are 2^30 paths to one tensor. They load as 31 objects, the reused ones shared (run in a
    subprocess so that a reader that walks every path fails by the timeout, not by a hang)."""
    body = tensor("0", 4, (4,), (1,)) + b"q\x00"  # BINPUT 0
    for level in range(1, 31):  # POP; MARK, BINGET twice, LIST; BINPUT
        body += b"0(h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"lq" + bytes([level])
    path = zip_pth(tmp_path / "shared.pth", dict_of(deep=body), {"0": FLOATS.tobytes()})
    assert path.stat().st_size < 1000
    code = """
import sys
import numpy as np
from tinyfcn.torchfile import read_torch_file
node = read_torch_file(sys.argv[1])["deep"]
for level in range(30):
    assert len(node) == 2 and node[0] is node[1], level
    node = node[0]
assert list(node) == [1.5, -2.0, 3.25, 4.0], node
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_tensors_are_views_of_their_storage_never_copies(tmp_path, fmt):
    """An expanded tensor (stride 0) of one stored float claiming 2^40 elements, and 200
    tensors over one storage: each is a read-only view, so memory stays the file's size."""
    one = np.array([2.5], np.float32).tobytes()
    many = np.arange(1000, dtype=np.float32).tobytes()
    legacy = fmt == "legacy"
    views = {f"v{i}": tensor("1", 1000, (1000,), (1,), legacy=legacy) for i in range(200)}
    body = dict_of(expanded=tensor("0", 1, (2 ** 20, 2 ** 20), (0, 0), legacy=legacy), **views)
    if fmt == "zip":
        path = zip_pth(tmp_path / "views.pth", body, {"0": one, "1": many})
    else:
        path = legacy_pth(tmp_path / "views.pth", body, [("0", 1, one), ("1", 1000, many)])
    state = tinyfcn.load(path)
    expanded = state["expanded"]
    assert expanded.shape == (2 ** 20, 2 ** 20) and expanded.strides == (0, 0)
    assert expanded[12345, 678] == 2.5 and not expanded.flags.writeable
    assert all(np.shares_memory(state["v0"], state[f"v{i}"]) for i in range(1, 200))
    np.testing.assert_array_equal(state["v199"], np.arange(1000))


def test_a_storage_entry_is_sized_before_it_is_read(tmp_path):
    """The pickle says 4 floats, the zip directory 1 MB: refused by the sizes in the zip
    directory, before anything is read."""
    path = zip_pth(tmp_path / "big.pth", dict_of(w=tensor("0", 4, (4,), (1,))),
                   {"0": bytes(1 << 20)})
    with pytest.raises(ValueError, match=r"big\.pth: storage 0 holds 1048576 bytes"):
        tinyfcn.load(path)


def test_a_compressed_entry_is_refused_before_it_is_inflated(tmp_path):
    """torch.save stores its entries; a deflated one (here 16 kB that would inflate to the
    16 MB the pickle claims) is refused before anything is inflated."""
    path = zip_pth(tmp_path / "bomb.pth", dict_of(w=tensor("0", 4 << 20, (4 << 20,), (1,))),
                   {"0": bytes(16 << 20)}, compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"bomb\.pth: archive/data/0 is compressed"):
        tinyfcn.load(path)


def test_nesting_is_bounded_before_the_unpickler_runs(tmp_path):
    """A million-deep tuple used as a dict key: the C unpickler would hash it, recursing
    until the interpreter crashes (a subprocess, so a crash fails the test, not the run)."""
    body = b"}" + b")" + b"\x85" * 1_000_000 + b"Ns"  # {(((...),),): None}
    path = zip_pth(tmp_path / "deep.pth", body)
    code = ("import tinyfcn, sys\n"
            "try:\n    tinyfcn.load(sys.argv[1])\n"
            "except ValueError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-500:]
    assert "deep.pth: damaged checkpoint (nested deeper than" in run.stdout


def test_a_memo_index_past_the_opcodes_is_refused(tmp_path):
    """LONG_BINPUT 2**26 in a 100-byte file: the unpickler would grow its memo table to
    that index (about 1 GB) before anything else is checked."""
    path = zip_pth(tmp_path / "memo.pth", b"}r" + (1 << 26).to_bytes(4, "little"))
    with pytest.raises(ValueError, match=r"memo\.pth: damaged checkpoint \(memo index"):
        tinyfcn.load(path)


def test_a_real_state_dict_with_long_lists_is_not_too_deep(tmp_path):
    """The depth bound counts nesting, not how many times a container is filled: a list
    filled by APPENDS in many batches stays one level deep."""
    path = tmp_path / "long.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"ids": list(range(5000))},
                                                          protocol=2))
    assert tinyfcn.load(path)["ids"] == list(range(5000))


# ------------------------------------------------------- item 4: .npz names shared entries


def npz_with_header(path, structure, **arrays):
    header = json.dumps({"format": "tinyfcn-checkpoint", "version": 2, "structure": structure})
    np.savez(path, __tinyfcn__=np.frombuffer(header.encode(), np.uint8), **arrays)
    return path


def test_an_npz_entry_named_many_times_is_read_once(tmp_path):
    structure = {"d": {f"k{i}": {"a": 0} for i in range(50)}}
    path = npz_with_header(tmp_path / "same.npz", structure, a0=np.arange(10_000.0))
    state = tinyfcn.load(path)
    assert len(state) == 50 and all(state[f"k{i}"] is state["k0"] for i in range(50))
    np.testing.assert_array_equal(state["k49"], np.arange(10_000.0))


# ------------------------------------------------------------- item 19: a list at the top


def test_an_npz_holding_a_list_is_refused_where_a_dict_is_expected(tmp_path):
    path = npz_with_header(tmp_path / "list.npz", [{"a": 0}, 3], a0=np.ones(2))
    with pytest.raises(ValueError, match=r"list\.npz holds a list, not a dict"):
        tinyfcn.load(path)
    with pytest.raises(ValueError, match=r"list\.npz holds a list"):
        models.init_from(models.fcn32s(3, backbone="lite"), path)  # --init-from


# --------------------------------------------------- item 6: a file cannot change the reader

BUILD_ON_READER_OBJECTS = {
    "storage type": global_("torch", "FloatStorage") + value({"name": "IntStorage",
                                                              "dtype": "bfloat16"}) + b"b",
    "rebuild function": global_("torch._utils", "_rebuild_tensor_v2")
    + value((None, {"__defaults__": (1, 2, 3, 4)})) + b"b",
    "dict type": global_("collections", "OrderedDict") + value({"fromkeys": 1}) + b"b",
}


@pytest.mark.parametrize("target", BUILD_ON_READER_OBJECTS)
def test_build_on_the_readers_own_objects_is_refused_and_changes_nothing(tmp_path, target):
    evil = zip_pth(tmp_path / "evil.pth", dict_of(x=BUILD_ON_READER_OBJECTS[target]))
    with pytest.raises(ValueError, match=r"evil\.pth"):
        tinyfcn.load(evil)
    state = tinyfcn.load(good_file(tmp_path))  # a later, ordinary file reads as ever
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], FLOATS.reshape(2, 2))


# -------------------------------------------- item 13: damaged .pth, one ValueError each

DEEP = 100_000


def damaged_files(tmp_path):
    w = tensor("0", 4, (4,), (1,))
    storage = {"0": FLOATS.tobytes()}
    huge = 2 ** 62
    return {
        "cyclic list": zip_pth(tmp_path / "cyclic.pth",
                               dict_of(x=b"]q\x00h\x00a"), storage),  # l = []; l.append(l)
        "deep list": zip_pth(tmp_path / "deep.pth",
                             dict_of(x=b"(" * DEEP + b"l" * DEEP), storage),
        "1 TiB string in 14 bytes": _write(tmp_path / "tib.pth",
                                           b"\x80\x02\x8e" + struct.pack("<Q", 2 ** 40) + b"xy."),
        "legacy storage count 2^62": legacy_pth(
            tmp_path / "count.pth", dict_of(w=tensor("0", huge, (4,), (1,), legacy=True)),
            [("0", huge, FLOATS.tobytes())]),
        "negative size": zip_pth(tmp_path / "negsize.pth",
                                 dict_of(w=tensor("0", 4, (-1,), (1,))), storage),
        "negative storage size": zip_pth(tmp_path / "negnumel.pth",
                                         dict_of(w=tensor("0", -4, (4,), (1,))), storage),
        "unreadable int": zip_pth(tmp_path / "int.pth", dict_of(x=b"I12x\n"), storage),
        "unknown opcode": zip_pth(tmp_path / "opcode.pth", dict_of(w=w) + b"\xff", storage),
        "zip storage missing": zip_pth(tmp_path / "missing.pth", dict_of(w=w)),
        "empty file": _write(tmp_path / "empty.pth", b""),
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", ["cyclic list", "deep list", "1 TiB string in 14 bytes",
                                  "legacy storage count 2^62", "negative size",
                                  "negative storage size", "unreadable int", "unknown opcode",
                                  "zip storage missing", "empty file"])
def test_a_damaged_pth_gives_one_value_error_naming_the_file(tmp_path, case):
    path = damaged_files(tmp_path)[case]
    with pytest.raises(ValueError) as info:
        tinyfcn.load(path)
    assert type(info.value) is ValueError and str(path) in str(info.value)


# ------------------------------------------------------- item 14: .safetensors dtypes


def safetensors_file(path, tensors: dict):
    """`tensors`: name -> (dtype name, shape, raw bytes), laid out one after another."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def test_bfloat16_safetensors_widen_to_float32_and_fp8_is_refused_by_name(tmp_path):
    exact = np.array([1.0, -2.5, 3.140625, 0.0, 2.0 ** 100, -np.inf], np.float32)  # bf16
    bf16 = (exact.view(np.uint32) >> 16).astype("<u2").tobytes()
    path = safetensors_file(tmp_path / "bf16.safetensors",
                            {"w": ("BF16", (2, 3), bf16), "n": ("I64", (1,), bytes(8))})
    state = tinyfcn.load(path)
    assert state["w"].dtype == np.float32 and state["n"].dtype == np.int64
    np.testing.assert_array_equal(state["w"], exact.reshape(2, 3))
    fp8 = safetensors_file(tmp_path / "fp8.safetensors", {"q": ("F8_E4M3", (2,), b"\x01\x02")})
    with pytest.raises(ValueError, match=r"fp8\.safetensors.*'q' has dtype F8_E4M3"):
        tinyfcn.load(fp8)


def test_safetensors_byte_ranges_must_tile_the_data(tmp_path):
    """Two names over the same bytes would be two copies of them: refused, as are ranges
    past the end."""
    raw = np.ones(4, np.float32).tobytes()
    path = safetensors_file(tmp_path / "overlap.safetensors", {"a": ("F32", (4,), raw)})
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw)
    with pytest.raises(ValueError, match=r"overlap\.safetensors.*'b'"):
        tinyfcn.load(path)
    short = safetensors_file(tmp_path / "short.safetensors", {"a": ("F32", (4,), raw)})
    short.write_bytes(short.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r"short\.safetensors"):
        tinyfcn.load(short)


def test_safetensors_as_the_library_writes_them(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    tensors = {"w": torch.randn(3, 4).bfloat16(), "b": torch.arange(5, dtype=torch.int32),
               "h": torch.randn(2, 2).half(), "empty": torch.zeros(0, 3)}
    save_file(tensors, tmp_path / "lib.safetensors", metadata={"format": "pt"})
    state = tinyfcn.load(tmp_path / "lib.safetensors")
    assert sorted(state) == sorted(tensors)
    for name, t in tensors.items():
        expected = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        assert state[name].dtype == expected.dtype
        np.testing.assert_array_equal(state[name], expected)


# ------------------------------------------------------- item 20: save writes its suffix


@pytest.mark.parametrize("name", ["w.pth", "w.pt", "w.ckpt", "w"])
def test_save_refuses_a_suffix_it_does_not_write(tmp_path, name):
    with pytest.raises(ValueError, match=r"\.npz and \.safetensors"):
        tinyfcn.save({"w": np.ones(2)}, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------- item 5: a forged model config is checked first


def forged_checkpoint(model, **config):
    return {"config": {**model.config, **config}, "model": model.state_dict()}


FORGED_CONFIGS = [
    ("fcn32s", "num_classes", 10 ** 12), ("fcn32s", "num_classes", 300),
    ("deconvnet", "num_classes", 300), ("fcn8s", "fc_width", 10 ** 12),
    ("vgg", "num_classes", 10 ** 6), ("fcn16s", "num_classes", "21"),
    ("fcn32s", "num_classes", 0), ("deconvnet", "dropout", 2.0),
]


@pytest.mark.parametrize("name, field, forged", FORGED_CONFIGS)
def test_a_forged_config_is_refused_before_anything_is_built(monkeypatch, name, field,
                                                              forged):
    model = models.build({"model": name, "num_classes": 3, "backbone": "lite"})
    checkpoint = forged_checkpoint(model, **{field: forged})
    built = []
    monkeypatch.setitem(models.BUILDERS, name, lambda **kw: built.append(kw))
    with pytest.raises(ValueError, match=f"forged.npz: model config: {field}"):
        models.from_checkpoint(checkpoint, "forged.npz")
    with pytest.raises(ValueError, match=f"model config: {field}"):
        models.build(checkpoint["config"])
    assert built == []


def test_config_sizes_must_match_the_weights_before_building(monkeypatch):
    model = models.fcn32s(3, backbone="lite")
    weights = model.state_dict()
    built = []
    monkeypatch.setitem(models.BUILDERS, "fcn32s", lambda **kw: built.append(kw))
    for field, size, weight in (("num_classes", 200, "score_fr.weight"),
                                ("fc_width", 4096, "fc6.weight")):
        checkpoint = {"config": {**model.config, field: size}, "model": weights}
        with pytest.raises(ValueError, match=f"ckpt.npz: model config {field} {size} does "
                                             f"not match its weights \\({weight} has shape"):
            models.from_checkpoint(checkpoint, "ckpt.npz")
    assert built == []
    monkeypatch.undo()
    again = models.from_checkpoint({"config": model.config, "model": weights})  # the real one
    np.testing.assert_array_equal(again.score_fr.weight.data, model.score_fr.weight.data)


# ---------------------------------- item 10: the classifier's arrays must fit exactly


def test_copy_params_from_vgg16_wants_exact_shapes_not_element_counts():
    fcn = models.fcn32s(3, backbone="lite")
    state = {k: v.copy() for k, v in models.vgg(10, backbone="lite").state_dict().items()}
    conv1 = state["features.0.weight"]                     # (32, 3, 3, 3)
    state["features.0.weight"] = conv1.transpose(1, 2, 3, 0).copy()   # (3, 3, 3, 32)
    state["classifier.0.bias"] = state["classifier.0.bias"][:, None]  # (512, 1)
    with pytest.raises(ValueError) as info:
        fcn.copy_params_from_vgg16(state)
    message = str(info.value)
    assert "features.0.weight has shape (3, 3, 3, 32), conv1_1.weight needs (32, 3, 3, 3)" \
        in message
    assert "classifier.0.bias has shape (512, 1), fc6.bias needs (512,)" in message
    state["features.0.weight"], state["classifier.0.bias"] = conv1, state["classifier.0.bias"][:, 0]
    fcn.copy_params_from_vgg16(state)  # the FC weight (out, in) is convolutionalized
    np.testing.assert_array_equal(fcn.fc6.weight.data.reshape(512, -1),
                                  state["classifier.0.weight"])


def test_an_npz_shape_too_large_for_int64_is_one_value_error(tmp_path):
    """A 2**64-element shape in an .npy header (an OverflowError traceback before)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2 ** 64,)})
    good = npz_with_header(tmp_path / "good.npz", {"a": 0}, a0=np.zeros(2))
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__tinyfcn__.npy", source.read("__tinyfcn__.npy"))
        archive.writestr("a0.npy", header.getvalue() + bytes(16))
    with pytest.raises(ValueError, match=r"huge\.npz"):
        tinyfcn.load(path)
