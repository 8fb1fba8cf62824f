"""Predictions of several checkpoints on the same validation images, side by side.

    python examples/compare_predictions.py runs/fcn32s/checkpoint-best.npz \\
        runs/fcn16s/checkpoint-best.npz runs/fcn8s/checkpoint-best.npz --out compare.png

Each row: image | ground truth | one prediction per checkpoint (VOC palette).
Uses the built-in data set unless --voc-root is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tinyfcn
from tinyfcn import models
from tinyfcn.data import DataError, VOCSegmentation, colorize, synthetic, write_image
from tinyfcn.data.visualize import panel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--voc-root", type=Path, help="a VOC-layout folder (default: built-in set)")
    p.add_argument("--split", default="val")
    p.add_argument("--images", type=int, nargs="+", default=[0, 1, 2, 3],
                   help="indices of the images in the split")
    p.add_argument("--out", type=Path, default=Path("compare.png"))
    args = p.parse_args(argv)
    try:
        root = args.voc_root or synthetic.ensure()
        dataset = VOCSegmentation(root, args.split)
        nets = [models.from_checkpoint(tinyfcn.load(path), path).eval()
                for path in args.checkpoints]
        rows = []
        for i in args.images:
            image, label = dataset[i]
            rows.append([image, colorize(label), *(colorize(net.predict(image)) for net in nets)])
    except (DataError, FileNotFoundError, ValueError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_image(args.out, panel(rows, height=112, titles=["image", "ground truth", *(
        n.config["model"] for n in nets)]))
    names = ", ".join(n.config["model"] for n in nets)
    print(f"Wrote {args.out}: image | ground truth | {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
