"""The one exception a decoder raises on malformed input."""

from __future__ import annotations

__all__ = ["CodecError"]


class CodecError(ValueError):
    """A payload that is not a well-formed update for the expected shapes and codec.

    Every decoder in :mod:`fedlab.codec` turns *any* malformed input (wrong magic or
    version, a failed checksum, truncation, trailing bytes, shapes or a codec that differ
    from what was expected, out-of-range codes or indices, non-finite values, a
    decompression that would exceed the size the shapes allow) into this one exception,
    with a message saying what was wrong. A server stage maps it to a rejected update.
    """
