"""FCN-8s-lite training step and inference, tinyfcn and PyTorch side by side
(benchmarks/README.md, items 1 and 2). Runs are interleaved (A, B, A, B, ...); medians and
their ratio are printed.

    python benchmarks/bench_train_step.py [--repeats 7]
"""

from __future__ import annotations

import argparse

import numpy as np
from common import (
    FORWARD_GFLOP,
    TRAIN_STEP_GFLOP,
    machine,
    median_ms,
    timed,
    tinyfcn_infer,
    tinyfcn_setup,
    tinyfcn_step,
    try_torch,
)
from workload import batch, torch_passes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed steps after 2 warm-ups")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    x, target = batch()
    model, opt = tinyfcn_setup()
    ours_train, ours_infer = tinyfcn_step(model, opt, x, target), tinyfcn_infer(model, x)

    torch = try_torch()
    peers = {}
    if torch is not None:
        torch_train, torch_infer = torch_passes(torch, x, target, model.state_dict())
        peers = {"train": torch_train, "infer": torch_infer}
    rows = []
    for name, ours, gflop in (("train step", ours_train, TRAIN_STEP_GFLOP),
                              ("inference", ours_infer, FORWARD_GFLOP)):
        peer = peers.get("train" if name == "train step" else "infer")
        times, peer_times = [], []
        for i in range(args.repeats + 2):
            t = timed(ours)
            p = timed(peer) if peer else float("nan")
            if i >= 2:
                times.append(t)
                peer_times.append(p)
        rows.append((name, median_ms(times), median_ms(peer_times), gflop))
    print(f"\nFCN-8s-lite, batch 8 x 3 x 128 x 128, medians of {args.repeats} interleaved runs\n")
    print("| what | tinyfcn ms | PyTorch ms | ratio "
          "| tinyfcn GFLOP/s (FLOPs of direct convolution) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, ours_ms, peer_ms, gflop in rows:
        ratio = ours_ms / peer_ms if np.isfinite(peer_ms) else float("nan")
        print(f"| {name} | {ours_ms:.0f} | {peer_ms:.0f} | {ratio:.2f}x | "
              f"{gflop / ours_ms * 1000:.0f} |")


if __name__ == "__main__":
    main()
