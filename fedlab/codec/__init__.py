"""Update compression and its wire format (numpy + the standard library only: it runs on
devices without TensorFlow).

Client side (device or simulator), with the state kept per client::

    codec = ErrorFeedback(chain(TopK(0.01), QSGD(bits=4), Zlib()))
    state = codec.init_state(seed=client_id)
    payload, state = codec.encode(delta, state)       # len(payload) is the exact cost

Server side::

    try:
        delta = codec.decode(payload, weight_shapes)  # or fedlab.codec.decode(...)
    except CodecError as exc:
        ...  # reject this update: exc says why

Downlink: ``ModelDelta().encode(new_model, device_model)`` /
``ModelDelta().decode(payload, device_model)``.

Pipeline stages (for the round engine):

* **client encode** — holds the codec and, in the simulator, a ``{client_id: CodecState}``
  map (a device keeps its own, across restarts via ``CodecState.to_bytes`` /
  ``CodecState.from_bytes``); replaces the envelope body (arrays) with
  ``codec.encode(body, state)``'s bytes, stores the new state only once the update has
  been handed over, and records ``len(payload)`` as the update's bytes on the wire and the
  codec's ``get_config()`` in the headers.
* **server decode** — ``codec.decode(body, context.weight_shapes)``; a ``CodecError``
  becomes the stage's rejection of that one update (the round goes on).

Everything here is numpy and the standard library: no TensorFlow (a test blocks it).
"""

from __future__ import annotations

from fedlab.codec.base import (
    Chain,
    Codec,
    CodecState,
    EntropyCoder,
    Float32,
    Quantizer,
    Sparsifier,
    Stage,
    chain,
    decode,
    from_config,
)
from fedlab.codec.delta import ModelDelta, model_digest
from fedlab.codec.entropy import Lzma, Zlib
from fedlab.codec.error_feedback import ErrorFeedback
from fedlab.codec.errors import CodecError
from fedlab.codec.qsgd import QSGD
from fedlab.codec.randomk import RandomK
from fedlab.codec.sign import Sign
from fedlab.codec.ternary import Ternary
from fedlab.codec.topk import TopK
from fedlab.protocol.container import WIRE_VERSION

__all__ = [
    "QSGD",
    "WIRE_VERSION",
    "Chain",
    "Codec",
    "CodecError",
    "CodecState",
    "EntropyCoder",
    "ErrorFeedback",
    "Float32",
    "Lzma",
    "ModelDelta",
    "Quantizer",
    "RandomK",
    "Sign",
    "Sparsifier",
    "Stage",
    "Ternary",
    "TopK",
    "Zlib",
    "chain",
    "decode",
    "from_config",
    "model_digest",
]
