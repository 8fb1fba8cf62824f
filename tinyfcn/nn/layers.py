"""Layers: thin Modules over `tinyfcn.functional`, with PyTorch's constructor arguments."""

from __future__ import annotations

import numpy as np

from tinyfcn import functional as F
from tinyfcn.functional._checks import pair
from tinyfcn.nn import init
from tinyfcn.nn.module import Buffer, Module, Parameter
from tinyfcn.tensor import Tensor


class _ConvBase(Module):
    """What Conv2d and ConvTranspose2d share, as PyTorch's `_ConvNd`: the arguments, a
    Kaiming-initialised weight, an optional bias and the repr. The weight is the same matrix
    for both, read in opposite directions: (C_out, C_in, kH, kW) for a convolution,
    (C_in, C_out, kH, kW) for the transposed one."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 transposed, output_padding, bias, dtype):
        kH, kW = pair(kernel_size, "kernel_size", 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = (kH, kW), pair(stride, "stride", 1)
        self.padding, self.dilation = pair(padding, "padding", 0), pair(dilation, "dilation", 1)
        self.transposed = transposed
        self.output_padding = pair(output_padding, "output_padding", 0)
        channels = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        self.weight = Parameter(np.empty((*channels, kH, kW), dtype=dtype))
        init.kaiming_normal_(self.weight)
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        return text + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvBase):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         False, 0, bias, dtype)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    @classmethod
    def from_linear(cls, weight, bias, in_shape, padding=0) -> Conv2d:
        """The convolution that computes a fully connected layer (FCN's "convolutionalization").

        An FC layer with `weight` (out_features, C * kH * kW) over a feature map of
        `in_shape` (C, kH, kW), flattened in C, H, W order as PyTorch's `flatten` does, is
        a kH x kW convolution with the same numbers: on a C x kH x kW input it gives a
        1 x 1 map equal to the FC output, and on a larger one it slides the FC layer over
        every kH x kW window (stride 1). Arrays or Tensors; the weights are copied."""
        w = np.array(weight.data if isinstance(weight, Tensor) else weight)
        C, kH, kW = (int(n) for n in in_shape)
        if w.ndim != 2 or w.shape[1] != C * kH * kW:
            raise ValueError(f"a linear weight over a {C} x {kH} x {kW} map must have shape "
                             f"(out_features, {C * kH * kW}), got {w.shape}")
        conv = cls(C, w.shape[0], (kH, kW), padding=padding, bias=bias is not None,
                   dtype=w.dtype)
        conv.weight.data = np.ascontiguousarray(w.reshape(w.shape[0], C, kH, kW))
        if bias is not None:
            b = np.array(bias.data if isinstance(bias, Tensor) else bias, dtype=w.dtype)
            if b.shape != (w.shape[0],):
                raise ValueError(f"bias must have shape ({w.shape[0]},), got {b.shape}")
            conv.bias.data = b
        return conv


class Linear(Module):
    """y = x @ weight.T + bias over the last axis; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        init.kaiming_normal_(self.weight)
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        y = x @ self.weight.T
        return y + self.bias if self.bias is not None else y

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + ("" if self.bias is not None else ", bias=False"))


class ConvTranspose2d(_ConvBase):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, bias=True, dilation=1, dtype=np.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         True, output_padding, bias, dtype)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.dilation)


class BatchNorm2d(Module):
    """Per-channel normalisation with learned scale and shift; running statistics in eval."""

    # PyTorch's counter of batches, used only by its momentum=None (not supported here)
    ignored_state_keys = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        if momentum is None or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r} (PyTorch's "
                             f"momentum=None, a cumulative average, is not supported)")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.running_mean = Buffer(np.zeros(num_features, dtype=dtype))
        self.running_var = Buffer(np.ones(num_features, dtype=dtype))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                            self.bias, self.training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 return_indices=False):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.return_indices = ceil_mode, return_indices

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"ceil_mode={self.ceil_mode}")


class MaxUnpool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x, indices, output_size=None):
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding,
                              output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Dropout(Module):
    def __init__(self, p=0.5):
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Sequential(Module):
    def __init__(self, *modules):
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __getitem__(self, i):
        return list(self.children())[i]

    def __len__(self):
        return len(list(self.children()))

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


class PReLU(Module):
    """ReLU with a learned slope on the negative side: one for all channels, or one per channel."""

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float32):
        self.num_parameters = num_parameters
        self.weight = Parameter(np.full(num_parameters, init, dtype=dtype))

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"
