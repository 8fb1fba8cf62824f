"""Data sets in the PASCAL VOC layout, the built-in generated set, transforms and batching.
Needs only NumPy and Pillow."""

from tinyfcn.data import synthetic
from tinyfcn.data.errors import DataError
from tinyfcn.data.image_io import (
    IMAGE_SUFFIXES,
    read_image,
    read_label,
    write_image,
    write_label,
)
from tinyfcn.data.loader import DataLoader
from tinyfcn.data.palette import colorize, voc_colormap
from tinyfcn.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = ["IMAGE_SUFFIXES", "VOC_CLASSES", "DataError", "DataLoader", "VOCSegmentation",
           "colorize", "read_image", "read_label", "synthetic", "voc_colormap", "write_image",
           "write_label"]
