"""Lossless entropy coding of a payload body: raw DEFLATE (zlib) or raw LZMA2 (lzma).

Decompression is bounded: the decoder knows from the expected shapes how many bytes a
body can have at most, asks for no more than that, and rejects a stream that would yield
more (a decompression bomb) or that does not end where the payload ends.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fedlab.codec.base import EntropyCoder, _expect_keys, register
from fedlab.codec.errors import CodecError

__all__ = ["Lzma", "Zlib"]


def _check_level(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 <= value <= 9:
        raise ValueError(f"{name} must be in [0, 9], got {value!r}")
    return value


def _finish(out: bytes, max_size: int, eof: bool, unused: bytes, what: str) -> bytes:
    if len(out) > max_size:
        raise CodecError(f"{what} body inflates beyond the {max_size} bytes the shapes allow")
    if not eof:
        raise CodecError(f"{what} stream is truncated or longer than the shapes allow")
    if unused:
        raise CodecError(f"{len(unused)} bytes after the end of the {what} stream")
    return out


@register("zlib")
@dataclass(frozen=True, slots=True)
class Zlib(EntropyCoder):
    """Raw DEFLATE at ``level`` (0–9; 6, zlib's default, is within a few per cent of 9 in
    size on quantized updates at a fraction of its time); the container's CRC replaces
    zlib's own checks."""

    level: int = 6
    name: ClassVar[str] = "zlib"

    def __post_init__(self) -> None:
        _check_level(self.level, "level")

    def compress(self, body: bytes) -> bytes:
        c = zlib.compressobj(self.level, zlib.DEFLATED, -15)
        return c.compress(body) + c.flush()

    def decompress(self, data: bytes | memoryview, max_size: int) -> bytes:
        d = zlib.decompressobj(-15)
        try:
            out = d.decompress(data, max_size + 1)
        except zlib.error as exc:
            raise CodecError(f"zlib body is corrupt: {exc}") from None
        return _finish(out, max_size, d.eof, d.unused_data, "zlib")

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Zlib:
        _expect_keys(config, cls.name, ("level",))
        return cls(config.get("level", 6))


@register("lzma")
@dataclass(frozen=True, slots=True)
class Lzma(EntropyCoder):
    """Raw LZMA2 at ``preset`` (0–9) with a fixed 1 MiB dictionary (a device decoding it
    never needs more memory than that)."""

    preset: int = 6
    name: ClassVar[str] = "lzma"

    def __post_init__(self) -> None:
        _check_level(self.preset, "preset")

    def _filters(self) -> list[dict[str, int]]:
        return [{"id": lzma.FILTER_LZMA2, "preset": self.preset, "dict_size": 1 << 20}]

    def compress(self, body: bytes) -> bytes:
        return lzma.compress(body, format=lzma.FORMAT_RAW, filters=self._filters())

    def decompress(self, data: bytes | memoryview, max_size: int) -> bytes:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=self._filters())
        try:
            out = d.decompress(bytes(data), max_size + 1)
        except lzma.LZMAError as exc:
            raise CodecError(f"lzma body is corrupt: {exc}") from None
        return _finish(out, max_size, d.eof, d.unused_data, "lzma")

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "preset": self.preset}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Lzma:
        _expect_keys(config, cls.name, ("preset",))
        return cls(config.get("preset", 6))
