"""Modules, state dicts, initialisation and optimizers."""

import numpy as np
import pytest

import tinyfcn
from tinyfcn import Tensor, nn, optim
from tinyfcn.nn import init


class Tiny(nn.Module):
    def __init__(self):
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Dropout(0.5))

    def forward(self, x):
        return self.body(self.conv(x))


def test_parameters_are_found_by_attribute_with_dotted_names():
    names = [n for n, _ in Tiny().named_parameters()]
    assert names == ["conv.weight", "conv.bias", "body.1.weight", "body.1.bias"]


def test_state_dict_round_trip_and_errors():
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    assert b.conv.weight.data is not a.conv.weight.data  # copied, not shared
    state = dict(a.state_dict())
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match="unexpected keys: extra.weight"):
        b.load_state_dict(state)
    del state["extra.weight"], state["conv.bias"]
    with pytest.raises(ValueError, match="missing keys: conv.bias"):
        b.load_state_dict(state)
    assert b.load_state_dict(state, strict=False).missing_keys == ["conv.bias"]
    state["conv.bias"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"conv.bias: checkpoint \(5,\), model \(4,\)"):
        b.load_state_dict(state, strict=False)


def test_train_eval_zero_grad_and_repr():
    m = Tiny()
    m.eval()
    assert not m.body[2].training
    x = np.ones((1, 3, 5, 5), np.float32)
    np.testing.assert_array_equal(m(x).data, m(x).data)  # dropout off in eval
    m.train()
    assert m.body[2].training
    m(x).sum().backward()
    assert m.conv.weight.grad is not None
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    text = repr(m)
    assert "(conv): Conv2d(3, 4, kernel_size=(3, 3)" in text and "Dropout(p=0.5)" in text


def test_bilinear_init_reproduces_bilinear_upsampling_in_the_interior():
    s = 4
    up = nn.ConvTranspose2d(2, 2, 2 * s, stride=s, padding=s // 2, bias=False,
                            dtype=np.float64)
    init.bilinear_(up.weight)
    # a linear ramp is reproduced exactly by bilinear interpolation (align_corners=False)
    H, W = 6, 7
    i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    image = np.stack([0.3 * i - 0.7 * j, 2.0 + 0.1 * i + 0.5 * j])[None]
    out = up(image).data[0]
    assert out.shape == (2, H * s, W * s)
    y, x = np.meshgrid((np.arange(H * s) + 0.5) / s - 0.5, (np.arange(W * s) + 0.5) / s - 0.5,
                       indexing="ij")
    expected = np.stack([0.3 * y - 0.7 * x, 2.0 + 0.1 * y + 0.5 * x])
    interior = (slice(None), slice(s, -s), slice(s, -s))
    np.testing.assert_allclose(out[interior], expected[interior], atol=1e-12)


def test_bilinear_matches_pytorch_interpolate_on_a_smooth_image():
    torch = pytest.importorskip("torch")
    s = 2
    up = nn.ConvTranspose2d(1, 1, 2 * s, stride=s, padding=s // 2, bias=False, dtype=np.float64)
    init.bilinear_(up.weight)
    yy, xx = np.meshgrid(np.linspace(0, 1, 9), np.linspace(0, 1, 11), indexing="ij")
    image = np.sin(3 * yy) * np.cos(2 * xx)
    ours = up(image[None, None]).data[0, 0]
    ref = torch.nn.functional.interpolate(torch.tensor(image[None, None]), scale_factor=s,
                                          mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours[s:-s, s:-s], ref[s:-s, s:-s], atol=1e-12)


def test_bilinear_kernel_formula():
    np.testing.assert_allclose(init.bilinear_kernel(4)[1], [0.1875, 0.5625, 0.5625, 0.1875])
    np.testing.assert_allclose(init.bilinear_kernel(3)[1], [0.5, 1, 0.5])


def _quadratic_steps(opt_factory, steps=4):
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    opt = opt_factory([p])
    for _ in range(steps):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
    return p.data


def test_sgd_momentum_weight_decay_by_hand():
    lr, m, wd = 0.1, 0.9, 0.01
    p = np.array([1.0, -2.0, 3.0])
    buf = None
    for _ in range(4):
        d = 2 * p + wd * p
        buf = d.copy() if buf is None else m * buf + d
        p = p - lr * buf
    np.testing.assert_allclose(
        _quadratic_steps(lambda ps: optim.SGD(ps, lr, momentum=m, weight_decay=wd)), p)


def test_adam_by_hand():
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    p, mo, v = np.array([1.0, -2.0, 3.0]), 0.0, 0.0
    for t in range(1, 5):
        g = 2 * p
        mo, v = b1 * mo + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p = p - lr * (mo / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(_quadratic_steps(lambda ps: optim.Adam(ps, lr)), p)


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, weight_decay=1e-3)),
])
def test_optimizers_agree_with_pytorch(name, kwargs):
    torch = pytest.importorskip("torch")
    start = np.array([1.0, -2.0, 3.0])
    ours = _quadratic_steps(lambda ps: getattr(optim, name)(ps, **kwargs), steps=6)
    p = torch.tensor(start, requires_grad=True)
    opt = getattr(torch.optim, name)([p], **kwargs)
    for _ in range(6):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
    np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_caffe_style_parameter_groups_equal_pytorch_groups_with_scaled_lr_and_decay(name):
    torch = pytest.importorskip("torch")
    lr, wd = 0.05, 1e-2
    extra = dict(momentum=0.99) if name == "SGD" else {}
    w, b = nn.Parameter(np.array([1.0, -2.0])), nn.Parameter(np.array([0.5]))
    ours = getattr(optim, name)([{"params": [w]}, {"params": [b], "lr_mult": 2,
                                                    "decay_mult": 0}],
                                lr=lr, weight_decay=wd, **extra)
    tw, tb = (torch.tensor(p.data.copy(), requires_grad=True) for p in (w, b))
    theirs = getattr(torch.optim, name)([{"params": [tw]},
                                         {"params": [tb], "lr": 2 * lr, "weight_decay": 0}],
                                        lr=lr, weight_decay=wd, **extra)
    for _ in range(5):
        ours.zero_grad()
        ((w * w).sum() + (b * b * 3).sum()).backward()
        ours.step()
        theirs.zero_grad()
        ((tw * tw).sum() + (tb * tb * 3).sum()).backward()
        theirs.step()
    np.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rate'\].*'lr_mult'"):
        optim.SGD([{"params": [w], "learning_rate": 0.1}], lr=lr)


def test_optimizer_state_dict_round_trip_continues_identically(tmp_path):
    def make():
        p = nn.Parameter(np.array([1.0, -2.0], dtype=np.float32))
        return p, optim.SGD([p], 0.1, momentum=0.9)

    p, opt = make()
    for _ in range(2):
        opt.zero_grad()
        (p * p).sum().backward()
        opt.step()
    tinyfcn.save({"opt": opt.state_dict(), "p": p.data}, tmp_path / "o.npz")
    loaded = tinyfcn.load(tmp_path / "o.npz")
    q, opt2 = make()
    q.data = loaded["p"].copy()
    opt2.load_state_dict(loaded["opt"])
    for param, o in ((p, opt), (q, opt2)):
        o.zero_grad()
        (param * param).sum().backward()
        o.step()
    np.testing.assert_array_equal(p.data, q.data)


def test_optimizer_and_schedule_states_of_earlier_versions_still_load():
    """Checkpoints written before parameter groups held their settings: one "lr" in the
    optimizer's state, one "base_lr" in the schedule's."""
    w, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(1))
    opt = optim.SGD([{"params": [w]}, {"params": [b], "lr_mult": 2}], lr=0.5, momentum=0.9)
    opt.load_state_dict({"lr": 0.02, "steps": 4,
                         "state": {"0": {"momentum_buffer": np.full(2, 0.1)}, "1": {}}})
    assert [g["lr"] for g in opt.param_groups] == [0.02, 0.02] and opt.steps == 4
    assert opt.param_groups[1]["lr_mult"] == 2 and opt.param_groups[0]["momentum"] == 0.9
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], [0.1, 0.1])
    sched = optim.PolyLR(opt, total_steps=10, power=1.0)
    sched.load_state_dict({"kind": "PolyLR", "base_lr": 0.1, "last_step": 4, "total_steps": 10,
                           "warmup_steps": 0, "power": 1.0})
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.05])
    with pytest.raises(ValueError, match="2 parameter groups"):
        sched.load_state_dict({**sched.state_dict(), "base_lrs": [0.1]})


def test_poly_schedule():
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    sched = optim.PolyLR(opt, total_steps=10, power=1.0)
    sched.step()
    assert opt.lr == pytest.approx(0.9)
    for _ in range(20):
        sched.step()
    assert opt.lr == 0.0


def test_init_statistics():
    tinyfcn.manual_seed(0)
    w = Tensor(np.empty((256, 128, 3, 3), np.float32))
    init.kaiming_normal_(w)
    assert w.data.std() == pytest.approx(np.sqrt(2 / (128 * 9)), rel=0.02)
    init.xavier_uniform_(w)
    bound = np.sqrt(6 / (128 * 9 + 256 * 9))
    assert np.abs(w.data).max() <= bound and w.data.std() == pytest.approx(bound / np.sqrt(3),
                                                                            rel=0.02)
    assert w.dtype == np.float32


def test_clip_grad_norm_matches_pytorch_semantics():
    from tinyfcn.nn.utils import clip_grad_norm_
    a, b = nn.Parameter(np.array([3.0, 0.0])), nn.Parameter(np.array([[4.0]]))
    a.grad, b.grad = a.data.copy(), b.data.copy()
    assert clip_grad_norm_([a, b], 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad, [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad, [[0.8]], rtol=1e-5)
    a.grad[0] = np.nan
    assert np.isnan(clip_grad_norm_([a, b], 1.0))
