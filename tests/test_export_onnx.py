"""tinyfcn.export.to_onnx: each model kind runs in onnxruntime with tinyfcn's scores; the file
passes onnx.checker; no torch is needed. Skipped when the onnx extra is not installed."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tinyfcn import models, nn, no_grad

onnx = pytest.importorskip("onnx")
from tinyfcn.export import to_onnx  # noqa: E402  (after the skip: it needs onnx)

CASES = [  # (model, its arguments, input shape): odd sizes, so padding and crops matter
    ("fcn32s", dict(backbone="lite"), (2, 3, 50, 37)),
    ("fcn16s", dict(backbone="lite"), (2, 3, 50, 37)),
    ("fcn8s", dict(backbone="lite"), (2, 3, 50, 37)),
    ("fcn8s", dict(backbone="lite", at_once=True), (2, 3, 64, 64)),
    ("deconvnet", dict(), (2, 3, 50, 37)),
    ("fcn32s", dict(backbone="vgg16", fc_width=32), (1, 3, 40, 33)),
    ("fcn16s", dict(backbone="vgg16", fc_width=32), (1, 3, 40, 33)),
    ("fcn8s", dict(backbone="vgg16", fc_width=32), (2, 3, 40, 33)),
]
ALLOWED_OPS = {"Conv", "ConvTranspose", "MaxPool", "MaxUnpool", "BatchNormalization", "Relu",
               "Add", "Mul", "Pad", "Slice", "Shape", "Identity"}


def trained_looking(name, kwargs, seed=0):
    """A model with every parameter and running statistic random (the reference initialises
    the score layers at zero, which would hide a wrong skip), in evaluation mode."""
    rng = np.random.default_rng(seed)
    model = models.MODELS[name](num_classes=5, **kwargs)
    for key, p in model.named_state():
        fan_in = max(1, p.data[0].size) if p.ndim > 1 else 1
        if key.endswith("running_var"):
            p.data = rng.uniform(0.5, 2.0, p.shape).astype(np.float32)
        else:
            p.data = (rng.standard_normal(p.shape) * np.sqrt(2 / fan_in)).astype(np.float32)
    return model.eval()


def scores(model, x):
    with no_grad():
        return model(x).data


def assert_close(ours, theirs):
    # rtol 1e-4, and an atol at the scale of the scores for the elements near zero
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5 * np.abs(ours).max())


@pytest.mark.parametrize("name, kwargs, shape", CASES,
                         ids=[f"{n}-{k.get('backbone', 'lite')}{'-at_once' * ('at_once' in k)}"
                              for n, k, _ in CASES])
def test_onnxruntime_gives_tinyfcns_scores(tmp_path, name, kwargs, shape):
    ort = pytest.importorskip("onnxruntime")
    model = trained_looking(name, kwargs)
    path = tmp_path / "model.onnx"
    to_onnx(model, path, shape)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {node.op_type for node in proto.graph.node} <= ALLOWED_OPS
    assert json.loads({p.key: p.value for p in proto.metadata_props}["tinyfcn.config"]) \
        == model.config

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    expected = scores(model, x)
    (out,) = session.run(["scores"], {"input": x})
    assert out.shape == expected.shape == (shape[0], 5, *shape[2:])
    assert_close(expected, out)
    if kwargs.get("backbone") == "vgg16":
        return  # (the batch check below costs 10 s on this backbone; lite proves it)
    # the batch size is free: three images through the same file
    x3 = np.random.default_rng(2).standard_normal((3, *shape[1:])).astype(np.float32)
    assert_close(scores(model, x3), session.run(["scores"], {"input": x3})[0])


def test_deconvnets_switches_route_each_value_back_to_its_own_image_and_channel(tmp_path):
    """ONNX's pooling indices count over the whole tensor, tinyfcn's within one plane. With
    images and channels that differ, a confusion of the two puts values in the wrong plane."""
    ort = pytest.importorskip("onnxruntime")
    model = trained_looking("deconvnet", {}, seed=3)
    to_onnx(model, tmp_path / "d.onnx", (2, 3, 32, 32))
    proto = onnx.load(tmp_path / "d.onnx")
    pools = {n.name: n for n in proto.graph.node if n.op_type == "MaxPool"}
    unpools = [n for n in proto.graph.node if n.op_type == "MaxUnpool"]
    assert len(unpools) == 5 and all(n.input[1] == pools[f"pool{b}"].output[1]
                                     for n, b in zip(unpools, range(5, 0, -1)))
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    x[1] = -x[1]  # the second image's maxima lie elsewhere
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    assert_close(scores(model, x), session.run(["scores"], {"input": x})[0])


def test_export_needs_no_torch(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
            "from tinyfcn import models\nfrom tinyfcn.export import to_onnx\n"
            f"to_onnx(models.fcn8s(3, backbone='lite'), {str(tmp_path / 'm.onnx')!r}, "
            "(1, 3, 32, 32))\nassert 'torch' not in [m.split('.')[0] for m in sys.modules "
            "if sys.modules[m] is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"))


def test_export_refuses_what_it_cannot_write(tmp_path, monkeypatch):
    model = models.fcn32s(3, backbone="lite")
    with pytest.raises(ValueError, match="input_shape"):
        to_onnx(model, tmp_path / "m.onnx", (1, 1, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        to_onnx(model, tmp_path / "m.onnx", (3, 32, 32))
    with pytest.raises(TypeError, match="Sequential"):
        to_onnx(nn.Sequential(nn.ReLU()), tmp_path / "m.onnx", (1, 3, 32, 32))
    import tinyfcn.export
    monkeypatch.setattr(tinyfcn.export, "onnx", None)
    with pytest.raises(ImportError, match=r"tinyfcn\[onnx\]"):
        to_onnx(model, tmp_path / "m.onnx", (1, 3, 32, 32))
    assert not list(tmp_path.iterdir())  # nothing half-written
