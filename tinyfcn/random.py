"""The one random generator of tinyfcn's ops (dropout), seeded like `torch.manual_seed`."""

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator


def get_rng_state() -> dict:
    """The generator's state as a JSON-able dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    _generator.bit_generator.state = state
