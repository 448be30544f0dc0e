"""The byte container every codec payload travels in (versioned, self-describing).

Part of the wire (an encoded update is an envelope's opaque body), so it lives with the
other frames in :mod:`fedlab.protocol`; the codecs (:mod:`fedlab.codec`) fill its body.

Layout (integers little-endian; ``varint`` is unsigned LEB128, at most 5 bytes)::

    magic    4 bytes   b"FLCD"
    version  1 byte    WIRE_VERSION
    kind     1 byte    1 = update, 2 = downlink delta, 3 = saved codec state
    config   varint length + compact JSON (the codec's stage list, sorted keys)
    shapes   varint count, then per tensor: ndim (1 byte) and ndim varint dims
    body     the codec's bytes (possibly entropy-coded)
    crc32    4 bytes   zlib.crc32 of everything before it

The reader checks the checksum, the magic, the version, the declared shapes against the
shapes the caller expects (*before* anything is allocated from them) and the limits below;
anything else is :class:`CodecError`.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "KIND_DELTA",
    "KIND_STATE",
    "KIND_UPDATE",
    "MAGIC",
    "MAX_CONFIG_BYTES",
    "MAX_TENSORS",
    "WIRE_VERSION",
    "CodecError",
    "Container",
    "Reader",
    "Shapes",
    "check_shapes",
    "config_bytes",
    "pack_container",
    "unpack_container",
    "varint",
]


class CodecError(ValueError):
    """A payload that is not a well-formed update for the expected shapes and codec.

    Every decoder in :mod:`fedlab.codec` turns *any* malformed input (wrong magic or
    version, a failed checksum, truncation, trailing bytes, shapes or a codec that differ
    from what was expected, out-of-range codes or indices, non-finite values, a
    decompression that would exceed the size the shapes allow) into this one exception,
    with a message saying what was wrong. A server stage maps it to a rejected update.
    """


MAGIC = b"FLCD"
WIRE_VERSION = 1
KIND_UPDATE = 1
KIND_DELTA = 2
KIND_STATE = 3
MAX_CONFIG_BYTES = 4096
MAX_TENSORS = 4096
MAX_NDIM = 8
MAX_DIM = 2**31 - 1
_CRC = struct.Struct("<I")

Shapes = tuple[tuple[int, ...], ...]


def check_shapes(shapes: Any) -> Shapes:
    """``shapes`` as a tuple of int tuples (``ValueError``/``TypeError`` quoting it)."""
    if isinstance(shapes, str | bytes) or not isinstance(shapes, Sequence):
        raise TypeError(f"shapes must be a sequence of shapes, got {shapes!r}")
    if len(shapes) > MAX_TENSORS:
        raise ValueError(f"at most {MAX_TENSORS} tensors, got {len(shapes)}")
    out = []
    for shape in shapes:
        if isinstance(shape, str | bytes) or not isinstance(shape, Sequence):
            raise TypeError(f"a shape must be a sequence of ints, got {shape!r}")
        dims = []
        for d in shape:
            if not isinstance(d, int | np.integer) or isinstance(d, bool):
                raise TypeError(f"a dimension must be an int, got {d!r} in shape {shape!r}")
            if not 0 <= int(d) <= MAX_DIM:
                raise ValueError(f"a dimension must be in [0, {MAX_DIM}], got {d!r}")
            dims.append(int(d))
        if len(dims) > MAX_NDIM:
            raise ValueError(f"at most {MAX_NDIM} dimensions, got shape {shape!r}")
        out.append(tuple(dims))
    return tuple(out)


def varint(value: int) -> bytes:
    """Unsigned LEB128 encoding of ``0 <= value < 2**35``."""
    if not 0 <= value < 2**35:
        raise ValueError(f"varint out of range: {value!r}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def config_bytes(config: Any) -> bytes:
    """The canonical compact JSON of a codec's wire config."""
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


class Reader:
    """Bounds-checked sequential reads from a byte string; short reads are CodecErrors."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str = "bytes") -> memoryview:
        if n < 0 or n > self.remaining:
            raise CodecError(f"truncated: {what} needs {n} bytes, {self.remaining} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str = "byte") -> int:
        return int(self.take(1, what)[0])

    def u32(self, what: str = "u32") -> int:
        return int.from_bytes(self.take(4, what), "little")

    def f32(self, what: str = "float32") -> float:
        value = float(np.frombuffer(self.take(4, what), dtype="<f4")[0])
        if not np.isfinite(value):
            raise CodecError(f"{what} is not finite: {value!r}")
        return value

    def varint(self, what: str = "varint") -> int:
        value = 0
        for i in range(5):
            byte = self.byte(what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and byte == 0:
                    raise CodecError(f"{what}: overlong varint")
                return value
        raise CodecError(f"{what}: varint longer than 5 bytes")

    def array(self, count: int, dtype: str, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * size, what), dtype=dtype)

    def expect_end(self) -> None:
        if self.remaining:
            raise CodecError(f"{self.remaining} unexpected trailing bytes")


@dataclass(frozen=True, slots=True)
class Container:
    """A parsed container: its kind, raw config JSON, shapes and body."""

    kind: int
    config: bytes
    shapes: Shapes
    body: memoryview


def pack_container(kind: int, config: bytes, shapes: Shapes, body: bytes) -> bytes:
    """Frame ``body`` with the header and checksum described in the module docstring."""
    if len(config) > MAX_CONFIG_BYTES:
        raise ValueError(f"codec config of {len(config)} bytes exceeds {MAX_CONFIG_BYTES}")
    head = bytearray(MAGIC)
    head += bytes((WIRE_VERSION, kind))
    head += varint(len(config)) + config
    head += varint(len(shapes))
    for shape in shapes:
        head.append(len(shape))
        for d in shape:
            head += varint(d)
    head += body
    return bytes(head) + _CRC.pack(zlib.crc32(head))


def unpack_container(payload: Any, *, kind: int, shapes: Shapes | None = None) -> Container:
    """Parse and check a container; ``shapes`` (when given) must equal the declared ones."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}")
    data = memoryview(payload).cast("B") if isinstance(payload, memoryview) else memoryview(payload)
    if len(data) < len(MAGIC) + 2 + 4:
        raise CodecError(f"truncated: {len(data)} bytes is shorter than any payload")
    if bytes(data[:4]) != MAGIC:
        raise CodecError(f"not a fedlab codec payload (magic {bytes(data[:4])!r})")
    (crc,) = _CRC.unpack(data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise CodecError("checksum mismatch: the payload was damaged or truncated")
    r = Reader(data[:-4])
    r.take(4, "magic")
    version = r.byte("version")
    if version != WIRE_VERSION:
        raise CodecError(f"unsupported wire version {version} (this decoder reads {WIRE_VERSION})")
    got_kind = r.byte("kind")
    if got_kind != kind:
        raise CodecError(f"payload kind {got_kind}, expected {kind}")
    n = r.varint("config length")
    if n > MAX_CONFIG_BYTES:
        raise CodecError(f"declared config of {n} bytes exceeds {MAX_CONFIG_BYTES}")
    config = bytes(r.take(n, "config"))
    count = r.varint("tensor count")
    if count > MAX_TENSORS or (shapes is not None and count != len(shapes)):
        want = "" if shapes is None else f", expected {len(shapes)}"
        raise CodecError(f"payload declares {count} tensors{want}")
    declared = []
    for i in range(count):
        ndim = r.byte("ndim")
        if ndim > MAX_NDIM:
            raise CodecError(f"tensor {i} declares {ndim} dimensions (max {MAX_NDIM})")
        dims = tuple(r.varint("dimension") for _ in range(ndim))
        if any(d > MAX_DIM for d in dims):
            raise CodecError(f"tensor {i} declares shape {dims}")
        if shapes is not None and dims != shapes[i]:
            raise CodecError(f"tensor {i} declares shape {dims}, expected {shapes[i]}")
        declared.append(dims)
    return Container(got_kind, config, tuple(declared), r.data[r.pos :])
