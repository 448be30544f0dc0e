"""Shared fixtures of the codec tests: digits-CNN-like shapes and updates, the codecs."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings

from fedlab.codec import (
    QSGD,
    ErrorFeedback,
    Lzma,
    RandomK,
    Sign,
    Ternary,
    TopK,
    Zlib,
    chain,
)

#: Every property here: reproducible, bounded, no example database.
FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: The digits CNN's weight shapes (conv, conv, dense, head) and an empty and scalar tensor.
SHAPES = ((3, 3, 1, 16), (16,), (3, 3, 16, 32), (32,), (512, 64), (64,), (64, 10), (10,))
SMALL = ((4, 3), (5,), (0,), ())


def update(shapes=SHAPES, seed: int = 0, scale: float = 0.01) -> tuple[np.ndarray, ...]:
    """A heavy-tailed, update-like set of tensors."""
    rng = np.random.default_rng(seed)
    return tuple((scale * rng.standard_t(3, size=s)).astype(np.float32) for s in shapes)


def codecs() -> dict[str, object]:
    """One of every kind, and the compositions the benchmark uses."""
    return {
        "float32": chain(),
        "float32+zlib": chain(Zlib()),
        "topk": TopK(0.05),
        "topk-bitmap": TopK(0.3, index="bitmap"),
        "topk-varint": TopK(0.05, index="varint"),
        "randomk": RandomK(0.1),
        "qsgd8": QSGD(bits=8),
        "qsgd4-l2": QSGD(bits=4, norm="l2"),
        "qsgd2": QSGD(bits=2),
        "ternary": Ternary(),
        "sign": Sign(),
        "topk+qsgd4+zlib": chain(TopK(0.01), QSGD(bits=4), Zlib()),
        "ef-topk+qsgd4+lzma": ErrorFeedback(chain(TopK(0.01), QSGD(bits=4), Lzma())),
        "ef-sign": ErrorFeedback(Sign()),
        "randomk+ternary+zlib": chain(RandomK(0.2, unbiased=False), Ternary(), Zlib(1)),
    }
