"""The PASCAL VOC colour map and palette-PNG label files (class index per pixel, 255 = void)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tinyfcn.data.errors import DataError
from tinyfcn.fileio import atomic_write

VOID = 255


def voc_colormap(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: VOC's colours, from the bits of the class index (the devkit's bitget)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


COLORMAP = voc_colormap()


def colorize(label: np.ndarray, colours=None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB: class c in `colours[c]` (a data set's
    palette.txt) or else in the VOC colours; void is cream."""
    label = np.asarray(label, dtype=np.uint8)
    if colours is None:
        return COLORMAP[label]
    table = COLORMAP.copy()
    table[:len(colours)] = colours
    return table[label]


def read_palette(path) -> np.ndarray:
    """(C, 3) uint8 from a palette.txt: one "R G B" line per class, in class order."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            values = [int(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 3 or not all(0 <= v <= 255 for v in values):
            raise DataError(f"{path}, line {n}: expected three numbers 0-255 (R G B), "
                            f"got {line.strip()!r}")
        rows.append(values)
    colours = np.array(rows, np.uint8).reshape(-1, 3)
    keys = _keys(colours)
    if len(set(keys.tolist())) != len(keys):
        raise DataError(f"{path}: two classes share a colour")
    return colours


def _keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def decode_colour_label(path, rgb: np.ndarray, colours: np.ndarray, void_colour) -> np.ndarray:
    """(H, W) class indices from an (H, W, 3) colour mask: colour `colours[c]` -> c,
    `void_colour` (if not None) -> void; any other colour is an error naming it."""
    keys = _keys(rgb)
    table = _keys(colours)
    order = np.argsort(table)
    position = np.clip(np.searchsorted(table[order], keys), 0, len(table) - 1)
    label = order[position].astype(np.uint8)
    known = table[order][position] == keys
    if void_colour is not None:
        void = keys == _keys(np.asarray(void_colour))
        label[void], known = VOID, known | void
    if not known.all():
        unknown = np.unique(keys[~known])[:3]
        named = ", ".join(f"({k >> 16} {(k >> 8) & 255} {k & 255})" for k in unknown.tolist())
        raise DataError(f"{path}: colours {named} are not in palette.txt (nor the void "
                        f"colour)")
    return label


MAX_PIXELS = 64_000_000  # a larger image is refused, not decoded (decompression bombs)


def _open(path, formats, what: str):
    """A Pillow image of one of `formats`, its size checked before it is decoded."""
    try:
        im = Image.open(path, formats=formats)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file is missing") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: cannot read {what}: not a {' or '.join(formats)} "
                        f"file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
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
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from None


def read_label(path, colours=None, void_colour=(0, 0, 0)) -> np.ndarray:
    """(H, W) uint8 class indices from a palette (or greyscale) PNG of class indices, or,
    given the data set's `colours` (palette.txt), from a colour (RGB) mask."""
    im = _open(path, ["PNG"], "label")
    if im.mode in ("RGB", "RGBA") and colours is not None:
        return _decode(path, im, "label", lambda im: decode_colour_label(
            path, np.array(im.convert("RGB")), colours, void_colour))
    if im.mode not in ("P", "L"):
        im.close()
        hint = (" (a colour mask: list each class's colour in palette.txt beside "
                "class_names.txt, one 'R G B' line per class, to decode it)"
                if im.mode in ("RGB", "RGBA") else "")
        raise DataError(f"{path}: label must be a palette or greyscale PNG of class "
                        f"indices, got mode {im.mode}{hint}")
    return _decode(path, im, "label", lambda im: np.array(im, dtype=np.uint8))


def read_image(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a JPEG or PNG, turned upright by its EXIF orientation (as
    viewers and labelling tools show it, so that it matches a label drawn on it)."""
    im = _open(path, ["JPEG", "PNG"], "image")
    return _decode(path, im, "image",
                   lambda im: np.array(ImageOps.exif_transpose(im).convert("RGB"), np.uint8))


def _write(path, image: Image.Image, **options) -> None:
    """Encode `image` by the suffix of `path` (JPEG or PNG) and write it atomically."""
    buffer = io.BytesIO()
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    image.save(buffer, format="JPEG" if jpeg else "PNG", **(options if jpeg else {}))
    data = buffer.getvalue()
    atomic_write(Path(path), lambda f: f.write(data))


def write_label(path, label: np.ndarray, colours=None) -> None:
    """Write class indices as a palette PNG, atomically: it reads back as the indices and
    opens as a picture in the data set's `colours` (else VOC's)."""
    image = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    table = COLORMAP.copy()
    if colours is not None:
        table[:len(colours)] = colours
    image.putpalette(table.ravel().tolist())
    _write(path, image)


def write_image(path, image: np.ndarray, quality: int = 92) -> None:
    """Write an RGB image (JPEG or PNG by suffix), atomically."""
    _write(path, Image.fromarray(np.asarray(image, dtype=np.uint8)), quality=quality)
