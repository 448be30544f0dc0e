"""Top-k sparsification: send the ``ratio`` largest-magnitude elements of each tensor.

Biased (small elements are never sent): use it under
:class:`~fedlab.codec.error_feedback.ErrorFeedback`, which sends them later (Lin et al.,
"Deep Gradient Compression", 2018; Stich et al., "Sparsified SGD with memory", 2018).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Sparsifier, _expect_keys, register
from fedlab.codec.packing import INDEX_MODES, check_segments, pack_indices, unpack_indices
from fedlab.protocol.container import Reader

__all__ = ["TopK", "check_ratio", "kept"]


def check_ratio(ratio: Any, name: str) -> float:
    if not isinstance(ratio, int | float | np.floating) or isinstance(ratio, bool):
        raise TypeError(f"{name} ratio must be a number, got {ratio!r}")
    if not (math.isfinite(ratio) and 0 < ratio <= 1):
        raise ValueError(f"{name} ratio must be in (0, 1], got {ratio!r}")
    return float(ratio)


def kept(ratio: float, size: int) -> int:
    """Elements kept of ``size``: ``ceil(ratio * size)``, at least one of a non-empty tensor."""
    return 0 if size == 0 else min(size, max(1, math.ceil(ratio * size)))


@register("topk")
@dataclass(frozen=True, slots=True)
class TopK(Sparsifier):
    """Keep the ``ceil(ratio · n)`` largest-magnitude elements of every tensor.

    Parameters
    ----------
    ratio : float
        Fraction of elements kept, in (0, 1] (at least one per non-empty tensor).
    index : {"auto", "bitmap", "varint"}
        How the positions (in the whole update) are written: a bitmap (one bit per
        parameter) or gap varints (≈1 byte per index at 1 % density); ``"auto"`` takes the
        smaller.
    """

    ratio: float
    index: str = field(default="auto", kw_only=True)
    name: ClassVar[str] = "topk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio, "topk"))
        if self.index not in INDEX_MODES:
            raise ValueError(f"index must be one of {INDEX_MODES}, got {self.index!r}")

    def count(self, size: int) -> int:
        return kept(self.ratio, size)

    def select(
        self, flat: np.ndarray, sizes: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, np.ndarray]:
        magnitude = np.abs(flat)
        chosen, at = [], 0
        for n in sizes:
            k = self.count(n)
            if k == n:
                chosen.append(np.arange(at, at + n))
            else:
                # The k-th largest magnitude, then every larger one and the first ties:
                # the same set as an argpartition, cheaper, and already sorted.
                seg = magnitude[at : at + n]
                kth = np.partition(seg, n - k)[n - k]
                above = np.flatnonzero(seg > kth)
                if above.size < k:
                    ties = np.flatnonzero(seg == kth)[: k - above.size]
                    above = np.union1d(above, ties)
                chosen.append(above + at)
            at += n
        idx = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        return pack_indices(idx, int(flat.size), self.index), idx

    def read(self, r: Reader, sizes: Sequence[int]) -> np.ndarray:
        counts = [self.count(n) for n in sizes]
        idx = unpack_indices(r, sum(counts), sum(sizes), what="top-k indices")
        check_segments(idx, counts, sizes)
        return idx

    def index_bound(self, sizes: Sequence[int]) -> int:
        bitmap = (sum(sizes) + 7) // 8
        varints = 5 * sum(self.count(n) for n in sizes)
        return 1 + (varints if self.index == "varint" else bitmap)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "ratio": self.ratio, "index": self.index}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TopK:
        _expect_keys(config, cls.name, ("ratio", "index"))
        return cls(config.get("ratio"), index=config.get("index", "auto"))  # type: ignore[arg-type]
