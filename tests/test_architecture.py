"""The package's contracts: the Tensor/array rule of `F`, the Function contract, layering,
crop offsets from geometry, `model.predict`, and the Trainer used directly."""

import os
import signal
import subprocess
import sys

import numba
import numpy as np
import pytest

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import Function, Tensor, models, optim
from tinyfcn.data.transforms import TrainAugment
from tinyfcn.fileio import atomic_write
from tinyfcn.losses import Term
from tinyfcn.models import geometry
from tinyfcn.train import Interrupted, Trainer

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
W3 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
WT = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
B4 = rng.standard_normal(4).astype(np.float32)
TARGET = rng.integers(0, 3, (2, 6, 6))
IDX = F.max_pool2d(X, 2, return_indices=True)[1].data
POOLED = F.max_pool2d(X, 2).data

# every op of F with the arguments that are arrays in the first list; the rule: arrays or
# Tensors in, a Tensor out, the same values either way
OPS = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, padding=1), [X, W3, B4]),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2), [X, WT]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [X]),
    "max_unpool2d": (lambda x, i: F.max_unpool2d(x, i, 2), [POOLED, IDX]),
    "unpool2d": (lambda x: F.unpool2d(x, 2, mode="zeros"), [X]),
    "relu": (F.relu, [X]),
    "prelu": (F.prelu, [X, np.full(3, 0.25, np.float32)]),
    "dropout": (lambda x: F.dropout(x, 0.0, True), [X]),
    "crop": (lambda x: F.crop(x, 1, (3, 3)), [X]),
    "center_crop": (lambda x: F.center_crop(x, (4, 4)), [X]),
    "cross_entropy": (lambda x, t: F.cross_entropy(x, t), [X, TARGET]),
    "focal_loss": (lambda x, t: F.focal_loss(x, t), [X, TARGET]),
    "dice_loss": (lambda x, t: F.dice_loss(x, t), [X, TARGET]),
    "lovasz_softmax": (lambda x, t: F.lovasz_softmax(x, t), [X, TARGET]),
    "batch_norm": (lambda x, m, v: F.batch_norm(x, m, v), [X, np.zeros(3, np.float32),
                                                           np.ones(3, np.float32)]),
}


def test_every_functional_op_is_covered_by_the_rule():
    assert set(F.__all__) - {"conv2d_matrix"} == set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
def test_arrays_or_tensors_in_a_tensor_out(name):
    op, args = OPS[name]
    from_arrays = op(*[a.copy() for a in args])
    from_tensors = op(*[Tensor(a.copy()) for a in args])
    assert isinstance(from_arrays, Tensor) and isinstance(from_tensors, Tensor)
    np.testing.assert_array_equal(from_arrays.data, from_tensors.data)


@pytest.mark.parametrize("wrap", [np.asarray, Tensor], ids=["arrays", "tensors"])
def test_batch_norm_updates_running_statistics_in_place_either_way(wrap):
    mean, var = wrap(np.zeros(3, np.float32)), wrap(np.ones(3, np.float32))
    F.batch_norm(X, mean, var, training=True, momentum=0.5)
    values = [m.data if isinstance(m, Tensor) else m for m in (mean, var)]
    np.testing.assert_allclose(values[0], 0.5 * X.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(values[1], 0.5 + 0.5 * X.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    out = F.batch_norm(X, mean, var)  # eval reads them back
    expected = (X - values[0][:, None, None]) / np.sqrt(values[1][:, None, None] + 1e-5)
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-5)


def test_pooling_indices_are_a_tensor_and_the_backward_keeps_its_own():
    x = Tensor(X.copy(), requires_grad=True)
    out, idx = F.max_pool2d(x, 2, return_indices=True)
    assert isinstance(idx, Tensor) and idx.dtype == np.int64
    expected = F.max_unpool2d(np.ones(out.shape, np.float32), idx, 2).data
    idx.data[:] = 0  # a caller scribbling on the indices cannot misroute the gradient
    out.backward(np.ones(out.shape, np.float32))
    np.testing.assert_array_equal(x.grad, expected)


def test_conv2d_matrix_takes_a_tensor_or_an_array_and_returns_the_matrix():
    a = F.conv2d_matrix(W3, (4, 4))
    np.testing.assert_array_equal(a, F.conv2d_matrix(Tensor(W3), (4, 4)))
    assert isinstance(a, np.ndarray) and a.shape == (4 * 2 * 2, 3 * 16)


# ----------------------------------------------------------------- Function contract
class Square(Function):
    def __init__(self, result):
        self.result = result

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return self.result(self.x, g)


@pytest.mark.parametrize("result, error, message", [
    (lambda x, g: 2 * x * g, TypeError, "must return a tuple"),               # bare array
    (lambda x, g: None, TypeError, "got NoneType"),
    (lambda x, g: (2 * x * g, 2 * x * g), ValueError, "returned 2 gradients for 1 inputs"),
    (lambda x, g: ((2 * x * g).sum(axis=0),), ValueError, r"shape \(4,\), its input has "
                                                          r"shape \(3, 4\)"),
    (lambda x, g: ((2 * x * g).astype(np.float64),), TypeError, "dtype float64"),
    (lambda x, g: ([1.0],), TypeError, "must be an array"),
])
def test_a_backward_that_breaks_the_contract_is_named(result, error, message):
    x = Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    y = Square.apply(x, result=result)
    with pytest.raises(error, match=message) as info:
        y.backward(np.ones((3, 4), np.float32))
    assert "Square.backward" in str(info.value)


def test_a_backward_that_keeps_the_contract_passes_gradcheck():
    x = Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    assert tinyfcn.gradcheck(lambda a: Square.apply(a, result=lambda x, g: (2 * x * g,)), [x])


class SquareAndCount(Function):
    """x * x, and how many elements are positive: an auxiliary result beside the output."""

    def forward(self, x):
        self.x = x
        return x * x, np.count_nonzero(x > 0)

    def backward(self, g):
        return (2 * self.x * g,)


def test_auxiliary_results_come_back_from_the_call_outside_the_graph():
    x = Tensor(np.array([[-1.0, 2.0, 3.0]], np.float32), requires_grad=True)
    y, positives = SquareAndCount.apply(x)
    assert isinstance(y, Tensor) and y.requires_grad and positives == 2
    y.backward(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(x.grad, [[-2.0, 4.0, 6.0]])
    with tinyfcn.no_grad():  # no graph recorded, the auxiliary result still returned
        y, positives = SquareAndCount.apply(x)
    assert y.creator is None and positives == 2


def test_pooling_and_batch_norm_functions_return_their_switches_and_statistics():
    from tinyfcn.functional.normalization import BatchNorm
    from tinyfcn.functional.pooling import MaxPool2d

    out, switches = MaxPool2d.apply(X, kernel=(2, 2), stride=(2, 2), padding=(0, 0),
                                    out_hw=(3, 3))
    np.testing.assert_array_equal(out.data, POOLED)
    np.testing.assert_array_equal(switches, IDX)
    weight, bias = np.ones(3, np.float32), np.zeros(3, np.float32)
    out, mean, var = BatchNorm.apply(X, weight, bias, eps=1e-5, batch_stats=True)
    np.testing.assert_allclose(mean, X.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(var, X.var(axis=(0, 2, 3)), rtol=1e-5)  # biased, as used


def test_conv_and_transposed_conv_share_their_arguments_weight_and_repr():
    from tinyfcn import nn
    conv = nn.Conv2d(3, 4, (3, 5), stride=2, padding=1, dilation=2, bias=False)
    up = nn.ConvTranspose2d(4, 3, (3, 5), stride=2, padding=1, output_padding=1, dilation=2,
                            bias=False)
    assert conv.weight.shape == up.weight.shape == (4, 3, 3, 5)  # one matrix, read both ways
    assert repr(conv) == ("Conv2d(3, 4, kernel_size=(3, 5), stride=(2, 2), padding=(1, 1), "
                          "dilation=(2, 2), bias=False)")
    assert repr(up) == ("ConvTranspose2d(4, 3, kernel_size=(3, 5), stride=(2, 2), "
                        "padding=(1, 1), dilation=(2, 2), output_padding=(1, 1), bias=False)")
    for layer in (nn.Conv2d, nn.ConvTranspose2d):
        with pytest.raises(ValueError, match="stride must be >= 1"):
            layer(1, 1, 3, stride=0)


# ----------------------------------------------------------------- layering
def run_python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TINYFCN_DEFAULT_RUNTIME"}
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


def test_data_and_metrics_import_neither_numba_nor_the_autograd_core():
    out = run_python("import sys, tinyfcn.data, tinyfcn.metrics, tinyfcn.data.check; "
                     "print(sorted(m for m in sys.modules if m == 'numba' or "
                     "m in ('tinyfcn.tensor', 'tinyfcn.ops', 'tinyfcn.kernels')))")
    assert out == "[]"


def test_importing_tinyfcn_leaves_the_process_alone():
    out = run_python(
        "import os, numba; before = (numba.get_num_threads(), os.umask(0o022)); "
        "import tinyfcn, tinyfcn.functional, tinyfcn.models, tinyfcn.train; "
        "tinyfcn.Tensor([1.0]); after = (numba.get_num_threads(), os.umask(0o022)); "
        "print(before == after, numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS)")
    assert out == "True True"
    out = run_python("import numba, threadpoolctl, tinyfcn, tinyfcn.kernels as k; "
                     "tinyfcn.configure_runtime(); "
                     "blas = {i['num_threads'] for i in threadpoolctl.threadpool_info() "
                     "if i['user_api'] == 'blas'}; "
                     "print(numba.get_num_threads(), k.gemm_threads(), blas)")
    cores = len(os.sched_getaffinity(0))
    assert out == f"{min(cores, numba.config.NUMBA_NUM_THREADS)} {cores} {{1}}"
    out = run_python("import os; os.environ.pop('OMP_WAIT_POLICY', None); "
                     "import tinyfcn, tinyfcn.functional, tinyfcn.kernels as k; "
                     "print(os.environ.get('OMP_WAIT_POLICY'), k.gemm_threads()); "
                     "tinyfcn.set_threads(1); tinyfcn.configure_runtime(); "  # keeps the choice
                     "import numba; print(numba.get_num_threads(), k.gemm_threads())")
    assert out.splitlines() == ["None 1", "1 1"]


def test_atomic_write_gives_the_usual_mode_and_leaves_nothing_on_failure(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.bin", fail)
    assert (tmp_path / "a.bin").read_bytes() == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


# ----------------------------------------------------------------- crops from geometry
@pytest.mark.parametrize("name, offsets", [
    ("fcn32s", {"output": 19}),
    ("fcn16s", {"score_pool4": 5, "output": 27}),
    ("fcn8s", {"score_pool4": 5, "score_pool3": 9, "output": 31}),
])
def test_reference_crop_offsets_follow_from_the_layer_geometry(name, offsets):
    assert models.MODELS[name](21, "vgg16", fc_width=8).crop_offsets == offsets
    lite = models.MODELS[name](21, "lite", fc_width=8).crop_offsets
    assert lite == {k: 0 for k in offsets}


def test_coord_maps_compose_and_refuse_what_cannot_be_cropped():
    # a 3x3 conv with padding 1 keeps coordinates; a 2x2 pooling halves them, centred
    assert geometry.IDENTITY.then(geometry.conv(3, 1, 1)) == geometry.IDENTITY
    pool = geometry.IDENTITY.then(geometry.conv(2, 2))
    assert (pool.a, pool.b) == (2, 0.5)
    up = pool.then(geometry.conv_transpose(4, 2, 1))
    assert up == geometry.IDENTITY  # the lite x2 upsampling undoes the pooling exactly
    with pytest.raises(ValueError, match="different grids"):
        geometry.crop_offset(geometry.IDENTITY, pool)
    with pytest.raises(ValueError, match="not a whole"):
        geometry.crop_offset(geometry.IDENTITY, geometry.IDENTITY.then(geometry.conv(2, 1)))


# ----------------------------------------------------------------- predict
@pytest.mark.parametrize("name", ["fcn8s", "deconvnet"])
def test_predict_is_argmax_of_the_scores_for_one_a_batch_or_a_list(name):
    model = models.MODELS[name](5, backbone="lite", fc_width=16).train()
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 36, 3), dtype=np.uint8)
    with tinyfcn.no_grad():
        expected = model.eval()(model.preprocess(images)).data.argmax(1)
    model.train()
    batch = model.predict(images, batch_size=2)
    assert batch.dtype == np.uint8 and batch.shape == (3, 40, 36)
    np.testing.assert_array_equal(batch, expected)
    np.testing.assert_array_equal(model.predict(images[1]), expected[1])
    maps = model.predict([images[0], images[2, :33, :20]])
    assert [m.shape for m in maps] == [(40, 36), (33, 20)]
    assert model.training  # the mode it had
    with pytest.raises(TypeError, match="uint8"):
        model.predict(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        model.predict(images[..., :2])


# ----------------------------------------------------------------- Trainer
class Scenes(list):
    class_names = ["background", "square"]

    def __init__(self, n, seed):
        g = np.random.default_rng(seed)
        for _ in range(n):
            image = g.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            label = np.zeros((32, 32), np.uint8)
            r, c = g.integers(0, 16, 2)
            image[r:r + 12, c:c + 12] += 150
            label[r:r + 12, c:c + 12] = 1
            super().append((image, label))


def make_trainer(out, **kwargs):
    tinyfcn.manual_seed(0)
    model = models.fcn8s(2, backbone="lite", fc_width=16)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(model, opt, optim.PolyLR(opt, 12), Scenes(8, 0), Scenes(2, 1),
                   TrainAugment((32, 32)), batch_size=2, out=out, log=lambda text: None,
                   **kwargs)


def test_trainer_fits_saves_and_refuses_a_checkpoint_of_another_run(tmp_path):
    trainer = make_trainer(tmp_path / "run")
    history = trainer.fit(2)
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    ckpt = tinyfcn.load(tmp_path / "run" / "checkpoint-last.npz")
    assert ckpt["version"] == 2 and ckpt["position"] == {"epoch": 2, "step_in_epoch": 0,
                                                         "epoch_losses": []}
    assert ckpt["optimizer"]["type"] == "SGD" and ckpt["batch_size"] == 2

    other = make_trainer(tmp_path / "other")
    other.optimizer = optim.Adam(other.model.parameters())
    with pytest.raises(ValueError, match="optimizer 'SGD' \\(this run: 'Adam'\\)"):
        other.load_state_dict(ckpt)
    other = make_trainer(tmp_path / "other")
    other.class_names = ["bg", "thing"]
    with pytest.raises(ValueError, match="class names"):
        other.load_state_dict(ckpt)
    with pytest.raises(ValueError, match="weights only"):
        other.load_state_dict(trainer.state_dict(with_optimizer=False))


@pytest.mark.parametrize("at_parameter", [0, 5])
def test_a_signal_inside_an_optimizer_step_waits_until_the_step_is_whole(tmp_path, monkeypatch,
                                                                         at_parameter):
    whole = make_trainer(tmp_path / "whole")
    whole.fit(2)
    part = make_trainer(tmp_path / "part")
    real_update = optim.SGD.update
    calls = {"n": 0}

    def update_then_sigint(self, *args):
        calls["n"] += 1
        if calls["n"] == 2 * len(self.params) + at_parameter + 1:  # inside step 3
            os.kill(os.getpid(), signal.SIGINT)
        real_update(self, *args)

    monkeypatch.setattr(optim.SGD, "update", update_then_sigint)
    with pytest.raises(Interrupted) as info:
        part.fit(2)
    monkeypatch.undo()
    assert info.value.step == 3  # the step finished before the interrupt was taken
    ckpt = tinyfcn.load(info.value.checkpoint)
    assert ckpt["position"]["step_in_epoch"] == 3
    assert ckpt["optimizer"]["state"]["steps"] == 3 and ckpt["scheduler"]["last_step"] == 3

    resumed = make_trainer(tmp_path / "part")
    resumed.resume(info.value.checkpoint)
    resumed.fit(2)
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=k)


def test_a_second_ctrl_c_during_the_interrupt_save_still_ends_with_the_checkpoint(tmp_path,
                                                                                  monkeypatch):
    import tinyfcn.train as train_module
    trainer = make_trainer(tmp_path / "run")
    real_save, calls = train_module.save, {"n": 0}

    def save_with_a_second_ctrl_c(state, path):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again, while the checkpoint is written
        real_save(state, path)

    def first_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save", save_with_a_second_ctrl_c)
    monkeypatch.setattr(trainer, "loss_terms", (Term(first_ctrl_c),))
    with pytest.raises(Interrupted) as info:
        trainer.fit(1)
    assert calls["n"] == 1 and info.value.checkpoint.is_file()
    assert tinyfcn.load(info.value.checkpoint)["position"]["step_in_epoch"] == 0


def test_to_dot_draws_every_op_and_tensor_of_the_graph_once():
    from tinyfcn.utils import to_dot
    x = Tensor(np.ones((1, 1, 4, 4), np.float32), requires_grad=True)
    w = Tensor(np.ones((2, 1, 3, 3), np.float32), requires_grad=True)
    h = F.conv2d(x, w)
    y = (h * h + h).sum()  # h is used twice: its node must appear once
    dot = to_dot(y)
    assert dot.startswith("digraph autograd {") and dot.endswith("}")
    ops = [line.split('label="')[1].split('"')[0] for line in dot.splitlines()
           if "shape=ellipse" in line]
    assert sorted(ops) == ["Add", "Conv2d", "Mul", "Sum"]
    assert dot.count("fillcolor=lightblue") == 2  # the two leaves that require grad
    assert dot.count("(1, 2, 2, 2) float32") == 3  # h, h * h, h * h + h
    assert "output\\n() float32" in dot


@pytest.mark.parametrize("progress", [True, False])
def test_trainer_progress_bars_can_be_switched_off(tmp_path, capsys, progress):
    make_trainer(tmp_path / "run", progress=progress).fit(1)
    bars = capsys.readouterr().err
    assert ("epoch 1" in bars and "validation" in bars) if progress else bars == ""
