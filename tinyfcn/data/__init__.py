"""Data sets in the PASCAL VOC layout, the built-in generated set, transforms and batching.
Needs only NumPy and Pillow."""

from tinyfcn.data import synthetic
from tinyfcn.data.errors import DataError
from tinyfcn.data.loader import DataLoader
from tinyfcn.data.palette import (
    colorize,
    read_image,
    read_label,
    voc_colormap,
    write_image,
    write_label,
)
from tinyfcn.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = ["VOC_CLASSES", "DataError", "DataLoader", "VOCSegmentation", "colorize", "read_image",
           "read_label", "synthetic", "voc_colormap", "write_image", "write_label"]
