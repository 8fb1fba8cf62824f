"""A DeconvNet / SegNet-style network: the decoder mirrors the encoder and undoes each
pooling with max unpooling on that pooling's switches (Noh et al., ICCV 2015), so
activations return to the exact positions their maxima came from. As in the paper, the
encoder's and decoder's 3x3 convolutions are batch-normalised: without it, 11 more
plain layers after fc7 train far slower from scratch (measured: mIoU 0.05 after 7
epochs of the default run)."""

from __future__ import annotations

from tinyfcn import functional as F
from tinyfcn.models.backbones import add_encoder, make_backbone
from tinyfcn.models.base import SegmentationModel
from tinyfcn.nn import BatchNorm2d, Conv2d


class DeconvNet(SegmentationModel):
    def __init__(self, num_classes: int = 21, backbone: str = "lite", fc_width=None,
                 dropout: float = 0.0):
        if backbone != "lite":
            raise ValueError("deconvnet is built on the lite backbone only")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = make_backbone(backbone, fc_width)
        self.num_classes, self.dropout = num_classes, dropout
        self.config = {"model": "deconvnet", "num_classes": num_classes, "backbone": backbone,
                       "fc_width": self.backbone.fc_width, "dropout": dropout}
        add_encoder(self, self.backbone, batch_norm=True)
        widths = [w for w, _ in self.backbone.blocks]
        # back from fc7 to the width of pool5, then per block: unpool, two 3x3 convs that end
        # at the width of the block below (mirror of the encoder)
        self._decoder_conv("deconv_fc", self.backbone.fc_width, widths[-1], 1)
        for b in range(len(widths), 0, -1):
            out = widths[b - 2] if b > 1 else widths[0]
            self._decoder_conv(f"deconv{b}_1", widths[b - 1], widths[b - 1], 3)
            self._decoder_conv(f"deconv{b}_2", widths[b - 1], out, 3)
        self.score = Conv2d(widths[0], num_classes, 1)

    def _decoder_conv(self, name, c_in, c_out, k):
        """A conv (no bias: batch norm's shift replaces it) and its batch norm `<name>_bn`."""
        setattr(self, name, Conv2d(c_in, c_out, k, padding=k // 2, bias=False))
        setattr(self, f"{name}_bn", BatchNorm2d(c_out))

    def _decode(self, name, h):
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(h)))

    def forward(self, x):
        x, (H, W) = self.pad_input(x)
        features = self.encode(x, return_indices=True)
        h = self._decode("deconv_fc", features.fc7)
        for b in range(len(features.switches), 0, -1):
            h = F.max_unpool2d(h, features.switches[b - 1], 2, 2,
                               output_size=features.sizes[b - 1])
            h = self._decode(f"deconv{b}_2", self._decode(f"deconv{b}_1", h))
        return F.crop(self.score(h), 0, (H, W))


def deconvnet(num_classes: int = 21, backbone: str = "lite", **kwargs) -> DeconvNet:
    """DeconvNet-style encoder-decoder with max unpooling on the encoder's switches."""
    return DeconvNet(num_classes, backbone, **kwargs)
