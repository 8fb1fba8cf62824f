"""Per-layer timings of FCN-8s-lite's ops, tinyfcn and PyTorch side by side, with the NumPy
matmul roofline of each conv's GEMM shapes (BENCHMARKS.md items 3 and 4).

    python benchmarks/bench_ops.py [--repeats 5]

For a 3x3 conv, "fwd+bwd" is forward, input gradient and weight gradient; "roofline"
is NumPy float32 matmul on the same three GEMM shapes, so tinyfcn / roofline says
how much time goes outside the GEMMs (im2col, col2im, copies).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import machine, median_ms, timed, try_torch
from workload import BATCH, SIZE

import tinyfcn.functional as F
from tinyfcn import Tensor

# (name, C_in, C_out, input size) of each 3x3 encoder conv at batch 8, 3 x 128 x 128
ENCODER = [("conv1_1", 3, 32, SIZE), ("conv1_2", 32, 32, SIZE),
           ("conv2_1", 32, 64, SIZE // 2), ("conv2_2", 64, 64, SIZE // 2),
           ("conv3_1", 64, 128, SIZE // 4), ("conv3_2", 128, 128, SIZE // 4),
           ("conv4_1", 128, 256, SIZE // 8), ("conv4_2", 256, 256, SIZE // 8),
           ("conv5_1", 256, 256, SIZE // 16), ("conv5_2", 256, 256, SIZE // 16),
           ("fc6", 256, 512, SIZE // 32)]


def interleaved(fns, repeats):
    """Median seconds of each function, run in turn (A, B, C, A, B, C, ...) after a warm-up."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t.append(timed(fn))
    return [median_ms(t) for t in times]


def conv_case(rng, c_in, c_out, size, torch):
    x = Tensor(rng.standard_normal((BATCH, c_in, size, size)).astype(np.float32),
               requires_grad=True)
    w = Tensor(rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32) * 0.1,
               requires_grad=True)
    g = rng.standard_normal((BATCH, c_out, size, size)).astype(np.float32)

    def ours():
        x.grad = w.grad = None
        F.conv2d(x, w, padding=1).backward(g)

    K, NL = c_in * 9, BATCH * size * size
    a, col, gy = (rng.standard_normal(s).astype(np.float32) for s in
                  ((c_out, K), (K, NL), (c_out, NL)))

    def roofline():  # forward, input-gradient and weight-gradient GEMMs
        a @ col
        a.T @ gy
        gy @ col.T

    fns = [ours, roofline]
    if torch is not None:
        xt = torch.tensor(x.data, requires_grad=True)
        wt = torch.tensor(w.data, requires_grad=True)
        gt = torch.tensor(g)

        def theirs():
            xt.grad = wt.grad = None
            torch.nn.functional.conv2d(xt, wt, padding=1).backward(gt)
        fns.append(theirs)
    return fns, 3 * 2 * c_out * K * NL / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    torch = try_torch()
    rng = np.random.default_rng(0)
    print(f"\nbatch {BATCH}, 3 x {SIZE} x {SIZE} input, medians of {args.repeats}\n")
    print("| op (fwd+bwd) | shape | tinyfcn ms | GFLOP/s | % of matmul roofline | "
          "PyTorch ms | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, c_in, c_out, size in ENCODER:
        fns, gflop = conv_case(rng, c_in, c_out, size, torch)
        ms = interleaved(fns, args.repeats)
        peer = ms[2] if len(ms) > 2 else float("nan")
        print(f"| {name} 3x3 | {c_in}->{c_out} @ {size}x{size} | {ms[0]:.1f} | "
              f"{gflop / ms[0] * 1000:.0f} | {ms[1] / ms[0]:.0%} | {peer:.1f} | "
              f"{ms[0] / peer:.2f}x |")
    others = []
    x = Tensor(rng.standard_normal((BATCH, 21, SIZE // 8, SIZE // 8)).astype(np.float32),
               requires_grad=True)
    w = Tensor(rng.standard_normal((21, 21, 16, 16)).astype(np.float32), requires_grad=True)
    g_up = rng.standard_normal((BATCH, 21, SIZE, SIZE)).astype(np.float32)
    others.append(("conv_transpose2d k16 s8", "21->21 @ 16x16",
                   lambda: F.conv_transpose2d(x, w, stride=8, padding=4).backward(g_up),
                   "conv_transpose2d", (x, w), dict(stride=8, padding=4), g_up))
    p = Tensor(rng.standard_normal((BATCH, 64, SIZE, SIZE)).astype(np.float32),
               requires_grad=True)
    g_pool = rng.standard_normal((BATCH, 64, SIZE // 2, SIZE // 2)).astype(np.float32)
    others.append(("max_pool2d 2x2 + switches", "64 @ 128x128",
                   lambda: F.max_pool2d(p, 2, return_indices=True)[0].backward(g_pool),
                   "max_pool2d", (p,), dict(kernel_size=2, return_indices=True), g_pool))
    pooled, idx = F.max_pool2d(p.data, 2, return_indices=True)
    u = Tensor(pooled.data, requires_grad=True)
    g_un = rng.standard_normal(p.shape).astype(np.float32)
    others.append(("max_unpool2d", "64 @ 64x64 -> 128x128",
                   lambda: F.max_unpool2d(u, idx, 2).backward(g_un),
                   "max_unpool2d", (u,), dict(kernel_size=2), g_un))
    for label, shape, ours, torch_name, inputs, kwargs, grad in others:
        fns = [ours]
        if torch is not None:
            tensors = [torch.tensor(t.data, requires_grad=True) for t in inputs]
            extra = (torch.tensor(idx),) if torch_name == "max_unpool2d" else ()
            gt = torch.tensor(grad)

            def theirs(tensors=tensors, extra=extra, gt=gt, torch_name=torch_name,
                       kwargs=kwargs):
                out = getattr(torch.nn.functional, torch_name)(*tensors, *extra, **kwargs)
                (out[0] if isinstance(out, tuple) else out).backward(gt)
            fns.append(theirs)
        ms = interleaved(fns, args.repeats)
        peer = ms[1] if len(ms) > 1 else float("nan")
        print(f"| {label} | {shape} | {ms[0]:.1f} | | | {peer:.1f} | {ms[0] / peer:.2f}x |")


if __name__ == "__main__":
    main()
