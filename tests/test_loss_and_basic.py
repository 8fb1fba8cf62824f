"""cross_entropy, dropout, crop."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracle import agrees_with_pytorch
from reference import cross_entropy_ref

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import Tensor, gradcheck


def _case(rng, N=2, C=4, H=3, W=5):
    logits = Tensor(rng.standard_normal((N, C, H, W)), requires_grad=True)
    target = rng.integers(0, C, (N, H, W))
    target[0, 0, :2] = 255
    return logits, target


@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4))
def test_cross_entropy_matches_reference_and_gradchecks(N, C, H, W):
    rng = np.random.default_rng(0)
    logits, target = _case(rng, N, C, H, W)
    target[-1, -1, -1] = 0  # at least one valid pixel
    np.testing.assert_allclose(F.cross_entropy(logits, target).data,
                               cross_entropy_ref(logits.data, target), rtol=1e-10)
    for reduction in ("mean", "sum", "none"):
        assert gradcheck(lambda a, r=reduction: F.cross_entropy(a, target, reduction=r), [logits])


def test_cross_entropy_with_class_weights_gradchecks():
    rng = np.random.default_rng(1)
    logits, target = _case(rng)
    weight = np.array([0.5, 1.0, 2.0, 3.0])
    assert gradcheck(lambda a: F.cross_entropy(a, target, weight=weight), [logits])


def test_cross_entropy_is_finite_at_huge_logits():
    logits = np.zeros((1, 3, 2, 2), dtype=np.float32)
    logits[0, 0] = 1e4
    logits[0, 1] = -1e4
    target = np.array([[[0, 1], [2, 255]]])
    x = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, target)
    loss.backward()
    assert np.isfinite(loss.data) and np.isfinite(x.grad).all()
    assert loss.data == pytest.approx((0 + 2e4 + 1e4) / 3, rel=1e-6)


def test_cross_entropy_void_pixels_count_for_nothing():
    rng = np.random.default_rng(2)
    logits, target = _case(rng)
    x = Tensor(logits.data, requires_grad=True)
    F.cross_entropy(x, target).backward()
    void = target == 255
    assert np.all(x.grad.transpose(0, 2, 3, 1)[void] == 0)


def test_cross_entropy_bad_labels():
    logits = np.zeros((1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\[7\] outside \[0, 3\)"):
        F.cross_entropy(logits, np.array([[[0, 7], [1, 255]]]))
    with pytest.raises(ValueError, match="target has shape"):
        F.cross_entropy(logits, np.zeros((1, 3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(logits, np.zeros((1, 2, 2)))


def test_cross_entropy_agrees_with_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits, target = _case(rng)
    weight = rng.random(4) + 0.5
    for reduction in ("mean", "sum", "none"):
        agrees_with_pytorch(
            torch, lambda x, r=reduction: F.cross_entropy(x, target, weight=weight, reduction=r),
            lambda x, r=reduction: torch.nn.functional.cross_entropy(
                x, torch.tensor(target), weight=torch.tensor(weight), ignore_index=255,
                reduction=r),
            [logits.data], rng, atol=1e-12)


def test_dropout_scales_kept_values_and_gradchecks():
    x = Tensor(np.ones((4, 1000)), requires_grad=True)
    tinyfcn.manual_seed(0)
    y = F.dropout(x, 0.25, training=True).data
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02

    def seeded(a):
        tinyfcn.manual_seed(1)
        return F.dropout(a, 0.5)
    assert gradcheck(seeded, [Tensor(np.random.default_rng(0).standard_normal((3, 4)),
                                     requires_grad=True)])
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(x, 1.0)


def test_crop_and_center_crop():
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((1, 2, 7, 6)), requires_grad=True)
    np.testing.assert_array_equal(F.crop(x, (2, 1), (3, 4)).data, x.data[:, :, 2:5, 1:5])
    np.testing.assert_array_equal(F.center_crop(x, 3).data, x.data[:, :, 2:5, 1:4])
    assert gradcheck(lambda a: F.crop(a, (1, 2), (4, 3)), [x])
    with pytest.raises(ValueError, match="does not fit"):
        F.crop(x, (5, 0), (3, 3))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradchecks_in_both_modes(training):
    rng = np.random.default_rng(5)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 4, 2, 3), 4, 4))
    mean, var = rng.standard_normal(4), rng.random(4) + 0.5

    def bn(a, weight, bias):
        return F.batch_norm(a, mean.copy(), var.copy(), weight, bias, training=training)
    assert gradcheck(bn, [x, w, b])


def test_batch_norm_agrees_with_pytorch_including_running_statistics():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(s) for s in ((4, 3, 5, 5), 3, 3)]
    mean, var = np.zeros(3), np.ones(3)
    t_mean, t_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for training in (True, True, False):
        agrees_with_pytorch(
            torch, lambda x, w, b, t=training: F.batch_norm(x, mean, var, w, b, training=t),
            lambda x, w, b, t=training: torch.nn.functional.batch_norm(x, t_mean, t_var, w, b,
                                                                       training=t),
            arrays, rng, atol=1e-12)
        np.testing.assert_allclose(mean, t_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(var, t_var.numpy(), rtol=1e-12)


def test_batchnorm2d_module_keeps_running_statistics_in_its_state_dict():
    from tinyfcn import nn
    layer = nn.BatchNorm2d(3, dtype=np.float64)
    x = np.random.default_rng(7).standard_normal((4, 3, 5, 5)) * 2 + 1
    layer(x)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var"]
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    np.testing.assert_allclose(state["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)))
    layer.eval()
    expected = (x - state["running_mean"][None, :, None, None]) / np.sqrt(
        state["running_var"][None, :, None, None] + 1e-5)
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-10)
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(np.zeros((1, 3, 1, 1)), np.zeros(3), np.ones(3), np.ones(3), np.zeros(3),
                     training=True)
