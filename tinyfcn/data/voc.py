"""`VOCSegmentation`: any data set in the PASCAL VOC segmentation layout.

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png        palette PNG: class index per pixel, 255 = void
    root/ImageSets/Segmentation/<split>.txt
    root/class_names.txt                   optional: one name per line (else VOC's 21)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyfcn.data.errors import DataError
from tinyfcn.data.palette import VOID, read_image, read_label

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)


def read_class_names(root: Path) -> tuple:
    path = root / "class_names.txt"
    if not path.exists():
        return VOC_CLASSES
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if names and names[0] == "__ignore__":  # labelme's exporter lists the void class first
        names = names[1:]
    if not names:
        raise DataError(f"{path}: lists no class names")
    return names


class VOCSegmentation:
    """`ds[i]` -> (image uint8 (H, W, 3), label uint8 (H, W)); `ds.ids`, `ds.class_names`.

    Each sample is checked when read: missing or corrupt files, an image and label
    of different sizes, and label values outside the classes (other than 255)
    raise `DataError` naming the file."""

    def __init__(self, root, split: str = "train", transform=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data set root does not exist")
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.exists():
            raise DataError(f"{split_file}: split file is missing")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DataError(f"{split_file}: split lists no images")
        self.split, self.transform = split, transform
        self.class_names = read_class_names(self.root)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[i]}.jpg"

    def label_path(self, i: int) -> Path:
        return self.root / "SegmentationClass" / f"{self.ids[i]}.png"

    def __getitem__(self, i: int):
        image = read_image(self.image_path(i))
        label_path = self.label_path(i)
        label = read_label(label_path)
        if image.shape[:2] != label.shape:
            raise DataError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its "
                            f"image is {image.shape[1]}x{image.shape[0]}")
        bad = (label >= self.num_classes) & (label != VOID)
        if bad.any():
            values = sorted(np.unique(label[bad]).tolist())[:5]
            raise DataError(f"{label_path}: label values {values} are not classes "
                            f"0..{self.num_classes - 1} or void (255)")
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label
