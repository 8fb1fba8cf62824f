"""Output-size formulas: the one home of the arithmetic every caller uses (same as PyTorch's)."""


def conv_out_size(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Output length of a convolution along one axis (may be < 1 for invalid input)."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_transpose_out_size(size: int, k: int, s: int, p: int, output_padding: int = 0,
                            d: int = 1) -> int:
    """Output length of a transposed convolution: the input length of the conv it transposes."""
    return (size - 1) * s - 2 * p + d * (k - 1) + output_padding + 1


def pool_out_size(size: int, k: int, s: int, p: int, ceil_mode: bool = False) -> int:
    """Output length of max pooling; in ceil mode the last window may overhang the input,
    but it must start inside the input or its left padding."""
    span = size + 2 * p - k
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out
