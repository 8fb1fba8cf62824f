"""Shared set-up of the benchmarks: FCN-8s-lite in tinyfcn and, when torch is installed,
the same network in PyTorch (the benchmark-only peer), with identical weights."""

from __future__ import annotations

import platform
import subprocess
import time

import numpy as np

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import models, optim

BATCH, SIZE, CLASSES = 8, 128, 21
TRAIN_STEP_GFLOP = 46.7  # BENCHMARKS.md: forward + backward of 8 images at 3 x 128 x 128
FORWARD_GFLOP = 1.95 * BATCH


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {cores} cores, Python {platform.python_version()}"


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


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    target = rng.integers(0, CLASSES, (BATCH, SIZE, SIZE))
    return x, target


def tinyfcn_step(model, opt, x, target):
    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), target).backward()
        opt.step()
    return step


def tinyfcn_setup():
    tinyfcn.manual_seed(0)
    model = models.fcn8s(CLASSES, backbone="lite")
    return model, optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def torch_fcn8s_lite(torch, state_dict):
    """FCN-8s-lite in PyTorch, layer for layer, loaded with tinyfcn's weights."""
    nn = torch.nn

    class FCN8sLite(nn.Module):
        def __init__(self):
            super().__init__()
            widths, cin = (32, 64, 128, 256, 256), 3
            for b, w in enumerate(widths, start=1):
                for i in (1, 2):
                    setattr(self, f"conv{b}_{i}", nn.Conv2d(cin, w, 3, padding=1))
                    cin = w
            self.fc6 = nn.Conv2d(256, 512, 3, padding=1)
            self.fc7 = nn.Conv2d(512, 512, 1)
            self.score_fr = nn.Conv2d(512, CLASSES, 1)
            self.score_pool4 = nn.Conv2d(256, CLASSES, 1)
            self.score_pool3 = nn.Conv2d(128, CLASSES, 1)
            self.upscore2 = nn.ConvTranspose2d(CLASSES, CLASSES, 4, 2, 1, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(CLASSES, CLASSES, 4, 2, 1, bias=False)
            self.upscore8 = nn.ConvTranspose2d(CLASSES, CLASSES, 16, 8, 4, bias=False)

        def forward(self, x):
            pools = []
            for b in range(1, 6):
                for i in (1, 2):
                    x = torch.relu(getattr(self, f"conv{b}_{i}")(x))
                x = torch.nn.functional.max_pool2d(x, 2, 2)
                pools.append(x)
            h = self.score_fr(torch.relu(self.fc7(torch.relu(self.fc6(x)))))
            h = self.upscore2(h) + self.score_pool4(pools[3])
            h = self.upscore_pool4(h) + self.score_pool3(pools[2])
            return self.upscore8(h)

    model = FCN8sLite()
    model.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()})
    return model
