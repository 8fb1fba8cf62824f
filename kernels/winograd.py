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


@njit(parallel=True, cache=True)
def input_transform(x, pH, pW, tH, tW):
    """x (N, C, H, W), zero padding pH, pW -> V (16, C, N*tH*tW).

    Each (n, c) plane is copied once into a zero-padded buffer; then B^T d is taken for a
    whole band of four rows at once (t), and t B for every tile along the band, so reads
    and writes run along rows."""
    N, C, H, W = x.shape
    T = tH * tW
    Hp, Wp = 2 * tH + 2, 2 * tW + 2
    V = np.empty((16, C, N * T), dtype=x.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        plane = np.zeros((Hp, Wp), dtype=x.dtype)
        h_end, w_end = min(H, Hp - pH), min(W, Wp - pW)
        plane[pH:pH + h_end, pW:pW + w_end] = x[n, c, :h_end, :w_end]
        t = np.empty((4, Wp), dtype=x.dtype)
        for ty in range(tH):
            r = 2 * ty
            for v in range(Wp):  # t = B^T d, for the band of rows r .. r+3
                t[0, v] = plane[r, v] - plane[r + 2, v]
                t[1, v] = plane[r + 1, v] + plane[r + 2, v]
                t[2, v] = plane[r + 2, v] - plane[r + 1, v]
                t[3, v] = plane[r + 1, v] - plane[r + 3, v]
            base = n * T + ty * tW
            for a in range(4):  # V = t B, tile by tile along the band
                for tx in range(tW):
                    v = 2 * tx
                    V[4 * a + 0, c, base + tx] = t[a, v] - t[a, v + 2]
                    V[4 * a + 1, c, base + tx] = t[a, v + 1] + t[a, v + 2]
                    V[4 * a + 2, c, base + tx] = t[a, v + 2] - t[a, v + 1]
                    V[4 * a + 3, c, base + tx] = t[a, v + 1] - t[a, v + 3]
    return V


@njit(parallel=True, cache=True)
def output_transform(M, N, H_out, W_out, tH, tW, bias):
    """M (16, C_out, N*tH*tW) -> y (N, C_out, H_out, W_out) plus bias (C_out,), dropping
    the outputs of the last tiles that fall past H_out or W_out."""
    C_out = M.shape[1]
    T = tH * tW
    y = np.empty((N, C_out, H_out, W_out), dtype=M.dtype)
    for no in prange(N * C_out):
        n, o = no // C_out, no % C_out
        s = np.empty((2, 4, tW), dtype=M.dtype)
        row = np.empty((2, 2 * tW), dtype=M.dtype)
        for ty in range(tH):
            base = n * T + ty * tW
            for b in range(4):  # s = A^T m, for every tile along the band
                for tx in range(tW):
                    m1, m2 = M[4 + b, o, base + tx], M[8 + b, o, base + tx]
                    s[0, b, tx] = M[b, o, base + tx] + m1 + m2
                    s[1, b, tx] = m1 - m2 - M[12 + b, o, base + tx]
            for a in range(2):  # Y = s A
                for tx in range(tW):
                    row[a, 2 * tx] = s[a, 0, tx] + s[a, 1, tx] + s[a, 2, tx] + bias[o]
                    row[a, 2 * tx + 1] = s[a, 1, tx] - s[a, 2, tx] - s[a, 3, tx] + bias[o]
                if 2 * ty + a < H_out:
                    y[n, o, 2 * ty + a, :] = row[a, :W_out]
    return y


# The weight gradient, as the adjoint of each step above: with gY the output's gradient,
#     dM = A gY A^T        per 2x2 output tile -> 4x4, `output_transform_adjoint`
#     dU = dM V^T          16 GEMMs reducing over the tiles
#     gW = G^T dU G        4x4 -> 3x3, `filter_transform_adjoint`


@njit(parallel=True, cache=True)
def output_transform_adjoint(g, tH, tW):
    """g (N, C_out, H_out, W_out) -> dM (16, C_out, N*tH*tW); outputs past H_out or W_out
    (the last tiles' overhang) count as zero."""
    N, C_out, H_out, W_out = g.shape
    T = tH * tW
    dM = np.empty((16, C_out, N * T), dtype=g.dtype)
    for no in prange(N * C_out):
        n, o = no // C_out, no % C_out
        for ty in range(tH):
            for tx in range(tW):
                h, w = 2 * ty, 2 * tx
                g00 = g[n, o, h, w]
                g01 = g[n, o, h, w + 1] if w + 1 < W_out else 0
                g10 = g[n, o, h + 1, w] if h + 1 < H_out else 0
                g11 = g[n, o, h + 1, w + 1] if h + 1 < H_out and w + 1 < W_out else 0
                col = n * T + ty * tW + tx
                for a in range(4):  # r = A g: rows g0, g0 + g1, g0 - g1, -g1
                    if a == 0:
                        r0, r1 = g00, g01
                    elif a == 1:
                        r0, r1 = g00 + g10, g01 + g11
                    elif a == 2:
                        r0, r1 = g00 - g10, g01 - g11
                    else:
                        r0, r1 = -g10, -g11
                    dM[4 * a + 0, o, col] = r0  # r A^T
                    dM[4 * a + 1, o, col] = r0 + r1
                    dM[4 * a + 2, o, col] = r0 - r1
                    dM[4 * a + 3, o, col] = -r1
    return dM


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
