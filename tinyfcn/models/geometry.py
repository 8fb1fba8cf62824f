"""Where a feature map's pixels sit on the input image: the crop offsets of FCN's skips.

Caffe's FCN computes its crops with `coord_map`: every layer maps a coordinate
of its output to one of its input by an affine map `in = a * out + b` (the
centre of the window that output reads). For a convolution or pooling with
kernel k, stride s, padding p and dilation d:

    in = s * out + ((k - 1) * d / 2 - p)

and a transposed convolution is the inverse of the convolution it transposes:

    in = (out - ((k - 1) * d / 2 - p)) / s

Composing the maps of a path from the image to a feature map gives
`image = a * x + b`. Two maps on the same grid (same `a`) line up when
cropping the larger one at `(b_reference - b_other) / a` pixels: that is where
the reference network's 5, 9, 19, 27 and 31 come from (conv1_1's padding of
100 shifts every later map by a whole number of pixels).
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple


class CoordMap(NamedTuple):
    """image coordinate = a * (this map's coordinate) + b."""
    a: Fraction
    b: Fraction

    def then(self, layer: CoordMap) -> CoordMap:
        """The map of this feature map's next layer's output (`layer` maps that output
        to this map's coordinates)."""
        return CoordMap(self.a * layer.a, self.a * layer.b + self.b)


IDENTITY = CoordMap(Fraction(1), Fraction(0))


def conv(kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> CoordMap:
    """Output -> input coordinates of a convolution or pooling layer (one axis)."""
    return CoordMap(Fraction(stride), Fraction((kernel - 1) * dilation, 2) - padding)


def conv_transpose(kernel: int, stride: int = 1, padding: int = 0,
                   dilation: int = 1) -> CoordMap:
    """Output -> input coordinates of a transposed convolution: the inverse of `conv`."""
    forward = conv(kernel, stride, padding, dilation)
    return CoordMap(1 / forward.a, -forward.b / forward.a)


def crop_offset(reference: CoordMap, other: CoordMap) -> int:
    """Pixels to crop from the start of `other` so that it lines up with `reference`."""
    if reference.a != other.a:
        raise ValueError(f"maps on different grids (stride {reference.a} vs {other.a}) "
                         f"cannot be aligned by cropping")
    offset = (reference.b - other.b) / other.a
    if offset.denominator != 1 or offset < 0:
        raise ValueError(f"the maps are offset by {offset} pixels: not a whole, "
                         f"non-negative crop")
    return int(offset)
