"""focal_loss, dice_loss and lovasz_softmax: gradient checks, plain NumPy references written
from each paper's definition, PyTorch (an expression for focal, a direct re-implementation
for Dice and Lovász, which torch does not ship), void pixels and class weights."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracle import agrees_with_pytorch

import tinyfcn.functional as F
from tinyfcn import Tensor, gradcheck
from tinyfcn.metrics import confusion_matrix

VOID = 255


def _case(rng, N=2, C=4, H=3, W=5, void=0.2):
    logits = rng.standard_normal((N, C, H, W))
    target = rng.integers(0, C, (N, H, W))
    target[rng.random((N, H, W)) < void] = VOID
    return logits, target


# ------------------------------------------------------------ slow NumPy references


def _softmax(z):
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def focal_ref(logits, target, gamma, weight=None):
    """(per-pixel losses (N, H, W), summed weight of the valid pixels)."""
    N, C, H, W = logits.shape
    weight = np.ones(C) if weight is None else np.asarray(weight, float)
    out, total = np.zeros((N, H, W)), 0.0
    for n in range(N):
        for h in range(H):
            for v in range(W):
                t = target[n, h, v]
                if t == VOID:
                    continue
                p = _softmax(logits[n, :, h, v])[t]
                out[n, h, v] = -weight[t] * (1 - p) ** gamma * np.log(p)
                total += weight[t]
    return out, total


def dice_ref(logits, target, weight=None, smooth=1.0):
    """Per-image 1 - weighted mean soft Dice over the classes in the target or argmax."""
    N, C = logits.shape[:2]
    weight = np.ones(C) if weight is None else np.asarray(weight, float)
    losses = []
    for n in range(N):
        valid = target[n] != VOID
        probs = _softmax(logits[n])[:, valid]                 # (C, valid pixels)
        labels = target[n][valid]
        predicted = probs.argmax(axis=0)
        num = den = 0.0
        for c in range(C):
            if not ((labels == c).any() or (predicted == c).any()):
                continue
            t = (labels == c).astype(float)
            dice = (2 * (probs[c] * t).sum() + smooth) / (probs[c].sum() + t.sum() + smooth)
            num += weight[c] * (1 - dice)
            den += weight[c]
        losses.append(num / den if den else 0.0)
    return np.array(losses)


def lovasz_ref(logits, target):
    """Per image: the mean over the classes in the target of the Lovász extension of the
    Jaccard loss D(M) = |M| / |truth ∪ M| at the errors e: sum_k e_(k) (D(top k) - D(top k-1))
    with the errors in decreasing order (Berman et al., eq. 8-9)."""
    losses = []
    for n in range(logits.shape[0]):
        valid = target[n] != VOID
        probs = _softmax(logits[n])[:, valid]
        labels = target[n][valid]
        per_class = []
        for c in range(logits.shape[1]):
            truth = labels == c
            if not truth.any():
                continue
            errors = np.abs(truth - probs[c])
            order = np.argsort(-errors, kind="stable")
            loss, previous = 0.0, 0.0
            for k in range(1, len(order) + 1):
                top = np.zeros(len(order), bool)
                top[order[:k]] = True
                jaccard = top.sum() / (truth | top).sum()
                loss += errors[order[k - 1]] * (jaccard - previous)
                previous = jaccard
            per_class.append(loss)
        losses.append(np.mean(per_class) if per_class else 0.0)
    return np.array(losses)


# ------------------------------------------------------------------------- focal


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from([0.0, 0.5, 2.0]))
def test_focal_loss_matches_the_reference_and_gradchecks(N, C, H, W, gamma):
    rng = np.random.default_rng(N * 1000 + C * 100 + H * 10 + W)
    logits, target = _case(rng, N, C, H, W)
    weight = rng.random(C) + 0.5
    pixels, total = focal_ref(logits, target, gamma, weight)
    none = F.focal_loss(logits, target, gamma, weight=weight, reduction="none")
    np.testing.assert_allclose(none.data, pixels, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F.focal_loss(logits, target, gamma, weight=weight,
                                            reduction="sum").data, pixels.sum(), rtol=1e-10)
    mean = F.focal_loss(logits, target, gamma, weight=weight).data
    np.testing.assert_allclose(mean, pixels.sum() / total if total else 0.0, rtol=1e-10)
    x = Tensor(logits, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        assert gradcheck(lambda a, r=reduction: F.focal_loss(a, target, gamma, weight=weight,
                                                             reduction=r), [x])


def test_focal_loss_with_gamma_0_is_cross_entropy():
    rng = np.random.default_rng(0)
    logits, target = _case(rng)
    weight = rng.random(4) + 0.5
    a, b = Tensor(logits, requires_grad=True), Tensor(logits, requires_grad=True)
    focal = F.focal_loss(a, target, gamma=0, weight=weight)
    ce = F.cross_entropy(b, target, weight=weight)
    focal.backward()
    ce.backward()
    np.testing.assert_allclose(focal.data, ce.data, rtol=1e-12)
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-14)
    assert F.focal_loss(a, target, gamma=2).data < ce.data  # easy pixels are down-weighted


def test_focal_loss_is_finite_when_a_pixel_is_certain():
    logits = np.zeros((1, 3, 1, 2), np.float32)
    logits[0, 0] = 1e4                                       # p = 1 exactly in float32
    target = np.array([[[0, 1]]])
    for gamma in (0.0, 0.5, 2.0):
        x = Tensor(logits, requires_grad=True)
        loss = F.focal_loss(x, target, gamma)
        loss.backward()
        assert np.isfinite(loss.data) and np.isfinite(x.grad).all()
        assert loss.data == pytest.approx(1e4 / 2, rel=1e-6)  # pixel 0 adds 0, pixel 1 adds 1e4
        assert loss.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_loss_agrees_with_a_pytorch_expression(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits, target = _case(rng)
    weight = rng.random(4) + 0.5
    t = torch.tensor(target)

    def theirs(x, gamma=2.0):
        ce = torch.nn.functional.cross_entropy(x, t, ignore_index=VOID, reduction="none")
        w = torch.tensor(weight)[t.clamp(max=3)] * (t != VOID)
        pixel = w * (1 - torch.exp(-ce)) ** gamma * ce
        if reduction == "none":
            return pixel
        return pixel.sum() if reduction == "sum" else pixel.sum() / w.sum()

    agrees_with_pytorch(torch, lambda x: F.focal_loss(x, target, 2.0, weight=weight,
                                                      reduction=reduction),
                        theirs, [logits], rng)


# -------------------------------------------------------------------------- dice


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4),
       st.booleans())
def test_dice_loss_matches_the_reference_and_gradchecks(N, C, H, W, weighted):
    rng = np.random.default_rng(N * 1000 + C * 100 + H * 10 + W)
    logits, target = _case(rng, N, C, H, W)
    weight = rng.random(C) + 0.5 if weighted else None
    expected = dice_ref(logits, target, weight, smooth=0.5)
    none = F.dice_loss(logits, target, weight=weight, smooth=0.5, reduction="none")
    assert none.shape == (N,)
    np.testing.assert_allclose(none.data, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(F.dice_loss(logits, target, weight=weight, smooth=0.5).data,
                               expected.mean(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(F.dice_loss(logits, target, weight=weight, smooth=0.5,
                                           reduction="sum").data, expected.sum(), rtol=1e-10,
                               atol=1e-14)
    x = Tensor(logits, requires_grad=True)
    for reduction in ("mean", "none"):
        assert gradcheck(lambda a, r=reduction: F.dice_loss(a, target, weight=weight,
                                                            smooth=0.5, reduction=r), [x])


def test_dice_loss_of_a_hard_prediction_is_one_minus_dice_of_the_sets():
    rng = np.random.default_rng(4)
    target = rng.integers(0, 3, (1, 6, 7))
    prediction = np.where(rng.random((1, 6, 7)) < 0.7, target, rng.integers(0, 4, (1, 6, 7)))
    target[0, 0] = VOID
    logits = 1e3 * (prediction[:, None] == np.arange(4)[None, :, None, None])  # softmax = 0/1
    valid = target[0] != VOID
    scores = []
    for c in np.union1d(target[0][valid], prediction[0][valid]):
        a, b = target[0][valid] == c, prediction[0][valid] == c
        scores.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    loss = F.dice_loss(logits.astype(float), target, smooth=0.0)
    assert loss.data == pytest.approx(1 - np.mean(scores), rel=1e-12)
    assert 3 in prediction[0][valid]  # a class only predicted: counted (a false positive)


def test_dice_loss_agrees_with_a_pytorch_reimplementation():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    logits, target = _case(rng, N=3, C=4, H=5, W=6)
    weight = rng.random(4) + 0.5
    t = torch.tensor(target)
    valid = (t != VOID)[:, None].double()
    truth = torch.nn.functional.one_hot(t.clamp(max=3), 4).permute(0, 3, 1, 2) * valid

    def theirs(x):
        probs = torch.softmax(x, 1) * valid
        predicted = torch.nn.functional.one_hot(x.argmax(1), 4).permute(0, 3, 1, 2) * valid
        present = ((truth + predicted).sum((2, 3)) > 0).double() * torch.tensor(weight)
        dice = (2 * (probs * truth).sum((2, 3)) + 1) / (probs.sum((2, 3))
                                                        + truth.sum((2, 3)) + 1)
        return ((1 - dice) * present).sum(1) / present.sum(1)

    agrees_with_pytorch(torch, lambda x: F.dice_loss(x, target, weight=weight, reduction="none"),
                        theirs, [logits], rng)


# ------------------------------------------------------------------------ lovasz


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4))
def test_lovasz_softmax_matches_the_reference_and_gradchecks(N, C, H, W):
    rng = np.random.default_rng(N * 1000 + C * 100 + H * 10 + W)
    logits, target = _case(rng, N, C, H, W)
    expected = lovasz_ref(logits, target)
    none = F.lovasz_softmax(logits, target, reduction="none")
    assert none.shape == (N,)
    np.testing.assert_allclose(none.data, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(F.lovasz_softmax(logits, target).data, expected.mean(),
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(F.lovasz_softmax(logits, target, reduction="sum").data,
                               expected.sum(), rtol=1e-10, atol=1e-14)
    x = Tensor(logits, requires_grad=True)
    for reduction in ("mean", "none"):
        assert gradcheck(lambda a, r=reduction: F.lovasz_softmax(a, target, reduction=r), [x])


def test_lovasz_softmax_of_a_hard_prediction_is_one_minus_iou():
    """On 0/1 probabilities the Lovász extension equals the Jaccard loss it extends: the
    mean over the target's classes of 1 - IoU."""
    rng = np.random.default_rng(6)
    target = rng.integers(0, 3, (1, 8, 9))
    prediction = np.where(rng.random((1, 8, 9)) < 0.6, target, rng.integers(0, 4, (1, 8, 9)))
    target[0, :2] = VOID
    logits = 1e3 * (prediction[:, None] == np.arange(4)[None, :, None, None])
    hist = confusion_matrix(target, prediction, 4)
    iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    present = hist.sum(1) > 0
    loss = F.lovasz_softmax(logits.astype(float), target)
    assert loss.data == pytest.approx(np.mean(1 - iou[present]), rel=1e-12)


def test_lovasz_softmax_agrees_with_bermans_pytorch_code():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    logits, target = _case(rng, N=3, C=4, H=5, W=6)

    def lovasz_grad(gt_sorted):                    # Berman et al.'s lovasz_losses.py
        gts = gt_sorted.sum()
        intersection = gts - gt_sorted.cumsum(0)
        union = gts + (1 - gt_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        return jaccard

    def theirs(x):
        losses = []
        for n in range(x.shape[0]):
            labels = torch.tensor(target[n]).reshape(-1)
            probs = torch.softmax(x[n], 0).reshape(x.shape[1], -1)[:, labels != VOID]
            labels = labels[labels != VOID]
            per_class = []
            for c in range(x.shape[1]):
                fg = (labels == c).double()
                if fg.sum() == 0:
                    continue
                errors = (fg - probs[c]).abs()
                errors_sorted, perm = torch.sort(errors, 0, descending=True)
                per_class.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
            losses.append(torch.stack(per_class).mean())
        return torch.stack(losses)

    agrees_with_pytorch(torch, lambda x: F.lovasz_softmax(x, target, reduction="none"),
                        theirs, [logits], rng)


# ------------------------------------------------------------- all three losses


LOSSES = [F.focal_loss, F.dice_loss, F.lovasz_softmax]


@pytest.mark.parametrize("loss", LOSSES)
def test_void_pixels_count_for_nothing(loss):
    rng = np.random.default_rng(8)
    logits, target = _case(rng, void=0.4)
    x = Tensor(logits, requires_grad=True)
    loss(x, target).backward()
    void = target == VOID
    assert np.all(x.grad.transpose(0, 2, 3, 1)[void] == 0)
    changed = logits.copy()
    changed.transpose(0, 2, 3, 1)[void] += 5 * rng.standard_normal((void.sum(), 4))
    assert loss(changed, target).data == pytest.approx(loss(logits, target).data, rel=1e-12)


@pytest.mark.parametrize("loss", [F.dice_loss, F.lovasz_softmax])
def test_per_image_losses_see_one_image_at_a_time(loss):
    """Why data-parallel training may split a batch: each image's loss depends on that
    image alone, so the mean over a batch is the mean of the parts' sums."""
    rng = np.random.default_rng(9)
    logits, target = _case(rng, N=4)
    whole = loss(logits, target, reduction="none").data
    for i in range(4):
        np.testing.assert_allclose(loss(logits[i:i + 1], target[i:i + 1]).data, whole[i],
                                   rtol=1e-12)
    halves = sum(loss(logits[i:i + 2], target[i:i + 2], reduction="sum").data for i in (0, 2))
    assert halves / 4 == pytest.approx(loss(logits, target).data, rel=1e-12)


@pytest.mark.parametrize("loss", [F.dice_loss, F.lovasz_softmax])
def test_an_image_of_void_alone_gives_zero_and_no_gradient(loss):
    rng = np.random.default_rng(10)
    logits, target = _case(rng, N=2)
    target[1] = VOID
    x = Tensor(logits, requires_grad=True)
    out = loss(x, target, reduction="none")
    out.sum().backward()
    assert out.data[1] == 0 and out.data[0] > 0
    assert np.all(x.grad[1] == 0)


@pytest.mark.parametrize("loss", LOSSES)
def test_float32_stays_float32(loss):
    rng = np.random.default_rng(11)
    logits, target = _case(rng)
    x = Tensor(logits.astype(np.float32), requires_grad=True)
    out = loss(x, target)
    out.backward()
    assert out.dtype == x.grad.dtype == np.float32
    np.testing.assert_allclose(out.data, loss(logits, target).data, rtol=1e-5)


@pytest.mark.parametrize("loss", LOSSES)
def test_bad_arguments_fail_with_one_clear_error(loss):
    logits = np.zeros((1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\[7\] outside \[0, 3\)"):
        loss(logits, np.array([[[0, 7], [1, VOID]]]))
    with pytest.raises(ValueError, match="target has shape"):
        loss(logits, np.zeros((1, 3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        loss(logits, np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="reduction"):
        loss(logits, np.zeros((1, 2, 2), np.int64), reduction="avg")


def test_bad_loss_parameters_are_named():
    logits, target = np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 2), np.int64)
    with pytest.raises(ValueError, match="gamma"):
        F.focal_loss(logits, target, gamma=-1)
    with pytest.raises(ValueError, match="smooth"):
        F.dice_loss(logits, target, smooth=-1)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.dice_loss(logits, target, weight=[1, 2])
    with pytest.raises(ValueError, match="weight must be finite and >= 0"):
        F.focal_loss(logits, target, weight=[1, -2, 1])
