"""A user's own data set: color masks, another void value, class weights, and what a run
leaves behind (log.csv, config.json, plots, eval.json)."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinyfcn
from tinyfcn.data import DataError, VOCSegmentation, write_image
from tinyfcn.data.stats import class_pixel_counts, median_frequency_weights

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_voc_subset.py"
COLOURS = [(128, 64, 128), (70, 70, 70), (220, 20, 60)]  # road, building, person


def load_script():
    spec = importlib.util.spec_from_file_location("train_voc_subset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def color_mask_set(root, n=4, size=(32, 40), void=(0, 0, 0)):
    """A VOC-layout set whose labels are RGB color masks, as many real sets ship them."""
    rng = np.random.default_rng(0)
    for folder in ("ImageSets/Segmentation", "SegmentationClass"):
        (root / folder).mkdir(parents=True)
    for split in ("train", "val"):
        ids = [f"{split}{i}" for i in range(n)]
        for image_id in ids:
            classes = rng.integers(0, 2, size)
            classes[:2] = 2  # a thin strip of the rare class
            classes[5:8, 5:8] = 2
            mask = np.array(COLOURS, np.uint8)[classes]
            mask[-1] = void  # a void row
            write_image(root / "JPEGImages" / f"{image_id}.jpg",
                        rng.integers(0, 255, (*size, 3), dtype=np.uint8))
            Image.fromarray(mask, "RGB").save(root / "SegmentationClass" / f"{image_id}.png")
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids))
    (root / "class_names.txt").write_text("road\nbuilding\nperson\n")
    return root


def test_color_masks_decode_through_palette_txt_with_void(tmp_path):
    root = color_mask_set(tmp_path / "street")
    with pytest.raises(DataError, match="palette.txt"):  # the error names the fix
        VOCSegmentation(root, "train")[0]
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in COLOURS))
    ds = VOCSegmentation(root, "train")
    image, label = ds[0]
    mask = np.array(Image.open(root / "SegmentationClass" / "train0.png"))
    assert label[-1].tolist() == [255] * 40  # the void color
    for c, color in enumerate(COLOURS):
        assert np.all(label[:-1][np.all(mask[:-1] == color, axis=-1)] == c)
    # a color in no line of palette.txt is named
    mask[3, 3] = (1, 2, 3)
    Image.fromarray(mask, "RGB").save(root / "SegmentationClass" / "train0.png")
    with pytest.raises(DataError, match=r"train0.png: colors \(1 2 3\) are not in palette"):
        ds[0]


def test_a_class_that_owns_the_void_color_stays_a_class(tmp_path):
    root = color_mask_set(tmp_path / "s", void=(128, 64, 128))
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in COLOURS))
    ds = VOCSegmentation(root, "train", void_color=(128, 64, 128))
    assert ds.void_color is None and 255 not in ds[0][1]


def test_another_void_value_becomes_void(tmp_path):
    from test_data_metrics import write_voc_fixture
    root = write_voc_fixture(tmp_path / "voc", num_classes=3, n=2)
    plain = VOCSegmentation(root, "train")[0][1]
    relabelled = VOCSegmentation(root, "train", ignore_index=2)[0][1]
    assert np.all(relabelled[plain == 2] == 255)
    assert np.array_equal(relabelled[plain != 2], plain[plain != 2])


def test_median_frequency_weights_follow_segnets_formula():
    # class 0 in every image (1000 px of 4000), class 1 in one image of 1000 px (10 px),
    # class 2 never
    pixels, present_in = np.array([1000, 10, 0]), np.array([4000, 1000, 0])
    w = median_frequency_weights(pixels, present_in)
    freq = np.array([0.25, 0.01])
    np.testing.assert_allclose(w[:2], np.median(freq) / freq, rtol=1e-6)
    assert w[2] == 0 and w[1] > w[0]


def test_class_pixel_counts_leave_void_out():
    labels = [np.array([[0, 0, 1], [255, 255, 1]], np.uint8), np.zeros((2, 2), np.uint8)]
    pixels, present_in = class_pixel_counts([(None, lab) for lab in labels], 3)
    assert pixels.tolist() == [6, 2, 0] and present_in.tolist() == [8, 4, 0]


def test_a_run_on_color_masks_leaves_log_config_plots_and_an_evaluation(tmp_path, capsys):
    root = color_mask_set(tmp_path / "street")
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in COLOURS))
    train = load_script()
    out = tmp_path / "run"
    assert train.main(["--voc-root", str(root), "--epochs", "2", "--out", str(out), "-b", "2",
                       "--crop-size", "32", "32", "--time-budget", "0",
                       "--class-weights", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "person" in printed and "weight" in printed  # the class-weight table
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["class_weights"] == "auto" and config["class_names"] == [
        "road", "building", "person"]
    assert set(config["versions"]) == {"python", "numpy", "numba", "tinyfcn"}
    weights = config["class_weights"]
    assert weights[2] > weights[0]  # the rare class weighs more
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["epoch"], r["step"]) for r in rows] == [
        ("train", "1", "1"), ("train", "1", "2"), ("val", "1", ""),
        ("train", "2", "1"), ("train", "2", "2"), ("val", "2", "")]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3) and float(rows[2]["mean_iou"]) >= 0
    for name in ("training-curve.png", "per-class-iou.png", "confusion.png",
                 "predictions/epoch-002.png"):
        assert Image.open(out / name).size[0] > 100, name
    # the panels draw the data set's own colors
    panel = np.array(Image.open(out / "predictions" / "epoch-002.png"))
    assert np.any(np.all(panel == COLOURS[0], axis=-1))
    # the best checkpoint holds the weights alone; an evaluation writes its report
    assert "optimizer" not in tinyfcn.load(out / "checkpoint-best.npz")
    assert train.main(["--resume", str(out / "checkpoint-best.npz"), "--eval-only",
                       "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(report["per_class_iou"]) == {"road", "building", "person"}
    assert set(report["per_class_acc"]) == {"road", "building", "person"}
    lines = (tmp_path / "eval" / "confusion.csv").read_text().splitlines()
    assert lines[0].split(",")[1:] == ["road", "building", "person"] and len(lines) == 4
    assert sum(int(v) for line in lines[1:] for v in line.split(",")[1:]) == report["pixels"]


def test_eval_only_refuses_to_score_a_random_model(tmp_path, capsys):
    train = load_script()
    assert train.main(["--eval-only", "--out", str(tmp_path)]) == 2
    assert "needs the weights" in capsys.readouterr().err
