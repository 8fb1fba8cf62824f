"""Overlay the training curves of several runs: the comparison between FCN-32s, 16s and 8s.

    tinyfcn-plot-runs runs/fcn32s runs/fcn16s runs/fcn8s --out runs.png

Reads each run folder's log.csv and metrics.json (written by tinyfcn-train) and draws
the loss (moving average, log scale) and the validation mean IoU per epoch, one line
per run, named by its folder (and by its loss function where the runs trained with
different ones: their losses are then on different scales, and only mIoU compares them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from tinyfcn import plots
from tinyfcn.report import RunFolder


def read_run(folder: Path) -> tuple[list, list]:
    """(training steps, per-epoch records) of a run folder; ValueError naming what is
    wrong."""
    try:
        history = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder}: no readable metrics.json ({e})") from None
    if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r
                                                and "mean_iou" in r for r in history):
        raise ValueError(f"{folder}: metrics.json is not a list of epoch records")
    try:
        steps = RunFolder(folder).steps()
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{folder}: unreadable log.csv ({e})") from None
    return steps, history


def loss_name(folder: Path) -> str:
    """The loss a run trained with, as its config.json records it (cross-entropy for runs
    from before --loss)."""
    try:
        terms = json.loads((folder / "config.json").read_text()).get("loss")
    except (OSError, ValueError, AttributeError):
        terms = None
    return "+".join(terms) if isinstance(terms, list) and terms else "cross_entropy"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run folders (--out of the training)")
    p.add_argument("--out", type=Path, default=Path("runs.png"),
                   help="the picture (default: runs.png)")
    args = p.parse_args(argv)
    # each run is named by its folder, or by its whole path where two folders share a name
    names = [folder.resolve().name for folder in args.runs]
    losses = [loss_name(folder) for folder in args.runs]
    if len(set(losses)) > 1:
        names = [f"{name} ({loss})" for name, loss in zip(names, losses)]
    runs = {}
    try:
        for folder, name in zip(args.runs, names):
            runs[name if names.count(name) == 1 else str(folder)] = read_run(folder)
        plots.compare_runs(runs, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best = {name: max((r["mean_iou"] for r in history if not math.isnan(r["mean_iou"])),
                      default=float("nan")) for name, (_, history) in runs.items()}
    print(f"Wrote {args.out}: " + ", ".join(f"{name} (best mIoU {v:.3f})"
                                            for name, v in best.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
