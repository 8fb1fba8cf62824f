"""Inputs a user or an adversary brings to the merged tools (tinyfcn-predict, the image
reader, load/save): each either works or is one clear error naming the file."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinyfcn
from tinyfcn import models
from tinyfcn.cli import predict
from tinyfcn.data import DataError, read_image, read_label


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny training-style checkpoint (config, weights, class names) of a lite FCN-32s."""
    model = models.fcn32s(2, backbone="lite", fc_width=8)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.npz"
    tinyfcn.save({"config": model.config, "model": model.state_dict(),
                  "class_names": ["background", "thing"]}, path)
    return path


def photo(path, size=(8, 6), **options):
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path, **options)


def test_output_names_never_make_one_inputs_mask_anothers_overlay():
    files = [(Path("in/x-overlay.png"), Path("x-overlay")), (Path("in/x.png"), Path("x"))]
    written = [w for name in predict.output_names(files) for w in (f"{name}",
                                                                   f"{name}-overlay")]
    assert len(set(written)) == 4, written


def test_predict_writes_every_output_of_x_and_x_overlay(checkpoint, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    photo(tmp_path / "in" / "x.png")
    photo(tmp_path / "in" / "x-overlay.png")
    out = tmp_path / "out"
    assert predict.main([str(checkpoint), str(tmp_path / "in"), "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 4  # two masks and two overlays, none replaced
    masks = [p for p in out.glob("*.png") if Image.open(p).mode == "P"]
    assert len(masks) == 2


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_predict_reports_a_broken_link_in_a_folder(checkpoint, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    photo(tmp_path / "in" / "good.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "in" / "broken.png")
    out = tmp_path / "out"
    assert predict.main([str(checkpoint), str(tmp_path / "in"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"broken.png: image file is a link to {tmp_path / 'gone.png'}, which does not" in err
    assert (out / "good.png").exists()


def test_read_image_names_a_folder(tmp_path):
    folder = tmp_path / "a.jpg"
    folder.mkdir()
    with pytest.raises(DataError, match=r"a\.jpg: cannot read image: a folder"):
        read_image(folder)
    with pytest.raises(DataError, match=r"a\.jpg: cannot read label: a folder"):
        read_label(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_read_image_refuses_a_fifo_instead_of_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        from tinyfcn.data import DataError, read_image
        try:
            read_image({str(fifo)!r})
        except DataError as e:
            print(e)
    """)
    # the timeout is the failure guard: before, opening the FIFO blocked forever
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert "photo.png: cannot read image: not a regular file" in result.stdout, result.stderr


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (2, 0, 0, 3)])
def test_predict_refuses_an_image_without_pixels(shape):
    model = models.fcn32s(2, backbone="lite", fc_width=8)
    with pytest.raises(ValueError, match="at least one pixel"):
        model.predict(np.zeros(shape, np.uint8))
    if len(shape) == 3:
        with pytest.raises(ValueError, match="at least one pixel"):
            model.predict_scores(np.zeros(shape, np.uint8), tile=32)


def test_load_names_a_folder(tmp_path):
    folder = tmp_path / "weights.npz"
    folder.mkdir()
    with pytest.raises(OSError, match="weights.npz is a folder, not a checkpoint file"):
        tinyfcn.load(folder)


def test_save_and_load_accept_upper_case_suffixes(tmp_path):
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    for name in ("W.NPZ", "W.SafeTensors"):
        tinyfcn.save(weights, tmp_path / name)
        np.testing.assert_array_equal(tinyfcn.load(tmp_path / name)["w"], weights["w"])


def test_load_reads_a_pth_with_an_upper_case_suffix(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, tmp_path / "W.PTH")
    np.testing.assert_array_equal(tinyfcn.load(tmp_path / "W.PTH")["w"],
                                  np.arange(6, dtype=np.float32).reshape(2, 3))


def small_voc(root, image_suffix=".jpg"):
    """A VOC-layout folder of two 8 x 6 images, their labels and a train split."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for name in ("a", "b"):
        photo(root / "JPEGImages" / f"{name}{image_suffix}", format="JPEG")
        Image.fromarray(np.zeros((6, 8), np.uint8), mode="L").save(
            root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (root / "class_names.txt").write_text("background\nthing\n")
    return root


def test_voc_finds_camera_images_with_upper_case_suffixes(tmp_path):
    from tinyfcn.data import VOCSegmentation
    ds = VOCSegmentation(small_voc(tmp_path / "voc", ".JPG"), "train")
    image, label = ds[0]
    assert image.shape == (6, 8, 3) and label.shape == (6, 8)


def test_check_data_checks_the_other_splits_after_an_unreadable_one(tmp_path, capsys):
    from tinyfcn.data.check import main as check_data
    root = small_voc(tmp_path / "voc")
    (root / "ImageSets" / "Segmentation" / "a-broken.txt").write_bytes("a\n".encode("utf-16"))
    assert check_data([str(root)]) == 2
    captured = capsys.readouterr()
    assert "a-broken.txt: is UTF-16 text" in captured.err
    assert "split train: 2 images, 0 bad" in captured.out  # checked after the broken one


def test_predict_says_the_output_folder_is_a_file(checkpoint, tmp_path, capsys):
    photo(tmp_path / "x.png")
    (tmp_path / "out").write_text("notes")
    assert predict.main([str(checkpoint), str(tmp_path / "x.png"), "--out",
                         str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out'} is a file, not a folder" in err
    assert (tmp_path / "out").read_text() == "notes"


def test_predict_weights_unwraps_a_model_key_in_any_format(checkpoint, tmp_path, capsys):
    # {"model": state dict} loads from a .pth (tinyfcn.load unwraps it): from .npz too
    state = tinyfcn.load(checkpoint)["model"]
    tinyfcn.save({"model": state, "epoch": 3}, tmp_path / "wrapped.npz")
    photo(tmp_path / "x.png")
    assert predict.main(["--weights", str(tmp_path / "wrapped.npz"), "--model", "fcn32s",
                         "--backbone", "lite", "--num-classes", "2", str(tmp_path / "x.png"),
                         "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "x.png").exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_predict_reports_a_link_to_a_folder_it_does_not_search(checkpoint, tmp_path, capsys):
    (tmp_path / "in" / "real").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    photo(tmp_path / "in" / "real" / "x.png")
    photo(tmp_path / "elsewhere" / "y.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")
    os.symlink(tmp_path / "in", tmp_path / "in" / "loop")  # following links could loop
    out = tmp_path / "out"
    assert predict.main([str(checkpoint), str(tmp_path / "in"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "linked: a link to a folder, not searched" in err and "loop: a link" in err
    assert (out / "real" / "x.png").exists()
