"""Update codecs as pipeline stages: the client encodes, the server decodes.

::

    codec = ErrorFeedback(chain(TopK(0.01), QSGD(bits=4), Zlib()))
    pipeline = Pipeline(client=(EncodeUpdate(codec),), server=(DecodeUpdate(codec),))
    Federation(..., pipeline=pipeline)

:class:`EncodeUpdate` is a :class:`~fedlab.federated.stages.StatefulStage`: the codec's
per-client :class:`~fedlab.codec.CodecState` (randomness counter, error-feedback residual)
lives in the client's :class:`~fedlab.federated.stages.ClientStateStore`, never in the
frozen stage. The envelope's body becomes the codec payload, so ``len(body)`` is the exact
upload (``RoundResult.bytes_up`` and the ``"encode"`` entry of ``stage_bytes``).

:class:`DecodeUpdate` turns the payload back into float32 tensors of the model's shapes; any
malformed payload (a :class:`~fedlab.codec.CodecError`) is that update's rejection, with the
codec's reason, and the round goes on.

Secure aggregation sums what the server pipeline accepted, i.e. the *decoded* updates: in
this simulation the codec saves uplink bytes before the masking, but on a real fleet the
SecAgg+ masked vector is dense fixed-point (masks make it incompressible), so compressing
*and* masking only pays when the sparsity pattern is shared by the cohort (e.g. random-k
with a round-wide seed) and the masked vector is the selected coordinates — not built here.
The meaningful combinations today: quantization + SecAgg (the codec bounds each client's
values; SecAgg carries them at its own ring size), or a codec without SecAgg.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedlab.codec import Codec, CodecError, CodecState, ErrorFeedback
from fedlab.codec import decode as decode_any
from fedlab.federated.stages import StageContext
from fedlab.federated.types import Envelope, UpdateRejected

__all__ = ["DecodeUpdate", "EncodeUpdate"]


@dataclass(frozen=True, slots=True)
class EncodeUpdate:
    """Client stage: replace the envelope's tensors by ``codec.encode(...)``'s payload.

    Parameters
    ----------
    codec : Codec
        Any :mod:`fedlab.codec` codec or chain; wrap it in
        :class:`~fedlab.codec.ErrorFeedback` to keep a per-client residual (then the stage
        must run with the client's state store: see :meth:`requires_state`).
    name : str
        Stage name (the key of its state and of its ``stage_bytes`` entry).

    Notes
    -----
    The header ``codec`` carries the codec's config. Each client's randomness comes from
    its own state (seed = client id, one step per update sent), so clients' rounding
    noise is independent and never reused. Without a store (a dispatcher that keeps no
    client state) a non-feedback codec draws from ``(client id, round)``.
    """

    codec: Codec
    name: str = "encode"

    def __post_init__(self) -> None:
        if not isinstance(self.codec, Codec):
            raise TypeError(f"codec must be a fedlab.codec Codec, got {self.codec!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")

    @property
    def requires_state(self) -> bool:
        """True for error feedback: without its residual the stage would silently be a
        different (biased) codec."""
        return isinstance(self.codec, ErrorFeedback)

    def initial_state(self, client_id: int) -> CodecState:
        """A fresh state seeded by the client id."""
        return self.codec.init_state(seed=int(client_id))

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Stateless encoding (randomness from the client id and the round)."""
        if self.requires_state:
            raise ValueError(
                f"stage {self.name!r} uses error feedback: run it with a ClientStateStore"
            )
        state = CodecState(seed=int(envelope.client_id), step=int(context.round_index))
        return self.apply_stateful(envelope, context, state)[0]

    def apply_stateful(
        self, envelope: Envelope, context: StageContext, state: Any
    ) -> tuple[Envelope, CodecState]:
        """Encode the body with ``state``; the envelope carrying the payload, next state."""
        body = envelope.body
        if isinstance(body, bytes | bytearray):
            raise TypeError(f"stage {self.name!r} needs tensors, the body is already bytes")
        if not isinstance(state, CodecState):
            raise TypeError(f"state must be a CodecState, got {type(state).__name__}")
        payload, next_state = self.codec.encode(body, state)
        headers = {**envelope.headers, "codec": self.codec.get_config()}
        return replace(envelope, body=payload, headers=headers), next_state

    def state_to_bytes(self, state: Any) -> bytes:
        """:meth:`CodecState.to_bytes`."""
        if not isinstance(state, CodecState):
            raise TypeError(f"state must be a CodecState, got {type(state).__name__}")
        return state.to_bytes()

    def state_from_bytes(self, data: bytes) -> CodecState:
        """:meth:`CodecState.from_bytes` (a damaged blob is a ``CodecError``, a ValueError)."""
        return CodecState.from_bytes(data)


@dataclass(frozen=True, slots=True)
class DecodeUpdate:
    """Server stage: decode the payload into float32 tensors of the model's shapes.

    Parameters
    ----------
    codec : Codec, optional
        The codec the clients were told to use: a payload encoded with any other is
        refused. ``None`` accepts any chain the payload names (its header is
        self-describing) — for a fleet that mixes codecs.
    name : str
        Stage name (for ``stage_rejections``).

    A payload that is not bytes, or that the codec refuses (truncated, corrupted, foreign
    codec, wrong shapes, non-finite values…), raises
    :class:`~fedlab.federated.types.UpdateRejected` with the codec's reason.
    """

    codec: Codec | None = None
    name: str = "decode"
    _decode: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.codec is not None and not isinstance(self.codec, Codec):
            raise TypeError(f"codec must be a fedlab.codec Codec or None, got {self.codec!r}")
        fn = decode_any if self.codec is None else self.codec.decode
        object.__setattr__(self, "_decode", fn)

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """The envelope with its body decoded, or ``UpdateRejected`` saying why not."""
        body = envelope.body
        if not isinstance(body, bytes | bytearray | memoryview):
            raise UpdateRejected(
                f"expected an encoded payload (bytes), got {type(body).__name__}: "
                "the client did not run the encode stage"
            )
        try:
            arrays = self._decode(bytes(body), context.weight_shapes)
        except CodecError as exc:
            raise UpdateRejected(f"undecodable update: {exc}") from None
        return replace(envelope, body=tuple(np.asarray(a, np.float32) for a in arrays))
