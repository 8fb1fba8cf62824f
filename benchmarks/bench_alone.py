"""The headline ratio: FCN-8s-lite training step and inference with each framework alone in
its own process, in turns (tinyfcn, PyTorch, tinyfcn, PyTorch, ...), the median of the
pairs' ratios (../shared/BENCHMARKS.md: two runtimes in one process fight over threads).

    python benchmarks/bench_alone.py [--pairs 7] [--steps 5] [--algorithm im2col]

Each process runs 2 warm-up steps and --steps timed ones, then the same for inference,
and reports its medians; tinyfcn runs with `configure_runtime()` (its documented settings),
PyTorch with its defaults. --algorithm forces one conv2d algorithm in tinyfcn's processes
(default: the per-layer choice).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import FORWARD_GFLOP, TRAIN_STEP_GFLOP, machine

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
sys.path.insert(0, {here!r})
from workload import batch, torch_passes
x, target = batch()
if {which!r} == "tinyfcn":
    from common import tinyfcn_infer, tinyfcn_setup, tinyfcn_step
    import tinyfcn
    tinyfcn.set_conv_algorithm({algorithm!r})
    model, opt = tinyfcn_setup()
    step, infer = tinyfcn_step(model, opt, x, target), tinyfcn_infer(model, x)
else:  # PyTorch alone: tinyfcn is not even imported
    import torch
    step, infer = torch_passes(torch, x, target)
def median_s(fn, n):
    fn(); fn()
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return sorted(times)[n // 2]
print(json.dumps({{"step": median_s(step, {steps}), "infer": median_s(infer, {steps})}}))
"""


def run_child(which: str, steps: int, algorithm) -> dict:
    code = CHILD.format(here=str(HERE), which=which, steps=steps, algorithm=algorithm)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--algorithm", default=None, help="force one conv2d algorithm")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    runs = {"tinyfcn": [], "torch": []}
    for i in range(args.pairs):
        for which in runs:
            runs[which].append(run_child(which, args.steps, args.algorithm))
        print(f"pair {i + 1}: tinyfcn {runs['tinyfcn'][-1]}, PyTorch {runs['torch'][-1]}",
              flush=True)
    print(f"\nFCN-8s-lite, batch 8 x 3 x 128 x 128, each alone in turns, {args.pairs} pairs "
          f"(tinyfcn conv2d algorithm: {args.algorithm or 'per layer'})\n")
    print("| what | tinyfcn ms | PyTorch ms | ratio (median of pairs) "
          "| tinyfcn GFLOP/s (FLOPs of direct convolution) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, label in (("step", "train step"), ("infer", "inference")):
        ours = np.array([r[key] for r in runs["tinyfcn"]])
        theirs = np.array([r[key] for r in runs["torch"]])
        gflop = (TRAIN_STEP_GFLOP if key == "step" else FORWARD_GFLOP) / np.median(ours)
        print(f"| {label} | {np.median(ours) * 1000:.0f} | {np.median(theirs) * 1000:.0f} | "
              f"{np.median(ours / theirs):.2f}x | {gflop:.0f} |")


if __name__ == "__main__":
    main()
