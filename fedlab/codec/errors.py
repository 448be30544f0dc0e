"""The one exception a decoder raises on malformed input (defined with the container
format it guards, :mod:`fedlab.protocol.container`)."""

from __future__ import annotations

from fedlab.protocol.container import CodecError

__all__ = ["CodecError"]
