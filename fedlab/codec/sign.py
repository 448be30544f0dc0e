"""Scaled sign compression: one bit per value and one scale per tensor.

A tensor ``v`` of ``d`` values is sent as ``(‖v‖₁ / d) · sign(v)`` (zero counts as
positive) — the scaled sign of EF-signSGD (Karimireddy et al., "Error Feedback Fixes
SignSGD", 2019); unscaled signSGD (Bernstein et al., 2018) is the same bits with the
server choosing the step. Biased: wrap it in
:class:`~fedlab.codec.error_feedback.ErrorFeedback`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Quantizer, _expect_keys, register, segments
from fedlab.codec.packing import pack_bits, packed_bits_size, unpack_bits
from fedlab.codec.qsgd import read_scales
from fedlab.protocol.container import Reader

__all__ = ["Sign"]


@register("sign")
@dataclass(frozen=True, slots=True)
class Sign(Quantizer):
    """``mean(|v|) · sign(v)`` per tensor: 1 bit per value plus 4 bytes per tensor."""

    name: ClassVar[str] = "sign"

    def write(
        self, values: np.ndarray, counts: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, Callable[[], np.ndarray]]:
        scales = np.array(
            [
                np.mean(np.abs(seg), dtype=np.float64) if seg.size else 0.0
                for seg in segments(values, counts)
            ],
            dtype=np.float32,
        )
        negative = values < 0
        data = scales.astype("<f4").tobytes() + pack_bits(negative, 1)
        return data, lambda: self._values(negative, scales, counts)

    @staticmethod
    def _values(negative: np.ndarray, scales: np.ndarray, counts: Sequence[int]) -> np.ndarray:
        magnitude = np.repeat(scales, counts)
        return np.where(negative.astype(bool), -magnitude, magnitude).astype(np.float32)

    def read(self, r: Reader, counts: Sequence[int]) -> np.ndarray:
        scales = read_scales(r, len(counts))
        return self._values(unpack_bits(r, sum(counts), 1, limit=2, what="signs"), scales, counts)

    def value_bound(self, counts: Sequence[int]) -> int:
        return 4 * len(counts) + packed_bits_size(sum(counts), 1)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sign:
        _expect_keys(config, cls.name, ())
        return cls()
