"""The training options people expect: schedules with warm-up, validation every N epochs,
background workers that keep the batches, and the tools around a run."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinyfcn
from tinyfcn import nn, optim
from tinyfcn.data.loader import epoch_batches
from tinyfcn.data.transforms import TrainAugment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rates(schedule_class, steps=10, **kwargs):
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    sched = schedule_class(opt, steps, **kwargs)
    seen = []
    for _ in range(steps):
        seen.append(opt.lr)  # the rate the next step uses
        sched.step()
    return np.array(seen)


def test_schedules_follow_their_formulas_and_warm_up_linearly():
    t = np.arange(10) / 10
    np.testing.assert_allclose(rates(optim.PolyLR), (1 - t) ** 0.9)
    np.testing.assert_allclose(rates(optim.CosineLR), 0.5 * (1 + np.cos(np.pi * t)))
    np.testing.assert_allclose(rates(optim.MilestoneLR), np.where(t >= 0.75, 0.01,
                                                             np.where(t >= 0.5, 0.1, 1.0)))
    np.testing.assert_allclose(rates(optim.ConstantLR), np.ones(10))
    warm = rates(optim.ConstantLR, warmup_steps=4)
    np.testing.assert_allclose(warm, [0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1])


def test_a_schedule_state_round_trips_and_refuses_another_kind():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1)
    a = optim.CosineLR(opt, 20, warmup_steps=3)
    for _ in range(5):
        a.step()
    b = optim.CosineLR(optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1), 20)
    b.load_state_dict(a.state_dict())
    assert (b.last_step, b.warmup_steps) == (5, 3)
    with pytest.raises(ValueError, match="CosineLR state cannot load into a PolyLR"):
        optim.PolyLR(opt, 20).load_state_dict(a.state_dict())


def test_workers_give_the_same_batches_as_the_main_thread():
    rng = np.random.default_rng(0)
    data = [(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8),
             rng.integers(0, 3, (40, 48)).astype(np.uint8)) for _ in range(9)]
    augment = TrainAugment((32, 32))
    plain = list(epoch_batches(data, np.arange(9), 2, augment, 5, 3, skip=1))
    threaded = list(epoch_batches(data, np.arange(9), 2, augment, 5, 3, skip=1, workers=2))
    assert len(plain) == len(threaded) == 3
    for (a, b), (c, d) in zip(plain, threaded):
        assert np.array_equal(a, c) and np.array_equal(b, d)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from test_data_metrics import write_voc_fixture
    return write_voc_fixture(tmp_path_factory.mktemp("data") / "voc", num_classes=3, n=4)


TOY = ["--crop-size", "32", "32", "-b", "2", "--time-budget", "0"]


def test_val_every_validates_every_n_epochs_and_after_the_last(voc, tmp_path):
    train = load_example("train_voc_subset")
    out = tmp_path / "run"
    assert train.main(["--voc-root", str(voc), "--epochs", "3", "--val-every", "2",
                       "--out", str(out), "--lr-schedule", "cosine", "--warmup", "2",
                       "--optimizer", "sgd", "--momentum", "0.5", "--weight-decay", "0",
                       "--workers", "1", *TOY]) == 0
    history = json.loads((out / "metrics.json").read_text())
    assert [np.isnan(r["mean_iou"]) for r in history] == [True, False, False]
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["epoch-002.png",
                                                                       "epoch-003.png"]
    state = tinyfcn.load(out / "checkpoint-last.npz")
    assert state["scheduler"]["kind"] == "CosineLR" and state["scheduler"]["warmup_steps"] == 2
    assert state["run"]["momentum"] == 0.5


def test_prediction_panels_have_titles_and_a_legend(voc, tmp_path):
    train = load_example("train_voc_subset")
    out = tmp_path / "run"
    assert train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY]) == 0
    picture = np.array(Image.open(out / "predictions" / "epoch-001.png"))
    # 4 rows of 128 with gaps, a 20-pixel title strip and at least one legend line
    assert picture.shape[0] >= 20 + 4 * 128 + 4 * 4 + 18
    title = picture[:20]
    assert (title < 128).any()  # dark text on the white strip


def test_predict_options_and_plot_runs(voc, tmp_path, capsys):
    train = load_example("train_voc_subset")
    runs = []
    for model in ("fcn32s", "fcn8s"):
        runs.append(tmp_path / model)
        assert train.main(["--voc-root", str(voc), "--epochs", "2", "--model", model,
                           "--out", str(runs[-1]), *TOY]) == 0
    plot = load_example("plot_runs")
    assert plot.main([*map(str, runs), "--out", str(tmp_path / "runs.png")]) == 0
    assert "fcn32s (best mIoU" in capsys.readouterr().out
    assert Image.open(tmp_path / "runs.png").size[0] > 500

    predict = load_example("predict")
    ckpt = str(runs[-1] / "checkpoint-best.npz")
    images = str(voc / "JPEGImages")
    assert predict.main([ckpt, images, "--out", str(tmp_path / "plain"), "--no-overlay"]) == 0
    assert not list((tmp_path / "plain").glob("*-overlay.png"))
    assert predict.main([ckpt, images, "--out", str(tmp_path / "a"), "--opacity", "0"]) == 0
    assert predict.main([ckpt, images, "--out", str(tmp_path / "b"), "--legend"]) == 0
    original = np.array(Image.open(voc / "JPEGImages" / "train0.jpg"))
    clear = np.array(Image.open(tmp_path / "a" / "train0-overlay.png"))
    assert np.array_equal(clear, original)  # opacity 0: the image itself
    with_legend = np.array(Image.open(tmp_path / "b" / "train0-overlay.png"))
    assert with_legend.shape[0] > original.shape[0]
