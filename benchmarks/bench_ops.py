"""Per-layer timings of FCN-8s-lite's ops, tinyfcn and PyTorch side by side, with the NumPy
matmul roofline of each conv's GEMM shapes (benchmarks/README.md, items 3 and 4).

    python benchmarks/bench_ops.py [--repeats 5]

For a 3x3 conv, "fwd+bwd" is forward, input gradient and weight gradient; "roofline"
is float32 matmul on the three GEMM shapes of the plain im2col / col2im formulation, on
every core (`tinyfcn.kernels.matmul`, as configured), so roofline / tinyfcn says how
much of the layer's time those products would take; above 100% means tinyfcn's layer
found a cheaper way (the stride-1 input gradient as a convolution).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import machine, median_ms, timed, try_torch
from tinyfcn.kernels import matmul
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
        matmul(a, col)
        matmul(a.T, gy)
        matmul(gy, col.T)

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
    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    _, idx = F.max_pool2d(f32(BATCH, 64, SIZE, SIZE), 2, return_indices=True)
    # (label, shape, op written once for both libraries: op(functional, *inputs), inputs, grad)
    others = [
        ("conv_transpose2d k16 s8", "21->21 @ 16x16",
         lambda f, x, w: f.conv_transpose2d(x, w, stride=8, padding=4),
         [f32(BATCH, 21, SIZE // 8, SIZE // 8), f32(21, 21, 16, 16)], f32(BATCH, 21, SIZE, SIZE)),
        ("max_pool2d 2x2 + switches", "64 @ 128x128",
         lambda f, x: f.max_pool2d(x, 2, return_indices=True)[0],
         [f32(BATCH, 64, SIZE, SIZE)], f32(BATCH, 64, SIZE // 2, SIZE // 2)),
        ("max_unpool2d", "64 @ 64x64 -> 128x128",
         lambda f, x: f.max_unpool2d(x, idx if f is F else torch.tensor(idx.data), 2),
         [f32(BATCH, 64, SIZE // 2, SIZE // 2)], f32(BATCH, 64, SIZE, SIZE)),
    ]
    for label, shape, op, arrays, grad in others:
        mine = [Tensor(a, requires_grad=True) for a in arrays]
        fns = [lambda op=op, mine=mine, grad=grad: op(F, *mine).backward(grad)]
        if torch is not None:
            peer = [torch.tensor(a, requires_grad=True) for a in arrays]
            peer_grad = torch.tensor(grad)
            fns.append(lambda op=op, peer=peer, g=peer_grad:
                       op(torch.nn.functional, *peer).backward(g))
        ms = interleaved(fns, args.repeats)
        peer_ms = ms[1] if len(ms) > 1 else float("nan")
        print(f"| {label} | {shape} | {ms[0]:.1f} | | | {peer_ms:.1f} | {ms[0] / peer_ms:.2f}x |")

if __name__ == "__main__":
    main()
