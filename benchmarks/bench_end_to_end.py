"""The whole main job, not just its step: images per second of
`examples/train_voc_subset.py` at 160 x 224, batch 8, on a VOC-layout folder of 480 x 360
JPEGs (written here from the built-in generator), beside PyTorch's training step alone on
the same batch shape, and how a tinyfcn epoch splits into data loading, the step and
bookkeeping (logging, the progress bar, the run folder).

    python benchmarks/bench_end_to_end.py [--images 160] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, median_ms, timed, try_torch
from PIL import Image
from workload import CLASSES, torch_fcn8s_lite

from tinyfcn.data import VOCSegmentation, synthetic, write_image, write_label
from tinyfcn.data.loader import epoch_batches
from tinyfcn.data.transforms import TrainAugment

ROOT = Path(__file__).resolve().parents[1]
CROP, BATCH, PHOTO = (160, 224), 8, (360, 480)  # crop H x W, images per step, JPEG H x W


def write_voc_folder(root: Path, n_train: int, n_val: int) -> Path:
    """Generator scenes enlarged to 480 x 360 (labels by nearest neighbour) as JPEG + PNG."""
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, count in [("train", n_train), ("val", n_val)]:
        ids = [f"{split}_{i:05d}" for i in range(count)]
        for image_id in ids:
            image, label = synthetic.draw_scene(rng)
            size = PHOTO[::-1]  # Pillow's (W, H)
            image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
            label = np.array(Image.fromarray(label).resize(size, Image.NEAREST))
            write_image(root / "JPEGImages" / f"{image_id}.jpg", image)
            write_label(root / "SegmentationClass" / f"{image_id}.png", label)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "class_names.txt").write_text("\n".join(synthetic.CLASS_NAMES) + "\n")
    return root


def loading_seconds(root: Path, workers: int) -> float:
    """Decoding and augmenting one epoch's batches, nothing else (as the Trainer does)."""
    data = VOCSegmentation(root, "train")
    start = time.perf_counter()
    for _ in epoch_batches(data, np.arange(len(data)), BATCH, TrainAugment(CROP), 0, 1,
                           workers=workers):
        pass
    return time.perf_counter() - start


def run_script(root: Path, out: Path, workers: int) -> dict:
    """One epoch of the main job; its own records say how long the epoch and each step took."""
    subprocess.run([sys.executable, str(ROOT / "examples" / "train_voc_subset.py"),
                    "--voc-root", str(root), "--crop-size", *map(str, CROP), "-b", str(BATCH),
                    "--epochs", "1", "--time-budget", "0", "--workers", str(workers),
                    "--out", str(out)], check=True, capture_output=True)
    epoch = json.loads((out / "metrics.json").read_text())[0]
    with open(out / "log.csv", newline="") as f:
        steps = [float(r["seconds"]) for r in csv.DictReader(f) if r["kind"] == "train"]
    return {"epoch": epoch["seconds"], "steps": steps}


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%"


def torch_step_ms(torch, repeats: int = 10) -> float:
    torch.manual_seed(0)
    model = torch_fcn8s_lite(torch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, 3, *CROP)
    target = torch.randint(0, CLASSES, (BATCH, *CROP))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target, ignore_index=255).backward()
        opt.step()
    for _ in range(2):
        step()
    return median_ms([timed(step) for _ in range(repeats)])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=160, help="training images (one epoch)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="--workers values of the main job to measure")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        root = write_voc_folder(Path(tmp) / "voc", args.images, 8)
        print(f"{args.images} training JPEGs of {PHOTO[1]} x {PHOTO[0]}, crops "
              f"{CROP[0]} x {CROP[1]}, batch {BATCH}\n")
        print("| what | images/s | s per step | loading | step | bookkeeping |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for workers in args.workers:
            run = run_script(root, Path(tmp) / f"run{workers}", workers)
            n_steps = len(run["steps"])
            load = loading_seconds(root, 0) if workers == 0 else None
            step, epoch = sum(run["steps"]), run["epoch"]
            rest = epoch - step
            loading, bookkeeping = ((percent(load, epoch), percent(rest - load, epoch))
                                    if load is not None else ("(overlapped)", percent(rest, epoch)))
            print(f"| train_voc_subset.py --workers {workers} | "
                  f"{n_steps * BATCH / run['epoch']:.1f} | {run['epoch'] / n_steps:.2f} | "
                  f"{loading} | {percent(step, epoch)} | {bookkeeping} |")
        median_step = float(np.median(run["steps"][1:]))
        print(f"| tinyfcn step alone (median) | {BATCH / median_step:.1f} | {median_step:.2f} "
              f"| | | |")
        torch = try_torch()
        if torch is not None:
            ms = torch_step_ms(torch)
            print(f"| PyTorch {torch.__version__} step alone (median) | {BATCH / ms * 1000:.1f} "
                  f"| {ms / 1000:.2f} | | | |")


if __name__ == "__main__":
    main()
