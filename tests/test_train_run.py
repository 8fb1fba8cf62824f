"""The training run as a user meets it: one read of a resumed checkpoint, the folder a
resume writes to, divergence, unwritable output, a cut log, MPI failures, thread settings,
defaults fitted to the user's images, and the one step path with its loss terms."""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_architecture import Scenes
from test_data_metrics import write_voc_fixture
from test_distributed import clean_env, mpiexec

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import models, optim
from tinyfcn.cli.train import main
from tinyfcn.data.transforms import TrainAugment
from tinyfcn.distributed import World
from tinyfcn.losses import Term
from tinyfcn.train import Diverged, RunSettings, Trainer

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_voc_subset.py"
TOY = ["--crop-size", "32", "32", "-b", "2", "--time-budget", "0", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_voc_fixture(tmp_path_factory.mktemp("data") / "voc", num_classes=3, n=4)


def make_trainer(out, train=None, val=None, **kwargs):
    tinyfcn.manual_seed(0)
    model = models.fcn8s(2, backbone="lite", fc_width=16)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(model, opt, optim.PolyLR(opt, 12), train or Scenes(4, 0), val or Scenes(2, 1),
                   TrainAugment((32, 32)), out=out, log=lambda text: None, progress=False,
                   **{"batch_size": 2, **kwargs})


# ------------------------------------------------------------------------ resume
def test_from_checkpoint_resumes_a_schedule_without_a_length(tmp_path):
    """PyTorch's StepLR has no total_steps to stretch: the resume restores it as it was."""
    def build(run, model=None):
        trainer = make_trainer(tmp_path / "run")
        trainer.scheduler = optim.StepLR(trainer.optimizer, step_size=1, gamma=0.5)
        return trainer

    build({}).fit(1)
    resumed = Trainer.from_checkpoint(tmp_path / "run" / "checkpoint-last.npz", {}, build,
                                      log=lambda text: None)
    assert resumed.scheduler.last_step == 2 and resumed.optimizer.lr == pytest.approx(0.0125)


def test_a_resume_reads_its_checkpoint_once(voc, tmp_path, monkeypatch):
    import zipfile
    out = tmp_path / "run"
    assert main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY]) == 0
    ckpt = out / "checkpoint-last.npz"
    opened, real = [], zipfile.ZipFile

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == ckpt:
            opened.append(file)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", counting)
    assert main(["--resume", str(ckpt), "--epochs", "2"]) == 0
    assert len(opened) == 1


def test_a_resume_continues_in_its_checkpoints_folder_never_in_another_runs(voc, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "runA", tmp_path / "runB"
    assert main(["--voc-root", str(voc), "--epochs", "1", "--out", "runA", *TOY]) == 0
    shutil.copytree(a, b)  # cp -r runA runB
    before = {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()}
    assert main(["--resume", str(b / "checkpoint-last.npz"), "--epochs", "2"]) == 0
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == before
    assert tinyfcn.load(b / "checkpoint-last.npz")["position"]["epoch"] == 2
    run_id = json.loads((b / "config.json").read_text())["run_id"]
    assert tinyfcn.load(b / "checkpoint-last.npz")["run_id"] == run_id
    # a folder holding another run's checkpoint is refused, and left as it was
    other = tmp_path / "other"
    assert main(["--voc-root", str(voc), "--epochs", "1", "--out", str(other), *TOY]) == 0
    kept = {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()}
    assert main(["--resume", str(b / "checkpoint-last.npz"), "--epochs", "3",
                 "--out", str(other)]) == 2
    assert {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()} == kept


# -------------------------------------------------------------------- divergence
@pytest.mark.parametrize("damage", ["nan weight", "infinite scores"])
def test_a_non_finite_model_is_never_best_and_the_message_names_a_good_checkpoint(tmp_path,
                                                                                 damage):
    trainer = make_trainer(tmp_path / "run")
    trainer.fit(1)
    best = tinyfcn.load(tmp_path / "run" / "checkpoint-best.npz")["model"]
    real_step, steps = trainer.optimizer.step, []

    def step_then_damage():
        real_step()
        steps.append(1)
        if len(steps) == 2:  # the last step of epoch 2: no later loss would show it
            w = trainer.model.score_fr.weight.data
            w[...] = np.nan if damage == "nan weight" else np.float32(3e38)  # finite

    trainer.optimizer.step = step_then_damage
    with pytest.raises(Diverged) as info:
        trainer.fit(2)
    last = tmp_path / "run" / "checkpoint-last.npz"
    assert f"the last good checkpoint is {last} (epoch 1)" in str(info.value)
    assert tinyfcn.load(last)["position"]["epoch"] == 1
    after = tinyfcn.load(tmp_path / "run" / "checkpoint-best.npz")["model"]
    for k in best:
        np.testing.assert_array_equal(after[k], best[k])


def test_divergence_before_any_checkpoint_says_there_is_none(voc, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY]
    assert main([*argv, "--optimizer", "sgd", "--lr", "1e30"]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint of this run was saved" in err
    assert not (out / "checkpoint-best.npz").exists()


def test_class_weights_that_are_not_finite_or_negative_are_refused(voc, tmp_path, capsys):
    for weights in ("nan,1,1", "1,-1,1", "inf,1,1"):
        assert main(["--voc-root", str(voc), "--out", str(tmp_path / "o"), *TOY,
                     "--class-weights", weights]) == 2
        assert "3 finite, non-negative weights are needed" in capsys.readouterr().err
    with pytest.raises(ValueError, match="class_weights must be finite"):
        RunSettings(class_weights=(float("nan"), 1.0))


# ------------------------------------------------------------------------ output
def test_an_output_path_that_is_a_file_is_one_line_before_training(voc, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    for out in (tmp_path / "taken", tmp_path / "taken" / "run"):
        assert main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: cannot write") and "is a file" in err and "\n" not in err
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_full_disk_is_one_line_naming_the_file_and_the_last_checkpoint_stays(voc, tmp_path,
                                                                              monkeypatch,
                                                                              capsys):
    from tinyfcn import fileio
    from tinyfcn.report import RunFolder
    out = tmp_path / "run"
    full, real_fsync, real_log_step = [], os.fsync, RunFolder.log_step

    def fsync(fd):
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def log_step(self, epoch, *args):
        if epoch == 2:
            full.append(True)  # the disk fills up during epoch 2
        real_log_step(self, epoch, *args)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(RunFolder, "log_step", log_step)
    assert main(["--voc-root", str(voc), "--epochs", "2", "--out", str(out), *TOY]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "No space left on device" in err
    assert f"cannot write {out / 'checkpoint-last.npz'}" in err
    assert f"the last good checkpoint is {out / 'checkpoint-last.npz'} (epoch 1)" in err
    monkeypatch.undo()
    assert tinyfcn.load(out / "checkpoint-last.npz")["position"]["epoch"] == 1
    assert not list(out.glob(".*.tmp"))


def test_a_cut_last_line_of_the_log_is_dropped_on_resume(voc, tmp_path):
    out = tmp_path / "run"
    assert main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY]) == 0
    lines = (out / "log.csv").read_text().splitlines(keepends=True)
    assert [line.split(",")[:3] for line in lines[1:]] == [["train", "1", "1"],
                                                           ["train", "1", "2"], ["val", "1", ""]]
    # a crash in the middle of appending the row of a step the checkpoint holds
    (out / "log.csv").write_text("".join(lines[:2]) + lines[2][:7])
    assert main(["--resume", str(out / "checkpoint-last.npz"), "--epochs", "2"]) == 0
    lines = (out / "log.csv").read_text().splitlines()
    assert all(line.count(",") == lines[0].count(",") for line in lines)
    assert [line.split(",")[:3] for line in lines if line.startswith("train")] == [
        ["train", "1", "1"], ["train", "2", "1"], ["train", "2", "2"]]


# --------------------------------------------------------------------------- MPI
def test_a_rank_that_fails_ends_every_rank_with_its_message(tmp_path):
    launcher = mpiexec()
    root = write_voc_fixture(tmp_path / "voc", num_classes=3, n=8)
    (root / "JPEGImages" / "train5.jpg").write_bytes(b"corrupt")  # read by one rank only
    command = [launcher, "-n", "2", sys.executable, str(SCRIPT), "--voc-root", str(root),
               "--out", str(tmp_path / "run"), "--crop-size", "32", "32", "-b", "4",
               "--epochs", "2"]
    # without the abort the other rank waits 600 s for the failed one: the timeout fails it
    result = subprocess.run(command, capture_output=True, text=True, timeout=150,
                            env=clean_env())
    assert result.returncode != 0
    assert "train5.jpg" in result.stderr


WAITING_RANK = """
import os, sys
import numpy as np
from tinyfcn.distributed import World
from tinyfcn.train import _signals_recorded

class Never:
    def Test(self):
        return False

class Comm:  # the other rank never answers
    def Get_rank(self):
        return 1
    def Get_size(self):
        return 2
    def Iallreduce(self, *args, **kwargs):
        return Never()
    def Abort(self, code):
        os._exit(code)

world = World(Comm())
from mpi4py import MPI  # noqa: F401  (started before the signals come)
with _signals_recorded(world.signals):
    print("waiting", flush=True)
    world.sum_(np.zeros(1), "a test")
"""


def test_a_waiting_rank_gives_up_at_a_second_signal(tmp_path):
    pytest.importorskip("mpi4py")
    process = subprocess.Popen([sys.executable, "-c", WAITING_RANK], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert process.stdout.readline().strip() == "waiting"
        # the first asks the ranks to stop together at the next step, the second to stop
        # waiting; signals sent at once may arrive as one, so send until the process ends
        for _ in range(120):  # a failure guard, not a timed assertion
            process.send_signal(signal.SIGTERM)
            try:
                _, err = process.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert "SIGTERM again while waiting for the other ranks during a test" in err


# ---------------------------------------------------------------- thread settings
def test_fit_gives_the_process_its_thread_settings_back(tmp_path):
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits
    from tinyfcn.kernels import gemm_threads, set_gemm_threads

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    trainer = make_trainer(tmp_path / "run")
    numba.set_num_threads(1)
    set_gemm_threads(1)
    threadpool_limits(2, user_api="blas")
    before = blas()
    try:
        trainer.fit(1)
        assert (numba.get_num_threads(), gemm_threads(), blas()) == (1, 1, before)
    finally:
        tinyfcn.configure_runtime()  # the suite's settings


# ------------------------------------------------------------ fitted defaults
def test_own_images_train_every_epoch_with_a_fitted_crop_stated_first(voc, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), "-b", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "crop 40 x 40" in first and "no time budget" in first
    run = tinyfcn.load(out / "checkpoint-last.npz")["run"]
    assert run["time_budget"] is None and run["crop_size"] == [40, 40]


def test_fit_to_images_validates_large_sets_less_often():
    from tinyfcn.recipes import fit_to_images

    def images(n, size):
        return [(np.zeros((*size, 3), np.uint8), None)] * n

    crop, every, _ = fit_to_images(images(300, (360, 480)), images(233, (360, 480)))
    assert crop == (256, 256) and every == 3  # 40 Mpx to validate: 68% of 300 crops' cost
    crop, every, _ = fit_to_images(images(4, (40, 48)), images(4, (40, 48)))
    assert crop == (40, 40) and every == 1


def test_a_time_budget_goes_to_training_first_and_validation_waits_for_the_end(tmp_path):
    trainer = make_trainer(tmp_path / "run", val=Scenes(4, 1), val_every=1)
    now = [0.0]
    trainer.clock = lambda: now[0]
    real_step, real_evaluate = trainer.train_step, trainer.evaluate

    def step(*args, **kwargs):
        now[0] += 10  # two steps an epoch: 20 s of training
        return real_step(*args, **kwargs)

    def evaluate(*args, **kwargs):
        now[0] += 15
        return real_evaluate(*args, **kwargs)

    trainer.train_step, trainer.evaluate = step, evaluate
    history = trainer.fit(3, time_budget=70)  # 60 s of training fit, validations do not
    assert [np.isnan(r["mean_iou"]) for r in history] == [True, True, False]
    assert [r["epoch"] for r in history] == [1, 2, 3] and "steps" not in history[-1]


# ------------------------------------------------------------ the one step path
def batch(n=4, seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    labels = g.integers(0, 2, (n, 32, 32)).astype(np.uint8)
    labels[:, :3] = 255  # void
    return images, labels


def gradients(model):
    return {k: p.grad.copy() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("weights", [None, (0.3, 2.0)])
def test_the_step_gives_cross_entropys_mean_loss_and_gradients(tmp_path, weights):
    trainer = make_trainer(tmp_path / "run", class_weights=weights)
    trainer.model.eval()  # no dropout: the same forward twice
    images, labels = batch()
    value = trainer._loss_and_gradients(images, labels)
    got = gradients(trainer.model)
    trainer.model.zero_grad()
    w = None if weights is None else np.array(weights, np.float32)
    loss = F.cross_entropy(trainer.model(trainer.model.preprocess(images)), labels, weight=w)
    loss.backward()
    assert value == pytest.approx(float(loss.data), rel=1e-5)
    for k, g in gradients(trainer.model).items():
        np.testing.assert_allclose(got[k], g, rtol=1e-4, atol=1e-7, err_msg=k)


def per_image_ce(logits, target, ignore_index=255, weight=None, reduction="sum"):
    """Each image's mean cross-entropy, summed over the images (a per-image loss)."""
    terms = [F.cross_entropy(logits[i:i + 1], target[i:i + 1], ignore_index=ignore_index,
                             weight=weight) for i in range(logits.shape[0])]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


class ThreadWorld(World):
    """`size` ranks as threads of this process: sum_ adds every rank's array."""

    def __init__(self, rank, size, shared):
        super().__init__()
        self.rank, self.size, self.shared = rank, size, shared

    def sum_(self, array, what="an all-reduce"):
        parts, barrier = self.shared
        parts[self.rank] = array.copy()
        barrier.wait()
        total = sum(parts)
        barrier.wait()
        array[...] = total
        return array


@pytest.mark.parametrize("loss", ["ce", (Term(F.cross_entropy), Term(per_image_ce, "image"))])
def test_two_ranks_take_the_single_process_step_for_every_kind_of_term(tmp_path, loss):
    images, labels = batch()
    labels[0, :16] = 255  # the ranks' shares differ in valid pixels: a mean of means is wrong
    single = make_trainer(tmp_path / "one", loss_fn=loss, class_weights=(0.5, 1.5))
    single.model.eval()
    value = single._loss_and_gradients(images, labels)
    expected = gradients(single.model)

    shared = ([None, None], threading.Barrier(2))
    ranks = [make_trainer(tmp_path / f"r{r}", loss_fn=loss, class_weights=(0.5, 1.5),
                          world=ThreadWorld(r, 2, shared)) for r in range(2)]
    values = [None, None]

    def run(r):
        ranks[r].model.eval()
        values[r] = ranks[r]._loss_and_gradients(images[2 * r:2 * r + 2],
                                                 labels[2 * r:2 * r + 2])

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert values[0] == pytest.approx(value, rel=1e-5) and values[1] == values[0]
    for r in range(2):
        for k, g in gradients(ranks[r].model).items():
            np.testing.assert_allclose(g, expected[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_a_per_image_term_is_the_mean_over_the_images(tmp_path):
    trainer = make_trainer(tmp_path / "run", loss_fn=Term(per_image_ce, "image"))
    trainer.model.eval()
    images, labels = batch()
    labels[0, :20] = 255
    value = trainer._loss_and_gradients(images, labels)
    logits = trainer.model(trainer.model.preprocess(images))
    means = [float(F.cross_entropy(logits[i:i + 1], labels[i:i + 1]).data) for i in range(4)]
    assert value == pytest.approx(np.mean(means), rel=1e-5)


def test_the_loss_option_trains_with_its_terms_and_stores_them(voc, tmp_path):
    out = tmp_path / "run"
    assert main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY,
                 "--loss", "ce+dice"]) == 0
    assert json.loads((out / "config.json").read_text())["loss"] == ["cross_entropy",
                                                                    "dice_loss"]
    assert np.isfinite([float(row["loss"]) for row in csv.DictReader(
        (out / "log.csv").open()) if row.get("loss")]).all()
    with pytest.raises(ValueError, match="lovasz_softmax takes no class weights"):
        make_trainer(tmp_path / "l", loss_fn=Term(F.lovasz_softmax, "image", weighted=False),
                     class_weights=(1.0, 2.0))
