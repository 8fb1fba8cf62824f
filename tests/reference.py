"""Slow, obvious NumPy references for the kernels and functional ops (loops, no cleverness)."""

import numpy as np


def conv2d_ref(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    N, C, H, W = x.shape
    C_out, _, kH, kW = w.shape
    (sH, sW), (pH, pW), (dH, dW) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (pH, pH), (pW, pW)))
    H_out = (H + 2 * pH - dH * (kH - 1) - 1) // sH + 1
    W_out = (W + 2 * pW - dW * (kW - 1) - 1) // sW + 1
    out = np.zeros((N, C_out, H_out, W_out), dtype=x.dtype)
    for oh in range(H_out):
        for ow in range(W_out):
            patch = xp[:, :, oh * sH:oh * sH + dH * (kH - 1) + 1:dH,
                       ow * sW:ow * sW + dW * (kW - 1) + 1:dW]
            out[:, :, oh, ow] = np.einsum("nchw,ochw->no", patch, w)
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv_transpose2d_ref(x, w, b=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                         dilation=(1, 1)):
    """Each input pixel scatters its kernel-weighted copy into the (padded) output."""
    N, C_in, H, W = x.shape
    _, C_out, kH, kW = w.shape
    (sH, sW), (pH, pW), (dH, dW) = stride, padding, dilation
    H_full = (H - 1) * sH + dH * (kH - 1) + 1 + output_padding[0]
    W_full = (W - 1) * sW + dW * (kW - 1) + 1 + output_padding[1]
    full = np.zeros((N, C_out, H_full + pH, W_full + pW), dtype=x.dtype)
    for h in range(H):
        for v in range(W):
            for i in range(kH):
                for j in range(kW):
                    full[:, :, h * sH + i * dH, v * sW + j * dW] += x[:, :, h, v] @ w[:, :, i, j]
    out = full[:, :, pH:H_full - pH, pW:W_full - pW]
    if b is not None:
        out = out + b[None, :, None, None]
    return out


def max_pool2d_ref(x, kernel, stride, padding, ceil_mode):
    N, C, H, W = x.shape
    (kH, kW), (sH, sW), (pH, pW) = kernel, stride, padding

    def size(n, k, s, p):
        out = (n + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
        return out - 1 if ceil_mode and (out - 1) * s >= n + p else out

    H_out, W_out = size(H, kH, sH, pH), size(W, kW, sW, pW)
    out = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    idx = np.zeros((N, C, H_out, W_out), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(H_out):
                for ow in range(W_out):
                    best, arg = -np.inf, -1
                    for h in range(oh * sH - pH, oh * sH - pH + kH):
                        for v in range(ow * sW - pW, ow * sW - pW + kW):
                            if 0 <= h < H and 0 <= v < W and x[n, c, h, v] > best:
                                best, arg = x[n, c, h, v], h * W + v
                    out[n, c, oh, ow], idx[n, c, oh, ow] = best, arg
    return out, idx


def max_unpool2d_ref(x, idx, out_hw):
    N, C = x.shape[:2]
    out = np.zeros((N, C, out_hw[0] * out_hw[1]), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            out[n, c, idx[n, c].ravel()] = x[n, c].ravel()
    return out.reshape(N, C, *out_hw)


def im2col_ref(x, kernel, stride, padding, dilation):
    """Columns (C*kH*kW, N*L) read straight from the padded input."""
    N, C, H, W = x.shape
    (kH, kW), (sH, sW), (pH, pW), (dH, dW) = kernel, stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (pH, pH), (pW, pW)))
    H_out = (H + 2 * pH - dH * (kH - 1) - 1) // sH + 1
    W_out = (W + 2 * pW - dW * (kW - 1) - 1) // sW + 1
    col = np.zeros((N, C, kH, kW, H_out, W_out), dtype=x.dtype)
    for i in range(kH):
        for j in range(kW):
            col[:, :, i, j] = xp[:, :, i * dH:i * dH + sH * (H_out - 1) + 1:sH,
                                 j * dW:j * dW + sW * (W_out - 1) + 1:sW]
    col = col.reshape(N, C * kH * kW, H_out * W_out).transpose(1, 0, 2)
    return col.reshape(C * kH * kW, N * H_out * W_out), (H_out, W_out)


def cross_entropy_ref(logits, target, ignore_index=255):
    N, C, H, W = logits.shape
    total, count = 0.0, 0
    for n in range(N):
        for h in range(H):
            for v in range(W):
                t = target[n, h, v]
                if t == ignore_index:
                    continue
                z = logits[n, :, h, v].astype(np.float64)
                total += np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[t]
                count += 1
    return total / count
