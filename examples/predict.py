"""Segment images with a trained checkpoint: palette-PNG masks and overlays.

    python examples/predict.py runs/latest/checkpoint-best.npz photo.jpg more/ --out masks/

For each input image NAME.ext it writes NAME.png (class indices in the VOC
palette: opens as a picture, reads back as labels) and NAME-overlay.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import tinyfcn
from tinyfcn import models
from tinyfcn.data import DataError, read_image, write_image, write_label
from tinyfcn.data.visualize import overlay

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by train_voc_subset.py")
    p.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder")
    return p.parse_args(argv)


def image_files(inputs):
    for path in inputs:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            yield path
        else:
            raise DataError(f"{path}: no such image or folder")


def load_model(path):
    ckpt = tinyfcn.load(path)
    return models.from_checkpoint(ckpt, path).eval(), ckpt.get("class_names")


def main(argv=None) -> int:
    args = parse_args(argv)
    tinyfcn.configure_runtime()
    try:
        model, class_names = load_model(args.checkpoint)
        files = list(image_files(args.inputs))
        if not files:
            raise DataError("no images found in " + ", ".join(map(str, args.inputs)))
        for path in files:
            image = read_image(path)
            pred = model.predict(image)
            write_label(args.out / f"{path.stem}.png", pred)
            write_image(args.out / f"{path.stem}-overlay.png", overlay(image, pred))
            present = [class_names[c] if class_names else str(c) for c in np.unique(pred)]
            print(f"{path}: {', '.join(present)}")
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {len(files)} masks and overlays to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
