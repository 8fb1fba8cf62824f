"""Shared set-up of the benchmarks: FCN-8s-lite in tinyfcn, timing helpers, the machine."""

from __future__ import annotations

import platform
import subprocess
import time

import numpy as np
import threadpoolctl
from workload import BATCH, CLASSES

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import models, optim

tinyfcn.configure_runtime()  # what tinyfcn's own entry points run with

TRAIN_STEP_GFLOP = 46.7  # benchmarks/README.md: forward + backward of 8 images at 3 x 128 x 128
FORWARD_GFLOP = 1.95 * BATCH


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    blas = next((f"{i['internal_api']} {i['version']}, {i.get('architecture')} kernel"
                 for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"),
                "BLAS unknown")
    return (f"{cpu}, {cores} cores, Python {platform.python_version()}, "
            f"NumPy {np.__version__} ({blas})")


def try_torch():
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: tinyfcn only (pip install -e '.[bench]' to compare)")
        return None
    return torch


def median_ms(times) -> float:
    return float(np.median(times) * 1000)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tinyfcn_step(model, opt, x, target):
    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), target).backward()
        opt.step()
    return step


def tinyfcn_infer(model, x):
    def infer():
        with tinyfcn.no_grad():
            model(x)
    return infer


def tinyfcn_setup():
    tinyfcn.manual_seed(0)
    model = models.fcn8s(CLASSES, backbone="lite")
    return model, optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
