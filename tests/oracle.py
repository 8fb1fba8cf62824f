"""PyTorch as a test oracle: forward and every gradient of a tinyfcn function against the
same function in PyTorch, on the same float64 arrays and the same random upstream gradient."""

import numpy as np

from tinyfcn import Tensor


def agrees_with_pytorch(torch, ours, theirs, arrays, rng, rtol=1e-9, atol=1e-10):
    """`ours(*tensors)` and `theirs(*torch_tensors)` agree in value and in the gradient of
    each array; returns the output shape."""
    mine = [Tensor(a, requires_grad=True) for a in arrays]
    peer = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = ours(*mine), theirs(*peer)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=rtol, atol=atol)
    for a, t in zip(mine, peer, strict=True):
        np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=rtol, atol=atol)
    return out.shape
