"""Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016): a stride-1 3x3 convolution
computed on 4x4 input tiles that overlap by 2, each giving a 2x2 output tile, with 16
multiplications per tile and channel pair instead of 36.

    V = B^T d B     input tile d (4x4) -> V (4x4), `input_transform`
    U = G g G^T     kernel g (3x3) -> U (4x4), `filter_transform`
    M = U * V       elementwise, summed over input channels: 16 independent GEMMs
    Y = A^T M A     M (4x4) -> output tile Y (2x2), `output_transform`

with B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]], A^T = [[1, 1, 1, 0],
[0, 1, -1, -1]]. Transformed arrays are (16, channels, N*tH*tW): the 4x4 position first,
so the 16 products are one batched matmul, (16, C_out, C) @ (16, C, N*tH*tW).
tH x tW output tiles per image: tH = ceil(H_out / 2), tW = ceil(W_out / 2).
"""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def filter_transform(w):
    """w (C_out, C, 3, 3) -> U (16, C_out, C), U[4a + b] = (G w G^T)[a, b]."""
    C_out, C = w.shape[:2]
    U = np.empty((16, C_out, C), dtype=w.dtype)
    for o in prange(C_out):
        t = np.empty((4, 3), dtype=w.dtype)
        for c in range(C):
            for j in range(3):  # t = G g
                g0, g1, g2 = w[o, c, 0, j], w[o, c, 1, j], w[o, c, 2, j]
                t[0, j] = g0
                t[1, j] = 0.5 * (g0 + g1 + g2)
                t[2, j] = 0.5 * (g0 - g1 + g2)
                t[3, j] = g2
            for a in range(4):  # U = t G^T
                U[4 * a + 0, o, c] = t[a, 0]
                U[4 * a + 1, o, c] = 0.5 * (t[a, 0] + t[a, 1] + t[a, 2])
                U[4 * a + 2, o, c] = 0.5 * (t[a, 0] - t[a, 1] + t[a, 2])
                U[4 * a + 3, o, c] = t[a, 2]
    return U


@njit(cache=True)
def _input_band(x, n, c, ty0, ty1, pH, pW, tW, V, col0):
    """V[:, c, col0 + (ty - ty0)*tW + tx] for the tile rows [ty0, ty1) of plane (n, c).

    For each tile row the four input rows it reads are copied, zero-padded, into a small
    buffer; B^T d is taken along the whole band of rows at once (t), then t B tile by
    tile along it, so reads and writes run along rows."""
    H, W = x.shape[2], x.shape[3]
    Wp = 2 * tW + 2
    d = np.zeros((4, Wp), dtype=x.dtype)
    t = np.empty((4, Wp), dtype=x.dtype)
    w_lo, w_hi = max(0, pW), min(Wp, W + pW)  # where the padded row holds input
    for ty in range(ty0, ty1):
        for a in range(4):
            h = 2 * ty - pH + a
            if 0 <= h < H and w_lo < w_hi:
                d[a, w_lo:w_hi] = x[n, c, h, w_lo - pW:w_hi - pW]
            else:
                d[a, :] = 0
        for v in range(Wp):  # t = B^T d
            t[0, v] = d[0, v] - d[2, v]
            t[1, v] = d[1, v] + d[2, v]
            t[2, v] = d[2, v] - d[1, v]
            t[3, v] = d[1, v] - d[3, v]
        base = col0 + (ty - ty0) * tW
        for a in range(4):  # V = t B
            for tx in range(tW):
                v = 2 * tx
                V[4 * a + 0, c, base + tx] = t[a, v] - t[a, v + 2]
                V[4 * a + 1, c, base + tx] = t[a, v + 1] + t[a, v + 2]
                V[4 * a + 2, c, base + tx] = t[a, v + 2] - t[a, v + 1]
                V[4 * a + 3, c, base + tx] = t[a, v + 1] - t[a, v + 3]


@njit(cache=True)
def _output_band(M, col0, y, n, o, ty0, ty1, tW, bias):
    """y[n, o, rows 2*ty0 .. 2*ty1) from M[:, o, col0 + (ty - ty0)*tW + tx], plus bias;
    rows and columns past y's edge (the last tiles' overhang) are dropped."""
    H_out, W_out = y.shape[2], y.shape[3]
    s = np.empty((2, 4, tW), dtype=M.dtype)
    row = np.empty((2, 2 * tW), dtype=M.dtype)
    for ty in range(ty0, ty1):
        base = col0 + (ty - ty0) * tW
        for b in range(4):  # s = A^T m
            for tx in range(tW):
                m1, m2 = M[4 + b, o, base + tx], M[8 + b, o, base + tx]
                s[0, b, tx] = M[b, o, base + tx] + m1 + m2
                s[1, b, tx] = m1 - m2 - M[12 + b, o, base + tx]
        for a in range(2):  # Y = s A
            for tx in range(tW):
                row[a, 2 * tx] = s[a, 0, tx] + s[a, 1, tx] + s[a, 2, tx] + bias
                row[a, 2 * tx + 1] = s[a, 1, tx] - s[a, 2, tx] - s[a, 3, tx] + bias
            if 2 * ty + a < H_out:
                y[n, o, 2 * ty + a, :] = row[a, :W_out]


@njit(parallel=True, cache=True)
def input_transform(x, pH, pW, tH, tW):
    """x (N, C, H, W), zero padding pH, pW -> V (16, C, N*tH*tW)."""
    N, C = x.shape[:2]
    V = np.empty((16, C, N * tH * tW), dtype=x.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        _input_band(x, n, c, 0, tH, pH, pW, tW, V, n * tH * tW)
    return V


@njit(parallel=True, cache=True)
def output_transform(M, N, H_out, W_out, tH, tW, bias):
    """M (16, C_out, N*tH*tW) -> y (N, C_out, H_out, W_out) plus bias (C_out,)."""
    C_out = M.shape[1]
    y = np.empty((N, C_out, H_out, W_out), dtype=M.dtype)
    for no in prange(N * C_out):
        n, o = no // C_out, no % C_out
        _output_band(M, n * tH * tW, y, n, o, 0, tH, tW, bias[o])
    return y


@njit(nogil=True, cache=True)
def input_transform_band(x, V, n, ty0, ty1, pH, pW, tW):
    """Image n's tile rows [ty0, ty1) into V[:, :, :(ty1 - ty0)*tW] (V is (16, C, >= that)):
    the banded algorithm's piece, single-threaded and without the GIL."""
    for c in range(x.shape[1]):
        _input_band(x, n, c, ty0, ty1, pH, pW, tW, V, 0)


@njit(nogil=True, cache=True)
def output_transform_band(M, y, n, ty0, ty1, tW, bias):
    """The output rows of image n's tile rows [ty0, ty1) from M[:, :, :(ty1 - ty0)*tW]."""
    for o in range(y.shape[1]):
        _output_band(M, 0, y, n, o, ty0, ty1, tW, bias[o])


@njit(cache=True)
def _adjoint_band(g, n, o, ty0, ty1, tW, dM, col0):
    """dM[:, o, col0 + (ty - ty0)*tW + tx] = A g A^T for the tile rows [ty0, ty1) of g's
    plane (n, o); outputs past the edge (the last tiles' overhang) count as zero. Row by
    row, as the forward transforms: r = A g for the band's two rows, then r A^T per tile."""
    H_out, W_out = g.shape[2], g.shape[3]
    rows = np.zeros((2, 2 * tW), dtype=g.dtype)
    r = np.empty((4, 2 * tW), dtype=g.dtype)
    for ty in range(ty0, ty1):
        for i in range(2):
            if 2 * ty + i < H_out:
                rows[i, :W_out] = g[n, o, 2 * ty + i, :]
            else:
                rows[i, :] = 0
        for v in range(2 * tW):  # r = A g: g0, g0 + g1, g0 - g1, -g1
            r[0, v] = rows[0, v]
            r[1, v] = rows[0, v] + rows[1, v]
            r[2, v] = rows[0, v] - rows[1, v]
            r[3, v] = -rows[1, v]
        base = col0 + (ty - ty0) * tW
        for a in range(4):  # dM = r A^T, tile by tile along the band
            for tx in range(tW):
                r0, r1 = r[a, 2 * tx], r[a, 2 * tx + 1]
                dM[4 * a + 0, o, base + tx] = r0
                dM[4 * a + 1, o, base + tx] = r0 + r1
                dM[4 * a + 2, o, base + tx] = r0 - r1
                dM[4 * a + 3, o, base + tx] = -r1


@njit(parallel=True, cache=True)
def output_transform_adjoint(g, tH, tW):
    """g (N, C_out, H_out, W_out) -> dM (16, C_out, N*tH*tW)."""
    N, C_out = g.shape[:2]
    dM = np.empty((16, C_out, N * tH * tW), dtype=g.dtype)
    for no in prange(N * C_out):
        n, o = no // C_out, no % C_out
        _adjoint_band(g, n, o, 0, tH, tW, dM, n * tH * tW)
    return dM


@njit(nogil=True, cache=True)
def output_transform_adjoint_band(g, dM, n, ty0, ty1, tW):
    """Image n's tile rows [ty0, ty1) of output_transform_adjoint into dM[:, :, :P]."""
    for o in range(g.shape[1]):
        _adjoint_band(g, n, o, ty0, ty1, tW, dM, 0)


@njit(parallel=True, cache=True)
def filter_transform_adjoint(dU):
    """dU (16, C_out, C) -> gW (C_out, C, 3, 3) = G^T dU G for each (o, c)."""
    C_out, C = dU.shape[1:]
    gw = np.empty((C_out, C, 3, 3), dtype=dU.dtype)
    for o in prange(C_out):
        t = np.empty((3, 4), dtype=dU.dtype)
        for c in range(C):
            for b in range(4):  # t = G^T dU: rows u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3
                u0, u1, u2, u3 = dU[b, o, c], dU[4 + b, o, c], dU[8 + b, o, c], dU[12 + b, o, c]
                t[0, b] = u0 + 0.5 * (u1 + u2)
                t[1, b] = 0.5 * (u1 - u2)
                t[2, b] = 0.5 * (u1 + u2) + u3
            for i in range(3):  # gW = t G
                gw[o, c, i, 0] = t[i, 0] + 0.5 * (t[i, 1] + t[i, 2])
                gw[o, c, i, 1] = 0.5 * (t[i, 1] - t[i, 2])
                gw[o, c, i, 2] = 0.5 * (t[i, 1] + t[i, 2]) + t[i, 3]
    return gw
