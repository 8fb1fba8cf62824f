"""What a run leaves in its folder, besides checkpoints:

    config.json          every setting of the run and the versions it ran with
    log.csv              a row per training step and per validation
    metrics.json         one record per epoch (the history)
    training-curve.png   loss per step (log scale, moving average); mIoU, pixel acc per epoch
    per-class-iou.png    the latest validation's IoU per class
    confusion.png        its row-normalised confusion matrix
    predictions/         image | ground truth | prediction panels, one per epoch
    eval.json, confusion.csv, predictions/eval.png    written by an evaluation alone
"""

from __future__ import annotations

import csv
import io
import json
import platform
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
        starts an empty log, a resumed one drops rows a crash left past its checkpoint)."""
        if not self.enabled:
            return
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
        atomic_write(self.log_path, lambda f: f.write(text))

    def rows(self) -> list:
        if not self.log_path.is_file():
            return []
        with open(self.log_path, newline="") as f:
            return [row for row in csv.DictReader(f) if row.get("kind") in ("train", "val")]

    def steps(self) -> list:
        """The training rows of log.csv as {"epoch", "step", "loss"} (for the curves)."""
        return [{"epoch": int(r["epoch"]), "step": int(r["step"]), "loss": float(r["loss"])}
                for r in self.rows() if r["kind"] == "train"]

    def _append(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.log_path, "a", newline="") as f:
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
        _write_json(self.out / "metrics.json", history)
        plots.training_curve(self.steps(), history, self.out / "training-curve.png")

    def write_epoch(self, history, scores, hist, class_names, picture, epoch) -> None:
        if not self.enabled:
            return
        self.write_history(history)
        write_image(self.out / "predictions" / f"epoch-{epoch:03d}.png", picture)
        plots.per_class_iou(scores, self.out / "per-class-iou.png")
        plots.confusion(hist, class_names, self.out / "confusion.png")

    def write_evaluation(self, scores, hist, class_names, picture) -> None:
        if not self.enabled:
            return
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
