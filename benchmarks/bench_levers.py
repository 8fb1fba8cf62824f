"""A/B of one lever of the convolution algorithms on the FCN-8s-lite training step and
inference, in one process, off and on in turns (A, B, A, B, ...); the median of the pairs'
ratios on/off (benchmarks/README.md, "Lever by lever, round 3").

    python benchmarks/bench_levers.py LEVER [--repeats 9]

LEVER is one of: selection (im2col forced everywhere vs the per-layer choice),
winograd-weight-gradient (Winograd's weight gradient in the Winograd layers, as the rule
picks, vs gY @ im2col(X).T everywhere), tiled-first-layer (conv1_1 as im2col-tiled vs direct),
winograd-bands (Winograd band by band on maps of >= 16 x 16 tiles vs the whole batch
between products).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import machine, median_ms, timed, tinyfcn_infer, tinyfcn_setup, tinyfcn_step
from workload import batch

import tinyfcn
import tinyfcn.functional.conv_algorithms as algorithms


def selection(on: bool):
    tinyfcn.set_conv_algorithm(None if on else "im2col")


def winograd_weight_gradient(on: bool):
    algorithms.WINOGRAD_WEIGHT_GRADIENT = on


_choose = algorithms.choose


def tiled_first_layer(on: bool):
    def choose(geo, C_out):
        if geo.C == 3 and not on:
            return "direct"
        return _choose(geo, C_out)
    algorithms.choose = choose


def winograd_bands(on: bool):
    algorithms.WINOGRAD_BAND_TILES = 16 * 16 if on else float("inf")


LEVERS = {"selection": selection, "winograd-bands": winograd_bands,
          "winograd-weight-gradient": winograd_weight_gradient,
          "tiled-first-layer": tiled_first_layer}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", choices=sorted(LEVERS))
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    toggle = LEVERS[args.lever]
    x, target = batch()
    model, opt = tinyfcn_setup()
    step, infer = tinyfcn_step(model, opt, x, target), tinyfcn_infer(model, x)

    print(f"\nlever {args.lever}: medians of {args.repeats} pairs, ms\n")
    print("| pass | off | on | on / off (median of pair ratios) |")
    print("| --- | ---: | ---: | ---: |")
    for label, fn in (("train step", step), ("inference", infer)):
        times = {False: [], True: []}
        for i in range(args.repeats + 1):
            for on in (False, True):
                toggle(on)
                t = timed(fn)
                if i:  # the first pair warms up (JIT, buffers)
                    times[on].append(t)
        ratio = np.median(np.array(times[True]) / np.array(times[False]))
        print(f"| {label} | {median_ms(times[False]):.0f} | {median_ms(times[True]):.0f} | "
              f"{ratio:.3f} |", flush=True)
    toggle(True)


if __name__ == "__main__":
    main()
