"""examples/train_voc_subset.py end to end at toy size, on a VOC-layout fixture."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_data_metrics import write_voc_fixture

import tinyfcn
import tinyfcn.data
import tinyfcn.functional as F
from tinyfcn.data import write_label
from tinyfcn.losses import TERMS, Term

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_voc_subset.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_voc_subset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOY = ["--crop-size", "32", "32", "-b", "2", "--time-budget", "0", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_voc_fixture(tmp_path_factory.mktemp("data") / "voc", num_classes=4, n=4)


def test_trains_on_any_voc_layout_and_writes_every_output(voc, tmp_path, capsys):
    train = load_script()
    out = tmp_path / "run"
    assert train.main(["--voc-root", str(voc), "--epochs", "2", "--out", str(out), *TOY]) == 0
    records = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert set(r) >= {"epoch", "train_loss", "pixel_acc", "mean_acc", "mean_iou", "fw_iou",
                          "per_class_iou", "seconds"}
        assert 0 <= r["pixel_acc"] <= 1 and list(r["per_class_iou"]) == [f"class{i}"
                                                                          for i in range(4)]
    for name in ("checkpoint-last.npz", "checkpoint-best.npz", "training-curve.png",
                 "predictions/epoch-002.png"):
        assert (out / name).is_file(), name
    ckpt = tinyfcn.load(out / "checkpoint-last.npz")
    assert ckpt["position"]["epoch"] == 2 and ckpt["config"]["num_classes"] == 4
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "class3" in printed


@pytest.mark.parametrize("interrupt_at", [1, 3])  # in epoch 1, and in epoch 2 of 2 steps each
def test_interrupted_and_resumed_run_equals_one_run(voc, tmp_path, monkeypatch, interrupt_at):
    train = load_script()
    whole, part = tmp_path / "whole", tmp_path / "part"
    base = ["--voc-root", str(voc), *TOY, "--seed", "5", "--epochs", "2"]
    assert train.main([*base, "--out", str(whole)]) == 0

    calls = {"n": 0}
    real_loss = F.cross_entropy

    def loss_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == interrupt_at + 1:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setitem(TERMS, "ce", Term(loss_then_ctrl_c))  # the step's loss
    assert train.main([*base, "--out", str(part)]) == 130
    monkeypatch.undo()
    assert train.main([*base, "--out", str(part),
                       "--resume", str(part / "checkpoint-last.npz")]) == 0
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((part / "metrics.json").read_text())
    for ra, rb in zip(a, b, strict=True):
        for key in ("pixel_acc", "mean_iou"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5), key
    assert a[-1]["train_loss"] == pytest.approx(b[-1]["train_loss"], rel=1e-5)
    wa = tinyfcn.load(whole / "checkpoint-last.npz")["model"]
    wb = tinyfcn.load(part / "checkpoint-last.npz")["model"]
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_eval_only_and_init_from(voc, tmp_path, capsys):
    train = load_script()
    out = tmp_path / "run"
    train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), "--model",
                "fcn32s", *TOY])
    ckpt = str(out / "checkpoint-best.npz")
    assert train.main(["--voc-root", str(voc), "--out", str(out), "--eval-only",
                       "--resume", ckpt]) == 0
    assert (out / "predictions" / "eval.png").is_file()
    # staged training: fcn16s starts from fcn32s's matching weights
    assert train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(tmp_path / "s16"),
                       "--model", "fcn16s", "--init-from", ckpt, *TOY]) == 0
    assert "Initialised" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--voc-root", "/no/such/folder"], "data set root does not exist"),
    (["--train-split", "missing"], "missing.txt: split file is missing"),
    (["--resume", "/no/such/checkpoint.npz"], "no such checkpoint"),
])
def test_bad_input_prints_one_line_and_exits_non_zero(voc, tmp_path, capsys, args, message):
    train = load_script()
    argv = ["--voc-root", str(voc), "--out", str(tmp_path / "o"), *TOY, *args]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_predict_writes_palette_masks_and_overlays(voc, tmp_path, capsys):
    train = load_script()
    out = tmp_path / "run"
    train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY])
    spec = importlib.util.spec_from_file_location("predict", SCRIPT.parent / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    masks = tmp_path / "masks"
    assert predict.main([str(out / "checkpoint-best.npz"), str(voc / "JPEGImages"),
                         "--out", str(masks)]) == 0
    label = tinyfcn.data.read_label(masks / "train0.png")
    assert label.shape == (40, 48) and label.max() < 4
    assert (masks / "train0-overlay.png").is_file()
    assert predict.main([str(out / "checkpoint-best.npz"), str(tmp_path / "nothing.jpg")]) == 2
    assert "nothing.jpg: no such image" in capsys.readouterr().err

    spec = importlib.util.spec_from_file_location("compare",
                                                  SCRIPT.parent / "compare_predictions.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    picture = tmp_path / "compare.png"
    ckpt = str(out / "checkpoint-best.npz")
    assert compare.main([ckpt, ckpt, "--voc-root", str(voc), "--images", "0", "1",
                         "--out", str(picture)]) == 0
    # two rows of image | ground truth | two predictions, 40x48 images shown 112 high
    assert tinyfcn.data.read_image(picture).shape[0] == 20 + 2 * 112 + 4  # titles, 2 rows


def test_skip_bad_warns_once_per_file_and_counts(tmp_path, capsys):
    root = write_voc_fixture(tmp_path / "voc", num_classes=3, n=6)
    (root / "JPEGImages" / "train1.jpg").write_bytes(b"corrupt")
    (root / "SegmentationClass" / "train2.png").unlink()
    train = load_script()
    argv = ["--voc-root", str(root), "--epochs", "1", "--out", str(tmp_path / "o"), *TOY]
    assert train.main(argv) == 2  # by default the first bad file stops the run
    assert "train" in capsys.readouterr().err
    assert train.main([*argv, "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: skipping") == 2 and "Skipped 2 bad file(s)" in err
    assert "train1.jpg" in err and "train2.png" in err


def test_check_data_reports_bad_files(tmp_path, capsys):
    from tinyfcn.data import check
    root = write_voc_fixture(tmp_path / "voc", num_classes=3, n=3)
    assert check.main([str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    write_label(root / "SegmentationClass" / "val1.png", np.full((40, 48), 7, np.uint8))
    assert check.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "val1.png: label values [7]" in out and "FAILED" in out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(voc, tmp_path, monkeypatch, capsys):
    train = load_script()
    out = tmp_path / "run"
    calls = {"n": 0}
    real_loss = F.cross_entropy

    def nan_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setitem(TERMS, "ce", Term(nan_in_epoch_two))
    assert train.main(["--voc-root", str(voc), "--epochs", "2", "--out", str(out), *TOY]) == 1
    assert "error: loss is nan at epoch 2, step 1" in capsys.readouterr().err
    assert tinyfcn.load(out / "checkpoint-last.npz")["position"]["epoch"] == 1


def test_resident_memory_does_not_grow_over_200_steps():
    import tinyfcn.functional as F
    from tinyfcn import models, optim

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2 ** 20

    model = models.fcn8s(4, backbone="lite", fc_width=32)
    opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    target = np.random.default_rng(1).integers(0, 4, (2, 32, 32))

    def steps(n):
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(model(x), target).backward()
            opt.step()

    steps(20)
    before = rss_mb()
    steps(200)
    assert rss_mb() - before < 10, f"resident memory grew from {before:.0f} MB"


def test_sigterm_saves_a_checkpoint_and_exits(voc, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--voc-root", str(voc), "--epochs",
                             "100000", "--out", str(out), *TOY], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.json").exists() and time.time() < deadline:
        time.sleep(0.2)  # wait until training is under way
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Interrupted by SIGTERM" in stdout
    assert tinyfcn.load(out / "checkpoint-last.npz")["position"]["epoch"] >= 1


def test_time_budget_stops_mid_epoch_writes_every_output_and_resumes_there(voc, tmp_path,
                                                                             capsys):
    train = load_script()
    out, whole = tmp_path / "run", tmp_path / "whole"
    base = ["--voc-root", str(voc), "--epochs", "2", *TOY]
    budget = [*[a for a in base if a not in ("--time-budget", "0")], "--time-budget", "0.001"]
    assert train.main([*budget, "--out", str(out)]) == 0
    assert "Time budget of 0 s reached in epoch 1" in capsys.readouterr().out
    records = json.loads((out / "metrics.json").read_text())
    assert [(r["epoch"], r["steps"]) for r in records] == [(1, 1)]  # a partial epoch
    for name in ("checkpoint-last.npz", "checkpoint-best.npz", "training-curve.png",
                 "predictions/epoch-001.png"):
        assert (out / name).is_file(), name
    assert tinyfcn.load(out / "checkpoint-last.npz")["position"]["step_in_epoch"] == 1
    # the resumed run does the rest of epoch 1, not epoch 2 at once
    assert train.main([*base, "--out", str(out), "--resume",
                       str(out / "checkpoint-last.npz")]) == 0
    assert train.main([*base, "--out", str(whole)]) == 0
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in b] == [1, 2] and "steps" not in b[0]
    for ra, rb in zip(a, b, strict=True):
        assert ra["mean_iou"] == pytest.approx(rb["mean_iou"], rel=1e-5)


def test_resume_path_alone_continues_the_run_and_more_epochs_extend_the_schedule(voc, tmp_path,
                                                                                 capsys):
    train = load_script()
    out = tmp_path / "run"
    assert train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), "--seed", "3",
                       "--optimizer", "sgd", *TOY]) == 0
    ckpt = str(out / "checkpoint-last.npz")
    capsys.readouterr()
    assert train.main(["--resume", ckpt]) == 0  # nothing else: the run's own arguments
    assert "has already trained 1 of --epochs 1" in capsys.readouterr().out
    before = tinyfcn.load(ckpt)["model"]["conv1_1.weight"]
    assert train.main(["--resume", ckpt, "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "--epochs 2 (the run had 1)" in printed and "schedule now spans 4 steps" in printed
    state = tinyfcn.load(out / "checkpoint-last.npz")  # the same folder, one epoch more
    assert state["position"]["epoch"] == 2 and state["seed"] == 3
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1, 2]
    # epoch 2 trained at a non-zero rate (the old schedule had reached 0 at its end)
    assert not np.array_equal(state["model"]["conv1_1.weight"], before)


@pytest.mark.parametrize("option, value", [("--seed", "9"), ("--model", "fcn32s"),
                                           ("--batch-size", "1"), ("--subset", "2")])
def test_resume_refuses_options_that_would_change_the_run(voc, tmp_path, capsys, option, value):
    train = load_script()
    out = tmp_path / "run"
    assert train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY]) == 0
    capsys.readouterr()
    assert train.main(["--resume", str(out / "checkpoint-last.npz"), "--epochs", "2",
                       option, value]) == 2
    err = capsys.readouterr().err
    assert "continues a run with other settings" in err and option in err


def test_a_checkpoint_of_another_data_set_is_refused(voc, tmp_path, capsys):
    train = load_script()
    out = tmp_path / "run"
    assert train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), *TOY]) == 0
    other = write_voc_fixture(tmp_path / "other", num_classes=5, n=4)
    capsys.readouterr()
    assert train.main(["--voc-root", str(other), "--resume", str(out / "checkpoint-last.npz"),
                       "--epochs", "2"]) == 2
    assert "--voc-root" in capsys.readouterr().err
