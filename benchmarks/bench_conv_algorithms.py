"""Each conv2d algorithm on each 3x3 layer shape of FCN-8s-lite, and PyTorch's conv2d beside
them: the measurements behind `tinyfcn.functional.conv_algorithms.choose`
(benchmarks/README.md, "Convolution algorithms per layer").

    python benchmarks/bench_conv_algorithms.py [--repeats 7] [--layers conv1_2,conv3_2]

"inference" is the forward under no_grad; "train" is forward + backward as the layer runs
in a training step (input gradient too, except for conv1_1, whose input is the image).
All candidates of one layer run in turns (A, B, C, A, B, C, ...): medians in ms.
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_ops import ENCODER
from common import machine, median_ms, timed, try_torch
from workload import BATCH

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import Tensor
from tinyfcn.functional.conv import _geometry
from tinyfcn.functional.conv_algorithms import ALGORITHMS, choose, unsupported


def candidates(name, c_in, c_out, size, torch, rng):
    """{label: (inference fn, train fn)} for one layer shape."""
    x = rng.standard_normal((BATCH, c_in, size, size)).astype(np.float32)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    g = rng.standard_normal((BATCH, c_out, size, size)).astype(np.float32)
    needs_input_grad = name != "conv1_1"
    geo = _geometry(c_in, size, size, 3, 3, (1, 1), (1, 1), (1, 1))
    fns = {}
    for algorithm in ALGORITHMS:
        if unsupported(algorithm, geo, c_out) is not None:
            continue
        xt = Tensor(x, requires_grad=needs_input_grad)
        wt, bt = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)

        def infer(a=algorithm):
            with tinyfcn.no_grad():
                F.conv2d(x, w, b, padding=1, algorithm=a)

        def train(a=algorithm, xt=xt, wt=wt, bt=bt):
            F.conv2d(xt, wt, bt, padding=1, algorithm=a).backward(g)
        fns[algorithm] = (infer, train)
    if torch is not None:
        tx = torch.tensor(x, requires_grad=needs_input_grad)
        tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
        tg = torch.tensor(g)

        def t_infer():
            with torch.no_grad():
                torch.nn.functional.conv2d(tx, tw, tb, padding=1)

        def t_train():
            torch.nn.functional.conv2d(tx, tw, tb, padding=1).backward(tg)
        fns["PyTorch"] = (t_infer, t_train)
    return fns, geo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layers", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    torch = try_torch()
    rng = np.random.default_rng(0)
    wanted = set(filter(None, args.layers.split(",")))
    print(f"\nbatch {BATCH}, medians of {args.repeats} interleaved runs, ms\n")
    print("| layer | shape | pass | " + " | ".join([*ALGORITHMS, "PyTorch"]) + " | chosen |")
    print("| --- | --- | --- |" + " ---: |" * (len(ALGORITHMS) + 1) + " --- |")
    for name, c_in, c_out, size in ENCODER:
        if wanted and name not in wanted:
            continue
        fns, geo = candidates(name, c_in, c_out, size, torch, rng)
        for p, label in enumerate(("inference", "train")):
            runs = [fn[p] for fn in fns.values()]
            for fn in runs:  # warm-up (and JIT)
                fn()
            times = [[] for _ in runs]
            for _ in range(args.repeats):
                for t, fn in zip(times, runs):
                    t.append(timed(fn))
            ms = dict(zip(fns, (median_ms(t) for t in times)))
            cells = [f"{ms[a]:.1f}" if a in ms else "" for a in [*ALGORITHMS, "PyTorch"]]
            print(f"| {name} | {c_in}->{c_out} @ {size}x{size} | {label} | "
                  f"{' | '.join(cells)} | {choose(geo, c_out)} |", flush=True)


if __name__ == "__main__":
    main()
