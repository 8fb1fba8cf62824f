"""The physical limit of the FCN-8s-lite step: its products' FLOPs, per conv2d algorithm as
the per-layer choice runs them, over this machine's measured float32 GEMM peak
(benchmarks/README.md, "The physical limit").

    python benchmarks/bench_limit.py

FLOPs count the products only (2 per multiply-add): im2col-style passes (im2col,
im2col-tiled, direct, 1x1, transposed conv) 2*C_out*C*kH*kW*N*H_out*W_out each; Winograd
F(2x2, 3x3) 2*16*C_out*C*N*tH*tW (its transforms are additions, bound by memory). A training
step runs the forward, the weight gradient and the input gradient (not for the image).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from common import TRAIN_STEP_GFLOP, machine, median_ms, timed, tinyfcn_setup, tinyfcn_step
from tinyfcn.kernels import matmul
from workload import batch

import tinyfcn
import tinyfcn.functional.conv as conv
import tinyfcn.functional.conv_algorithms as algorithms


def record_convolutions():
    """Run one training step and return [(kind, geo, C_out, N, algorithm, input needs grad)]."""
    calls = []
    pick = algorithms.function_for

    def function_for(geo, C_out, algorithm):
        function = pick(geo, C_out, algorithm)
        name = next(k for k, v in algorithms._FUNCTIONS.items() if v is function)
        calls.append(["conv2d", geo, C_out, name])
        return function

    transposed_forward = conv.ConvTranspose2d.forward

    def transposed(self, x, w, b=None):
        calls.append(["conv_transpose2d", self.geo, x.shape[1], "im2col", x.shape[0], True])
        return transposed_forward(self, x, w, b)

    conv_forward = {cls: cls.forward for cls in set(algorithms._FUNCTIONS.values())}

    def wrap(cls):
        def forward(self, x, *rest):
            calls[-1][4:] = [x.shape[0], self.needs_input_grad[0]]
            return conv_forward[cls](self, x, *rest)
        return forward

    algorithms.function_for = function_for
    conv.ConvTranspose2d.forward = transposed
    for cls in conv_forward:
        cls.forward = wrap(cls)
    try:
        x, target = batch()
        model, opt = tinyfcn_setup()
        tinyfcn_step(model, opt, x, target)()
    finally:
        algorithms.function_for = pick
        conv.ConvTranspose2d.forward = transposed_forward
        for cls, forward in conv_forward.items():
            cls.forward = forward
    return calls


def pass_flop(geo, C_out, N, winograd):
    if winograd:
        return 2 * 16 * C_out * geo.C * N * ((geo.H_out + 1) // 2) * ((geo.W_out + 1) // 2)
    return 2 * C_out * geo.C * geo.kH * geo.kW * N * geo.H_out * geo.W_out


def main():
    print(f"Machine: {machine()}")
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    matmul(a, a)
    peak = 2 * 2048 ** 3 / (median_ms([timed(lambda: matmul(a, a)) for _ in range(7)]) / 1000)
    train, infer, as_im2col = defaultdict(float), defaultdict(float), 0.0
    for kind, geo, C_out, name, N, input_grad in record_convolutions():
        wino = name == "winograd"
        one = pass_flop(geo, C_out, N, wino)
        im2col_one = pass_flop(geo, C_out, N, False)
        wino_gw = wino and (C_out <= geo.C or min(geo.C, C_out)
                            >= algorithms.WINOGRAD_WEIGHT_GRADIENT_CHANNELS)
        label = kind if kind == "conv_transpose2d" else name
        infer[label] += one
        train[label] += one + (one if input_grad else 0)  # forward, input gradient
        if wino and not wino_gw:  # the weight gradient as im2col's
            train["im2col (weight gradient of widening Winograd layers)"] += im2col_one
        else:
            train[label] += one
        as_im2col += im2col_one * (3 if input_grad else 2)
    total = sum(train.values())
    print(f"\nfloat32 GEMM peak (tinyfcn.kernels.matmul, 2048^3, every core): "
          f"{peak / 1e9:.0f} GFLOP/s")
    print(f"training step: {total / 1e9:.1f} GFLOP of products as run "
          f"({as_im2col / 1e9:.1f} all as im2col; the benchmark's nominal "
          f"{TRAIN_STEP_GFLOP} GFLOP), limit {total / peak * 1000:.0f} ms at peak")
    print(f"inference: {sum(infer.values()) / 1e9:.1f} GFLOP, limit "
          f"{sum(infer.values()) / peak * 1000:.0f} ms at peak\n")
    print("| products of | train GFLOP | share | ms at peak | inference GFLOP |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label in sorted(train, key=train.get, reverse=True):
        print(f"| {label} | {train[label] / 1e9:.1f} | {train[label] / total:.0%} | "
              f"{train[label] / peak * 1000:.0f} | {infer.get(label, 0) / 1e9:.1f} |")


if __name__ == "__main__":
    tinyfcn.set_conv_algorithm(None)
    main()
