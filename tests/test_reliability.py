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


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    from tinyfcn.fileio import atomic_write
    stale = tmp_path / ".ckpt.npz.0123456789ab.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".ckpt.npz.notours.tmp"
    other.write_bytes(b"x")
    atomic_write(tmp_path / "ckpt.npz", lambda f: f.write(b"whole"))
    assert not stale.exists() and other.exists()


# ----------------------------------------------------------------- untrusted images
def image_bytes(fmt, size=(12, 10), exif=None):
    import io

    from PIL import Image
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (200, 10, 10))
    image.save(buffer, format=fmt, **({"exif": exif} if exif is not None else {}))
    return buffer.getvalue()


def test_only_the_listed_formats_are_opened_and_huge_images_are_refused(tmp_path,
                                                                       monkeypatch):
    from tinyfcn.data import DataError, image_io, read_image
    pcx = tmp_path / "photo.jpg"
    pcx.write_bytes(image_bytes("PCX"))
    with pytest.raises(DataError, match="not a JPEG, PNG, BMP, GIF, TIFF or WEBP file"):
        read_image(pcx)
    big = tmp_path / "big.png"
    big.write_bytes(image_bytes("PNG", size=(400, 300)))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 100_000)
    with pytest.raises(DataError, match="400 x 300 pixels, more than 100,000"):
        read_image(big)


def test_exif_orientation_is_applied_so_image_and_label_cannot_silently_disagree(tmp_path):
    from PIL import Image

    from tinyfcn.data import read_image
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it upright
    path = tmp_path / "camera.jpg"
    path.write_bytes(image_bytes("JPEG", size=(12, 10), exif=exif.tobytes()))
    assert read_image(path).shape == (12, 10, 3)  # upright: 10 wide, 12 high


def test_split_ids_and_links_cannot_lead_outside_the_data_set(tmp_path):
    import os

    from test_data_metrics import write_voc_fixture

    from tinyfcn.data import DataError, VOCSegmentation
    root = write_voc_fixture(tmp_path / "voc", num_classes=3, n=2)
    split = root / "ImageSets" / "Segmentation" / "evil.txt"
    for bad in ("../../secret", "/etc/passwd", "a/b"):
        split.write_text(bad + "\n")
        with pytest.raises(DataError, match="not a plain file name"):
            VOCSegmentation(root, "evil")
    outside = tmp_path / "outside.png"
    outside.write_bytes((root / "SegmentationClass" / "train0.png").read_bytes())
    (root / "SegmentationClass" / "train1.png").unlink()
    (root / "SegmentationClass" / "train1.png").symlink_to(outside)
    os.mkfifo(root / "JPEGImages" / "fifo.jpg")
    split.write_text("train1\nfifo\n")
    ds = VOCSegmentation(root, "evil")
    with pytest.raises(DataError, match="leads outside the data set"):
        ds[0]
    with pytest.raises(DataError, match="not a regular file"):
        ds[1]


def test_class_lists_longer_than_255_are_refused(tmp_path):
    from test_data_metrics import write_voc_fixture

    from tinyfcn.data import DataError, VOCSegmentation
    root = write_voc_fixture(tmp_path / "voc", num_classes=3, n=1)
    (root / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(256)))
    with pytest.raises(DataError, match="at most 255"):
        VOCSegmentation(root, "train")


def test_check_data_says_a_missing_folder_does_not_exist(tmp_path, capsys):
    from tinyfcn.data import check
    assert check.main([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------- small ones
def test_metrics_refuse_predictions_outside_the_classes_and_empty_scores_are_nan():
    from tinyfcn.metrics import confusion_matrix, scores
    with pytest.raises(ValueError, match=r"predictions \[3\]"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
    empty = scores(np.zeros((3, 3)))
    assert all(np.isnan(empty[k]) for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"))


@pytest.mark.parametrize("call", [
    lambda F: F.conv_transpose2d(np.zeros((1, 2, 0, 3), np.float32),
                                 np.ones((2, 2, 3, 3), np.float32)),
    lambda F: F.max_pool2d(np.zeros((1, 1, 0, 4), np.float32), 2, padding=1),
    lambda F: F.max_pool2d(np.zeros((1, 1, 4, 0), np.float32), 2, ceil_mode=True),
    lambda F: F.conv2d(np.zeros((0, 2, 3, 3), np.float32), np.ones((2, 2, 3, 3), np.float32)),
])
def test_empty_axes_are_refused_before_any_kernel_runs(call):
    import tinyfcn.functional as F
    with pytest.raises(ValueError, match="empty axis"):
        call(F)


def test_batch_norm_momentum_none_is_refused_not_nan():
    from tinyfcn import nn
    with pytest.raises(ValueError, match="cumulative average"):
        nn.BatchNorm2d(3, momentum=None)


def test_kernels_stay_in_bounds_under_numba_boundscheck(tmp_path):
    """The kernel tests once more with Numba's bounds checking compiled in (fresh cache)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          str(tests / "test_pooling.py"), str(tests / "test_conv.py"),
                          str(tests / "test_fuzz.py")], env=env, capture_output=True,
                         text=True, cwd=tests.parent)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
