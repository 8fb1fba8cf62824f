"""What PyTorch users bring: parameter groups with PyTorch's keys, `param_groups` that a
schedule or user code changes, PyTorch's StepLR, a torch BatchNorm state dict, buffers,
`requires_grad_`, and a DataLoader."""

import numpy as np
import pytest

import tinyfcn
from tinyfcn import nn, optim
from tinyfcn.data import DataLoader
from tinyfcn.data.loader import epoch_batches


def _params():
    return nn.Parameter(np.array([1.0, -2.0])), nn.Parameter(np.array([0.5, 3.0]))


def _loss(w, b):
    return (w * w).sum() + (b * b * b).sum() + (w * b).sum()


def _run_both(torch, make_ours, make_theirs, steps=6, between=None):
    """The same quadratic-ish problem in tinyfcn and in torch; `between(step, opt)` may
    change the optimizers' settings; returns both final parameters."""
    w, b = _params()
    tw, tb = (torch.tensor(p.data.copy(), requires_grad=True) for p in (w, b))
    ours, theirs = make_ours(w, b), make_theirs(tw, tb)
    for step in range(steps):
        for opt, loss in ((ours, lambda: _loss(w, b)), (theirs, lambda: _loss(tw, tb))):
            if between:
                between(step, opt)
            opt.zero_grad()
            loss().backward()
            opt.step()
    return (w.data, b.data), (tw.detach().numpy(), tb.detach().numpy())


@pytest.mark.parametrize("name, group, defaults", [
    ("SGD", {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.1}, dict(momentum=0.9)),
    ("SGD", {"lr": 0.02, "nesterov": True, "momentum": 0.8}, dict(weight_decay=1e-2)),
    ("Adam", {"lr": 0.2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, {}),
])
def test_pytorch_parameter_groups_train_as_in_pytorch(name, group, defaults):
    torch = pytest.importorskip("torch")
    ours, theirs = _run_both(
        torch,
        lambda w, b: getattr(optim, name)([{"params": [w]}, {"params": [b], **group}],
                                          lr=0.05, **defaults),
        lambda w, b: getattr(torch.optim, name)([{"params": [w]}, {"params": [b], **group}],
                                                lr=0.05, **defaults))
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a, t, rtol=1e-12)


def test_caffe_multipliers_scale_a_groups_own_settings():
    torch = pytest.importorskip("torch")
    ours, theirs = _run_both(
        torch,
        lambda w, b: optim.SGD([{"params": [w], "lr": 0.01, "lr_mult": 2},
                                {"params": [b], "weight_decay": 0.5, "decay_mult": 0.1}],
                               lr=0.03, momentum=0.9),
        lambda w, b: torch.optim.SGD([{"params": [w], "lr": 0.02},
                                      {"params": [b], "weight_decay": 0.05}],
                                     lr=0.03, momentum=0.9))
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a, t, rtol=1e-12)


def test_settings_changed_in_param_groups_take_effect_at_the_next_step():
    torch = pytest.importorskip("torch")

    def change(step, opt):
        if step == 2:
            opt.param_groups[0]["lr"] = 0.001
            opt.param_groups[1]["weight_decay"] = 0.3
        if step == 4:
            opt.param_groups[1]["momentum"] = 0.0

    ours, theirs = _run_both(
        torch,
        lambda w, b: optim.SGD([{"params": [w]}, {"params": [b]}], lr=0.05, momentum=0.9),
        lambda w, b: torch.optim.SGD([{"params": [w]}, {"params": [b]}], lr=0.05,
                                     momentum=0.9),
        between=change)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a, t, rtol=1e-12)
    unchanged, _ = _run_both(
        torch, lambda w, b: optim.SGD([w, b], lr=0.05, momentum=0.9),
        lambda w, b: torch.optim.SGD([w, b], lr=0.05, momentum=0.9))
    assert not np.allclose(unchanged[0], ours[0])  # the change did change the run


def test_param_groups_show_every_setting_and_refuse_bad_ones():
    w, b = _params()
    opt = optim.SGD([{"params": [w]}, {"params": b, "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1] == {"params": [b], "lr": 0.5, "momentum": 0.9,
                                   "weight_decay": 0.0, "nesterov": False, "lr_mult": 1.0,
                                   "decay_mult": 1.0}
    assert opt.params == [w, b] and opt.lr == 0.1
    opt.lr = 0.2  # the old spelling sets every group
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2]
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        optim.SGD([{"params": [w], "weight_decay": -1}], lr=0.1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        optim.SGD([{"params": [w], "nesterov": True}], lr=0.1)
    with pytest.raises(ValueError, match=r"unknown keys \['momentum'\]"):
        optim.Adam([{"params": [w], "momentum": 0.9}])
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [w]}, {"params": [w, b]}], lr=0.1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([w], betas=(0.9, 1.5))


def test_group_settings_survive_a_checkpoint(tmp_path):
    def make():
        w, b = _params()
        return (w, b), optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.2, "lr_mult": 2}],
                                 lr=0.05, momentum=0.9)

    (w, b), opt = make()
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        _loss(w, b).backward()
        opt.step()
        sched.step()
    tinyfcn.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "o.npz")
    loaded = tinyfcn.load(tmp_path / "o.npz")
    (w2, b2), opt2 = make()
    w2.data, b2.data = w.data.copy(), b.data.copy()
    sched2 = optim.StepLR(opt2, step_size=7)
    opt2.load_state_dict(loaded["opt"])
    sched2.load_state_dict(loaded["sched"])
    assert [g["lr"] for g in opt2.param_groups] == [0.025, 0.1]
    assert opt2.param_groups[1]["lr_mult"] == 2 and sched2.step_size == 2
    for params, o, s in (((w, b), opt, sched), ((w2, b2), opt2, sched2)):
        for _ in range(2):
            o.zero_grad()
            _loss(*params).backward()
            o.step()
            s.step()
    np.testing.assert_array_equal(w.data, w2.data)
    assert sched.get_last_lr() == sched2.get_last_lr() == [0.0125, 0.05]


# ------------------------------------------------------------------------ StepLR


def test_step_lr_is_pytorchs():
    torch = pytest.importorskip("torch")
    w, b = _params()
    opt = optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.3}], lr=0.1)
    sched = optim.StepLR(opt, step_size=3, gamma=0.5)
    tw, tb = (torch.zeros(2, requires_grad=True) for _ in range(2))
    topt = torch.optim.SGD([{"params": [tw]}, {"params": [tb], "lr": 0.3}], lr=0.1)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.5)
    for _ in range(10):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [g["lr"] for g in topt.param_groups], rel=1e-12)
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12)
        topt.step()
        sched.step()
        tsched.step()
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, step_size=0.5)


def test_the_former_step_lr_is_milestone_lr_and_old_checkpoints_load():
    w, _ = _params()
    sched = optim.MilestoneLR(optim.SGD([w], lr=1.0), total_steps=8)
    old = {"kind": "StepLR", "base_lr": 1.0, "last_step": 5, "total_steps": 8,
           "warmup_steps": 0}  # what a checkpoint of the former StepLR holds
    sched.load_state_dict(old)
    sched.step()
    assert sched.optimizer.lr == pytest.approx(0.01)  # 6 / 8 passes both milestones
    assert optim.SCHEDULES["step"] is optim.MilestoneLR  # --lr-schedule step as before
    with pytest.raises(ValueError, match="a StepLR state cannot load into a MilestoneLR"):
        sched.load_state_dict(optim.StepLR(optim.SGD([w], lr=1.0), 2).state_dict())
    with pytest.raises(ValueError, match="a MilestoneLR state cannot load into a StepLR"):
        optim.StepLR(optim.SGD([w], lr=1.0), 2).load_state_dict(sched.state_dict())
    with pytest.raises(ValueError, match="former StepLR .* load it into a MilestoneLR"):
        optim.StepLR(optim.SGD([w], lr=1.0), 2).load_state_dict(old)  # not a KeyError


# --------------------------------------------------------------- BatchNorm and buffers


def test_a_pytorch_batchnorm_state_dict_loads(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    theirs.train()
    for _ in range(3):  # running statistics away from their start, num_batches_tracked = 3
        theirs(torch.randn(2, 3, 5, 5) * 3 + 1)
    theirs.eval()
    torch.save(theirs.state_dict(), tmp_path / "bn.pth")
    state = tinyfcn.load(tmp_path / "bn.pth")  # read without torch
    assert int(state["1.num_batches_tracked"]) == 3

    ours = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)).eval()
    ours.load_state_dict(state)  # strict: num_batches_tracked accepted and ignored
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours(x).data, expected, rtol=1e-5, atol=1e-5)
    assert "1.num_batches_tracked" not in ours.state_dict()

    for stray in ("0.num_batches_tracked", "1.num_batches_seen"):  # only BatchNorm's own key
        with pytest.raises(ValueError, match=f"unexpected keys: {stray}"):
            ours.load_state_dict({**state, stray: np.array(1)})


class WithBuffers(nn.Module):
    def __init__(self):
        self.bn = nn.BatchNorm2d(2)
        self.scale = nn.Parameter(np.ones(2, np.float32))
        self.register_buffer("count", np.zeros((), np.int64))
        self.register_buffer("cache", np.ones(3, np.float32), persistent=False)

    def forward(self, x):
        return self.bn(x) * self.scale.reshape(1, 2, 1, 1)


def test_buffers_are_registered_saved_and_cast_as_in_pytorch():
    m = WithBuffers()
    assert [n for n, _ in m.named_buffers()] == ["bn.running_mean", "bn.running_var", "count",
                                                 "cache"]
    assert all(isinstance(b, nn.Buffer) and not b.requires_grad for b in m.buffers())
    assert list(m.state_dict()) == ["bn.weight", "bn.bias", "bn.running_mean",
                                    "bn.running_var", "scale", "count"]  # cache: not saved
    m.to(np.float64)
    assert m.bn.running_mean.dtype == m.cache.dtype == np.float64
    assert m.count.dtype == np.int64  # integer buffers keep their type
    state = m.state_dict()
    state["count"] = np.array(7)
    m.load_state_dict(state)
    assert m.count.data == 7
    with pytest.raises(KeyError, match="scale"):
        m.register_buffer("scale", np.zeros(2))
    with pytest.raises(ValueError, match="identifier"):
        m.register_buffer("a.b", np.zeros(2))
    m.register_buffer("cache", None)
    assert "cache" not in dict(m.named_buffers())


def test_requires_grad_freezes_and_unfreezes_parameters():
    m = WithBuffers()
    assert m.bn.requires_grad_(False) is m.bn
    x = np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)
    opt = optim.SGD(m.parameters(), lr=0.1)
    before = m.bn.weight.data.copy()
    m(x).sum().backward()
    opt.step()
    assert m.bn.weight.grad is None and m.scale.grad is not None
    np.testing.assert_array_equal(m.bn.weight.data, before)
    m.requires_grad_()
    assert all(p.requires_grad for p in m.parameters())


# ------------------------------------------------------------------------ DataLoader


class Numbers:
    """Item i: an image filled with i and a label filled with i % 3."""

    def __init__(self, n, size=(4, 5)):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((*self.size, 3), i, np.uint8), np.full(self.size, i % 3, np.uint8)


def _ids(batches):
    return [images[:, 0, 0, 0].tolist() for images, _ in batches]


def test_dataloader_batches_like_pytorchs():
    loader = DataLoader(Numbers(7), batch_size=3)
    assert len(loader) == 3
    batches = list(loader)
    assert _ids(batches) == [[0, 1, 2], [3, 4, 5], [6]]
    images, labels = batches[0]
    assert images.shape == (3, 4, 5, 3) and labels.shape == (3, 4, 5)
    np.testing.assert_array_equal(labels[:, 0, 0], [0, 1, 2])
    dropped = DataLoader(Numbers(7), batch_size=3, drop_last=True)
    assert len(dropped) == 2 and _ids(dropped) == [[0, 1, 2], [3, 4, 5]]


def test_dataloader_shuffles_reproducibly_and_anew_each_pass():
    loader = DataLoader(Numbers(10), batch_size=4, shuffle=True, seed=3)
    first, second = _ids(loader), _ids(loader)
    assert sorted(sum(first, [])) == list(range(10))  # each item once
    assert first != second  # a new order each pass, as PyTorch's
    again = DataLoader(Numbers(10), batch_size=4, shuffle=True, seed=3)
    assert _ids(again) == first and _ids(again) == second
    again.set_epoch(1)
    assert _ids(again) == second


def test_dataloader_gives_the_trainers_batches():
    from tinyfcn.data.transforms import TrainAugment
    data, augment = Numbers(9, size=(12, 10)), TrainAugment((8, 8))
    loader = DataLoader(data, batch_size=2, shuffle=True, seed=5, drop_last=True,
                        transform=augment)
    loader.set_epoch(3)
    for (a, b), (c, d) in zip(loader, epoch_batches(data, np.arange(9), 2, augment, 5, 3),
                              strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_dataloader_refuses_items_of_different_sizes_clearly():
    class Mixed(Numbers):
        def __getitem__(self, i):
            return super().__getitem__(i) if i else (np.zeros((2, 2, 3), np.uint8),
                                                     np.zeros((2, 2), np.uint8))

    with pytest.raises(ValueError, match="batch 0 holds items of shapes"):
        list(DataLoader(Mixed(3), batch_size=2))
    assert len(list(DataLoader(Mixed(3), batch_size=1))) == 3
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(Numbers(3), batch_size=0)
