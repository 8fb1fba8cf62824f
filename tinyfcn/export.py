"""`to_onnx(model, path, input_shape)`: FCN-32s/16s/8s and DeconvNet as an ONNX graph, written
with the `onnx` package (`pip install "tinyfcn[onnx]"`), never with PyTorch, so a model
trained here runs wherever onnxruntime does.

The graph is built layer by layer from the model's modules, one function per model that
reads like its `forward` (same layer names, same crops), with the standard operators
Conv, ConvTranspose, MaxPool, MaxUnpool, BatchNormalization, Relu, Add, Mul, Pad, Slice
and Shape. It computes what the model computes in evaluation mode (dropout off, batch
norm on its running statistics): the float32 scores (N, num_classes, H, W) of a
preprocessed float32 input (N, 3, H, W), `model.preprocess` (its mean, std and channel
order are stored in the file's metadata). H and W are fixed by `input_shape` (the crops
depend on them); the batch size N is free.

Pooling switches: tinyfcn's are positions in each (n, c) plane, ONNX's MaxPool indices
positions in the whole tensor (n and c included). DeconvNet's graph feeds MaxPool's own
indices to MaxUnpool, which reads that same whole-tensor convention, so the two never
meet and no conversion is needed.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from tinyfcn.fileio import atomic_write
from tinyfcn.kernels import conv_out_size, conv_transpose_out_size, pool_out_size
from tinyfcn.models import DeconvNet, FCN8s, FCN16s, FCN32s

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # the optional [onnx] extra: to_onnx says how to install it
    onnx = None

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: onnxruntime 1.13 and later read the file


class Value(NamedTuple):
    """A tensor of the graph under construction: its name and its shape (N, C, H, W)."""
    name: str
    shape: tuple


class GraphBuilder:
    """Nodes and weights of an ONNX graph; each method adds one layer and returns its output.
    Shapes are tracked with tinyfcn's own output-size formulas (the crops need them)."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def _node(self, op, inputs, output, shape, **attributes) -> Value:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return Value(output, shape)

    def _weight(self, name, array, dtype=np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def conv(self, x: Value, name: str, layer) -> Value:
        """nn.Conv2d: weights (C_out, C_in, kH, kW), the same layout in ONNX."""
        (kH, kW), (sH, sW), (pH, pW), (dH, dW) = (layer.kernel_size, layer.stride,
                                                  layer.padding, layer.dilation)
        inputs = [x.name, self._weight(f"{name}.weight", layer.weight.data)]
        if layer.bias is not None:
            inputs.append(self._weight(f"{name}.bias", layer.bias.data))
        N, _, H, W = x.shape
        shape = (N, layer.out_channels, conv_out_size(H, kH, sH, pH, dH),
                 conv_out_size(W, kW, sW, pW, dW))
        return self._node("Conv", inputs, name, shape, kernel_shape=[kH, kW], strides=[sH, sW],
                          pads=[pH, pW, pH, pW], dilations=[dH, dW])

    def conv_transpose(self, x: Value, name: str, layer) -> Value:
        """nn.ConvTranspose2d: weights (C_in, C_out, kH, kW), the same layout in ONNX."""
        (kH, kW), (sH, sW), (pH, pW) = layer.kernel_size, layer.stride, layer.padding
        (oH, oW), (dH, dW) = layer.output_padding, layer.dilation
        inputs = [x.name, self._weight(f"{name}.weight", layer.weight.data)]
        if layer.bias is not None:
            inputs.append(self._weight(f"{name}.bias", layer.bias.data))
        N, _, H, W = x.shape
        shape = (N, layer.out_channels, conv_transpose_out_size(H, kH, sH, pH, oH, dH),
                 conv_transpose_out_size(W, kW, sW, pW, oW, dW))
        return self._node("ConvTranspose", inputs, name, shape, kernel_shape=[kH, kW],
                          strides=[sH, sW], pads=[pH, pW, pH, pW], output_padding=[oH, oW],
                          dilations=[dH, dW])

    def batch_norm(self, x: Value, name: str, layer) -> Value:
        """nn.BatchNorm2d in evaluation mode: the running statistics."""
        inputs = [x.name] + [self._weight(f"{name}.{key}", getattr(layer, key).data)
                             for key in ("weight", "bias", "running_mean", "running_var")]
        return self._node("BatchNormalization", inputs, name, x.shape, epsilon=layer.eps)

    def identity(self, x: Value, name: str) -> Value:
        return self._node("Identity", [x.name], name, x.shape)

    def relu(self, x: Value, name: str) -> Value:
        return self._node("Relu", [x.name], name, x.shape)

    def add(self, a: Value, b: Value, name: str) -> Value:
        return self._node("Add", [a.name, b.name], name, a.shape)

    def scale(self, x: Value, factor: float, name: str) -> Value:
        return self._node("Mul", [x.name, self._weight(f"{name}.factor", factor)], name, x.shape)

    def max_pool(self, x: Value, name: str, ceil_mode: bool, indices: bool = False):
        """2x2 pooling, stride 2; with `indices` also ONNX's switches (see the module doc)."""
        N, C, H, W = x.shape
        shape = (N, C, pool_out_size(H, 2, 2, 0, ceil_mode), pool_out_size(W, 2, 2, 0, ceil_mode))
        outputs = [name, f"{name}.indices"] if indices else [name]
        self.nodes.append(helper.make_node("MaxPool", [x.name], outputs, name=name,
                                           kernel_shape=[2, 2], strides=[2, 2],
                                           ceil_mode=int(ceil_mode)))
        pooled = Value(name, shape)
        return (pooled, Value(outputs[1], shape)) if indices else pooled

    def max_unpool(self, x: Value, indices: Value, like: Value, name: str) -> Value:
        """Undo a 2x2 pooling of `like`: each value back at its switch, zeros elsewhere; the
        output has `like`'s shape (read at run time, so the batch size stays free)."""
        size = self._node("Shape", [like.name], f"{name}.output_shape", (4,))
        return self._node("MaxUnpool", [x.name, indices.name, size.name], name, like.shape,
                          kernel_shape=[2, 2], strides=[2, 2])

    def pad_bottom_right(self, x: Value, multiple: int, name: str) -> Value:
        """Zeros at the bottom and right up to a multiple of `multiple` (pad_input)."""
        N, C, H, W = x.shape
        extra_h, extra_w = -H % multiple, -W % multiple
        if not extra_h and not extra_w:
            return x
        pads = self._weight(f"{name}.pads", [0, 0, 0, 0, 0, 0, extra_h, extra_w], np.int64)
        return self._node("Pad", [x.name, pads], name, (N, C, H + extra_h, W + extra_w))

    def crop(self, x: Value, name: str, offset, size) -> Value:
        """F.crop: rows offset[0] ... offset[0] + size[0], columns likewise."""
        (oh, ow), (h, w) = ((offset, offset) if np.isscalar(offset) else offset), size
        if (oh, ow, h, w) == (0, 0, *x.shape[2:]):
            return x
        starts = self._weight(f"{name}.starts", [oh, ow], np.int64)
        ends = self._weight(f"{name}.ends", [oh + h, ow + w], np.int64)
        axes = self._weight(f"{name}.axes", [2, 3], np.int64)
        return self._node("Slice", [x.name, starts, ends, axes], name, (*x.shape[:2], h, w))


class Encoder(NamedTuple):
    """What the decoders use, as in models/backbones.Features."""
    pools: list        # pool1 ... pool5
    fc7: Value
    switches: list     # each pooling's indices (DeconvNet only)
    pooled: list       # the map each pooling read


def _encoder(g: GraphBuilder, model, x: Value, indices: bool = False) -> Encoder:
    """conv1_1 ... fc7, as backbones.run_encoder: the same `backbone.layers` (dropout is off
    in evaluation)."""
    pools, switches, pooled = [], [], []
    h = x
    for layer in model.backbone.layers:
        if layer.kind == "pool":
            pooled.append(h)
            if indices:
                h, switch = g.max_pool(h, layer.name, model.backbone.ceil_mode, indices=True)
                switches.append(switch)
            else:
                h = g.max_pool(h, layer.name, model.backbone.ceil_mode)
            pools.append(h)
            continue
        h = g.conv(h, layer.name, getattr(model, layer.name))
        norm = getattr(model, f"{layer.name}_bn", None)
        if norm is not None:
            h = g.batch_norm(h, f"{layer.name}_bn", norm)
        h = g.relu(h, f"{layer.name}_relu")
    return Encoder(pools, h, switches, pooled)


def _fcn32s(g: GraphBuilder, model: FCN32s, x: Value) -> Value:
    H, W = x.shape[2:]
    features = _encoder(g, model, g.pad_bottom_right(x, model.backbone.pad_to, "pad_input"))
    h = g.conv(features.fc7, "score_fr", model.score_fr)                 # 1/32
    h = g.conv_transpose(h, "upscore", model.upscore)                    # 1/1
    return g.crop(h, "score", model.crop_offsets["output"], (H, W))


def _fcn16s(g: GraphBuilder, model: FCN16s, x: Value) -> Value:
    H, W = x.shape[2:]
    features = _encoder(g, model, g.pad_bottom_right(x, model.backbone.pad_to, "pad_input"))
    h = g.conv(features.fc7, "score_fr", model.score_fr)                 # 1/32
    upscore2 = g.conv_transpose(h, "upscore2", model.upscore2)           # 1/16
    h = g.conv(features.pools[3], "score_pool4", model.score_pool4)
    score_pool4c = g.crop(h, "score_pool4c", model.crop_offsets["score_pool4"],
                          upscore2.shape[2:])
    h = g.add(upscore2, score_pool4c, "fuse_pool4")
    h = g.conv_transpose(h, "upscore16", model.upscore16)                # 1/1
    return g.crop(h, "score", model.crop_offsets["output"], (H, W))


def _fcn8s(g: GraphBuilder, model: FCN8s, x: Value) -> Value:
    H, W = x.shape[2:]
    features = _encoder(g, model, g.pad_bottom_right(x, model.backbone.pad_to, "pad_input"))
    pool4, pool3 = features.pools[3], features.pools[2]
    if model.at_once:
        pool4, pool3 = g.scale(pool4, 0.01, "scale_pool4"), g.scale(pool3, 0.0001, "scale_pool3")
    h = g.conv(features.fc7, "score_fr", model.score_fr)                 # 1/32
    upscore2 = g.conv_transpose(h, "upscore2", model.upscore2)           # 1/16
    h = g.conv(pool4, "score_pool4", model.score_pool4)
    score_pool4c = g.crop(h, "score_pool4c", model.crop_offsets["score_pool4"],
                          upscore2.shape[2:])
    h = g.add(upscore2, score_pool4c, "fuse_pool4")
    upscore_pool4 = g.conv_transpose(h, "upscore_pool4", model.upscore_pool4)  # 1/8
    h = g.conv(pool3, "score_pool3", model.score_pool3)
    score_pool3c = g.crop(h, "score_pool3c", model.crop_offsets["score_pool3"],
                          upscore_pool4.shape[2:])
    h = g.add(upscore_pool4, score_pool3c, "fuse_pool3")
    h = g.conv_transpose(h, "upscore8", model.upscore8)                  # 1/1
    return g.crop(h, "score", model.crop_offsets["output"], (H, W))


def _deconvnet(g: GraphBuilder, model: DeconvNet, x: Value) -> Value:
    H, W = x.shape[2:]
    features = _encoder(g, model, g.pad_bottom_right(x, model.backbone.pad_to, "pad_input"),
                        indices=True)

    def decode(name, h):
        h = g.batch_norm(g.conv(h, name, getattr(model, name)), f"{name}_bn",
                         getattr(model, f"{name}_bn"))
        return g.relu(h, f"{name}_relu")

    h = decode("deconv_fc", features.fc7)
    for b in range(len(features.switches), 0, -1):
        h = g.max_unpool(h, features.switches[b - 1], features.pooled[b - 1], f"unpool{b}")
        h = decode(f"deconv{b}_2", decode(f"deconv{b}_1", h))
    return g.crop(g.conv(h, "score_conv", model.score), "score", 0, (H, W))


# the most derived class first: each model's graph function
GRAPHS = ((FCN8s, _fcn8s), (FCN16s, _fcn16s), (FCN32s, _fcn32s), (DeconvNet, _deconvnet))


def to_onnx(model, path, input_shape) -> None:
    """Write `model` (FCN-32s/16s/8s on either backbone, or DeconvNet) to `path` as an ONNX
    graph (opset 17) that maps a preprocessed float32 input of `input_shape`
    (N, 3, H, W) — any N — to float32 scores (N, num_classes, H, W), as `model.eval()`
    would. The file is written atomically and checked with `onnx.checker`."""
    if onnx is None:
        raise ImportError('to_onnx needs the onnx package: pip install "tinyfcn[onnx]"')
    build = next((fn for cls, fn in GRAPHS if isinstance(model, cls)), None)
    if build is None:
        raise TypeError(f"to_onnx exports FCN32s, FCN16s, FCN8s and DeconvNet, not "
                        f"{type(model).__name__}")
    shape = tuple(int(n) for n in input_shape)
    if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (N, 3, H, W) with positive sizes, got "
                         f"{tuple(input_shape)}")
    g = GraphBuilder()
    scores = build(g, model, Value("input", shape))
    scores = g.identity(scores, "scores")  # the same output name for every model
    dims = ["N", *scores.shape[1:]]
    graph = helper.make_graph(
        g.nodes, f"tinyfcn_{model.config['model']}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape[1:]])],
        [helper.make_tensor_value_info(scores.name, TensorProto.FLOAT, dims)],
        g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tinyfcn", ir_version=IR_VERSION)
    backbone = model.backbone
    helper.set_model_props(proto, {
        "tinyfcn.config": json.dumps(model.config),
        "tinyfcn.preprocess": json.dumps({"channels": "BGR" if backbone.bgr else "RGB",
                                          "scale": backbone.scale, "mean": backbone.mean,
                                          "std": backbone.std})})
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
