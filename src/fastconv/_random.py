"""fastconv's random number generator (weight initialisation, dropout masks, data shuffling)."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seeds fastconv's generator, so initialisation and dropout repeat exactly."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator
