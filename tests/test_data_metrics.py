"""VOC layout, palette PNGs, the built-in data set, transforms, batching and metrics."""

import numpy as np
import pytest
from PIL import Image

from tinyfcn.data import DataError, VOCSegmentation, colorize, read_label, synthetic, write_label
from tinyfcn.data.image_io import write_image
from tinyfcn.data.loader import epoch_batches, subset_ids
from tinyfcn.data.transforms import TrainAugment, random_crop, random_hflip, resize
from tinyfcn.metrics import confusion_matrix, scores


def write_voc_fixture(root, num_classes=3, n=6, size=(40, 48), splits=("train", "val")):
    """A small VOC-layout data set with `num_classes` classes listed in class_names.txt."""
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split in splits:
        ids = [f"{split}{i}" for i in range(n)]
        for image_id in ids:
            label = rng.integers(0, num_classes, size).astype(np.uint8)
            label[0, :] = 255
            image = (rng.random((*size, 3)) * 255).astype(np.uint8)
            write_image(root / "JPEGImages" / f"{image_id}.jpg", image)
            write_label(root / "SegmentationClass" / f"{image_id}.png", label)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids))
    (root / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(num_classes)))
    return root


def test_voc_colormap_matches_the_devkit():
    colors = colorize(np.array([[0, 1, 15, 255]], np.uint8))[0]
    np.testing.assert_array_equal(colors, [[0, 0, 0], [128, 0, 0], [192, 128, 128],
                                            [224, 224, 192]])


def test_label_png_round_trip_is_a_palette_png(tmp_path):
    label = np.array([[0, 1, 2], [20, 255, 7]], np.uint8)
    write_label(tmp_path / "l.png", label)
    assert Image.open(tmp_path / "l.png").mode == "P"
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), label)


def test_voc_layout_loads_any_class_count(tmp_path):
    root = write_voc_fixture(tmp_path / "voc", num_classes=5)
    ds = VOCSegmentation(root, "train")
    assert len(ds) == 6 and ds.class_names == tuple(f"class{i}" for i in range(5))
    image, label = ds[0]
    assert image.shape == (40, 48, 3) and image.dtype == np.uint8
    assert label.shape == (40, 48) and set(np.unique(label)) <= {0, 1, 2, 3, 4, 255}


def test_voc_class_names_default_to_voc(tmp_path):
    root = write_voc_fixture(tmp_path / "voc")
    (root / "class_names.txt").unlink()
    assert len(VOCSegmentation(root, "val").class_names) == 21


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "JPEGImages" / "train0.jpg").unlink(), "train0.jpg: image file is missing"),
    (lambda r: (r / "JPEGImages" / "train0.jpg").write_bytes(b"\xff\xd8 broken"),
     "train0.jpg: cannot read image"),
    (lambda r: (r / "SegmentationClass" / "train0.png").write_bytes(b"not a png"),
     "train0.png: cannot read label"),
    (lambda r: write_label(r / "SegmentationClass" / "train0.png", np.zeros((5, 5), np.uint8)),
     "train0.png: label is 5x5 but its image is 48x40"),
    (lambda r: write_label(r / "SegmentationClass" / "train0.png",
                           np.full((40, 48), 9, np.uint8)), r"train0.png: label values \[9\]"),
])
def test_bad_samples_name_the_file(tmp_path, damage, message):
    root = write_voc_fixture(tmp_path / "voc")
    damage(root)
    with pytest.raises(DataError, match=message):
        VOCSegmentation(root, "train")[0]


def test_bad_layout_names_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        VOCSegmentation(tmp_path / "nowhere")
    root = write_voc_fixture(tmp_path / "voc")
    with pytest.raises(DataError, match="test.txt: split file is missing"):
        VOCSegmentation(root, "test")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n")
    with pytest.raises(DataError, match="train.txt: split lists no images"):
        VOCSegmentation(root, "train")


def test_synthetic_set_is_deterministic_verified_and_repaired(tmp_path):
    sizes = {"train": 6, "val": 3}
    a = synthetic.generate(tmp_path / "a", sizes, seed=3)
    b = synthetic.generate(tmp_path / "b", sizes, seed=3)
    assert (a / "manifest.json").read_text() == (b / "manifest.json").read_text()
    assert synthetic.verify(a, sizes, seed=3)
    assert not synthetic.verify(a, sizes, seed=4)
    (a / "JPEGImages" / "val_00001.jpg").write_bytes(b"damaged")
    assert not synthetic.verify(a, sizes, seed=3)
    synthetic.ensure(a, sizes, seed=3)
    assert synthetic.verify(a, sizes, seed=3)
    ds = VOCSegmentation(a, "train")
    assert ds.num_classes == 21 and ds.class_names[0] == "background"
    shapes = {ds[i][1].shape for i in range(len(ds))}
    assert len(shapes) > 1  # image sizes vary
    labels = np.concatenate([ds[i][1].ravel() for i in range(len(ds))])
    assert (labels == 255).any() and len(set(np.unique(labels)) - {0, 255}) >= 5


def test_synthetic_void_band_separates_objects_from_background():
    image, label = synthetic.draw_scene(np.random.default_rng(0))
    objects = (label != 0) & (label != 255)
    # no object pixel touches a background pixel directly: void lies between them
    touching = objects[:, 1:] & (label[:, :-1] == 0) | objects[:, :-1] & (label[:, 1:] == 0)
    assert objects.any() and not touching.any()


def test_transforms_keep_image_and_label_aligned():
    rng = np.random.default_rng(0)
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    image = np.repeat(label[..., None], 3, axis=2)
    crop_image, crop_label = random_crop(image, label, (5, 6), rng)
    assert crop_label.shape == (5, 6) and (crop_label == 255).sum() == 30 - 12
    flipped_image, flipped_label = random_hflip(image, label, np.random.default_rng(1), p=1.0)
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    np.testing.assert_array_equal(flipped_image[..., 0], flipped_label)
    _, big = resize(image, label, 2.0)
    assert big.shape == (6, 8) and set(np.unique(big)) == set(np.unique(label))


def test_epoch_batches_are_seeded_and_resumable(tmp_path):
    ds = VOCSegmentation(write_voc_fixture(tmp_path / "voc", n=6), "train")
    augment = TrainAugment((16, 16))
    ids = subset_ids(len(ds), None, 0)
    first = list(epoch_batches(ds, ids, 2, augment, seed=1, epoch=3))
    again = list(epoch_batches(ds, ids, 2, augment, seed=1, epoch=3))
    tail = list(epoch_batches(ds, ids, 2, augment, seed=1, epoch=3, skip=1))
    other = list(epoch_batches(ds, ids, 2, augment, seed=1, epoch=4))
    assert len(first) == 3 and first[0][0].shape == (2, 16, 16, 3)
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    for (a, _), (c, _) in zip(first[1:], tail):
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(first[0][0], other[0][0])
    picked = subset_ids(10, 4, 0)
    assert len(picked) == 4 and list(picked) == list(subset_ids(10, 4, 0))


def test_confusion_matrix_and_scores_by_hand():
    label = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    hist = confusion_matrix(label, pred, 4)
    expected = np.zeros((4, 4), int)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 0] = 1, 1, 2, 1
    np.testing.assert_array_equal(hist, expected)
    s = scores(hist, ["bg", "a", "b", "never"])
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    assert s["mean_acc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    iou = {"bg": 1 / 3, "a": 2 / 3, "b": 0.0}
    for name, value in iou.items():
        assert s["per_class_iou"][name] == pytest.approx(value)
    assert np.isnan(s["per_class_iou"]["never"])  # absent from both: excluded from the mean
    assert s["mean_iou"] == pytest.approx(np.mean(list(iou.values())))
    assert s["fw_iou"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)


def test_subset_refuses_ids_outside_its_data_set():
    from tinyfcn.data.loader import Subset
    items = list(range(5))
    assert [Subset(items, [4, 0, -1])[i] for i in range(3)] == [4, 0, 4]
    with pytest.raises(IndexError, match=r"ids \[5, 7\] are outside a data set of 5 items"):
        Subset(items, [0, 5, 7])
