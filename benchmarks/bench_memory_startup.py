"""Peak resident memory of a training step and JIT start-up time (benchmarks/README.md, items 5, 6).

    python benchmarks/bench_memory_startup.py

Each measurement runs in a fresh process: peak RSS of 3 FCN-8s-lite training steps
(batch 8, 3 x 128 x 128) for tinyfcn and PyTorch, and the seconds from
`import tinyfcn` to the first finished training step with a warm Numba cache and
with a cold one (an empty NUMBA_CACHE_DIR).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine

HERE = Path(__file__).resolve().parent

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
sys.path.insert(0, {here!r})
which = {which!r}
from workload import batch, torch_passes
x, target = batch()
if which == "tinyfcn":
    from common import tinyfcn_infer, tinyfcn_setup, tinyfcn_step
    import tinyfcn
    model, opt = tinyfcn_setup()
    step, infer = tinyfcn_step(model, opt, x, target), tinyfcn_infer(model, tinyfcn.Tensor(x))
else:  # PyTorch alone: tinyfcn is not even imported
    import torch
    step, infer = torch_passes(torch, x, target)
step()
first = time.perf_counter() - start
for _ in range(2):
    step()
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def median_s(fn, n=9):
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return sorted(times)[n // 2]
print(json.dumps({{"first_step_s": first, "peak_mb": peak_mb, "step_s": median_s(step),
                  "infer_s": median_s(infer)}}))
"""


def run_child(which: str, env=None) -> dict:
    code = CHILD.format(here=str(HERE), which=which)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    print(f"Machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as cold_cache:
        cold = run_child("tinyfcn", {"NUMBA_CACHE_DIR": cold_cache})
    warm = run_child("tinyfcn")
    try:
        import torch  # noqa: F401
        peer = run_child("torch")
    except (ImportError, subprocess.CalledProcessError):
        peer = None
        print("PyTorch is not installed: tinyfcn only")
    print("| what | tinyfcn | PyTorch | ratio |")
    print("| --- | ---: | ---: | ---: |")
    if peer:
        print(f"| peak RSS of a training step | {warm['peak_mb']:.0f} MB | "
              f"{peer['peak_mb']:.0f} MB | {warm['peak_mb'] / peer['peak_mb']:.2f}x |")
        print(f"| import to first step finished | {warm['first_step_s']:.1f} s (warm cache) | "
              f"{peer['first_step_s']:.1f} s | |")
        for key, what in [("step_s", "training step, each alone (median of 9)"),
                          ("infer_s", "inference, each alone (median of 9)")]:
            print(f"| {what} | {warm[key] * 1000:.0f} ms | {peer[key] * 1000:.0f} ms | "
                  f"{warm[key] / peer[key]:.2f}x |")
    else:
        print(f"| peak RSS of a training step | {warm['peak_mb']:.0f} MB | | |")
        print(f"| import to first step finished | {warm['first_step_s']:.1f} s (warm cache) "
              f"| | |")
    print(f"| import to first step finished, cold Numba cache | {cold['first_step_s']:.1f} s "
          f"| | |")


if __name__ == "__main__":
    main()
