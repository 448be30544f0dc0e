"""Random-k sparsification: send ``ratio`` of each tensor's elements chosen at random.

Only a 4-byte seed travels for the positions: the decoder regenerates them from it with
PCG64's raw output (a stream numpy keeps stable across versions, so a device and a
server on different numpy releases agree). With ``unbiased=True`` the decoder scales the
values by ``n/k``, making the estimate unbiased (Stich et al., 2018; Wangni et al., 2018).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Sparsifier, _expect_keys, register
from fedlab.codec.topk import check_ratio, kept
from fedlab.protocol.container import Reader

__all__ = ["RandomK", "random_indices"]


def random_indices(seed: int, tensor: int, size: int, k: int) -> np.ndarray:
    """``k`` distinct sorted positions in ``range(size)`` from ``(seed, tensor)``."""
    if k >= size:
        return np.arange(size)
    keys = np.random.PCG64(np.random.SeedSequence([seed, tensor])).random_raw(size)
    kth = np.partition(keys, k - 1)[k - 1]
    chosen = keys < kth
    missing = k - int(np.count_nonzero(chosen))
    if missing:  # the k-th key itself and, in the ~never case of equal keys, the first ties
        chosen[np.flatnonzero(keys == kth)[:missing]] = True
    return np.flatnonzero(chosen)


@register("randomk")
@dataclass(frozen=True, slots=True)
class RandomK(Sparsifier):
    """Keep ``ceil(ratio · n)`` uniformly random elements of every tensor.

    Parameters
    ----------
    ratio : float
        Fraction kept, in (0, 1].
    unbiased : bool
        Scale decoded values by ``n/k`` so that ``E[decode(encode(x))] = x``.
    """

    ratio: float
    unbiased: bool = field(default=True, kw_only=True)
    name: ClassVar[str] = "randomk"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio, "randomk"))
        if not isinstance(self.unbiased, bool):
            raise TypeError(f"unbiased must be a bool, got {self.unbiased!r}")

    def count(self, size: int) -> int:
        return kept(self.ratio, size)

    def select(
        self, flat: np.ndarray, sizes: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, np.ndarray]:
        seed = int(rng.integers(2**32))
        return seed.to_bytes(4, "little"), self._positions(seed, sizes)

    def _positions(self, seed: int, sizes: Sequence[int]) -> np.ndarray:
        chosen, at = [], 0
        for t, n in enumerate(sizes):
            chosen.append(random_indices(seed, t, n, self.count(n)) + at)
            at += n
        return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)

    def read(self, r: Reader, sizes: Sequence[int]) -> np.ndarray:
        return self._positions(r.u32("random-k seed"), sizes)

    def index_bound(self, sizes: Sequence[int]) -> int:
        return 4

    def rescale(self, size: int) -> float:
        return size / self.count(size) if self.unbiased and size else 1.0

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "ratio": self.ratio, "unbiased": self.unbiased}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RandomK:
        _expect_keys(config, cls.name, ("ratio", "unbiased"))
        return cls(config.get("ratio"), unbiased=config.get("unbiased", True))  # type: ignore[arg-type]
