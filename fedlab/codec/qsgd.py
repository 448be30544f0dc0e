"""Unbiased stochastic quantization to ``2**(bits-1) - 1`` levels per sign (QSGD).

Each tensor is written as one float32 scale (its max-abs by default, or its L2 norm as
in Alistarh et al., "QSGD", 2017) and one ``bits``-bit code per value. A value ``v``
becomes ``scale · l / s`` where ``l`` is ``|v|/scale · s`` rounded down or up at random
with the probabilities that make ``E[l] = |v|/scale · s``: the quantizer is unbiased.
``bits=2`` gives the ternary levels {-1, 0, 1} (:class:`~fedlab.codec.ternary.Ternary`
packs those tighter, 1.6 bits per value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Quantizer, _expect_keys, register, segments
from fedlab.codec.errors import CodecError
from fedlab.codec.packing import pack_bits, packed_bits_size, unpack_bits
from fedlab.protocol.container import Reader

__all__ = ["NORMS", "QSGD", "read_scales", "stochastic_levels", "tensor_scales"]

NORMS = ("max", "l2")


def tensor_scales(values: np.ndarray, counts: Sequence[int], norm: str) -> np.ndarray:
    """The float32 scale of every tensor's segment of ``values``: max-abs or L2 norm."""
    out = np.zeros(len(counts), dtype=np.float32)
    for i, seg in enumerate(segments(values, counts)):
        if seg.size:
            if norm == "max":
                out[i] = np.max(np.abs(seg))
            else:
                wide = seg.astype(np.float64)
                out[i] = np.sqrt(np.dot(wide, wide))
    return out


def stochastic_levels(
    values: np.ndarray,
    scales: np.ndarray,
    counts: Sequence[int],
    levels: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Signed integer levels in ``[-levels, levels]`` with ``E[level] = v/scale·levels``
    (``scale`` the value's tensor's), in float32 arithmetic."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int16)
    wide = scales.astype(np.float32)
    inv = np.divide(np.float32(levels), wide, out=np.zeros_like(wide), where=wide > 0)
    u = np.abs(values, dtype=np.float32) * np.repeat(inv, counts)
    np.minimum(u, np.float32(levels), out=u)
    draw = rng.random(values.size, dtype=np.float32)
    if levels == 1:  # u in [0, 1]: the level is 1 with probability u
        level = (draw < u).astype(np.int16)
    else:
        low = np.floor(u)
        level = low.astype(np.int16) + (draw < (u - low))
    np.negative(level, out=level, where=values < 0)
    return level


def read_scales(r: Reader, count: int) -> np.ndarray:
    """``count`` float32 scales; each must be finite and >= 0."""
    scales = r.array(count, "<f4", "scales")
    bad = ~(np.isfinite(scales) & (scales >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise CodecError(f"scale of tensor {i} is not a finite number >= 0: {scales[i]!r}")
    return scales


def _check_bits(bits: Any) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise TypeError(f"bits must be an int, got {bits!r}")
    if bits not in (2, 4, 8):
        raise ValueError(f"bits must be 2, 4 or 8, got {bits!r}")
    return bits


@register("qsgd")
@dataclass(frozen=True, slots=True)
class QSGD(Quantizer):
    """Unbiased stochastic quantization: 4 bytes per tensor (its scale), then ``bits``
    ∈ {2, 4, 8} per value.

    Parameters
    ----------
    bits : int
        Code width: 8 (127 levels per sign), 4 (7 levels), 2 (ternary).
    norm : {"max", "l2"}
        Scale of each tensor: max-abs (lower variance) or L2 norm (the QSGD paper).
    """

    bits: int = 8
    norm: str = field(default="max", kw_only=True)
    name: ClassVar[str] = "qsgd"

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def write(
        self, values: np.ndarray, counts: Sequence[int], rng: np.random.Generator
    ) -> tuple[bytes, Callable[[], np.ndarray]]:
        s = self.levels
        scales = tensor_scales(values, counts, self.norm)
        codes = (stochastic_levels(values, scales, counts, s, rng) + s).astype(np.uint8)
        data = scales.astype("<f4").tobytes() + pack_bits(codes, self.bits)
        return data, lambda: self._values(codes, scales, counts)

    def _values(self, codes: np.ndarray, scales: np.ndarray, counts: Sequence[int]) -> np.ndarray:
        s = np.float32(self.levels)
        return (codes.astype(np.float32) - s) * np.repeat(scales / s, counts)

    def read(self, r: Reader, counts: Sequence[int]) -> np.ndarray:
        s = self.levels
        scales = read_scales(r, len(counts))
        codes = unpack_bits(r, sum(counts), self.bits, limit=2 * s + 1, what="qsgd codes")
        return self._values(codes, scales, counts)

    def value_bound(self, counts: Sequence[int]) -> int:
        return 4 * len(counts) + packed_bits_size(sum(counts), self.bits)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits, "norm": self.norm}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QSGD:
        _expect_keys(config, cls.name, ("bits", "norm"))
        return cls(config.get("bits", 8), norm=config.get("norm", "max"))
