"""Data files as untrusted input, and folders users own (issue 25, items 1, 8, 9, 16, 18):
the built-in set is never regenerated over a user's files; every listed image format is
read with the same guards; 16-bit images keep their range; indexed color masks are read
by color; text files in other encodings are named."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from test_data_metrics import write_voc_fixture
from test_own_data import COLOURS, color_mask_set

from tinyfcn.data import DataError, VOCSegmentation, read_image, synthetic, write_label
from tinyfcn.data.check import main as check_data

SIZES = {"train": 2, "val": 1}


# ------------------------------------------------- the built-in set and a user's files
def add_a_photo(root):
    (root / "JPEGImages" / "holiday.jpg").write_bytes(b"my photo")
    return "JPEGImages/holiday.jpg"


def append_an_id(root):
    with open(root / "ImageSets" / "Segmentation" / "train.txt", "a") as f:
        f.write("holiday\n")
    return "ImageSets/Segmentation/train.txt"


def add_notes(root):
    (root / "notes.txt").write_text("which photos to label next")
    return "notes.txt"


@pytest.mark.parametrize("edit", [add_a_photo, append_an_id, add_notes])
def test_the_built_in_set_is_never_regenerated_over_a_users_files(tmp_path, edit):
    root = synthetic.generate(tmp_path / "data", SIZES)
    theirs = edit(root)
    (root / "JPEGImages" / "val_00000.jpg").write_bytes(b"damaged")  # so a repair is due
    mine = (root / theirs).read_bytes()
    with pytest.raises(DataError, match=f"did not generate.*{theirs}") as error:
        synthetic.ensure(root, SIZES)
    assert "\n" not in str(error.value)
    assert (root / theirs).read_bytes() == mine
    with pytest.raises(DataError, match=theirs):  # nor over them with other sizes
        synthetic.ensure(root, {"train": 3, "val": 1})
    assert (root / theirs).read_bytes() == mine


@pytest.mark.parametrize("damage", ["garbage", "cut", "missing"])
def test_a_damaged_file_of_ours_is_still_regenerated(tmp_path, damage):
    root = synthetic.generate(tmp_path / "data", SIZES)
    for name in ("JPEGImages/train_00001.jpg", "SegmentationClass/val_00000.png"):
        path = root / name
        if damage == "garbage":
            path.write_bytes(b"damaged")
        elif damage == "cut":
            path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
        else:
            path.unlink()
    assert not synthetic.verify(root, SIZES)
    synthetic.ensure(root, SIZES)
    assert synthetic.verify(root, SIZES)


def test_a_relabelled_mask_of_ours_is_the_users(tmp_path):
    root = synthetic.generate(tmp_path / "data", SIZES)
    relabelled = root / "SegmentationClass" / "train_00000.png"
    write_label(relabelled, np.zeros((20, 30), np.uint8))
    mine = relabelled.read_bytes()
    with pytest.raises(DataError, match="SegmentationClass/train_00000.png"):
        synthetic.ensure(root, SIZES)
    assert relabelled.read_bytes() == mine


# ------------------------------------------------------------ indexed color masks
def quantized_mask_set(root):
    """The color-mask set with each mask saved as an indexed PNG, as Pillow's quantize
    (and PNG optimizers) write them: the index is a palette position, not a class."""
    root = color_mask_set(root)
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in COLOURS))
    for path in (root / "SegmentationClass").iterdir():
        Image.open(path).convert("RGB").quantize(colors=8).save(path)
    return root


def test_indexed_color_masks_are_read_by_color(tmp_path):
    root = quantized_mask_set(tmp_path / "street")
    mask = Image.open(root / "SegmentationClass" / "train0.png")
    assert mask.mode == "P"
    rgb = np.array(mask.convert("RGB"))
    assert not np.array_equal(np.array(mask)[rgb[..., 0] == 220], 2)  # positions differ
    label = VOCSegmentation(root, "train")[0][1]
    assert label[-1].tolist() == [255] * 40  # the void color
    for c, color in enumerate(COLOURS):
        assert np.all(label[:-1][np.all(rgb[:-1] == color, axis=-1)] == c)
    # a color in no line of palette.txt is named, as for an RGB mask
    rgb[3, 3] = (1, 2, 3)
    Image.fromarray(rgb).quantize(colors=8).save(root / "SegmentationClass" / "train0.png")
    with pytest.raises(DataError, match=r"train0.png: colors \(1 2 3\) are not in palette"
                       r".*palette PNG whose palette differs") as error:
        VOCSegmentation(root, "train")[0]
    assert "cannot read" not in str(error.value)  # one message, not one wrapped in another


def test_check_data_says_how_labels_were_decoded(tmp_path, capsys):
    root = quantized_mask_set(tmp_path / "street")
    assert check_data([str(root)]) == 0
    assert "labels read as: indexed-PNG colors of palette.txt (4 files)" in capsys.readouterr().out
    voc = write_voc_fixture(tmp_path / "voc", n=2)
    assert check_data([str(voc)]) == 0
    assert "labels read as: class indices (2 files)" in capsys.readouterr().out


def test_palette_pngs_of_class_indices_still_read_as_indices(tmp_path):
    # VOC's own masks: indices are classes, no palette.txt; and tinyfcn's own masks
    # written in a data set's colors, void (cream in the PNG) included, beside palette.txt
    label = np.array([[0, 1, 2], [2, 255, 1]], np.uint8)
    root = write_voc_fixture(tmp_path / "voc", n=1, size=(2, 3), splits=("train",))
    write_label(root / "SegmentationClass" / "train0.png", label)
    np.testing.assert_array_equal(VOCSegmentation(root, "train")[0][1], label)
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in COLOURS))
    write_label(root / "SegmentationClass" / "train0.png", label, colors=COLOURS)
    np.testing.assert_array_equal(VOCSegmentation(root, "train")[0][1], label)


# ------------------------------------------------------------------- 16-bit images
def png16(path, pixels):
    """A 16-bit PNG (grey (H, W) or RGB (H, W, 3)), written by hand: Pillow writes no RGB16."""
    height, width = pixels.shape[:2]
    color_type = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type,
                                                  0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["grey PNG", "RGB PNG", "grey TIFF"])
def test_16_bit_images_are_scaled_not_saturated(tmp_path, kind):
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
    path = tmp_path / ("ramp.tif" if "TIFF" in kind else "ramp.png")
    if kind == "grey PNG":
        png16(path, ramp)
    elif kind == "RGB PNG":
        png16(path, np.stack([ramp] * 3, axis=-1))
    else:
        Image.fromarray(ramp).save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (4, 256, 3)
    np.testing.assert_array_equal(image[0, :, 0], np.arange(256))  # the ramp, 8 bits deep


def test_floating_point_images_are_refused_by_name(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)).save(path)
    with pytest.raises(DataError, match="depth.tif: floating-point pixels"):
        read_image(path)


# ------------------------------------------------- every listed format, same guards
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
           ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}


def test_the_suffix_list_is_what_the_reader_reads():
    from tinyfcn.data import IMAGE_SUFFIXES, image_io
    assert set(IMAGE_SUFFIXES) == set(FORMATS)
    assert set(image_io.IMAGE_FORMATS) == set(FORMATS.values())


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_every_listed_format_reads_as_rgb_uint8(tmp_path, suffix):
    image = np.zeros((12, 16, 3), np.uint8)
    image[:, 8:] = (200, 40, 10)
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(encoded(image, FORMATS[suffix]))
    back = read_image(path)
    assert back.dtype == np.uint8 and back.shape == (12, 16, 3)
    assert np.abs(back.astype(int) - image).mean() < 4  # lossy formats stay close


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_exif_orientation_is_applied_in_every_format_that_carries_it(tmp_path, suffix):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it upright
    path = tmp_path / f"camera{suffix}"
    path.write_bytes(encoded(np.zeros((10, 12, 3), np.uint8), FORMATS[suffix],
                             exif=exif.tobytes()))
    assert read_image(path).shape == (12, 10, 3)


def test_a_garbled_exif_tag_does_not_cost_the_picture(tmp_path):
    # orientation 6 beside tag 0x0143 (a number) stored as the text "Canon": rewriting this
    # EXIF block (as ImageOps.exif_transpose does) raises struct.error
    exif = bytes.fromhex("4578696600004d4d002a000000080003014300020000000600000032011000020000"
                         "0002580000000112000300000001000600000000000043616e6f6e00")
    path = tmp_path / "camera.png"
    path.write_bytes(encoded(np.zeros((10, 12, 3), np.uint8), "PNG", exif=exif))
    assert read_image(path).shape == (12, 10, 3)


def test_a_tiff_whose_tag_lies_about_its_type_is_one_error_naming_the_file(tmp_path):
    width, height = 4, 3
    pixels = bytes(range(width * height * 3))

    def tiff(strip_offsets_type):  # a minimal RGB TIFF: header, pixels, one directory
        entries = [(256, 3, width), (257, 3, height), (258, 3, 8), (259, 3, 1), (262, 3, 2),
                   (273, strip_offsets_type, 8), (277, 3, 3), (278, 3, height),
                   (279, 4, len(pixels))]
        directory = struct.pack("<H", len(entries)) + b"".join(
            struct.pack("<HHI", tag, kind, 1)
            + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
            for tag, kind, value in entries) + bytes(4)
        return b"II*\0" + struct.pack("<I", 8 + len(pixels)) + pixels + directory

    path = tmp_path / "scan.tif"
    path.write_bytes(tiff(strip_offsets_type=4))  # LONG, as it should be
    assert read_image(path).ravel().tolist() == list(pixels)
    path.write_bytes(tiff(strip_offsets_type=2))  # ASCII: the offset is text
    with pytest.raises(DataError, match="scan.tif: cannot read image"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".bmp", ".gif", ".tif", ".webp"])
def test_damaged_files_of_every_format_are_one_error_naming_the_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    data = encoded(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), FORMATS[suffix])
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(data)
    assert read_image(path).shape == (40, 50, 3)  # whole, it reads
    for cut in (0, 10, len(data) // 3, len(data) * 2 // 3):
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match=f"photo{suffix}"):
            read_image(path)


@pytest.mark.parametrize("suffix", [".bmp", ".gif", ".tif", ".webp"])
def test_huge_images_of_every_format_are_refused_before_decoding(tmp_path, monkeypatch,
                                                                 suffix):
    from tinyfcn.data import image_io
    monkeypatch.setattr(image_io, "MAX_PIXELS", 1000)
    path = tmp_path / f"big{suffix}"
    path.write_bytes(encoded(np.zeros((40, 50, 3), np.uint8), FORMATS[suffix]))
    with pytest.raises(DataError, match="50 x 40 pixels, more than 1,000"):
        read_image(path)


def test_a_data_set_may_hold_any_listed_format(tmp_path):
    root = write_voc_fixture(tmp_path / "voc", n=1, size=(12, 16), splits=("train",))
    photo = root / "JPEGImages" / "train0.jpg"
    webp = photo.with_suffix(".webp")
    webp.write_bytes(encoded(np.asarray(Image.open(photo)), "WEBP"))
    photo.unlink()
    ds = VOCSegmentation(root, "train")
    assert ds.image_path(0) == webp and ds[0][0].shape == (12, 16, 3)


# --------------------------------------------------------- text in other encodings
def test_a_byte_order_mark_is_accepted_in_every_text_file(tmp_path):
    root = write_voc_fixture(tmp_path / "voc", n=2)
    for name in ("ImageSets/Segmentation/train.txt", "class_names.txt"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (root / "palette.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(
        " ".join(map(str, c)) for c in COLOURS).encode())
    ds = VOCSegmentation(root, "train")
    assert ds.ids == ["train0", "train1"] and ds.class_names[0] == "class0"
    assert ds.palette.tolist() == [list(c) for c in COLOURS]


@pytest.mark.parametrize("name", ["ImageSets/Segmentation/train.txt", "class_names.txt",
                                  "palette.txt"])
@pytest.mark.parametrize("encoding, problem", [("utf-16", "is UTF-16"),
                                               ("utf-16-le", "is UTF-16"),
                                               ("latin-1", r"is not UTF-8 text \(byte 0xe9")])
def test_text_in_another_encoding_is_one_error_naming_the_file(tmp_path, name, encoding,
                                                               problem):
    root = write_voc_fixture(tmp_path / "voc", n=2)
    text = {"palette.txt": "1 2 3\n4 5 6\n7 8 9\n"}.get(name) or (root / name).read_text()
    (root / name).write_bytes(("# café\n" + text).encode(encoding))  # é: not ASCII
    with pytest.raises(DataError, match=f"{name}: {problem}.*save it as UTF-8"):
        VOCSegmentation(root, "train")


def test_check_data_names_a_utf16_split_file_instead_of_crashing(tmp_path, capsys):
    root = write_voc_fixture(tmp_path / "voc", n=2)
    split = root / "ImageSets" / "Segmentation" / "train.txt"
    split.write_bytes(split.read_text().encode("utf-16"))
    assert check_data([str(root)]) == 2
    err = capsys.readouterr().err
    assert "train.txt: is UTF-16 text; save it as UTF-8" in err and "Traceback" not in err


def test_training_names_a_split_file_in_another_encoding(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "examples" / "train_voc_subset.py"
    spec = importlib.util.spec_from_file_location("train_voc_subset", script)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    root = write_voc_fixture(tmp_path / "voc", n=2)
    split = root / "ImageSets" / "Segmentation" / "train.txt"
    split.write_bytes(split.read_text().encode("utf-16"))
    assert train.main(["--voc-root", str(root), "--out", str(tmp_path / "run")]) == 2
    assert "train.txt: is UTF-16 text; save it as UTF-8" in capsys.readouterr().err


def test_a_text_file_that_is_a_device_or_a_fifo_is_refused_not_read(tmp_path):
    """class_names.txt linked to /dev/zero read until memory ran out; a FIFO blocked."""
    from tinyfcn.data.text import read_lines
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.txt")
    for name in ("zero.txt", "fifo.txt"):
        with pytest.raises(DataError, match=rf"{name}: is not a regular file"):
            read_lines(tmp_path / name)
