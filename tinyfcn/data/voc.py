"""`VOCSegmentation`: any data set in the PASCAL VOC segmentation layout.

    root/JPEGImages/<id>.jpg               or .jpeg, .png, ... (image_io.IMAGE_SUFFIXES)
    root/SegmentationClass/<id>.png        palette PNG: class index per pixel, 255 = void
    root/ImageSets/Segmentation/<split>.txt
    root/class_names.txt                   one name per line (if absent: VOC's 21, and
                                           `has_class_names` is False so tools can say so)
    root/palette.txt                       optional: one "R G B" line per class; labels may
                                           then be color masks, `void_color` is void
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyfcn.data.errors import DataError
from tinyfcn.data.image_io import IMAGE_SUFFIXES, read_image, read_label_and_decoding
from tinyfcn.data.palette import VOID, read_palette
from tinyfcn.data.text import read_lines

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def read_class_names(root: Path) -> tuple:
    """The names in `root`/class_names.txt, or None if there is no such file."""
    path = root / "class_names.txt"
    if not path.exists():
        return None
    names = tuple(line.strip() for line in read_lines(path) if line.strip())
    if names and names[0] == "__ignore__":  # labelme's exporter lists the void class first
        names = names[1:]
    if not names:
        raise DataError(f"{path}: lists no class names")
    if len(names) > VOID:
        raise DataError(f"{path}: lists {len(names)} classes; at most {VOID} fit beside "
                        f"void ({VOID})")
    return names


def check_id(image_id: str, split_file: Path) -> str:
    """An id names files inside the data set: no folders, no '..', no absolute paths."""
    if (not image_id or image_id in (".", "..") or "/" in image_id or "\\" in image_id
            or "\0" in image_id):
        raise DataError(f"{split_file}: id {image_id!r} is not a plain file name")
    return image_id


class VOCSegmentation:
    """`ds[i]` -> (image uint8 (H, W, 3), label uint8 (H, W)); `ds.ids`, `ds.class_names`.

    Each sample is checked when read: missing or corrupt files, an image and label
    of different sizes, and label values outside the classes (other than 255)
    raise `DataError` naming the file."""

    def __init__(self, root, split: str = "train", transform=None, ignore_index: int = VOID,
                 void_color=(0, 0, 0)):
        self.root = Path(root)
        if not 0 <= ignore_index <= VOID:
            raise DataError(f"ignore_index must be a label value 0..{VOID}, got {ignore_index}")
        self.ignore_index = ignore_index
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data set root does not exist")
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.exists():
            raise DataError(f"{split_file}: split file is missing")
        if not split_file.is_file():
            raise DataError(f"{split_file}: not a regular file")
        self.ids = [check_id(line.strip(), split_file)
                    for line in read_lines(split_file) if line.strip()]
        if not self.ids:
            raise DataError(f"{split_file}: split lists no images")
        self.split, self.transform = split, transform
        names = read_class_names(self.root)
        self.has_class_names = names is not None  # else VOC's 21 are assumed: say so
        self.class_names = VOC_CLASSES if names is None else names
        self.palette = self.void_color = None
        if (self.root / "palette.txt").is_file():
            self.palette = read_palette(self.root / "palette.txt")
            if len(self.palette) != len(self.class_names):
                raise DataError(f"{self.root / 'palette.txt'}: {len(self.palette)} colors for "
                                f"{len(self.class_names)} classes")
            owned = void_color is not None and any(
                tuple(c) == tuple(void_color) for c in self.palette.tolist())
            self.void_color = None if owned else void_color  # a class's color is not void

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        """JPEGImages/<id> with the first of `IMAGE_SUFFIXES` that exists, in lower or upper
        case (cameras write IMG_0001.JPG), or .jpg if none does."""
        stem = self.root / "JPEGImages" / self.ids[i]
        for suffix in IMAGE_SUFFIXES:
            for spelling in (suffix, suffix.upper()):
                if stem.with_name(stem.name + spelling).exists():
                    return stem.with_name(stem.name + spelling)
        return stem.with_name(stem.name + ".jpg")

    def label_path(self, i: int) -> Path:
        return self.root / "SegmentationClass" / f"{self.ids[i]}.png"

    def _checked(self, path: Path) -> Path:
        """`path` if it is a regular file inside the data set (a symlink may point
        elsewhere inside it, but not out of it; FIFOs and devices are refused)."""
        if path.exists() or path.is_symlink():
            if self.root.resolve() not in path.resolve().parents:
                raise DataError(f"{path}: leads outside the data set ({path.resolve()})")
            if not path.is_file():
                raise DataError(f"{path}: not a regular file")
        return path

    def __getitem__(self, i: int):
        image, label, _ = self.read_sample(i)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label

    def read_sample(self, i: int):
        """(image, label, decoding) of item `i`, checked, without the transform; `decoding`
        says how the label file was read (see `image_io.read_label_and_decoding`)."""
        image = read_image(self._checked(self.image_path(i)))
        label_path = self._checked(self.label_path(i))
        label, decoding = read_label_and_decoding(label_path, self.palette, self.void_color)
        if self.ignore_index != VOID:  # this data set's void value -> tinyfcn's 255
            label = np.where(label == self.ignore_index, VOID, label).astype(np.uint8)
        if image.shape[:2] != label.shape:
            raise DataError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its "
                            f"image is {image.shape[1]}x{image.shape[0]}")
        bad = (label >= self.num_classes) & (label != VOID)
        if bad.any():
            values = sorted(np.unique(label[bad]).tolist())[:5]
            hint = ("" if self.palette is not None else "; if these are colors of a color "
                    "mask, list the colors in palette.txt")
            raise DataError(f"{label_path}: label values {values} are not classes "
                            f"0..{self.num_classes - 1} or void ({self.ignore_index}){hint}")
        return image, label, decoding
