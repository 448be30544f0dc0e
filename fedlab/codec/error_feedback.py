"""Error feedback: what a lossy codec failed to send is added to the next update.

The encoder keeps ``residual = (update + residual) − decode(encode(update + residual))``
in the client's :class:`~fedlab.codec.base.CodecState`, so nothing is lost for good, only
delayed (Seide et al., "1-bit SGD", 2014; Karimireddy et al., 2019; Stich et al., 2018).
The residual is computed from the codec's *own decoding* of the payload, i.e. exactly
what the server receives. The wire format is the wrapped codec's: a server decodes with
the inner codec and needs no state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedlab.codec.base import (
    Chain,
    Codec,
    CodecState,
    Stage,
    _expect_keys,
    check_arrays,
    from_config,
    register,
    segments,
)

__all__ = ["ErrorFeedback"]


@register("error_feedback")
@dataclass(frozen=True, slots=True)
class ErrorFeedback(Codec):
    """Wrap ``codec`` with a per-client residual (kept in the state passed to encode)."""

    codec: Codec
    name: ClassVar[str] = "error_feedback"

    def __post_init__(self) -> None:
        if not isinstance(self.codec, Codec):
            raise TypeError(f"ErrorFeedback wraps a Codec, got {self.codec!r}")
        if isinstance(self.codec, ErrorFeedback):
            raise TypeError("ErrorFeedback(ErrorFeedback(...)) would keep two residuals")

    def encode(self, arrays: Sequence[np.ndarray], state: CodecState) -> tuple[bytes, CodecState]:
        if not isinstance(state, CodecState):
            raise TypeError(f"state must be a CodecState, got {type(state).__name__}")
        update = check_arrays(arrays)
        shapes = [a.shape for a in update]
        if state.residual is None:
            corrected = update
        else:
            got = [r.shape for r in state.residual]
            if got != shapes:
                raise ValueError(f"residual shapes {got} do not match the update's {shapes}")
            with np.errstate(over="ignore"):  # an overflow is refused by the codec's check
                corrected = tuple(a + r for a, r in zip(update, state.residual, strict=True))
        inner = Chain((self.codec,)) if isinstance(self.codec, Stage) else self.codec
        if isinstance(inner, Chain):
            # The chain reports what the server will decode (bit for bit, tested).
            payload, sent = inner.encode_checked(check_arrays(corrected), state)
            assert sent is not None
            residual = tuple(
                c - s.reshape(c.shape)
                for c, s in zip(corrected, segments(sent, [c.size for c in corrected]), strict=True)
            )
        else:
            payload, _ = self.codec.encode(corrected, state)
            decoded = self.codec.decode(payload, shapes)
            residual = tuple(c - d for c, d in zip(corrected, decoded, strict=True))
        return payload, state.advanced(residual)

    def decode(self, payload: bytes, shapes: Sequence[Sequence[int]]) -> tuple[np.ndarray, ...]:
        return self.codec.decode(payload, shapes)

    def size_bound(self, shapes: Sequence[Sequence[int]]) -> int:
        return self.codec.size_bound(shapes)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "codec": self.codec.get_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ErrorFeedback:
        _expect_keys(config, cls.name, ("codec",))
        return cls(from_config(config.get("codec")))  # type: ignore[arg-type]
