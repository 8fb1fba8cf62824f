"""Which algorithm computes each conv2d, and the algorithms beside the im2col reference.

Every algorithm computes the same convolution (up to float rounding) and its two gradients:

    "im2col"        the literal Y = W @ im2col(X) of `tinyfcn.functional.conv`: the reference
                    the notebooks teach and every other algorithm is tested against
    "im2col-tiled"  the same products, with the column matrix built a few output rows at a
                    time and multiplied while it is still in cache, never whole
    "winograd"      Winograd's F(2x2, 3x3) for stride-1 3x3 kernels (tinyfcn.kernels.winograd):
                    16 products instead of 36 multiplications per 2x2 outputs and channel pair,
                    band by band of the image on wide maps
    "direct"        each output row summed tap by tap (tinyfcn.kernels.direct), no matrix

`F.conv2d(..., algorithm=None)` picks one per layer shape by `choose`, a fixed rule of the
shape alone (not of the batch size, not of a timing taken at run time): every process of a
data-parallel run and every resumed run picks the same, so their results stay equal.
For FCN-8s-lite the rule gives: conv1_1 "im2col-tiled", the other 3x3 convs down to 8 x 8
maps "winograd", fc6 (4 x 4) and the 1x1 convs "im2col". `F.conv_transpose2d` is always
the transposed matrix of `tinyfcn.functional.conv`.
`set_conv_algorithm(name)` forces one everywhere it applies; `conv_algorithms()` reports
which one ran for each layer shape.
"""

from __future__ import annotations

import numpy as np

from tinyfcn.functional import conv
from tinyfcn.functional.conv import (
    Conv2d,
    Geometry,
    _input_gradient_geometry,
    _rows,
)
from tinyfcn.kernels import col2im_tile, gemm_threads, im2col_tile, in_parallel, matmul, winograd
from tinyfcn.kernels.direct import conv2d_direct
from tinyfcn.tensor import Function

ALGORITHMS = ("im2col", "im2col-tiled", "winograd", "direct")

_forced: str | None = None  # by set_conv_algorithm
_ran: dict[str, str] = {}   # layer shape -> the algorithm that ran, for conv_algorithms()


def _check_name(name, what: str) -> None:
    if name is not None and name not in ALGORITHMS:
        raise ValueError(f"{what} must be None or one of {', '.join(map(repr, ALGORITHMS))}, "
                         f"got {name!r}")


def set_conv_algorithm(name: str | None) -> None:
    """Force `name` for every conv2d it applies to (the others run "im2col" and
    `conv_algorithms()` says why); None restores the choice per layer shape."""
    global _forced
    _check_name(name, "set_conv_algorithm's name")
    _forced = name
    _ran.clear()


def conv_algorithms() -> dict[str, str]:
    """{layer shape: algorithm} of every conv2d shape run since the start or the last
    `set_conv_algorithm`, e.g. {"3->32 3x3 @ 128x128, stride 1, padding 1": "direct"}."""
    return dict(_ran)


def describe(geo: Geometry, C_out: int) -> str:
    text = (f"{geo.C}->{C_out} {geo.kH}x{geo.kW} @ {geo.H}x{geo.W}, stride {geo.sH}"
            f"{'' if geo.sH == geo.sW else 'x' + str(geo.sW)}, padding {geo.pH}"
            f"{'' if geo.pH == geo.pW else 'x' + str(geo.pW)}")
    if (geo.dH, geo.dW) != (1, 1):
        text += f", dilation {geo.dH}x{geo.dW}"
    return text


def unsupported(name: str, geo: Geometry, C_out: int) -> str | None:
    """Why algorithm `name` cannot compute this convolution, or None if it can."""
    if name == "im2col":
        return None
    if name == "im2col-tiled":
        return "a 1x1 convolution has no column matrix to tile" if geo.is_pointwise else None
    if name == "winograd":
        if (geo.kH, geo.kW, geo.sH, geo.sW, geo.dH, geo.dW) != (3, 3, 1, 1, 1, 1):
            return "F(2x2, 3x3) needs a 3x3 kernel, stride 1 and dilation 1"
        return None
    return None  # "direct": any shape


def choose(geo: Geometry, C_out: int) -> str:
    """The algorithm for a layer shape: a fixed rule (see the module docstring), drawn from
    the per-layer measurements of benchmarks/bench_conv_algorithms.py (benchmarks/README.md).
    Small maps and few channels stay on "im2col": there the difference is overhead."""
    if geo.is_pointwise:  # a 1x1 convolution is one product already
        return "im2col"
    if (unsupported("winograd", geo, C_out) is None and min(geo.C, C_out) >= WINOGRAD_CHANNELS
            and geo.H_out * geo.W_out >= WINOGRAD_PIXELS):
        return "winograd"
    if geo.H_out * geo.W_out >= TILED_PIXELS:
        return "im2col-tiled"
    return "im2col"


# Where the rule starts using Winograd (input and output channels, output pixels per image)
# and tiling (output pixels per image): below them the transforms or the tiles cost more
# than they save.
WINOGRAD_CHANNELS = 16
WINOGRAD_PIXELS = 8 * 8
TILED_PIXELS = 64 * 64


# ---------------------------------------------------------------- "im2col-tiled"

# A column tile of about this many bytes (K rows by a few output rows of one image) is
# written by im2col_tile and read by the product right after, while it is still in the
# cache; the whole column matrix of an early layer would not fit in any cache.
TILE_BYTES = 1 << 19


def _tiles(geo: Geometry, N: int, K: int, itemsize: int):
    """[(n, oh0, oh1)]: each image's output rows in tiles of `rows` rows (the second value)."""
    rows = max(1, min(geo.H_out, TILE_BYTES // (K * geo.W_out * itemsize)))
    return [(n, oh0, min(oh0 + rows, geo.H_out))
            for n in range(N) for oh0 in range(0, geo.H_out, rows)], rows


def _shares(items: list, parts: int) -> list:
    """`items` cut into `parts` contiguous runs of nearly equal length."""
    return [items[len(items) * k // parts:len(items) * (k + 1) // parts] for k in range(parts)]


def _kernel_args(geo: Geometry) -> tuple:
    return geo.kH, geo.kW, geo.sH, geo.sW, geo.pH, geo.pW, geo.dH, geo.dW, geo.W_out


def tiled_conv(x: np.ndarray, w2: np.ndarray, geo: Geometry, bias=None) -> np.ndarray:
    """Y = W @ im2col(X), tile by tile, each product written straight into NCHW:
    x (N, C, H, W), w2 (C_out, K) -> (N, C_out, H_out, W_out)."""
    N, (C_out, K), W_out = x.shape[0], w2.shape, geo.W_out
    y = np.empty((N, C_out, geo.H_out * W_out), dtype=x.dtype)
    tiles, rows = _tiles(geo, N, K, x.itemsize)
    shares = _shares(tiles, min(gemm_threads(), len(tiles)))

    def work(k):
        col = np.empty((K, rows * W_out), dtype=x.dtype)
        for n, oh0, oh1 in shares[k]:
            im2col_tile(x, col, n, oh0, oh1, *_kernel_args(geo))
            out = y[n, :, oh0 * W_out:oh1 * W_out]
            np.matmul(w2, col[:, :out.shape[1]], out=out)  # (C_out, K) @ (K, P) -> (C_out, P)
            if bias is not None:
                out += bias[:, None]

    in_parallel(work, len(shares))
    return y.reshape(N, C_out, geo.H_out, W_out)


def tiled_weight_gradient(x: np.ndarray, g: np.ndarray, geo: Geometry) -> np.ndarray:
    """gW = gY @ im2col(X).T summed tile by tile: x (N, C, H, W), g (N, C_out, H_out, W_out)
    -> (C_out, K); each thread sums its own tiles, then the threads' sums are added."""
    N, C_out, W_out = x.shape[0], g.shape[1], geo.W_out
    K = geo.C * geo.kH * geo.kW
    g3 = g.reshape(N, C_out, -1)
    tiles, rows = _tiles(geo, N, K, x.itemsize)
    shares = _shares(tiles, min(gemm_threads(), len(tiles)))

    def work(k):
        col = np.empty((K, rows * W_out), dtype=x.dtype)
        gw, part = np.zeros((C_out, K), dtype=x.dtype), np.empty((C_out, K), dtype=x.dtype)
        for n, oh0, oh1 in shares[k]:
            im2col_tile(x, col, n, oh0, oh1, *_kernel_args(geo))
            g_tile = g3[n, :, oh0 * W_out:oh1 * W_out]
            np.matmul(g_tile, col[:, :g_tile.shape[1]].T, out=part)  # (C_out, P) @ (P, K)
            gw += part
        return gw

    return sum(in_parallel(work, len(shares)))


def tiled_input_gradient(g: np.ndarray, w: np.ndarray, geo: Geometry) -> np.ndarray:
    """gX for g (N, C_out, H_out, W_out) and w (C_out, C, kH, kW) -> (N, C, H, W): where
    stride 1 allows, the convolution of gY with the flipped kernel (see
    `conv.INPUT_GRADIENT_AS_CONV`), tiled; otherwise col2im(W.T @ gY) tile by tile, each
    thread on whole images so that no two threads add into one pixel."""
    N, C_out = g.shape[:2]
    flipped = _input_gradient_geometry(geo, C_out)
    if flipped is not None:
        w_flip = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        return tiled_conv(g, w_flip.reshape(geo.C, -1), flipped)
    W_out, K = geo.W_out, geo.C * geo.kH * geo.kW
    w2t = w.reshape(C_out, K).T
    g3 = g.reshape(N, C_out, -1)
    gx = np.zeros((N, geo.C, geo.H, geo.W), dtype=g.dtype)
    tiles, rows = _tiles(geo, 1, K, g.itemsize)
    shares = _shares(list(range(N)), min(gemm_threads(), N))

    def work(k):
        col = np.empty((K, rows * W_out), dtype=g.dtype)
        for n in shares[k]:
            for _, oh0, oh1 in tiles:
                g_tile = g3[n, :, oh0 * W_out:oh1 * W_out]
                tile = col[:, :g_tile.shape[1]]
                np.matmul(w2t, g_tile, out=tile)  # (K, C_out) @ (C_out, P) -> (K, P)
                col2im_tile(tile, gx, n, oh0, oh1, *_kernel_args(geo))

    in_parallel(work, len(shares))
    return gx


class _AlgorithmConv2d(Function):
    """What the faster conv2d Functions share: the geometry, what backward keeps, and the
    bias gradient."""

    def __init__(self, geo: Geometry):
        self.geo = geo

    def _keep(self, x, w):
        """The input for the weight gradient, the weight for the input gradient, if needed."""
        self.x = x if self.needs_input_grad[1] else None
        self.w = w if self.needs_input_grad[0] else None
        self.w_shape = w.shape

    def _with_bias_gradient(self, gx, gw, g):
        self.x = None
        if len(self.needs_input_grad) == 2:  # called without a bias
            return gx, gw
        return gx, gw, g.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None


class TiledConv2d(_AlgorithmConv2d):
    """conv2d as im2col + GEMM in cache-sized tiles of output rows; backward keeps the
    input (not its column matrix) and rebuilds the tiles it needs."""

    def forward(self, x, w, b=None):
        x = np.ascontiguousarray(x)
        self._keep(x, w)
        return tiled_conv(x, np.ascontiguousarray(w).reshape(w.shape[0], -1), self.geo, b)

    def backward(self, g):
        g = np.ascontiguousarray(g)
        gx = tiled_input_gradient(g, self.w, self.geo) if self.needs_input_grad[0] else None
        gw = (tiled_weight_gradient(self.x, g, self.geo).reshape(self.w_shape)
              if self.needs_input_grad[1] else None)
        return self._with_bias_gradient(gx, gw, g)


def weight_gradient(x: np.ndarray, g: np.ndarray, geo: Geometry) -> np.ndarray:
    """gW (C_out, K) = gY @ im2col(X).T: in one product where the column matrix is small
    (a tile of a small map would make a thin, slow product), else tile by tile."""
    K, NL = geo.C * geo.kH * geo.kW, g.shape[0] * g.shape[2] * g.shape[3]
    if K * NL * x.itemsize > conv.KEEP_COLUMNS_BYTES:  # read here: a setting of the user's
        return tiled_weight_gradient(x, g, geo)
    return matmul(_rows(g), geo.im2col(x).T)  # (C_out, N*L) @ (N*L, K)


# ---------------------------------------------------------------- "winograd"

# From this many tiles per image, Winograd works band by band of tile rows (transformed
# input, 16 products and output transform of one band while it is in the cache) instead of
# transforming the whole batch between products: on wide maps with few channels the
# products are bound by memory, and the whole batch's transformed arrays are four times the
# input. On small maps a band would make thin, slow products.
WINOGRAD_BAND_TILES = 16 * 16


def winograd_conv(x: np.ndarray, w: np.ndarray, geo: Geometry, bias=None) -> np.ndarray:
    """Stride-1 3x3 conv2d by F(2x2, 3x3) (tinyfcn.kernels.winograd): x (N, C, H, W),
    w (C_out, C, 3, 3) -> (N, C_out, H_out, W_out)."""
    N, C_out = x.shape[0], w.shape[0]
    tH, tW = (geo.H_out + 1) // 2, (geo.W_out + 1) // 2
    if bias is None:
        bias = np.zeros(C_out, dtype=x.dtype)
    if tH * tW >= WINOGRAD_BAND_TILES:
        return _winograd_bands(x, w, geo, bias, tH, tW)
    V = winograd.input_transform(x, geo.pH, geo.pW, tH, tW)      # (16, C, N*tH*tW)
    U = winograd.filter_transform(w)                              # (16, C_out, C)
    M = np.empty((16, C_out, V.shape[2]), dtype=x.dtype)
    shares = _shares(list(range(16)), gemm_threads())

    def work(k):
        a, b = shares[k][0], shares[k][-1] + 1
        np.matmul(U[a:b], V[a:b], out=M[a:b])  # (C_out, C) @ (C, N*tH*tW), per position

    in_parallel(work, len(shares))
    return winograd.output_transform(M, N, geo.H_out, geo.W_out, tH, tW, bias)


def _winograd_bands(x, w, geo: Geometry, bias, tH: int, tW: int) -> np.ndarray:
    """winograd_conv band by band of tile rows, each thread on its own share of bands."""
    N, C, C_out = x.shape[0], x.shape[1], w.shape[0]
    U = winograd.filter_transform(w)                              # (16, C_out, C)
    y = np.empty((N, C_out, geo.H_out, geo.W_out), dtype=x.dtype)
    rows = max(1, min(tH, TILE_BYTES // (16 * max(C, C_out) * tW * x.itemsize)))
    bands = [(n, ty0, min(ty0 + rows, tH)) for n in range(N) for ty0 in range(0, tH, rows)]
    shares = _shares(bands, min(gemm_threads(), len(bands)))

    def work(k):
        V = np.empty((16, C, rows * tW), dtype=x.dtype)
        M = np.empty((16, C_out, rows * tW), dtype=x.dtype)
        for n, ty0, ty1 in shares[k]:
            P = (ty1 - ty0) * tW
            winograd.input_transform_band(x, V, n, ty0, ty1, geo.pH, geo.pW, tW)
            np.matmul(U, V[:, :, :P], out=M[:, :, :P])  # 16 x (C_out, C) @ (C, P)
            winograd.output_transform_band(M, y, n, ty0, ty1, tW, bias)

    in_parallel(work, len(shares))
    return y


def winograd_weight_gradient(x: np.ndarray, g: np.ndarray, geo: Geometry) -> np.ndarray:
    """gW (C_out, C, 3, 3) of winograd_conv, by the adjoints of its steps
    (tinyfcn.kernels.winograd): x (N, C, H, W), g (N, C_out, H_out, W_out)."""
    tH, tW = (geo.H_out + 1) // 2, (geo.W_out + 1) // 2
    if tH * tW >= WINOGRAD_BAND_TILES:
        return _winograd_weight_gradient_bands(x, g, geo, tH, tW)
    V = winograd.input_transform(x, geo.pH, geo.pW, tH, tW)       # (16, C, N*tH*tW)
    dM = winograd.output_transform_adjoint(g, tH, tW)             # (16, C_out, N*tH*tW)
    dU = np.empty((16, g.shape[1], x.shape[1]), dtype=x.dtype)
    shares = _shares(list(range(16)), gemm_threads())

    def work(k):
        a, b = shares[k][0], shares[k][-1] + 1
        np.matmul(dM[a:b], V[a:b].transpose(0, 2, 1), out=dU[a:b])  # (C_out, T) @ (T, C)

    in_parallel(work, len(shares))
    return winograd.filter_transform_adjoint(dU)


def _winograd_weight_gradient_bands(x, g, geo: Geometry, tH: int, tW: int) -> np.ndarray:
    """winograd_weight_gradient band by band; each thread sums dU over its own bands."""
    N, C, C_out = x.shape[0], x.shape[1], g.shape[1]
    rows = max(1, min(tH, TILE_BYTES // (16 * max(C, C_out) * tW * x.itemsize)))
    bands = [(n, ty0, min(ty0 + rows, tH)) for n in range(N) for ty0 in range(0, tH, rows)]
    shares = _shares(bands, min(gemm_threads(), len(bands)))

    def work(k):
        V = np.empty((16, C, rows * tW), dtype=x.dtype)
        dM = np.empty((16, C_out, rows * tW), dtype=x.dtype)
        dU, part = (np.zeros((16, C_out, C), dtype=x.dtype) for _ in range(2))
        for n, ty0, ty1 in shares[k]:
            P = (ty1 - ty0) * tW
            winograd.input_transform_band(x, V, n, ty0, ty1, geo.pH, geo.pW, tW)
            winograd.output_transform_adjoint_band(g, dM, n, ty0, ty1, tW)
            # 16 x (C_out, P) @ (P, C)
            np.matmul(dM[:, :, :P], V[:, :, :P].transpose(0, 2, 1), out=part)
            dU += part
        return dU

    return winograd.filter_transform_adjoint(sum(in_parallel(work, len(shares))))


class WinogradConv2d(_AlgorithmConv2d):
    """Forward and input gradient (the flipped-kernel convolution, itself a stride-1 3x3
    conv) by Winograd's F(2x2, 3x3); the weight gradient as im2col's, gY @ im2col(X).T."""

    def forward(self, x, w, b=None):
        x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
        self._keep(x, w)
        return winograd_conv(x, w, self.geo, b)

    def backward(self, g):
        g = np.ascontiguousarray(g)
        gx = gw = None
        if self.needs_input_grad[0]:
            flipped = _input_gradient_geometry(self.geo, self.w_shape[0])
            if flipped is None:  # padded past the kernel's reach: not a plain convolution
                gx = tiled_input_gradient(g, self.w, self.geo)
            else:
                w_flip = np.ascontiguousarray(self.w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
                gx = winograd_conv(g, w_flip, flipped)
        if self.needs_input_grad[1]:
            C_out, C = self.w_shape[:2]
            if WINOGRAD_WEIGHT_GRADIENT and (
                    C_out <= C or min(C, C_out) >= WINOGRAD_WEIGHT_GRADIENT_CHANNELS):
                gw = winograd_weight_gradient(self.x, g, self.geo)
            else:
                gw = weight_gradient(self.x, g, self.geo).reshape(self.w_shape)
        return self._with_bias_gradient(gx, gw, g)


# The weight gradient too by Winograd's transforms (fewer multiplications), except where a
# layer widens from few channels: there its dM (C_out rows) outweighs what it saves and
# gY @ im2col(X).T, tile by tile, was measured faster (benchmarks/README.md).
WINOGRAD_WEIGHT_GRADIENT = True
WINOGRAD_WEIGHT_GRADIENT_CHANNELS = 64


# ---------------------------------------------------------------- "direct"

class DirectConv2d(_AlgorithmConv2d):
    """Forward by direct convolution (tinyfcn.kernels.direct); the gradients as
    "im2col-tiled" computes them."""

    def forward(self, x, w, b=None):
        x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
        self._keep(x, w)
        geo = self.geo
        bias = np.zeros(w.shape[0], dtype=x.dtype) if b is None else b
        return conv2d_direct(x, w, bias, geo.sH, geo.sW, geo.pH, geo.pW, geo.dH, geo.dW,
                             geo.H_out, geo.W_out)

    backward = TiledConv2d.backward


_FUNCTIONS = {"im2col": Conv2d, "im2col-tiled": TiledConv2d, "winograd": WinogradConv2d,
              "direct": DirectConv2d}


def function_for(geo: Geometry, C_out: int, algorithm: str | None):
    """The Function class that computes this conv2d; records what ran for the report."""
    _check_name(algorithm, "algorithm")
    if algorithm is not None:  # asked for by this call: it must apply
        why = unsupported(algorithm, geo, C_out)
        if why is not None:
            raise ValueError(f"algorithm {algorithm!r} cannot compute conv2d "
                             f"{describe(geo, C_out)}: {why}")
        name = shown = algorithm
    elif _forced is not None:
        why = unsupported(_forced, geo, C_out)
        name = _forced if why is None else "im2col"
        shown = name if why is None else f"im2col ({_forced!r} does not apply: {why})"
    else:
        name = shown = choose(geo, C_out)
    _ran[describe(geo, C_out)] = shown
    return _FUNCTIONS[name]
