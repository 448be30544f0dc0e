"""The wire: round tasks, update envelopes and their versioned binary encoding.

numpy only — a device imports this without TensorFlow and without the round engine
(``fedlab.federated``); a test proves it. Every side speaks it: the device agent, the file
transport and (through :meth:`RoundTask.client_plan_fields`,
:meth:`RoundTask.from_client_plan`, :meth:`UpdateEnvelope.from_client_update` and
:meth:`UpdateEnvelope.engine_fields`) the round engine.
"""

from __future__ import annotations

from fedlab.protocol.types import (
    CLIENT_OPTIMIZERS,
    WIRE_DTYPES,
    OptimizerSpec,
    ProtocolError,
    RoundTask,
    TrainPlan,
    UpdateEnvelope,
    weights_version,
)
from fedlab.protocol.wire import (
    FORMAT_VERSION,
    KIND_ENVELOPE,
    KIND_TASK,
    MAGIC,
    Frame,
    decode,
    decode_envelope,
    decode_task,
    encode,
    encoded_size,
    pack_frame,
    unpack_frame,
)

__all__ = [
    "CLIENT_OPTIMIZERS",
    "FORMAT_VERSION",
    "KIND_ENVELOPE",
    "KIND_TASK",
    "MAGIC",
    "WIRE_DTYPES",
    "Frame",
    "OptimizerSpec",
    "ProtocolError",
    "RoundTask",
    "TrainPlan",
    "UpdateEnvelope",
    "decode",
    "decode_envelope",
    "decode_task",
    "encode",
    "encoded_size",
    "pack_frame",
    "unpack_frame",
    "weights_version",
]
