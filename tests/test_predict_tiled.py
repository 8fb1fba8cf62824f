"""`model.predict` on images of any size: overlapping windows whose scores are averaged
(slide inference), automatic above `max_pixels`, flip test-time augmentation, and the
peak memory of a 6000 x 4000 photo.

Run as a script, this file measures one prediction's memory in a fresh process (see
`test_a_6000_x_4000_png_predicts_in_memory_bounded_by_the_window`)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyfcn import functional as F
from tinyfcn import models
from tinyfcn.models import SegmentationModel
from tinyfcn.models.backbones import Backbone
from tinyfcn.models.base import MAX_PIXELS, window_spans
from tinyfcn.nn import Conv2d, ConvTranspose2d


def photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def slide_reference(model, image, tile, overlap):
    """Slide inference spelled out: every window predicted whole, its scores added into a
    full-size float64 sum, divided by a full-size count of the windows over each pixel."""
    H, W = image.shape[:2]
    stride = max(1, tile - round(tile * overlap))
    total = np.zeros((model.num_classes, H, W))
    count = np.zeros((H, W))
    for y0, y1 in window_spans(H, tile, stride):
        for x0, x1 in window_spans(W, tile, stride):
            total[:, y0:y1, x0:x1] += model.predict_scores(image[y0:y1, x0:x1], tile=0)
            count[y0:y1, x0:x1] += 1
    return total / count


@pytest.fixture(scope="module")
def fcn8s():
    return models.fcn8s(4, backbone="lite", fc_width=8)


@pytest.mark.parametrize("name,backbone", [("fcn8s", "lite"), ("deconvnet", "lite"),
                                           ("fcn32s", "vgg16")])
def test_an_image_that_fits_one_window_scores_as_the_whole_image(name, backbone):
    model = models.MODELS[name](3, backbone=backbone, fc_width=8)
    image = photo(64, 96)  # lite: a multiple of 32, so neither way pads
    whole = model.predict_scores(image, tile=0)
    assert whole.shape == (3, 64, 96) and whole.dtype == np.float32
    # a 96-pixel window covers the image: one window, the same scores to the last bit
    np.testing.assert_array_equal(model.predict_scores(image, tile=96), whole)
    np.testing.assert_array_equal(model.predict_scores(image, tile=500), whole)
    np.testing.assert_array_equal(model.predict_scores(image), whole)  # under max_pixels


@pytest.mark.parametrize("tile,overlap", [(64, 0.25), (64, 0.5), (32, 0.0), (48, 0.3)])
def test_windows_average_where_they_overlap(fcn8s, tile, overlap):
    image = photo(70, 100, seed=1)
    tiled = fcn8s.predict_scores(image, tile=tile, overlap=overlap)
    np.testing.assert_allclose(tiled, slide_reference(fcn8s, image, tile, overlap),
                               rtol=1e-5, atol=1e-5)
    # the windows see less context than the whole image: the scores are not the same
    assert not np.allclose(tiled, fcn8s.predict_scores(image, tile=0), atol=1e-3)
    labels = fcn8s.predict(image, tile=tile, overlap=overlap)
    assert labels.shape == (70, 100) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, tiled.argmax(0))


def test_max_pixels_chooses_whole_or_windows_and_tile_0_forces_whole(fcn8s):
    image = photo(70, 100, seed=2)
    whole = fcn8s.predict_scores(image, tile=0)
    np.testing.assert_array_equal(fcn8s.predict_scores(image, max_pixels=70 * 100), whole)
    # one pixel more than allowed: windows of isqrt(4096) = 64, a multiple of lite's 32
    np.testing.assert_array_equal(fcn8s.predict_scores(image, max_pixels=4096),
                                  fcn8s.predict_scores(image, tile=64))
    np.testing.assert_array_equal(fcn8s.predict_scores(image, max_pixels=4100),
                                  fcn8s.predict_scores(image, tile=64))
    np.testing.assert_array_equal(fcn8s.predict_scores(image, tile=0, max_pixels=1), whole)
    assert MAX_PIXELS >= 500 * 375  # a PASCAL VOC image is predicted whole


def test_batches_and_lists_tile_each_image(fcn8s):
    images = np.stack([photo(40, 72, seed=s) for s in range(3)])
    fcn8s.train()
    batch = fcn8s.predict(images, batch_size=2, tile=32, overlap=0.5)
    assert fcn8s.training  # the mode it had
    assert batch.shape == (3, 40, 72)
    for image, labels in zip(images, batch):
        np.testing.assert_array_equal(
            labels, fcn8s.predict_scores(image, tile=32, overlap=0.5).argmax(0))
    maps = fcn8s.predict([images[0], images[1, :33, :50]], tile=32)
    np.testing.assert_array_equal(maps[0], fcn8s.predict_scores(images[0], tile=32).argmax(0))
    assert maps[1].shape == (33, 50)


def test_flip_tta_averages_the_mirrored_prediction(fcn8s):
    image = photo(40, 52, seed=3)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    plain = fcn8s.predict_scores(image, tile=0)
    flip = fcn8s.predict_scores(image, tile=0, tta="flip")
    np.testing.assert_allclose(
        flip, (plain + fcn8s.predict_scores(mirrored, tile=0)[..., ::-1]) / 2, rtol=1e-6)
    # so it is mirror-symmetric, to the last bit (a + b == b + a), which the plain
    # prediction is not (lite pads at the right, whichever way the image faces)
    np.testing.assert_array_equal(fcn8s.predict_scores(mirrored, tile=0, tta="flip"),
                                  flip[..., ::-1])
    assert not np.allclose(fcn8s.predict_scores(mirrored, tile=0), plain[..., ::-1])
    np.testing.assert_array_equal(fcn8s.predict(image, tile=0, tta="flip"), flip.argmax(0))
    tiled = fcn8s.predict_scores(image, tile=32, tta="flip")  # per window
    np.testing.assert_array_equal(fcn8s.predict(image, tile=32, tta="flip"), tiled.argmax(0))


@pytest.mark.parametrize("option,value,match", [
    ("tile", -1, "tile must be"), ("tile", 2.5, "tile must be"), ("tile", True, "tile must be"),
    ("overlap", 1.0, "overlap must"), ("overlap", -0.1, "overlap must"),
    ("max_pixels", 0, "max_pixels must"), ("tta", "rotate", "tta must")])
def test_bad_options_name_the_argument(fcn8s, option, value, match):
    with pytest.raises(ValueError, match=match):
        fcn8s.predict(photo(32, 32), **{option: value})
    with pytest.raises(ValueError, match=match):
        fcn8s.predict_scores(photo(32, 32), **{option: value})


def test_predict_scores_takes_one_image(fcn8s):
    with pytest.raises(ValueError, match="one"):
        fcn8s.predict_scores(np.zeros((2, 32, 32, 3), np.uint8))


@given(size=st.integers(1, 300), window=st.integers(1, 120), overlap=st.floats(0, 0.95))
def test_windows_lie_inside_and_cover_every_pixel(size, window, overlap):
    stride = max(1, window - round(window * overlap))
    spans = window_spans(size, window, stride)
    covered = np.zeros(size, int)
    for start, stop in spans:
        assert 0 <= start < stop <= size and stop - start == min(window, size)
        covered[start:stop] += 1
    assert covered.min() >= 1
    starts = [start for start, _ in spans]
    assert starts == sorted(starts) and len(set(spans)) == len(spans)


# ------------------------------------------------------- a 6000 x 4000 photo's memory
class TinyNet(SegmentationModel):
    """Pools 8 x 8, one 3x3 conv, scores, upsamples x8: a segmentation model cheap enough
    to predict 24 megapixels in seconds, whose own activations are small beside the
    image's preprocessed copy and scores (what a whole-image prediction must hold)."""

    def __init__(self, num_classes=3):
        self.backbone = Backbone("tiny", (), first_padding=0, ceil_mode=False, fc6_kernel=1,
                                 fc_width=4, pad_to=8, bgr=False, scale=1 / 255,
                                 mean=(0.5,) * 3, std=(0.25,) * 3)
        self.num_classes, self.dropout = num_classes, 0.0
        self.conv = Conv2d(3, 4, 3, padding=1)
        self.score = Conv2d(4, num_classes, 1)
        self.upscore = ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4)

    def forward(self, x):
        x, (H, W) = self.pad_input(x)
        h = F.relu(self.conv(F.max_pool2d(x, 8)))
        return F.crop(self.upscore(self.score(h)), (0, 0), (H, W))


def memory_status(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_growth(run) -> int:
    """The peak resident memory while `run()` runs minus what was resident before it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # restart the peak (VmHWM) from now
    before = memory_status("VmRSS")
    run()
    return memory_status("VmHWM") - before


def measure(path, tile) -> dict:
    """Predict the image at `path` with a TinyNet (tile: "auto" or "0"): the peak memory
    growth of that prediction and of one whole-image prediction of a default window."""
    from tinyfcn.data import read_image
    image = read_image(path)
    model = TinyNet()
    model.predict(image[:64, :64])  # load the kernels first
    side = math.isqrt(MAX_PIXELS)
    window = np.ascontiguousarray(image[:side, :side])
    result = {"window": peak_growth(lambda: model.predict(window, tile=0))}
    labels = []
    result["growth"] = peak_growth(lambda: labels.append(
        model.predict(image, tile=None if tile == "auto" else int(tile))))
    return {**result, "shape": list(labels[0].shape), "dtype": str(labels[0].dtype),
            "classes": sorted(np.unique(labels[0]).tolist())}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_6000_x_4000_png_predicts_in_memory_bounded_by_the_window(tmp_path):
    from PIL import Image
    H, W, C = 4000, 6000, 3
    x = (np.arange(W) * 255 // W).astype(np.uint8)
    y = (np.arange(H) * 255 // H).astype(np.uint8)
    image = np.empty((H, W, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = x, y[:, None], x ^ y[:, None]
    Image.fromarray(image).save(tmp_path / "big.png", compress_level=1)
    del image
    run = subprocess.run([sys.executable, __file__, str(tmp_path / "big.png"), "auto"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["shape"] == [H, W] and result["dtype"] == "uint8"
    assert set(result["classes"]) <= {0, 1, 2}
    # The default windows are 512 x 512 (isqrt(MAX_PIXELS), a multiple of pad_to). What
    # tiling holds beside one window's forward pass (measured in the same process): the
    # uint8 labels (H x W), the band of summed scores one row of windows spans
    # (C x tile x W float32) and, for the final rows of a band, its argmax (int64) and the
    # window counts (float32).
    tile = math.isqrt(MAX_PIXELS)
    bound = result["window"] + H * W + C * tile * W * 4 + tile * W * (8 + 4) + (32 << 20)
    whole_image = C * H * W * 4 + 3 * H * W * 4  # its scores and float32 input alone
    assert bound < whole_image
    assert result["growth"] < bound, (result["growth"] >> 20, bound >> 20)


if __name__ == "__main__":
    print(json.dumps(measure(*sys.argv[1:])))
