"""FCN-32s/16s/8s and DeconvNet: shapes, gradients, learning, and the reference port."""

import numpy as np
import pytest

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import Tensor, gradcheck, models, optim


@pytest.mark.parametrize("name", sorted(models.MODELS))
@pytest.mark.parametrize("hw", [(64, 64), (45, 70)])
def test_output_is_n_classes_h_w_for_any_input_size(name, hw):
    model = models.MODELS[name](num_classes=5, backbone="lite")
    out = model(np.zeros((2, 3, *hw), np.float32))
    assert out.shape == (2, 5, *hw) and out.dtype == np.float32


def test_vgg16_fcns_have_reference_names_and_shapes():
    model = models.fcn8s(21, backbone="vgg16", fc_width=32)
    names = [n.split(".")[0] for n, _ in model.named_parameters()]
    for expected in ["conv1_1", "conv5_3", "fc6", "fc7", "score_fr", "score_pool4",
                     "score_pool3", "upscore2", "upscore_pool4", "upscore8"]:
        assert expected in names
    assert model.fc6.weight.shape == (32, 512, 7, 7)
    assert model.upscore8.bias is None and model.conv1_1.padding == (100, 100)
    assert [n for n in names if n.startswith("upscore")] == ["upscore2", "upscore_pool4",
                                                            "upscore8"]
    assert "upscore.weight" in dict(models.fcn32s(fc_width=8).named_parameters())
    assert {"upscore2.weight", "upscore16.weight"} <= set(
        dict(models.fcn16s(fc_width=8).named_parameters()))


def test_whole_small_fcn8s_gradchecks_end_to_end():
    tinyfcn.manual_seed(0)
    model = models.fcn8s(3, backbone="lite", fc_width=8).to(np.float64)
    for layer in (model.score_pool4, model.score_pool3):  # zero-init would hide their inputs
        layer.weight.data[...] = np.random.default_rng(0).standard_normal(layer.weight.shape)
    x = Tensor(np.random.default_rng(1).standard_normal((1, 3, 32, 32)), requires_grad=True)
    target = np.random.default_rng(2).integers(0, 3, (1, 32, 32))
    # gradients reach the input and conv1_1 through all three paths (fc7, pool4, pool3)
    checked = ["conv1_1", "fc6", "upscore8"]
    weights = [getattr(model, n).weight for n in checked]

    def loss(x, *ws):
        for name, w in zip(checked, ws):
            getattr(model, name).weight = w
        return F.cross_entropy(model(x), target)

    assert gradcheck(loss, [x, *weights], atol=1e-6, rtol=1e-4)


def _drawn_scene(size=64):
    """Two classes of shapes on a background, drawn with NumPy."""
    y, x = np.mgrid[:size, :size]
    label = np.zeros((size, size), np.int64)
    label[(y - 20) ** 2 + (x - 22) ** 2 < 120] = 1
    label[(abs(y - 44) < 8) & (abs(x - 40) < 14)] = 2
    image = np.zeros((size, size, 3), np.uint8)
    image[...] = (40, 90, 40)
    image[label == 1] = (200, 60, 60)
    image[label == 2] = (60, 60, 220)
    return image, label


def test_fcn8s_lite_overfits_one_batch():
    tinyfcn.manual_seed(0)
    image, label = _drawn_scene()
    model = models.fcn8s(3, backbone="lite")
    x = model.preprocess(np.stack([image, image[:, ::-1]]))
    target = np.stack([label, label[:, ::-1]])
    opt = optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    with tinyfcn.no_grad():
        accuracy = (model(x).data.argmax(1) == target).mean()
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    assert accuracy > 0.95


def test_preprocess_reference_bgr_mean():
    model = models.fcn32s(backbone="vgg16", fc_width=8)
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 200  # red
    x = model.preprocess(image)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [-104.00699, -116.66877, 200 - 122.67892],
                               rtol=1e-6)


def test_build_from_config_round_trip(tmp_path):
    model = models.fcn16s(4, backbone="lite")
    tinyfcn.save({"config": model.config, "model": model.state_dict()}, tmp_path / "m.npz")
    ckpt = tinyfcn.load(tmp_path / "m.npz")
    again = models.build(ckpt["config"])
    again.load_state_dict(ckpt["model"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    model.eval(), again.eval()
    np.testing.assert_array_equal(model(x).data, again(x).data)


def test_one_layer_table_builds_runs_copies_and_maps_the_encoder():
    """Any table of layers gives an FCN encoder, torchvision's `features` and the index map
    between them, and the geometry: all read from the one description."""
    from dataclasses import replace

    from tinyfcn import nn
    from tinyfcn.models import backbones
    from tinyfcn.models.vgg import conv_indices, feature_layers
    table = (("conv1_1", 4), "pool1", ("conv2_1", 6), ("conv2_2", 5), "pool2")
    backbone = replace(backbones.lite(fc_width=8), table=table)
    assert [layer.name for layer in backbone.layers] == ["conv1_1", "pool1", "conv2_1",
                                                         "conv2_2", "pool2", "fc6", "fc7"]
    assert conv_indices(backbone) == [("conv1_1", 0), ("conv2_1", 3), ("conv2_2", 5)]
    features = nn.Sequential(*feature_layers(backbone)).to(np.float64)
    encoder = nn.Module()
    backbones.add_encoder(encoder, backbone)
    encoder.to(np.float64)
    assert encoder.fc6.weight.shape == (8, 5, 3, 3)
    for name, index in conv_indices(backbone):
        getattr(encoder, name).weight.data = features[index].weight.data
        getattr(encoder, name).bias.data = features[index].bias.data
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 16))
    got = backbones.run_encoder(encoder, backbone, x, dropout=0.0, return_indices=True)
    np.testing.assert_array_equal(got.pools["pool2"].data, features(x).data)
    assert got.sizes == {"pool1": (12, 16), "pool2": (6, 8)}
    assert got.switches["pool2"].shape == got.pools["pool2"].shape == (1, 5, 3, 4)
    maps = backbone.coord_maps()  # pool2 is on a grid of stride 4, windows centred at 1.5
    assert (maps["pool2"].a, maps["pool2"].b) == (4, 1.5) and maps["fc7"] == maps["pool2"]


# ------------------------------------------------------------ the reference PyTorch port

def _reference_fcn(torch, variant, n_class, fc_width):
    """FCN as the reference PyTorch port builds it (wkentaro/pytorch-fcn), random weights."""
    nn = torch.nn

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
            for b, (cin, cout, depth) in enumerate(widths, start=1):
                for i in range(1, depth + 1):
                    pad = 100 if (b, i) == (1, 1) else 1
                    setattr(self, f"conv{b}_{i}", nn.Conv2d(cin if i == 1 else cout, cout, 3,
                                                            padding=pad))
            self.fc6 = nn.Conv2d(512, fc_width, 7)
            self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
            self.score_fr = nn.Conv2d(fc_width, n_class, 1)
            if variant in ("16s", "8s"):
                self.score_pool4 = nn.Conv2d(512, n_class, 1)
            if variant == "8s":
                self.score_pool3 = nn.Conv2d(256, n_class, 1)
            ups = {"32s": [("upscore", 64, 32)], "16s": [("upscore2", 4, 2), ("upscore16", 32, 16)],
                   "8s": [("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)]}
            for name, k, s in ups[variant]:
                setattr(self, name, nn.ConvTranspose2d(n_class, n_class, k, stride=s, bias=False))

        def forward(self, x):
            h, pools = x, []
            for b, depth in enumerate([2, 2, 3, 3, 3], start=1):
                for i in range(1, depth + 1):
                    h = torch.relu(getattr(self, f"conv{b}_{i}")(h))
                h = torch.nn.functional.max_pool2d(h, 2, 2, ceil_mode=True)
                pools.append(h)
            h = torch.relu(self.fc7(torch.relu(self.fc6(h))))
            h = self.score_fr(h)
            if variant == "32s":
                h = self.upscore(h)
                return h[:, :, 19:19 + x.size(2), 19:19 + x.size(3)]
            h = self.upscore2(h)
            p4 = self.score_pool4(pools[3])[:, :, 5:5 + h.size(2), 5:5 + h.size(3)]
            h = h + p4
            if variant == "16s":
                h = self.upscore16(h)
                return h[:, :, 27:27 + x.size(2), 27:27 + x.size(3)]
            h = self.upscore_pool4(h)
            p3 = self.score_pool3(pools[2])[:, :, 9:9 + h.size(2), 9:9 + h.size(3)]
            h = self.upscore8(h + p3)
            return h[:, :, 31:31 + x.size(2), 31:31 + x.size(3)]

    return Ref()


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_vgg16_fcn_matches_reference_port(variant):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = _reference_fcn(torch, variant, n_class=5, fc_width=16).double().eval()
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    ours = getattr(models, f"fcn{variant}")(5, backbone="vgg16", fc_width=16).to(np.float64)
    ours.load_state_dict(state)
    ours.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 37, 45))
    with torch.no_grad():
        expected = ref(torch.tensor(x)).numpy()
    with tinyfcn.no_grad():
        got = ours(x).data
    assert got.shape == (1, 5, 37, 45)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)


def test_at_once_fcn8s_scales_pool4_and_pool3_before_scoring():
    rng = np.random.default_rng(3)
    plain = models.fcn8s(3, backbone="lite", fc_width=16).to(np.float64)
    at_once = models.fcn8s(3, backbone="lite", fc_width=16, at_once=True).to(np.float64)
    state = {k: rng.standard_normal(v.shape) * 0.1 for k, v in plain.state_dict().items()}
    plain.load_state_dict(state)
    # pool4 x 0.01 and pool3 x 0.0001 before scoring == the same net with those
    # weights scaled down, so weights scaled up by 100 and 10 000 give identical scores
    state = dict(state, **{"score_pool4.weight": state["score_pool4.weight"] * 100,
                           "score_pool3.weight": state["score_pool3.weight"] * 10_000})
    at_once.load_state_dict(state)
    x = rng.standard_normal((1, 3, 32, 32))
    np.testing.assert_allclose(at_once(x).data, plain(x).data, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="at_once"):
        models.fcn16s(at_once=True)
