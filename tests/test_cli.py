"""The commands pip puts on PATH, run as a user runs them: tinyfcn-predict, tinyfcn-plot-runs,
tinyfcn-check-data and tinyfcn-train (each `--help`, and a real run of predict and
plot-runs on tiny data)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyfcn
from tinyfcn import models
from tinyfcn.data import read_label, write_image
from tinyfcn.report import RunFolder

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # where pip installs the console scripts of this Python


def command(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is not installed beside {sys.executable}: pip install -e ."
    return str(path)


def run(*args, cwd=None):
    # the tests' own settings stay out of the child (it starts as a user's shell would)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.mark.parametrize("name,words", [
    ("tinyfcn-predict", ["--weights", "--tile", "--max-pixels", "--tta", "--overlap"]),
    ("tinyfcn-plot-runs", ["runs", "--out"]),
    ("tinyfcn-check-data", ["root", "--splits"])])
def test_each_command_is_on_path_and_explains_itself(name, words):
    result = run(command(name), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name}")
    for word in words:
        assert word in result.stdout


def test_train_explains_itself_where_it_exists():
    if importlib.util.find_spec("tinyfcn.cli.train") is None:
        pytest.skip("tinyfcn.cli.train is not part of this tree")
    result = run(sys.executable, "-m", "tinyfcn.cli.train", "--help")
    assert result.returncode == 0, result.stderr
    assert "--epochs" in result.stdout
    assert run(command("tinyfcn-train"), "--help").returncode == 0


@pytest.mark.parametrize("script", ["predict.py", "plot_runs.py"])
def test_the_examples_are_the_same_programs(script):
    result = run(sys.executable, ROOT / "examples" / script, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small FCN-8s saved as a checkpoint and as a bare state dict, and a folder of
    photos: two images (one in a sub-folder) and a file that is not an image."""
    folder = tmp_path_factory.mktemp("tiny")
    model = models.fcn8s(3, backbone="lite", fc_width=8)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 70, 3)).astype(np.uint8)
    # score_pool3 reads pool3's standardised features at random, so the classes follow the
    # image and every option changes some labels (untrained, it predicts one class)
    with tinyfcn.no_grad():
        pool3 = model.encode(model.preprocess(image)).pool3.data
    weight = rng.standard_normal(model.score_pool3.weight.shape[:2]) * 10
    weight = (weight / (pool3.std((0, 2, 3)) + 1e-6)).astype(np.float32)
    model.score_pool3.weight.data = weight[:, :, None, None]
    model.score_pool3.bias.data = -weight @ pool3.mean((0, 2, 3))
    tinyfcn.save({"config": model.config, "model": model.state_dict(),
                  "class_names": ["sky", "road", "car"]}, folder / "model.npz")
    tinyfcn.save(model.state_dict(), folder / "weights.safetensors")
    photos = folder / "photos"
    write_image(photos / "a.png", image)
    write_image(photos / "sub" / "b.png", rng.integers(0, 256, (36, 30, 3), dtype=np.uint8))
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    return folder, model


def test_predict_skips_a_bad_file_writes_the_rest_and_exits_2(tiny, tmp_path):
    folder, model = tiny
    out = tmp_path / "masks"
    result = run(command("tinyfcn-predict"), folder / "model.npz", folder / "photos",
                 "--out", out)
    assert result.returncode == 2, result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0] and "cannot read" in skipped[0]
    assert "Traceback" not in result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "a-overlay.png", "a.png", "sub/b-overlay.png", "sub/b.png"]
    # results on stdout: one line per image written, naming the classes found
    lines = result.stdout.splitlines()
    assert any(line.startswith(str(folder / "photos" / "a.png") + ":") for line in lines)
    assert "broken" not in result.stdout and lines[-1].startswith("Wrote 2 masks")
    # a missing input is skipped too; with only good inputs the status is 0
    good = run(command("tinyfcn-predict"), folder / "model.npz", folder / "photos" / "a.png",
               "--out", tmp_path / "one", "--no-overlay")
    assert good.returncode == 0 and good.stderr == ""
    missing = run(command("tinyfcn-predict"), folder / "model.npz",
                  folder / "photos" / "a.png", folder / "nothing.jpg", "--out", tmp_path / "two")
    assert missing.returncode == 2 and "nothing.jpg: no such image" in missing.stderr
    assert (tmp_path / "two" / "a.png").is_file()


def test_predict_options_reach_the_model(tiny, tmp_path):
    folder, model = tiny
    image = tinyfcn.data.read_image(folder / "photos" / "a.png")
    out = tmp_path / "tiled"
    result = run(command("tinyfcn-predict"), folder / "model.npz", folder / "photos" / "a.png",
                 "--out", out, "--max-pixels", "1024", "--overlap", "0.5", "--tta", "flip")
    assert result.returncode == 0, result.stderr
    expected = model.predict(image, max_pixels=1024, overlap=0.5, tta="flip")
    np.testing.assert_array_equal(read_label(out / "a.png"), expected)
    assert not np.array_equal(expected, model.predict(image))  # the options changed it
    result = run(command("tinyfcn-predict"), folder / "model.npz", folder / "photos" / "a.png",
                 "--out", tmp_path / "whole", "--tile", "0", "--max-pixels", "1024")
    whole = model.predict(image)
    assert len(np.unique(whole)) > 1 and not np.array_equal(whole, model.predict(
        image, max_pixels=1024))
    np.testing.assert_array_equal(read_label(tmp_path / "whole" / "a.png"), whole)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_predict_from_a_bare_state_dict(tiny, tmp_path, suffix):
    folder, model = tiny
    weights = folder / "weights.safetensors"
    if suffix == ".pth":  # as the reference FCN-8s file comes: torch.save of a state dict
        torch = pytest.importorskip("torch")
        weights = tmp_path / "weights.pth"
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()},
                   weights)
    out = tmp_path / "masks"
    result = run(command("tinyfcn-predict"), "--weights", weights, "--model", "fcn8s",
                 "--backbone", "lite", "--num-classes", "3", folder / "photos" / "a.png",
                 "--out", out)
    assert result.returncode == 0, result.stderr
    image = tinyfcn.data.read_image(folder / "photos" / "a.png")
    np.testing.assert_array_equal(read_label(out / "a.png"), model.predict(image))
    # the wrong network for these weights: one line listing what does not fit
    wrong = run(command("tinyfcn-predict"), "--weights", weights, "--model", "fcn8s",
                "--backbone", "lite", "--num-classes", "5", folder / "photos" / "a.png",
                "--out", tmp_path / "wrong")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert str(weights) in wrong.stderr and "score_fr.weight" in wrong.stderr


def test_predict_reports_a_bad_model_file_in_one_line(tiny, tmp_path):
    folder, _ = tiny
    photo = folder / "photos" / "a.png"
    (tmp_path / "cut.npz").write_bytes((folder / "model.npz").read_bytes()[:300])
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01")
    for bad in (tmp_path / "cut.npz", tmp_path / "junk.pth", tmp_path / "absent.npz"):
        result = run(command("tinyfcn-predict"), bad, photo, "--out", tmp_path / "o")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and bad.name in lines[0]
    # a bare state dict given as a checkpoint: the message says how to use it
    result = run(command("tinyfcn-predict"), folder / "weights.safetensors", photo,
                 "--out", tmp_path / "o")
    assert result.returncode == 2 and "--weights" in result.stderr
    # --model describes --weights only
    result = run(command("tinyfcn-predict"), folder / "model.npz", photo, "--model", "fcn8s")
    assert result.returncode == 2 and "--weights" in result.stderr
    assert not (tmp_path / "o").exists()


def write_run(folder: Path, ious) -> None:
    """A run folder as training leaves it: log.csv through RunFolder, metrics.json."""
    run_folder = RunFolder(folder)
    run_folder.start({}, epoch=0, step_in_epoch=0)
    for epoch in range(1, len(ious) + 1):
        for step in (1, 2):
            run_folder.log_step(epoch, step, loss=2.0 / (epoch * step), lr=0.01, seconds=1,
                                images=4)
    (folder / "metrics.json").write_text(json.dumps([
        {"epoch": e, "train_loss": 1.0, "pixel_acc": 0.5, "mean_acc": 0.5, "mean_iou": iou,
         "fw_iou": 0.5} for e, iou in enumerate(ious, start=1)]))


def test_plot_runs_draws_every_run(tmp_path):
    from PIL import Image
    write_run(tmp_path / "fcn32s", [0.2, 0.3])
    write_run(tmp_path / "fcn8s", [0.25, float("nan"), 0.45])
    result = run(command("tinyfcn-plot-runs"), tmp_path / "fcn32s", tmp_path / "fcn8s",
                 "--out", tmp_path / "runs.png")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"Wrote {tmp_path / 'runs.png'}: fcn32s (best mIoU "
                                     f"0.300), fcn8s (best mIoU 0.450)")
    assert Image.open(tmp_path / "runs.png").size[0] > 500
    # a folder that is no run: one line naming it, nothing drawn
    (tmp_path / "empty").mkdir()
    result = run(command("tinyfcn-plot-runs"), tmp_path / "fcn8s", tmp_path / "empty",
                 "--out", tmp_path / "no.png")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'empty'}: no readable metrics.json")
    assert not (tmp_path / "no.png").exists()


def test_plot_runs_tells_apart_runs_with_the_same_folder_name(tmp_path):
    write_run(tmp_path / "a" / "run", [0.1])
    write_run(tmp_path / "b" / "run", [0.2])
    result = run(command("tinyfcn-plot-runs"), tmp_path / "a" / "run", tmp_path / "b" / "run",
                 "--out", tmp_path / "runs.png")
    assert result.returncode == 0, result.stderr
    assert "(best mIoU 0.100)" in result.stdout and "(best mIoU 0.200)" in result.stdout


def test_train_refuses_a_negative_time_budget_as_a_usage_error(capsys):
    from tinyfcn.cli.train import parser
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["--time-budget", "-5"])
    assert info.value.code == 2 and "--time-budget: must be >= 0, got -5" in capsys.readouterr().err


def test_plot_runs_names_the_loss_of_runs_trained_with_different_ones(tmp_path, capsys):
    from tinyfcn.cli import plot_runs
    for name, loss in (("a", ["cross_entropy"]), ("b", ["focal_loss"])):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps([{"epoch": 1, "mean_iou": 0.5}]))
        (run / "config.json").write_text(json.dumps({"loss": loss}))
    assert plot_runs.main([str(tmp_path / "a"), str(tmp_path / "b"),
                           "--out", str(tmp_path / "runs.png")]) == 0
    out = capsys.readouterr().out
    assert "a (cross_entropy)" in out and "b (focal_loss)" in out  # losses on other scales
    assert (tmp_path / "runs.png").is_file()
