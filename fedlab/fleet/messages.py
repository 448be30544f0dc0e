"""What travels in a Flower message: one :mod:`fedlab.protocol` frame as bytes.

Flower carries the frame; it is not a second wire format. A task goes out as a ``train``
message whose ``ConfigRecord`` ``"fedlab"`` holds ``frame`` (an encoded
:class:`~fedlab.protocol.RoundTask`); the reply holds the encoded
:class:`~fedlab.protocol.UpdateEnvelope` the same way, plus a few device facts (JSON) for
the operator. A ``query`` message with ``op = "hello"`` asks a SuperNode which fedlab
client it is (enrolment: Flower node ids are not stable, client ids are); one with
``op = "secagg"`` carries a secure-aggregation stage request, answered by a reply frame.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict

__all__ = [
    "RECORD",
    "device_facts",
    "frame_of",
    "hello_content",
    "op_of",
    "reply_content",
    "secagg_content",
    "task_content",
]

#: Name of the ConfigRecord holding fedlab's payload in every message.
RECORD = "fedlab"


def task_content(frame: bytes) -> RecordDict:
    """Content of a ``train`` message carrying one encoded task."""
    return RecordDict({RECORD: ConfigRecord({"frame": bytes(frame)})})


def hello_content() -> RecordDict:
    """Content of the enrolment ``query``."""
    return RecordDict({RECORD: ConfigRecord({"op": "hello"})})


def secagg_content(frame: bytes) -> RecordDict:
    """Content of a ``query`` carrying one secure-aggregation request frame
    (:mod:`fedlab.protocol.secagg`)."""
    return RecordDict({RECORD: ConfigRecord({"op": "secagg", "frame": bytes(frame)})})


def op_of(msg: Message) -> str:
    """What a ``query`` asks: ``"hello"`` or ``"secagg"`` (``ValueError`` otherwise)."""
    op = _record(msg).get("op")
    if op not in ("hello", "secagg"):
        raise ValueError(f"message {msg.metadata.message_id!r}: unknown op {op!r}")
    return str(op)


def reply_content(frame: bytes | None, facts: dict[str, Any]) -> RecordDict:
    """A device's reply: an encoded envelope (or none, for ``hello``) and its facts."""
    record: dict[str, Any] = {"facts": json.dumps(facts, sort_keys=True)}
    if frame is not None:
        record["frame"] = bytes(frame)
    return RecordDict({RECORD: ConfigRecord(record)})


def _record(msg: Message) -> ConfigRecord:
    content = msg.content
    if RECORD not in content.config_records:
        raise ValueError(f"message {msg.metadata.message_id!r} carries no {RECORD!r} record")
    return content.config_records[RECORD]


def frame_of(msg: Message) -> bytes:
    """The protocol frame a message carries (``ValueError`` when it has none)."""
    frame = _record(msg).get("frame")
    if not isinstance(frame, bytes):
        raise ValueError(f"message {msg.metadata.message_id!r} carries no frame")
    return frame


def device_facts(msg: Message) -> dict[str, Any]:
    """The facts a device reported (``ValueError`` when they are missing or not JSON)."""
    raw = _record(msg).get("facts")
    if not isinstance(raw, str):
        raise ValueError(f"message {msg.metadata.message_id!r} carries no facts")
    facts = json.loads(raw)
    if not isinstance(facts, dict):
        raise ValueError(f"message {msg.metadata.message_id!r}: facts are not an object")
    return facts
