"""What a run leaves in its folder, besides checkpoints, and what it prints:

    config.json          every setting of the run, its run id and the versions it ran with
    log.csv              a row per training step and per validation
    metrics.json         one record per epoch (the history)
    training-curve.png   loss per step (log scale, moving average); mIoU, pixel acc per epoch
    per-class-iou.png    the latest validation's IoU per class
    confusion.png        its row-normalised confusion matrix
    predictions/         image | ground truth | prediction panels, one per epoch
    eval.json, confusion.csv, predictions/eval.png    written by an evaluation alone
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyfcn import plots
from tinyfcn.data.image_io import write_image
from tinyfcn.fileio import atomic_write

LOG_FIELDS = ["kind", "epoch", "step", "loss", "lr", "seconds", "images_per_s",
              "pixel_acc", "mean_acc", "mean_iou", "fw_iou"]


def versions() -> dict:
    import numba

    import tinyfcn
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "tinyfcn": tinyfcn.__version__}


class OutputError(Exception):
    """The run folder cannot be written (a file in its place, no permission, a full disk);
    the message is one line naming the path."""


@contextlib.contextmanager
def writing(path):
    """Turns an OSError while writing `path` into an `OutputError` naming the file."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"cannot write {e.filename or path}: {e.strerror or e}") from None


def check_writable(folder) -> None:
    """Raise `OutputError` unless `folder` is, or can be made, a folder we may write in;
    creates nothing (the nearest existing ancestor is probed with a temporary file)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {folder}: {existing} is a file, not a folder")
    with writing(existing), tempfile.TemporaryFile(dir=existing):
        pass


def run_id_in(folder) -> str | None:
    """The run id the run folder's config.json names (None: no such file, or no id)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("run_id") if isinstance(config, dict) else None


def print_table(record: dict, log=print) -> None:
    """One epoch's scores and per-class IoU, three classes a line."""
    partial = f", stopped after step {record['steps']}" if "steps" in record else ""
    lines = [f"\nepoch {record['epoch']:>3}  train loss {record['train_loss']:.4f}  "
             f"({record['seconds']:.0f} s{partial})",
             f"  {'pixel acc':>10} {'mean acc':>10} {'mean IoU':>10} {'fw IoU':>10}",
             f"  {record['pixel_acc']:>10.3f} {record['mean_acc']:>10.3f} "
             f"{record['mean_iou']:>10.3f} {record['fw_iou']:>10.3f}"]
    cells = [f"{name[:18]:<18} {'  -  ' if math.isnan(v) else f'{v:.3f}'}"
             for name, v in record["per_class_iou"].items()]
    lines += ["  " + "   ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]
    log("\n".join(lines))
    sys.stdout.flush()


def print_class_weights(names, weights, shares=None, log=print) -> None:
    """The loss weight of each class, beside its share of the training pixels if known."""
    log(f"  {'class':<20} {'pixels':>8} {'weight':>8}")
    for i, (name, weight) in enumerate(zip(names, weights)):
        share = "-" if shares is None else f"{shares[i]:.2%}"
        log(f"  {name[:20]:<20} {share:>8} {weight:>8.3f}")


def _write_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=1, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


class RunFolder:
    """Writes nothing unless `enabled` (in data-parallel training, rank 0 alone writes)."""

    def __init__(self, out, enabled: bool = True):
        self.out, self.enabled = Path(out), enabled
        self.log_path = self.out / "log.csv"

    def start(self, config: dict, epoch: int, step_in_epoch: int) -> None:
        """Write config.json; keep only the log rows up to the run's position (a fresh run
        starts an empty log, a resumed one drops rows a crash left past its checkpoint, and
        a row a crash cut short)."""
        if not self.enabled:
            return
        check_writable(self.out)
        with writing(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
            _write_json(self.out / "config.json", {**config, "versions": versions()})
        def done(row) -> bool:  # logged before the position the run continues from
            e = int(row["epoch"])
            if row["kind"] == "val":
                return e <= epoch or (e == epoch + 1 and step_in_epoch > 0)
            return e <= epoch or (e == epoch + 1 and int(row["step"]) <= step_in_epoch)

        kept = [row for row in self.rows() if done(row)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(kept)
        text = buffer.getvalue().encode()
        with writing(self.log_path):
            atomic_write(self.log_path, lambda f: f.write(text))

    def rows(self) -> list:
        """The complete rows of log.csv (a last line without its newline, left by a crash
        in the middle of an append, is not one)."""
        if not self.log_path.is_file():
            return []
        with open(self.log_path, newline="") as f:
            text = f.read()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()
        return [row for row in csv.DictReader(lines) if row.get("kind") in ("train", "val")
                and None not in row.values()]

    def steps(self) -> list:
        """The training rows of log.csv as {"epoch", "step", "loss"} (for the curves)."""
        return [{"epoch": int(r["epoch"]), "step": int(r["step"]), "loss": float(r["loss"])}
                for r in self.rows() if r["kind"] == "train"]

    def _append(self, row: dict) -> None:
        """One row, in the file when this returns (closing it flushes Python's buffer; the
        row is not fsynced: a crash can cut it short, which `rows` allows for)."""
        if not self.enabled:
            return
        with writing(self.log_path), open(self.log_path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow(row)

    def log_step(self, epoch, step, loss, lr, seconds, images) -> None:
        self._append({"kind": "train", "epoch": epoch, "step": step, "loss": f"{loss:.6g}",
                      "lr": f"{lr:.6g}", "seconds": f"{seconds:.4f}",
                      "images_per_s": f"{images / max(seconds, 1e-9):.2f}"})

    def log_validation(self, record: dict) -> None:
        self._append({"kind": "val", "epoch": record["epoch"],
                      "seconds": f"{record['seconds']:.2f}",
                      **{k: f"{record[k]:.6g}" for k in LOG_FIELDS[7:]}})

    def write_history(self, history) -> None:
        """metrics.json and the training curve."""
        if not self.enabled:
            return
        with writing(self.out):
            _write_json(self.out / "metrics.json", history)
            plots.training_curve(self.steps(), history, self.out / "training-curve.png")

    def write_epoch(self, history, scores, hist, class_names, picture, epoch) -> None:
        if not self.enabled:
            return
        self.write_history(history)
        with writing(self.out):
            write_image(self.out / "predictions" / f"epoch-{epoch:03d}.png", picture)
            plots.per_class_iou(scores, self.out / "per-class-iou.png")
            plots.confusion(hist, class_names, self.out / "confusion.png")

    def write_evaluation(self, scores, hist, class_names, picture) -> None:
        if not self.enabled:
            return
        with writing(self.out):
            self._write_evaluation(scores, hist, class_names, picture)

    def _write_evaluation(self, scores, hist, class_names, picture) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        per_class_acc = np.diag(hist) / np.maximum(hist.sum(axis=1), 1)
        _write_json(self.out / "eval.json", {
            **scores, "per_class_acc": dict(zip(class_names, per_class_acc.tolist())),
            "pixels": int(hist.sum())})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["true \\ predicted", *class_names])
        writer.writerows([name, *row] for name, row in zip(class_names, hist.tolist()))
        text = buffer.getvalue().encode()
        atomic_write(self.out / "confusion.csv", lambda f: f.write(text))
        write_image(self.out / "predictions" / "eval.png", picture)
        plots.per_class_iou(scores, self.out / "per-class-iou.png")
        plots.confusion(hist, class_names, self.out / "confusion.png")
