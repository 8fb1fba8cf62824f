"""The autograd core: every op gradient-checked, broadcasting, graph freeing, dtype."""

import gc
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyfcn as tf
from tinyfcn import Tensor, gradcheck


def t(rng, *shape, positive=False):
    data = rng.standard_normal(shape)
    if positive:
        data = np.abs(data) + 0.5
    return Tensor(data, requires_grad=True)


# ---------------------------------------------------------------- binary ops

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)),
                                    ((2, 1, 4), (3, 1)), ((1,), (2, 3))])
def test_binary_ops_gradcheck_with_broadcasting(rng, name, shapes):
    positive = name in ("div", "pow")
    a, b = t(rng, *shapes[0], positive=positive), t(rng, *shapes[1], positive=positive)
    assert gradcheck(BINARY[name], [a, b])


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
def test_broadcast_gradients_have_input_shapes(shape, data):
    rng = np.random.default_rng(0)
    # The second operand drops leading axes and squeezes some axes to 1.
    k = data.draw(st.integers(0, len(shape)))
    other = [1 if data.draw(st.booleans()) else n for n in shape[k:]]
    a, b = t(rng, *shape), t(rng, *other)
    assert gradcheck(lambda x, y: x * y + y, [a, b])


def test_scalars_on_either_side(rng):
    a = t(rng, 2, 3, positive=True)
    assert gradcheck(lambda x: 2 * x + 1 - x / 3 + 3 / x - (1 - x) * 0.5 + x ** 2 + 2 ** x, [a])


def test_matmul_gradcheck(rng):
    assert gradcheck(lambda a, b: a @ b, [t(rng, 3, 4), t(rng, 4, 5)])
    assert gradcheck(lambda a, b: a @ b, [t(rng, 2, 3, 4), t(rng, 4, 2)])


def test_unary_minus(rng):
    assert gradcheck(lambda a: -a, [t(rng, 3, 2)])


# ----------------------------------------------------------------- unary maths

@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "relu", "sigmoid", "tanh"])
def test_unary_gradcheck(rng, name):
    x = t(rng, 3, 5, positive=name in ("log", "sqrt"))
    assert gradcheck(lambda a: getattr(a, name)(), [x])


def test_relu_backward_does_not_modify_incoming_gradient(rng):
    x = t(rng, 4, 4)
    g = rng.standard_normal((4, 4))
    g_copy = g.copy()
    x.relu().backward(g)
    np.testing.assert_array_equal(g, g_copy)


# ------------------------------------------------------------------ reductions

@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data(),
       st.sampled_from(["sum", "mean", "max"]), st.booleans())
def test_reductions_gradcheck(shape, data, name, keepdims):
    rng = np.random.default_rng(1)
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    x = t(rng, *shape)
    assert gradcheck(lambda a: getattr(a, name)(axis=axis, keepdims=keepdims), [x])


def test_reduction_values_match_numpy(rng):
    x = t(rng, 3, 4, 5)
    np.testing.assert_allclose(x.sum(axis=(0, 2)).data, x.data.sum(axis=(0, 2)))
    np.testing.assert_allclose(x.mean(axis=-1, keepdims=True).data,
                               x.data.mean(axis=-1, keepdims=True))
    np.testing.assert_allclose(x.max(axis=1).data, x.data.max(axis=1))


def test_max_shares_gradient_between_ties():
    x = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5])


# --------------------------------------------------------------------- shapes

def test_reshape_transpose_gradcheck(rng):
    assert gradcheck(lambda a: a.reshape(4, 6).transpose(1, 0), [t(rng, 2, 3, 4)])
    assert gradcheck(lambda a: a.transpose(2, 0, 1) * 2, [t(rng, 2, 3, 4)])
    assert gradcheck(lambda a: a.T, [t(rng, 2, 3)])


@pytest.mark.parametrize("index", [
    (slice(1, 3),), (slice(None), slice(0, 4, 2)), (Ellipsis, slice(None, None, -1)),
    (0, slice(1, None)), (slice(None, None, 2), 1, slice(1, 5, 3))])
def test_getitem_gradcheck(rng, index):
    assert gradcheck(lambda a: a[index], [t(rng, 3, 4, 5)])


def test_getitem_values_are_numpy_slices(rng):
    x = t(rng, 4, 6)
    np.testing.assert_array_equal(x[1:3, ::2].data, x.data[1:3, ::2])


def test_pad_concatenate_stack_gradcheck(rng):
    assert gradcheck(lambda a: tf.pad(a, ((1, 0), (2, 3))), [t(rng, 2, 3)])
    assert gradcheck(lambda a, b: tf.concatenate([a, b, a], axis=1), [t(rng, 2, 3), t(rng, 2, 1)])
    assert gradcheck(lambda a, b: tf.stack([a, b], axis=-1), [t(rng, 2, 3), t(rng, 2, 3)])


def test_composite_expression(rng):
    def f(a, b):
        h = (a @ b).tanh() + (a @ b).sigmoid()
        return (h * h).mean(axis=0).exp().sum()
    assert gradcheck(f, [t(rng, 3, 4), t(rng, 4, 2)])


# --------------------------------------------------------------- gradcheck itself

class _WrongBackward(tf.Function):
    """x[::-1] with a backward that forgets to reverse: invisible to an all-ones upstream."""

    def forward(self, a):
        return a[::-1].copy()

    def backward(self, g):
        return (g,)


def test_gradcheck_catches_wrong_backward(rng):
    with pytest.raises(AssertionError, match="input #0"):
        gradcheck(lambda a: _WrongBackward.apply(a), [t(rng, 5)])


def test_gradcheck_catches_wrong_backward_in_random_direction_mode(rng):
    with pytest.raises(AssertionError, match="random direction"):
        gradcheck(lambda a: _WrongBackward.apply(a), [t(rng, 1000)])


def test_gradcheck_passes_large_input_in_random_direction_mode(rng):
    assert gradcheck(lambda a: (a * a)[::-1], [t(rng, 1000)])


# ------------------------------------------------------------ graph behaviour

def test_deep_chain_of_100000_ops():
    x = Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1e-5
    y.backward()
    assert x.grad == pytest.approx(1.0)


def test_gradient_accumulates_into_leaves(rng):
    x = t(rng, 3)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(3, 5.0))


def test_shared_subexpression_gets_summed_gradient():
    x = Tensor(np.array(3.0), requires_grad=True)
    y = x * x
    (y + y).backward()
    assert x.grad == pytest.approx(12.0)


def test_graph_is_freed_after_backward(rng):
    x = t(rng, 100)
    hidden = (x * 2).exp()
    probe = weakref.ref(hidden.creator)
    loss = (hidden * 3).sum()
    del hidden
    loss.backward()
    gc.collect()
    assert probe() is None or probe().freed


def test_no_reference_cycles_keep_arrays_alive(rng):
    x = t(rng, 1000)
    y = (x * 2).tanh()
    z = (y * y).sum()
    array_ref = weakref.ref(y.data)
    del y
    gc.disable()
    try:
        z.backward()
        del z
        assert array_ref() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_backward_twice_through_freed_graph_raises(rng):
    x = t(rng, 3)
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="freed"):
        y.backward()


def test_retain_graph_allows_second_backward(rng):
    x = t(rng, 3)
    y = (x * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, np.full(3, 4.0))


def test_backward_on_non_scalar_needs_gradient(rng):
    y = t(rng, 2, 3) * 2
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        y.backward()


def test_shape_mismatch_names_shapes(rng):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        t(rng, 2, 3) + t(rng, 4)
    with pytest.raises(ValueError, match="matmul"):
        t(rng, 2, 3) @ t(rng, 2, 3)


def test_no_grad_records_nothing(rng):
    x = t(rng, 3)
    with tf.no_grad():
        y = x * 2 + 1
    assert y.creator is None and not y.requires_grad
    assert tf.is_grad_enabled()


def test_detach_cuts_the_graph(rng):
    x = t(rng, 3)
    y = (x * 2).detach()
    assert y.creator is None and not y.requires_grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_through_every_op(dtype):
    a = Tensor(np.ones((2, 3), dtype=dtype), requires_grad=True)
    b = Tensor(np.full((3,), 2, dtype=dtype), requires_grad=True)
    outs = [a + b, a - 1, 2 * a, a / 3.0, a ** 2, a ** b, -a, a @ b.reshape(3, 1), a.exp(),
            a.log(), a.sqrt(), a.relu(), a.sigmoid(), a.tanh(), a.sum(), a.mean(axis=0),
            a.max(axis=1), a.reshape(6), a.T, a[:, 1:], tf.pad(a, 1),
            tf.concatenate([a, a]), tf.stack([a, a])]
    for out in outs:
        assert out.dtype == dtype
    loss = sum(o.sum() for o in outs)
    loss.backward()
    assert a.grad.dtype == dtype and b.grad.dtype == dtype


# ----------------------------------------------------------------- PyTorch oracle

def test_random_expressions_agree_with_pytorch(rng):
    torch = pytest.importorskip("torch")
    for _ in range(5):
        a0, b0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
        c0 = rng.standard_normal((1, 2))

        def expr(a, b, c, lib):
            h = (a @ b) * c - c / (1 + (a @ b) ** 2)
            h = lib.tanh(h) + lib.sigmoid(h) * 0.5
            return (h.exp() * 0.1).sum() + h.max() - h.mean()

        ours = [Tensor(v, requires_grad=True) for v in (a0, b0, c0)]
        theirs = [torch.tensor(v, requires_grad=True) for v in (a0, b0, c0)]
        out = expr(*ours, lib=tf)
        ref = expr(*theirs, lib=torch)
        out.backward()
        ref.backward()
        np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10)
        for x, y in zip(ours, theirs):
            np.testing.assert_allclose(x.grad, y.grad.numpy(), rtol=1e-8, atol=1e-12)
