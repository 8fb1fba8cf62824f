"""Overlay the training curves of several runs: the comparison between FCN-32s, 16s and 8s.

    python examples/plot_runs.py runs/fcn32s runs/fcn16s runs/fcn8s --out runs.png

Reads each run folder's log.csv and metrics.json (written by train_voc_subset.py) and
draws the loss (moving average, log scale) and the validation mean IoU per epoch, one
line per run, named by its folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from tinyfcn import plots
from tinyfcn.report import RunFolder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run folders (--out of the training)")
    p.add_argument("--out", type=Path, default=Path("runs.png"), help="the picture")
    args = p.parse_args(argv)
    runs = {}
    for folder in args.runs:
        try:
            history = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError) as e:
            print(f"error: {folder}: no readable metrics.json ({e})", file=sys.stderr)
            return 2
        runs[folder.name] = (RunFolder(folder).steps(), history)
    plots.compare_runs(runs, args.out)
    best = {name: max((r["mean_iou"] for r in history if not math.isnan(r["mean_iou"])),
                      default=float("nan")) for name, (_, history) in runs.items()}
    print(f"Wrote {args.out}: " + ", ".join(f"{name} (best mIoU {v:.3f})"
                                            for name, v in best.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
