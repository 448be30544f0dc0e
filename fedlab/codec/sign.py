"""Scaled sign compression: one bit per value and one scale per tensor.

A tensor ``v`` of ``d`` values is sent as ``(‖v‖₁ / d) · sign(v)`` (zero counts as
positive) — the scaled sign of EF-signSGD (Karimireddy et al., "Error Feedback Fixes
SignSGD", 2019); unscaled signSGD (Bernstein et al., 2018) is the same bits with the
server choosing the step. Biased: wrap it in
:class:`~fedlab.codec.error_feedback.ErrorFeedback`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Quantizer, _expect_keys, register
from fedlab.codec.packing import pack_bits, packed_bits_size, unpack_bits
from fedlab.codec.qsgd import read_scale
from fedlab.codec.wire import Reader

__all__ = ["Sign"]


@register("sign")
@dataclass(frozen=True, slots=True)
class Sign(Quantizer):
    """``mean(|v|) · sign(v)`` per tensor: 1 bit per value plus 4 bytes per tensor."""

    name: ClassVar[str] = "sign"

    def write(self, values: Sequence[np.ndarray], rng: np.random.Generator) -> bytes:
        parts = []
        for v in values:
            scale = np.float32(np.mean(np.abs(v), dtype=np.float64)) if v.size else np.float32(0)
            parts.append(scale.astype("<f4").tobytes() + pack_bits(v < 0, 1))
        return b"".join(parts)

    def read(self, r: Reader, counts: Sequence[int]) -> list[np.ndarray]:
        out = []
        for i, c in enumerate(counts):
            scale = read_scale(r, i)
            negative = unpack_bits(r, c, 1, limit=2, what=f"signs of tensor {i}")
            out.append(np.where(negative.astype(bool), -scale, scale).astype(np.float32))
        return out

    def value_bound(self, counts: Sequence[int]) -> int:
        return sum(4 + packed_bits_size(c, 1) for c in counts)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sign:
        _expect_keys(config, cls.name, ())
        return cls()
