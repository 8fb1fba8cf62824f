"""Small helpers that layers, ops and users share."""

from __future__ import annotations

import numpy as np


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """(a, b) from an int or a pair of ints, each >= `minimum`; ValueError naming `name` if not."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        a, b = value
        a, b = int(a), int(b)
        if (a, b) != tuple(value):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return a, b
