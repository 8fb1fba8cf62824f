"""Reading and writing images and label files: the one place tinyfcn opens a picture.

Every image goes through the same guards: only the formats of `IMAGE_FORMATS` are
decoded, a size beyond `MAX_PIXELS` is refused before decoding (decompression bombs),
camera photos are turned upright by their EXIF orientation, 16-bit pixels are scaled to
8 bits, and a damaged file is one `DataError` (a ValueError) naming it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from tinyfcn.data.errors import DataError
from tinyfcn.data.palette import COLORMAP, VOID, decode_color_label
from tinyfcn.fileio import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")  # Pillow's names, the same set
MAX_PIXELS = 64_000_000  # a larger image is refused, not decoded (decompression bombs)

# What Pillow raises on a damaged or lying file (TypeError: a TIFF tag of the wrong type,
# found by fuzzing every format).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError)

# How a label file was read (`read_label_and_decoding`), in tinyfcn-check-data's words.
INDICES = "class indices"
COLORS = "RGB colors of palette.txt"
INDEXED_COLORS = "indexed-PNG colors of palette.txt"


def _open(path, formats, what: str):
    """A Pillow image of one of `formats`, its size checked before it is decoded."""
    if isinstance(path, (str, os.PathLike)) and os.path.exists(path) \
            and not os.path.isfile(path):  # a folder, or a FIFO that would block the read
        kind = "a folder" if os.path.isdir(path) else "not a regular file"
        raise DataError(f"{path}: cannot read {what}: {kind}")
    try:
        im = Image.open(path, formats=formats)
    except FileNotFoundError:
        if isinstance(path, (str, os.PathLike)) and os.path.islink(path):
            raise DataError(f"{path}: {what} file is a link to {os.readlink(path)}, which "
                            f"does not exist") from None
        raise DataError(f"{path}: {what} file is missing") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: cannot read {what}: not a {', '.join(formats[:-1])}"
                        f"{' or ' if len(formats) > 1 else ''}{formats[-1]} file") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from None
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise DataError(f"{path}: {what} is {im.width} x {im.height} pixels, more than "
                        f"{MAX_PIXELS:,} (resize it first)")
    return im


def _decode(path, im, what: str, convert):
    try:
        with im:
            im.load()
            return convert(im)
    except DataError:  # already names the file
        raise
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from None


def _to_rgb(path, im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from any mode; 16-bit grey keeps its range (its top 8 bits)."""
    if im.mode == "I" or im.mode.startswith("I;16"):
        grey = np.asarray(im)  # uint16 (I;16), or int32 (I): no wider copy of the image
        if im.mode == "I" and grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise DataError(f"{path}: 32-bit pixels ({grey.min()}..{grey.max()}) are not an "
                            f"image tinyfcn reads; save it with 8 or 16 bits per channel")
        return np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "F":
        raise DataError(f"{path}: floating-point pixels are not an image tinyfcn reads; save "
                        f"it with 8 or 16 bits per channel")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


# EXIF orientation -> the transpose that shows the picture upright (as viewers do).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _upright(im: Image.Image) -> Image.Image:
    """`im` turned by its EXIF orientation. Unlike ImageOps.exif_transpose this does not
    rewrite the EXIF block, so a garbled tag elsewhere in it does not cost the picture."""
    method = _UPRIGHT.get(im.getexif().get(0x0112))
    return im if method is None else im.transpose(method)


def read_image(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any file of `IMAGE_FORMATS` (the first frame of an
    animation), turned upright by its EXIF orientation (as viewers and labelling tools show
    it, so that it matches a label drawn on it)."""
    im = _open(path, IMAGE_FORMATS, "image")
    return _decode(path, im, "image", lambda im: _to_rgb(path, _upright(im)))


def _indices_are_classes(im: Image.Image, indices: np.ndarray, colors: np.ndarray) -> bool:
    """True if each index the palette PNG uses is void or a class whose entry in the PNG's
    own palette is that class's color (as `write_label` writes them): the two readings
    agree, and void stays void."""
    used = np.unique(indices)
    used = used[used != VOID]
    table = np.asarray(im.getpalette() or [], np.uint8).reshape(-1, 3)
    if used.size and used.max() >= min(len(colors), len(table)):
        return False
    return bool((table[used] == colors[used]).all())


def read_label_and_decoding(path, colors=None, void_color=(0, 0, 0)):
    """(label, decoding): the (H, W) uint8 class indices of `read_label` and how the file
    was read: `INDICES`, `COLORS` (an RGB mask) or `INDEXED_COLORS` (a palette PNG whose
    indices are not the classes, as PNG optimizers and quantizers write color masks)."""
    im = _open(path, ["PNG"], "label")
    if im.mode in ("RGB", "RGBA") and colors is not None:
        return _decode(path, im, "label", lambda im: decode_color_label(
            path, np.asarray(im.convert("RGB")), colors, void_color)), COLORS
    if im.mode not in ("P", "L"):
        im.close()
        hint = (" (a color mask: list each class's color in palette.txt beside "
                "class_names.txt, one 'R G B' line per class, to decode it)"
                if im.mode in ("RGB", "RGBA") else "")
        raise DataError(f"{path}: label must be a palette or greyscale PNG of class "
                        f"indices, got mode {im.mode}{hint}")

    def decode(im):
        indices = np.array(im, dtype=np.uint8)
        if im.mode == "L" or colors is None or _indices_are_classes(im, indices, colors):
            return indices, INDICES
        rgb = np.asarray(im.convert("RGB"))
        try:
            return decode_color_label(path, rgb, colors, void_color), INDEXED_COLORS
        except DataError as e:  # say why the indices were not taken as the classes
            raise DataError(f"{e}; it is a palette PNG whose palette differs from "
                            f"palette.txt, so it is read by color") from None

    return _decode(path, im, "label", decode)


def read_label(path, colors=None, void_color=(0, 0, 0)) -> np.ndarray:
    """(H, W) uint8 class indices from a palette (or greyscale) PNG of class indices, or,
    given the data set's `colors` (palette.txt), from a color mask: RGB, or a palette PNG
    whose palette holds those colors in another order."""
    return read_label_and_decoding(path, colors, void_color)[0]


def _write(path, image: Image.Image, **options) -> None:
    """Encode `image` by the suffix of `path` (JPEG or PNG) and write it atomically."""
    buffer = io.BytesIO()
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    image.save(buffer, format="JPEG" if jpeg else "PNG", **(options if jpeg else {}))
    data = buffer.getvalue()
    atomic_write(Path(path), lambda f: f.write(data))


def write_label(path, label: np.ndarray, colors=None) -> None:
    """Write class indices as a palette PNG, atomically: it reads back as the indices and
    opens as a picture in the data set's `colors` (else VOC's)."""
    image = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    table = COLORMAP.copy()
    if colors is not None:
        table[:len(colors)] = colors
    image.putpalette(table.ravel().tolist())
    _write(path, image)


def write_image(path, image: np.ndarray, quality: int = 92) -> None:
    """Write an RGB image (JPEG or PNG by suffix), atomically."""
    _write(path, Image.fromarray(np.asarray(image, dtype=np.uint8)), quality=quality)
