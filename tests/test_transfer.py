"""From a trained classifier to an FCN: FC -> conv, VGG16 in torchvision's layout, its
convolutionalization, copying it into an FCN, and the reference fine-tuning recipe."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import tinyfcn
from tinyfcn import Tensor, models, nn, optim
from tinyfcn.data.crops import object_crops
from tinyfcn.recipes import reference_lr, reference_optimizer, reference_param_groups

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_from_linear_equals_the_fc_layer_and_slides_it_over_a_larger_map():
    rng = np.random.default_rng(0)
    fc = nn.Linear(3 * 2 * 2, 5, dtype=np.float64)
    fc.bias.data = rng.standard_normal(5)
    conv = nn.Conv2d.from_linear(fc.weight, fc.bias, (3, 2, 2))
    assert conv.weight.shape == (5, 3, 2, 2)
    x = rng.standard_normal((2, 3, 2, 2))
    np.testing.assert_allclose(conv(x).data[:, :, 0, 0], fc(Tensor(x.reshape(2, -1))).data,
                               rtol=1e-12)
    big = rng.standard_normal((1, 3, 4, 5))
    heat = conv(big).data
    assert heat.shape == (1, 5, 3, 4)
    for i, j in [(0, 0), (2, 3), (1, 2)]:  # each position = the FC layer on that window
        window = big[:, :, i:i + 2, j:j + 2].reshape(1, -1)
        np.testing.assert_allclose(heat[:, :, i, j], fc(Tensor(window)).data, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(out_features, 12\)"):
        nn.Conv2d.from_linear(np.zeros((5, 10)), None, (3, 2, 2))


def torchvision_vgg16(torch, num_classes, fc_width):
    """torchvision's VGG16 (features / avgpool / classifier), built without torchvision."""
    tnn, layers, c = torch.nn, [], 3
    for width, depth in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(depth):
            layers += [tnn.Conv2d(c, width, 3, padding=1), tnn.ReLU(inplace=True)]
            c = width
        layers.append(tnn.MaxPool2d(2, 2))

    class VGG(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(*layers)
            self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
            self.classifier = tnn.Sequential(
                tnn.Linear(512 * 7 * 7, fc_width), tnn.ReLU(True), tnn.Dropout(),
                tnn.Linear(fc_width, fc_width), tnn.ReLU(True), tnn.Dropout(),
                tnn.Linear(fc_width, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG()


def test_vgg16_has_torchvisions_names_and_shapes():
    torch = pytest.importorskip("torch")
    theirs = {k: tuple(v.shape) for k, v in torchvision_vgg16(torch, 1000, 4096)
              .state_dict().items()}
    ours = {k: v.shape for k, v in models.vgg16().state_dict().items()}
    assert ours == theirs
    assert list(ours)[-6:] == [f"classifier.{i}.{p}" for i in (0, 3, 6)
                               for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def vgg_pair(tmp_path_factory):
    """A torchvision-layout VGG16 (narrow FC layers) with random weights, saved by
    torch.save, and tinyfcn's vgg16 loaded from that file without torch's help."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torchvision_vgg16(torch, 10, 64).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(theirs.state_dict(), path, _use_new_zipfile_serialization=False)  # legacy
    ours = models.vgg16(10, fc_width=64).eval()
    ours.load_state_dict(tinyfcn.load(path))
    return torch, theirs, ours, path


@pytest.mark.parametrize("size", [224, 448])  # 448: torchvision's adaptive average pooling
def test_vgg16_gives_torchvisions_logits(vgg_pair, size):
    torch, theirs, ours, _ = vgg_pair
    images = np.random.default_rng(size).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    x = ours.preprocess(images)
    with tinyfcn.no_grad(), torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
        got = ours(x).data
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_convolutionalized_vgg16_gives_the_logits_as_a_1x1_map_and_heat_maps_beyond(vgg_pair):
    torch, theirs, ours, _ = vgg_pair
    fcn = ours.convolutionalize().eval()
    images = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    with tinyfcn.no_grad():
        logits = ours(ours.preprocess(images)).data
        scores = fcn(fcn.preprocess(images)).data
        heat = fcn(fcn.preprocess(np.zeros((1, 288, 320, 3), np.uint8))).data
    assert scores.shape == (1, 10, 1, 1)
    np.testing.assert_allclose(scores[:, :, 0, 0], logits, rtol=1e-4,
                               atol=1e-5 * np.abs(logits).max())
    assert heat.shape == (1, 10, 3, 4)  # one score vector per 224-window, 32 pixels apart
    assert fcn.classifier[0].weight.shape == (64, 512, 7, 7)


def test_copy_params_from_vgg16_puts_every_tensor_in_its_place(vgg_pair):
    _, theirs, _, path = vgg_pair
    fcn = models.fcn8s(21, backbone="vgg16", fc_width=64)
    copied = fcn.copy_params_from_vgg16(path)  # straight from the .pth file
    assert len(copied) == 2 * 13 + 4 and copied[0] == "features.0.weight -> conv1_1.weight"
    state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    convs = [f"conv{b}_{i}" for b, d in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, d + 1)]
    indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    for name, i in zip(convs, indices, strict=True):
        np.testing.assert_array_equal(getattr(fcn, name).weight.data, state[f"features.{i}.weight"])
        np.testing.assert_array_equal(getattr(fcn, name).bias.data, state[f"features.{i}.bias"])
    np.testing.assert_array_equal(fcn.fc6.weight.data,
                                  state["classifier.0.weight"].reshape(64, 512, 7, 7))
    np.testing.assert_array_equal(fcn.fc7.weight.data,
                                  state["classifier.3.weight"].reshape(64, 64, 1, 1))
    np.testing.assert_array_equal(fcn.fc7.bias.data, state["classifier.3.bias"])
    assert not np.any(fcn.score_fr.weight.data)  # the new layers stay as initialised


def test_copy_params_lists_every_missing_or_misshaped_array_and_copies_nothing():
    fcn = models.fcn32s(3, backbone="lite", fc_width=8)
    source = models.vgg(5, backbone="lite", fc_width=8).state_dict()
    del source["features.2.weight"]
    source["classifier.3.weight"] = np.zeros((8, 9), np.float32)
    before = fcn.conv1_1.weight.data.copy()
    with pytest.raises(ValueError) as info:
        fcn.copy_params_from_vgg16(source)
    assert "features.2.weight is missing" in str(info.value)
    assert "classifier.3.weight has shape (8, 9), fc7.weight needs (8, 8, 1, 1)" in str(info.value)
    np.testing.assert_array_equal(fcn.conv1_1.weight.data, before)


def test_reference_recipe_freezes_upsampling_and_doubles_bias_rates():
    model = models.fcn8s(3, backbone="lite", fc_width=8)
    groups = reference_param_groups(model)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["upscore2.weight", "upscore_pool4.weight", "upscore8.weight"]
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert groups[1]["lr_mult"] == 2 and groups[1]["decay_mult"] == 0
    assert len(groups[1]["params"]) == sum(1 for n, _ in model.named_parameters()
                                           if n.endswith(".bias"))
    # the reference's 1e-10 for a summed loss over a 500 x 375 image, for the mean loss
    assert reference_lr("fcn32s", False, 500 * 375) == pytest.approx(1.875e-5)
    assert reference_lr("fcn8s", True, 100) == pytest.approx(1e-8)


def test_reference_recipe_says_where_its_learning_rate_comes_from():
    model = models.fcn32s(3, backbone="lite", fc_width=8)
    opt, _, summary = reference_optimizer(model, "fcn32s", 500 * 375, 10)
    assert opt.lr == pytest.approx(1.875e-5) and "x 187500 pixels per batch" in summary
    opt, _, summary = reference_optimizer(model, "fcn32s", 500 * 375, 10, lr=0.003)
    assert opt.lr == 0.003 and "(--lr)" in summary and "pixels per batch" not in summary


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_fine_tunes_from_a_classifier_file_with_the_reference_recipe(tmp_path):
    from test_data_metrics import write_voc_fixture
    voc = write_voc_fixture(tmp_path / "voc", num_classes=3, n=4, size=(64, 64))
    classifier = models.vgg(5, backbone="lite")
    tinyfcn.save(classifier.state_dict(), tmp_path / "classifier.safetensors")
    fresh = models.fcn8s(3, backbone="lite")  # the bilinear kernels it starts with
    out = tmp_path / "run"
    train = load_example("train_voc_subset")
    assert train.main(["--voc-root", str(voc), "--epochs", "1", "--out", str(out), "-b", "2",
                       "--crop-size", "64", "64", "--time-budget", "0", "--recipe", "reference",
                       "--lr", "1e-3", "--backbone-weights",
                       str(tmp_path / "classifier.safetensors")]) == 0
    state = tinyfcn.load(out / "checkpoint-last.npz")
    for name in ("upscore2.weight", "upscore_pool4.weight", "upscore8.weight"):
        np.testing.assert_array_equal(state["model"][name], fresh.state_dict()[name])
    assert state["optimizer"]["state"]["steps"] == 2
    assert not np.array_equal(state["model"]["conv1_1.weight"],
                              classifier.state_dict()["features.0.weight"])  # trained


def test_object_crops_cut_one_square_per_class_present():
    label = np.zeros((40, 50), np.uint8)
    label[5:15, 10:30] = 2
    label[30:38, 40:48] = 4
    label[0, :] = 255
    image = np.zeros((40, 50, 3), np.uint8)
    image[label == 2] = 200
    images, labels = object_crops([(image, label)], 24)
    assert images.shape == (2, 24, 24, 3) and list(labels) == [2, 4]
    assert images[0, 12, 12, 0] == 200  # the object sits at the centre


def test_pretrain_classifier_script_learns_and_writes_a_loadable_classifier(tmp_path, capsys):
    from tinyfcn.data import synthetic
    root = synthetic.generate(tmp_path / "data", sizes={"train": 24, "val": 8})
    script = load_example("pretrain_classifier")
    out = tmp_path / "classifier.npz"
    assert script.main(["--voc-root", str(root), "--epochs", "1", "-b", "8",
                        "--out", str(out)]) == 0
    assert "val accuracy" in capsys.readouterr().out
    fcn = models.fcn8s(21, backbone="lite")
    assert len(fcn.copy_params_from_vgg16(out)) == 2 * 10 + 4


def test_sgd_parameter_groups_leave_frozen_parameters_bit_identical():
    model = models.fcn32s(2, backbone="lite", fc_width=8)
    before = model.upscore.weight.data.copy()
    opt = optim.SGD(reference_param_groups(model), 0.1, momentum=0.99, weight_decay=5e-4)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    model(x).sum().backward()
    opt.step()
    assert model.upscore.weight.grad is None
    np.testing.assert_array_equal(model.upscore.weight.data, before)
