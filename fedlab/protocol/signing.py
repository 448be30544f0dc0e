"""Signed update envelopes: what a device signs, and where the signature travels.

A device signs ``(round, global-model hash, client id, num_examples, payload SHA-256)``
with its Ed25519 key (:class:`fedlab.secure.identity.DeviceIdentity`, the
:class:`~fedlab.secure.identity.UpdateHeader` canonical bytes); the signature travels in
the envelope's headers as hex under :data:`SIGNATURE_HEADER`. The *global-model hash* is
the task's ``base_version`` (the content hash of the weights the update was trained
from), so a signature binds the update to one round of one model.

The payload digest covers the body exactly as it travels: an opaque payload's bytes, or
for tensors each one's dtype, shape and little-endian C-order bytes — the same for an
envelope before encoding and after a round trip through the wire.

numpy and ``cryptography`` only (a device imports this).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedlab.protocol.types import UpdateEnvelope
from fedlab.secure.identity import DeviceIdentity, UpdateHeader

__all__ = [
    "SIGNATURE_HEADER",
    "payload_bytes",
    "payload_sha256",
    "sign_envelope",
    "signed_header",
]

#: Envelope header holding the hex Ed25519 signature.
SIGNATURE_HEADER = "signature"


def payload_bytes(body: bytes | Sequence[np.ndarray]) -> bytes:
    """The exact bytes an envelope body's signature covers (see the module docstring).

    Raises
    ------
    TypeError
        ``body`` is neither bytes nor a sequence of arrays.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        return b"bytes\n" + bytes(body)
    if not isinstance(body, Sequence) or isinstance(body, str):
        raise TypeError(f"body must be bytes or a sequence of arrays, got {type(body).__name__}")
    parts = [b"tensors\n"]
    for array in body:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"body tensors must be ndarrays, got {type(array).__name__}")
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        parts.append(f"{little.dtype.str}{list(array.shape)}\n".encode())
        parts.append(np.ascontiguousarray(little).tobytes())
    return b"".join(parts)


def payload_sha256(body: bytes | Sequence[np.ndarray]) -> str:
    """Hex SHA-256 of :func:`payload_bytes`."""
    return hashlib.sha256(payload_bytes(body)).hexdigest()


def signed_header(
    *,
    client_id: int,
    round_index: int,
    base_version: str,
    num_examples: int,
    body: Any,
    run_id: str = "",
) -> UpdateHeader:
    """The header a signature covers, for an update of ``body`` (in run ``run_id``)."""
    return UpdateHeader(
        round_index=round_index,
        model_version=base_version,
        client_id=client_id,
        num_examples=num_examples,
        payload_sha256=payload_sha256(body),
        run_id=run_id,
    )


def sign_envelope(envelope: UpdateEnvelope, identity: DeviceIdentity) -> UpdateEnvelope:
    """``envelope`` with its signature in the headers (the body must be final: a stage
    that changes it afterwards breaks the signature, as it should).

    Raises
    ------
    ValueError
        The envelope's client id is not the identity's (a device signs only its own).
    """
    if envelope.client_id != identity.client_id:
        raise ValueError(
            f"identity of client {identity.client_id} cannot sign an update of client "
            f"{envelope.client_id}"
        )
    header = signed_header(
        client_id=envelope.client_id,
        round_index=envelope.round_index,
        base_version=envelope.base_version,
        num_examples=envelope.num_examples,
        body=envelope.body,
        run_id=str(envelope.headers.get("run_id", "")),
    )
    signature = identity.sign(header.canonical())
    return replace(envelope, headers={**envelope.headers, SIGNATURE_HEADER: signature.hex()})
