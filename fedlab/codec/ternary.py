"""Ternary stochastic quantization (TernGrad, Wen et al., 2017), five values per byte.

Each value becomes ``scale · t`` with ``t ∈ {-1, 0, 1}`` drawn so that ``E[t] =
v / scale`` (unbiased; ``scale`` is the tensor's max-abs), and the digits ``t + 1`` are
packed in base 3, five to a byte: 1.6 bits per value plus 4 bytes per tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Quantizer, _expect_keys, register
from fedlab.codec.packing import pack_trits, packed_trits_size, unpack_trits
from fedlab.codec.qsgd import NORMS, read_scales, stochastic_levels, tensor_scales
from fedlab.protocol.container import Reader

__all__ = ["Ternary"]


@register("ternary")
@dataclass(frozen=True, slots=True)
class Ternary(Quantizer):
    """Unbiased ternary quantization (``norm`` as in :class:`~fedlab.codec.qsgd.QSGD`)."""

    norm: str = field(default="max", kw_only=True)
    name: ClassVar[str] = "ternary"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    def write(
        self, values: np.ndarray, counts: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, Callable[[], np.ndarray]]:
        scales = tensor_scales(values, counts, self.norm)
        trits = (stochastic_levels(values, scales, counts, 1, rng) + 1).astype(np.uint8)
        data = scales.astype("<f4").tobytes() + pack_trits(trits)
        return data, lambda: self._values(trits, scales, counts)

    @staticmethod
    def _values(trits: np.ndarray, scales: np.ndarray, counts: Sequence[int]) -> np.ndarray:
        return (trits.astype(np.float32) - np.float32(1)) * np.repeat(scales, counts)

    def read(self, r: Reader, counts: Sequence[int]) -> np.ndarray:
        scales = read_scales(r, len(counts))
        return self._values(unpack_trits(r, sum(counts), what="ternary digits"), scales, counts)

    def value_bound(self, counts: Sequence[int]) -> int:
        return 4 * len(counts) + packed_trits_size(sum(counts))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "norm": self.norm}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Ternary:
        _expect_keys(config, cls.name, ("norm",))
        return cls(norm=config.get("norm", "max"))
