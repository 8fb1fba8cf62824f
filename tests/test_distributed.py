"""Data-parallel training over MPI: 2 ranks give the single-process model, one set of files,
and refuse a mismatched launch. Skipped where mpi4py or mpiexec is missing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyfcn
from tinyfcn.distributed import World, flat_gradients, launched_size, set_flat_gradients

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_voc_subset.py"


def mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install -e \".[distributed]\")")
    path = shutil.which("mpiexec")
    if path is None:
        pytest.skip("no mpiexec on PATH")
    return path


def clean_env():
    """This test process's environment without an MPI launch of its own."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PMI_", "OMPI_", "MPI_", "HYDRA_"))}


def test_a_single_process_is_a_world_of_one(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    world = World.from_environment()
    assert (world.rank, world.size, world.is_root, launched_size()) == (0, 1, True, 1)
    a = np.arange(3.0)
    assert world.sum_(a) is a and np.array_equal(a, [0, 1, 2])
    world.check_same("anything", {"x": 1})  # nothing to compare with


def test_gradients_flatten_and_come_back():
    from tinyfcn import nn
    ps = [nn.Parameter(np.ones((2, 3), np.float32)), nn.Parameter(np.ones(4, np.float32)),
          nn.Parameter(np.ones(2, np.float32))]
    ps[0].grad = np.arange(6, dtype=np.float32).reshape(2, 3)
    ps[2].grad = np.array([7, 8], np.float32)  # ps[1] has no gradient
    flat = flat_gradients(ps)
    assert flat.tolist() == [0, 1, 2, 3, 4, 5, 7, 8]
    set_flat_gradients(ps, flat * 2)
    assert ps[0].grad.tolist() == [[0, 2, 4], [6, 8, 10]] and ps[1].grad is None
    assert ps[2].grad.tolist() == [14, 16]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from test_data_metrics import write_voc_fixture
    return write_voc_fixture(tmp_path_factory.mktemp("data") / "voc", num_classes=3, n=8)


def run(args, ranks=None, timeout=300):
    command = [sys.executable, str(SCRIPT), *args]
    if ranks:
        command = [mpiexec(), "-n", str(ranks), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=clean_env())


TOY = ["--crop-size", "32", "32", "-b", "4", "--time-budget", "0", "--epochs", "2",
       "--optimizer", "sgd", "--lr", "0.05", "--seed", "3"]


def test_two_ranks_train_the_single_process_model(voc, tmp_path):
    mpiexec()
    one, two = tmp_path / "one", tmp_path / "two"
    single = run(["--voc-root", str(voc), "--out", str(one), *TOY])
    assert single.returncode == 0, single.stderr[-2000:]
    double = run(["--voc-root", str(voc), "--out", str(two), *TOY], ranks=2)
    assert double.returncode == 0, double.stderr[-2000:]
    assert double.stdout.count("Done in") == 1  # rank 0 alone prints
    a = tinyfcn.load(one / "checkpoint-last.npz")
    b = tinyfcn.load(two / "checkpoint-last.npz")
    assert b["position"] == a["position"]
    for k in a["model"]:
        np.testing.assert_allclose(b["model"][k], a["model"][k], rtol=2e-4, atol=2e-6,
                                   err_msg=k)
    ma = json.loads((one / "metrics.json").read_text())
    mb = json.loads((two / "metrics.json").read_text())
    for ra, rb in zip(ma, mb, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["pixel_acc"] == pytest.approx(ra["pixel_acc"], abs=1e-3)
    assert not list(two.glob(".*.tmp"))  # no half-written files of a second writer


def test_a_launch_whose_ranks_disagree_is_refused(voc, tmp_path):
    launcher = mpiexec()
    command = [launcher, "-n", "1", sys.executable, str(SCRIPT), "--voc-root", str(voc),
               "--out", str(tmp_path / "a"), *TOY, ":", "-n", "1", sys.executable, str(SCRIPT),
               "--voc-root", str(voc), "--out", str(tmp_path / "a"), *TOY, "--seed", "4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=clean_env())
    assert result.returncode != 0
    assert "the ranks disagree" in result.stderr


def test_the_batch_must_split_evenly_between_the_ranks(voc, tmp_path):
    mpiexec()
    result = run(["--voc-root", str(voc), "--out", str(tmp_path / "o"), *TOY, "-b", "3"],
                 ranks=2)
    assert result.returncode != 0 and "multiple of the 2 ranks" in result.stderr


def test_sigterm_stops_every_rank_with_one_checkpoint_and_the_run_resumes(voc, tmp_path):
    import signal
    import time
    launcher = mpiexec()
    out = tmp_path / "run"
    process = subprocess.Popen([launcher, "-n", "2", sys.executable, str(SCRIPT), "--voc-root",
                                str(voc), "--out", str(out), *TOY, "--epochs", "100000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=clean_env())
    deadline = time.time() + 120
    while not (out / "metrics.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # mpiexec forwards it to both ranks
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 130 and stdout.count("Interrupted by SIGTERM") == 1
    position = tinyfcn.load(out / "checkpoint-last.npz")["position"]
    assert position["epoch"] >= 1
    resumed = run(["--resume", str(out / "checkpoint-last.npz"),
                   "--epochs", str(position["epoch"] + 1)], ranks=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert tinyfcn.load(out / "checkpoint-last.npz")["position"]["epoch"] == position["epoch"] + 1


@pytest.mark.parametrize("loss", ["ce+dice"])  # a per-pixel and a per-image term
def test_two_ranks_train_the_single_process_model_with_a_per_image_loss(voc, tmp_path, loss):
    mpiexec()
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--voc-root", str(voc), *TOY, "--epochs", "1", "--loss", loss]
    single = run([*args, "--out", str(one)])
    assert single.returncode == 0, single.stderr[-2000:]
    double = run([*args, "--out", str(two)], ranks=2)
    assert double.returncode == 0, double.stderr[-2000:]
    a = tinyfcn.load(one / "checkpoint-last.npz")
    b = tinyfcn.load(two / "checkpoint-last.npz")
    for k in a["model"]:
        np.testing.assert_allclose(b["model"][k], a["model"][k], rtol=2e-4, atol=2e-6,
                                   err_msg=k)
    assert b["history"][0]["train_loss"] == pytest.approx(a["history"][0]["train_loss"],
                                                          rel=1e-4)
