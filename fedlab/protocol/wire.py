"""The binary encoding of tasks and envelopes: versioned, self-describing, exact sizes.

Layout of a frame (all integers little-endian)::

    offset        size       field
    0             4          magic b"FLAB"
    4             2          format version (u16, this module writes and reads 1)
    6             1          kind (u8): 1 round task, 2 update envelope, 3 secagg
    7             1          flags (u8, reserved, 0)
    8             4          H  header length (u32, <= 65536)
    12            4          T  tensor count (u32, <= 4096)
    16            8          P  opaque payload length (u64)
    24            H          header: a JSON object, UTF-8 (ASCII-escaped, sorted keys)
    24+H          Σ(4+4·ndim) tensor descriptors: dtype code u8 (1 f2, 2 f4, 3 f8),
                             ndim u8 (<= 8), reserved u16 (0), ndim × u32 dims
    …             Σ nbytes   tensor data, in order, C order, little-endian, no padding
    …             P          opaque payload (an envelope's encoded body)
    end − 4       4          CRC-32 (zlib) of every byte before it

A frame's size is exactly ``28 + H + Σ(4 + 4·ndim) + Σ nbytes + P``
(:func:`encoded_size` computes it without encoding the tensors).

The reader trusts nothing: it checks the magic, version and that the fixed fields fit the
bytes it holds before it reads further, verifies the CRC (every single-byte flip and every
burst of up to 32 bits is detected), then checks that the descriptors account for exactly
the bytes present before it allocates a tensor. Any failure is one
:class:`~fedlab.protocol.types.ProtocolError` saying what is wrong.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlab.protocol.types import (
    WIRE_DTYPES,
    ProtocolError,
    RoundTask,
    TrainPlan,
    UpdateEnvelope,
)

__all__ = [
    "FORMAT_VERSION",
    "KIND_ENVELOPE",
    "KIND_SECAGG",
    "KIND_TASK",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "MAX_NDIM",
    "MAX_TENSORS",
    "Frame",
    "decode",
    "decode_envelope",
    "decode_task",
    "encode",
    "encoded_size",
    "pack_frame",
    "unpack_frame",
]

MAGIC = b"FLAB"
FORMAT_VERSION = 1
KIND_TASK = 1
KIND_ENVELOPE = 2
KIND_SECAGG = 3  # a secure-aggregation stage message (fedlab.protocol.secagg)
KINDS = {KIND_TASK: "round task", KIND_ENVELOPE: "update envelope", KIND_SECAGG: "secagg"}
MAX_HEADER_BYTES = 1 << 16
MAX_TENSORS = 4096
MAX_NDIM = 8

_PREFIX = struct.Struct("<4sHBBIIQ")  # 24 bytes
_DESCRIPTOR = struct.Struct("<BBH")  # 4 bytes, then ndim u32 dims
_CRC = struct.Struct("<I")
_OVERHEAD = _PREFIX.size + _CRC.size  # 28
_CODES: dict[np.dtype[Any], int] = {d: code for code, d in enumerate(WIRE_DTYPES, start=1)}
_DTYPES: dict[int, np.dtype[Any]] = dict(enumerate(WIRE_DTYPES, start=1))

_TASK_FIELDS = frozenset(
    {
        "round_index",
        "client_id",
        "model_version",
        "base_version",
        "weights_ref",
        "deadline",
        "plan",
    }
)
_ENVELOPE_FIELDS = frozenset(
    {
        "client_id",
        "device_id",
        "round_index",
        "model_version",
        "base_version",
        "num_examples",
        "num_steps",
        "metrics",
        "headers",
        "body",
    }
)


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame's parts, before they are read as a task or an envelope.

    Attributes
    ----------
    kind : int
        :data:`KIND_TASK` or :data:`KIND_ENVELOPE`.
    header : any
        The parsed JSON header (an object in every valid frame).
    tensors : tuple of arrays
        The tensors, in order.
    payload : bytes
        The opaque payload.
    """

    kind: int
    header: Any
    tensors: tuple[np.ndarray, ...] = ()
    payload: bytes = b""


def _header_bytes(header: Any) -> bytes:
    try:
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"header is not plain JSON: {exc}") from None
    return text.encode("ascii")


def pack_frame(
    kind: int, header: Any, tensors: Sequence[np.ndarray] = (), payload: bytes = b""
) -> bytes:
    """Encode a frame from its parts; no check of what the header says.

    :func:`encode` is the way to write tasks and envelopes; this is the layer below it
    (and how tests write the frames a hostile or broken client would).

    Raises
    ------
    ValueError
        ``kind`` unknown, a header that is not plain JSON or too long, a tensor of a dtype
        the wire does not carry, or too many tensors or dimensions.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    head = _header_bytes(header)
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(head)} bytes, more than {MAX_HEADER_BYTES}")
    if len(tensors) > MAX_TENSORS:
        raise ValueError(f"{len(tensors)} tensors, more than {MAX_TENSORS}")
    descriptors, data = [], []
    for i, t in enumerate(tensors):
        a = np.asarray(t)
        code = _CODES.get(a.dtype.newbyteorder("<"))
        if code is None:
            raise ValueError(f"tensor {i} has dtype {a.dtype}; the wire carries {WIRE_DTYPES}")
        if a.ndim > MAX_NDIM or any(d >= 1 << 32 for d in a.shape):
            raise ValueError(f"tensor {i} has shape {a.shape}; at most {MAX_NDIM} dims < 2**32")
        descriptors.append(_DESCRIPTOR.pack(code, a.ndim, 0))
        descriptors.append(struct.pack(f"<{a.ndim}I", *a.shape))
        data.append(np.ascontiguousarray(a, dtype=_DTYPES[code]).tobytes())
    body = b"".join(
        [
            _PREFIX.pack(MAGIC, FORMAT_VERSION, kind, 0, len(head), len(tensors), len(payload)),
            head,
            *descriptors,
            *data,
            bytes(payload),
        ]
    )
    return body + _CRC.pack(zlib.crc32(body))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError(f"header repeats the key {key!r}")
        out[key] = value
    return out


def unpack_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Split a frame into its parts, checking its structure and checksum (not what the
    header says: see :func:`decode`).

    Raises
    ------
    ProtocolError
        Not bytes, not a frame, another format version, truncated, damaged (checksum),
        sizes that do not account for exactly the bytes present, or a header that is not
        valid JSON.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a frame is bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    size = len(view)
    if size < _OVERHEAD:
        raise ProtocolError(f"truncated: {size} bytes, a frame has at least {_OVERHEAD}")
    magic, version, kind, flags, hlen, count, plen = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise ProtocolError(f"not a fedlab frame (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise ProtocolError(
            f"format version {version} is not supported (this reader speaks {FORMAT_VERSION})"
        )
    least = _OVERHEAD + hlen + _DESCRIPTOR.size * count + plen
    if least > size:
        raise ProtocolError(
            f"truncated or damaged: the prefix declares >= {least} bytes, got {size}"
        )
    (crc,) = _CRC.unpack_from(view, size - _CRC.size)
    if zlib.crc32(view[: size - _CRC.size]) != crc:
        raise ProtocolError("damaged: checksum mismatch")
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind}")
    if flags != 0:
        raise ProtocolError(f"reserved flags are {flags}, expected 0")
    if hlen > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {hlen} bytes, more than {MAX_HEADER_BYTES}")
    if count > MAX_TENSORS:
        raise ProtocolError(f"{count} tensors, more than {MAX_TENSORS}")
    at = _PREFIX.size + hlen
    end = size - _CRC.size - plen  # where the tensor data must end
    specs: list[tuple[np.dtype[Any], tuple[int, ...]]] = []
    for i in range(count):
        if at + _DESCRIPTOR.size > end:
            raise ProtocolError(f"tensor {i}: descriptor runs past the data")
        code, ndim, reserved = _DESCRIPTOR.unpack_from(view, at)
        at += _DESCRIPTOR.size
        if code not in _DTYPES:
            raise ProtocolError(f"tensor {i}: unknown dtype code {code}")
        if ndim > MAX_NDIM or reserved:
            raise ProtocolError(
                f"tensor {i}: ndim {ndim} (at most {MAX_NDIM}), reserved {reserved}"
            )
        if at + 4 * ndim > end:
            raise ProtocolError(f"tensor {i}: descriptor runs past the data")
        shape = struct.unpack_from(f"<{ndim}I", view, at)
        at += 4 * ndim
        specs.append((_DTYPES[code], tuple(shape)))
    # Python ints: a product of claimed dims cannot overflow; nothing is allocated yet.
    claimed = sum(math.prod(shape) * dtype.itemsize for dtype, shape in specs)
    if at + claimed != end:
        raise ProtocolError(
            f"sizes do not add up: the descriptors claim {claimed} data bytes, "
            f"the frame holds {end - at}"
        )
    try:
        header = json.loads(
            bytes(view[_PREFIX.size : _PREFIX.size + hlen]).decode("utf-8"),
            object_pairs_hook=_no_duplicates,
        )
    except ProtocolError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"header is not valid JSON ({type(exc).__name__}: {exc})") from None
    tensors = []
    for dtype, shape in specs:
        n = math.prod(shape)
        array = np.frombuffer(view, dtype=dtype, count=n, offset=at).reshape(shape).copy()
        array.flags.writeable = False
        tensors.append(array)
        at += n * dtype.itemsize
    return Frame(kind, header, tuple(tensors), bytes(view[end : size - _CRC.size]))


def _task_header(task: RoundTask) -> dict[str, Any]:
    return {
        "round_index": task.round_index,
        "client_id": task.client_id,
        "model_version": task.model_version,
        "base_version": task.base_version,
        "weights_ref": task.weights_ref,
        "deadline": task.deadline,
        "plan": task.plan.to_dict(),
        **({"run_id": task.run_id} if task.run_id else {}),
    }


def _envelope_header(envelope: UpdateEnvelope) -> dict[str, Any]:
    return {
        "client_id": envelope.client_id,
        "device_id": envelope.device_id,
        "round_index": envelope.round_index,
        "model_version": envelope.model_version,
        "base_version": envelope.base_version,
        "num_examples": envelope.num_examples,
        "num_steps": envelope.num_steps,
        "metrics": dict(envelope.metrics),
        "headers": dict(envelope.headers),
        "body": "opaque" if isinstance(envelope.body, bytes) else "tensors",
    }


def _parts(
    obj: RoundTask | UpdateEnvelope,
) -> tuple[int, dict[str, Any], tuple[np.ndarray, ...], bytes]:
    if isinstance(obj, RoundTask):
        return KIND_TASK, _task_header(obj), obj.weights or (), b""
    if isinstance(obj, UpdateEnvelope):
        body = obj.body
        if isinstance(body, bytes):
            return KIND_ENVELOPE, _envelope_header(obj), (), body
        return KIND_ENVELOPE, _envelope_header(obj), body, b""
    raise TypeError(f"encode takes a RoundTask or an UpdateEnvelope, got {type(obj).__name__}")


def encode(obj: RoundTask | UpdateEnvelope) -> bytes:
    """The frame of a task or an envelope (``len(encode(x)) == encoded_size(x)``)."""
    return pack_frame(*_parts(obj))


def encoded_size(obj: RoundTask | UpdateEnvelope) -> int:
    """The exact size in bytes of ``encode(obj)``, computed without encoding the tensors."""
    _, header, tensors, payload = _parts(obj)
    return (
        _OVERHEAD
        + len(_header_bytes(header))
        + sum(_DESCRIPTOR.size + 4 * t.ndim + t.nbytes for t in tensors)
        + len(payload)
    )


def _fields(
    header: Any, allowed: frozenset[str], what: str, optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(header, dict):
        raise ProtocolError(f"the {what} header is not a JSON object")
    unknown = sorted(set(header) - allowed - optional)
    if unknown:
        raise ProtocolError(f"unknown {what} fields {unknown}")
    missing = sorted(allowed - set(header))
    if missing:
        raise ProtocolError(f"{what} fields {missing} are missing")
    return header


def _task(frame: Frame) -> RoundTask:
    h = _fields(frame.header, _TASK_FIELDS, "task", frozenset({"run_id"}))
    if frame.payload:
        raise ProtocolError("a task carries no opaque payload")
    if not isinstance(h["plan"], dict):
        raise ProtocolError(f"the header has no plan (plan is {h['plan']!r})")
    inline = not h["weights_ref"]
    if not inline and frame.tensors:
        raise ProtocolError("a task with weights_ref carries no tensors")
    return RoundTask(
        round_index=h["round_index"],
        client_id=h["client_id"],
        model_version=h["model_version"],
        base_version=h["base_version"],
        weights_ref=h["weights_ref"],
        deadline=h["deadline"],
        plan=TrainPlan.from_dict(h["plan"]),
        weights=frame.tensors if inline else None,
        run_id=h.get("run_id", ""),
    )


def _envelope(frame: Frame) -> UpdateEnvelope:
    h = _fields(frame.header, _ENVELOPE_FIELDS, "envelope")
    if h["body"] == "tensors":
        if frame.payload:
            raise ProtocolError("a tensor body carries no opaque payload")
        body: tuple[np.ndarray, ...] | bytes = frame.tensors
    elif h["body"] == "opaque":
        if frame.tensors:
            raise ProtocolError("an opaque body carries no tensors")
        body = frame.payload
    else:
        raise ProtocolError(f"body must be 'tensors' or 'opaque', got {h['body']!r}")
    return UpdateEnvelope(
        client_id=h["client_id"],
        device_id=h["device_id"],
        round_index=h["round_index"],
        model_version=h["model_version"],
        base_version=h["base_version"],
        num_examples=h["num_examples"],
        num_steps=h["num_steps"],
        metrics=h["metrics"],
        headers=h["headers"],
        body=body,
    )


def decode(data: bytes | bytearray | memoryview) -> RoundTask | UpdateEnvelope:
    """The task or envelope a frame holds.

    Raises
    ------
    ProtocolError
        For anything that is not a valid frame of a valid task or envelope (the reason
        names the field and quotes the value); never any other exception.
    """
    frame = unpack_frame(data)
    if frame.kind == KIND_SECAGG:
        raise ProtocolError(
            "a secure-aggregation message, not a task or envelope (fedlab.protocol.secagg)"
        )
    try:
        return _task(frame) if frame.kind == KIND_TASK else _envelope(frame)
    except ProtocolError:
        raise
    except (TypeError, ValueError) as exc:
        raise ProtocolError(str(exc)) from None


def decode_task(data: bytes | bytearray | memoryview) -> RoundTask:
    """:func:`decode`, refusing anything but a round task."""
    obj = decode(data)
    if not isinstance(obj, RoundTask):
        raise ProtocolError("expected a round task, got an update envelope")
    return obj


def decode_envelope(data: bytes | bytearray | memoryview) -> UpdateEnvelope:
    """:func:`decode`, refusing anything but an update envelope."""
    obj = decode(data)
    if not isinstance(obj, UpdateEnvelope):
        raise ProtocolError("expected an update envelope, got a round task")
    return obj
