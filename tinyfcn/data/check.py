"""Validate a whole VOC-layout folder: `tinyfcn-check-data ROOT` or
`python -m tinyfcn.data.check ROOT`. Reads every listed sample once and prints a
report: per split the number of images, bad files with the reason, image sizes,
how the label files were decoded and the share of pixels per class. Exits 1 if any
file is bad, 2 if the folder or a split file cannot be read."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from tinyfcn.data.errors import DataError
from tinyfcn.data.loader import Subset
from tinyfcn.data.palette import VOID
from tinyfcn.data.voc import VOCSegmentation


def find_bad(dataset) -> tuple[list, list]:
    """(good indices, [(index, message)]) after reading every sample of `dataset`."""
    good, bad = [], []
    for i in range(len(dataset)):
        try:
            dataset[i]
            good.append(i)
        except DataError as e:
            bad.append((i, str(e)))
    return good, bad


def without_bad_files(dataset, ids) -> tuple[Subset, list]:
    """The items `ids` of `dataset` that read correctly, and one message per bad file."""
    subset = Subset(dataset, ids)
    good, bad = find_bad(subset)
    return Subset(dataset, subset.ids[good]), [message for _, message in bad]


def check_split(root: Path, split: str) -> dict:
    ds = VOCSegmentation(root, split)
    counts = np.zeros(ds.num_classes + 1, np.int64)  # last: void
    sizes, bad, decodings = [], [], Counter()
    for i in range(len(ds)):
        try:
            image, label, decoding = ds.read_sample(i)
        except DataError as e:
            bad.append(str(e))
            continue
        sizes.append(label.shape)
        decodings[decoding] += 1
        counts += np.bincount(np.where(label == VOID, ds.num_classes, label).ravel(),
                              minlength=ds.num_classes + 1)
    return {"split": split, "images": len(ds), "bad": bad, "sizes": sizes,
            "class_names": ds.class_names, "pixels": counts, "decodings": decodings,
            "assumed_voc": not ds.has_class_names}


def print_report(report: dict) -> None:
    if report["assumed_voc"]:
        print("warning: no class_names.txt: assuming PASCAL VOC's 21 classes")
    print(f"split {report['split']}: {report['images']} images, {len(report['bad'])} bad")
    for message in report["bad"]:
        print(f"  bad: {message}")
    if report["sizes"]:
        h = [s[0] for s in report["sizes"]]
        w = [s[1] for s in report["sizes"]]
        print(f"  sizes: height {min(h)}-{max(h)}, width {min(w)}-{max(w)}")
        print("  labels read as: " + ", ".join(
            f"{decoding} ({n} files)" for decoding, n in sorted(report["decodings"].items())))
        total = report["pixels"].sum()
        shares = [f"{name} {n / total:.1%}" for name, n in
                  zip([*report["class_names"], "void"], report["pixels"])]
        print("  pixels: " + ", ".join(shares))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tinyfcn-check-data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="the VOC-layout folder (holds ImageSets/)")
    p.add_argument("--splits", nargs="*", help="split names (default: every split file)")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root}: data set root does not exist", file=sys.stderr)
        return 2
    split_dir = args.root / "ImageSets" / "Segmentation"
    splits = args.splits or sorted(f.stem for f in split_dir.glob("*.txt"))
    if not splits:
        print(f"error: {split_dir}: no split files", file=sys.stderr)
        return 2
    any_bad = unreadable = False
    for split in splits:  # a split that cannot be read is reported; the others still checked
        try:
            report = check_split(args.root, split)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            unreadable = True
            continue
        print_report(report)
        any_bad |= bool(report["bad"])
    if unreadable:
        print("FAILED: a split could not be read")
        return 2
    print("FAILED: bad files found" if any_bad else "OK")
    return 1 if any_bad else 0


if __name__ == "__main__":
    sys.exit(main())
