"""Unbiased stochastic quantization to ``2**(bits-1) - 1`` levels per sign (QSGD).

Each tensor is written as one float32 scale (its max-abs by default, or its L2 norm as
in Alistarh et al., "QSGD", 2017) and one ``bits``-bit code per value. A value ``v``
becomes ``scale · l / s`` where ``l`` is ``|v|/scale · s`` rounded down or up at random
with the probabilities that make ``E[l] = |v|/scale · s``: the quantizer is unbiased.
``bits=2`` gives the ternary levels {-1, 0, 1} (:class:`~fedlab.codec.ternary.Ternary`
packs those tighter, 1.6 bits per value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import Quantizer, _expect_keys, register
from fedlab.codec.errors import CodecError
from fedlab.codec.packing import pack_bits, packed_bits_size, unpack_bits
from fedlab.codec.wire import Reader

__all__ = ["NORMS", "QSGD", "stochastic_levels", "tensor_scale"]

NORMS = ("max", "l2")


def tensor_scale(values: np.ndarray, norm: str) -> np.float32:
    """The float32 scale of one tensor: max-abs or L2 norm."""
    if values.size == 0:
        return np.float32(0.0)
    if norm == "max":
        return np.float32(np.max(np.abs(values)))
    return np.float32(np.sqrt(np.dot(values.astype(np.float64), values.astype(np.float64))))


def stochastic_levels(
    values: np.ndarray, scale: np.float32, levels: int, rng: np.random.Generator
) -> np.ndarray:
    """Signed integer levels in ``[-levels, levels]`` with ``E[level] = v/scale·levels``."""
    if scale == 0 or values.size == 0:
        return np.zeros(values.size, dtype=np.int16)
    u = np.minimum(np.abs(values.astype(np.float64)) * (levels / float(scale)), levels)
    low = np.floor(u)
    level = low + (rng.random(values.size) < (u - low))
    return (np.sign(values) * level).astype(np.int16)


def _check_bits(bits: Any) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise TypeError(f"bits must be an int, got {bits!r}")
    if bits not in (2, 4, 8):
        raise ValueError(f"bits must be 2, 4 or 8, got {bits!r}")
    return bits


def read_scale(r: Reader, i: int) -> np.float32:
    scale = r.f32(f"scale of tensor {i}")
    if scale < 0:
        raise CodecError(f"scale of tensor {i} is negative: {scale!r}")
    return np.float32(scale)


@register("qsgd")
@dataclass(frozen=True, slots=True)
class QSGD(Quantizer):
    """Unbiased stochastic quantization, ``bits`` ∈ {2, 4, 8} per value plus 4 bytes per
    tensor.

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

    def write(self, values: Sequence[np.ndarray], rng: np.random.Generator) -> bytes:
        s = self.levels
        parts = []
        for v in values:
            scale = tensor_scale(v, self.norm)
            codes = stochastic_levels(v, scale, s, rng) + s
            parts.append(scale.astype("<f4").tobytes() + pack_bits(codes, self.bits))
        return b"".join(parts)

    def read(self, r: Reader, counts: Sequence[int]) -> list[np.ndarray]:
        s = self.levels
        out = []
        for i, c in enumerate(counts):
            scale = read_scale(r, i)
            codes = unpack_bits(r, c, self.bits, limit=2 * s + 1, what=f"codes of tensor {i}")
            out.append((codes.astype(np.float32) - np.float32(s)) * (scale / np.float32(s)))
        return out

    def value_bound(self, counts: Sequence[int]) -> int:
        return sum(4 + packed_bits_size(c, self.bits) for c in counts)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits, "norm": self.norm}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QSGD:
        _expect_keys(config, cls.name, ("bits", "norm"))
        return cls(config.get("bits", 8), norm=config.get("norm", "max"))
