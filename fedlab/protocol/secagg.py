"""Secure-aggregation stage messages on the wire (frame kind 3).

A real fleet runs the four SecAgg+ stages (:mod:`fedlab.secure.secagg`) as message
exchanges: the server sends each cohort member a :class:`SecAggRequest` (the round's public
:class:`~fedlab.secure.secagg.RoundSetup` plus that client's part of the stage: nothing,
its neighbours' keys, the shares addressed to it, or which neighbours survived) and the
device answers with the stage's client message. Every message is one frame of
:mod:`fedlab.protocol.wire` (CRC, size checks): its JSON header carries the scalar fields
and a table of ``parts`` — ``[name, count, item bytes]`` — that lay out the frame's binary
payload (the cohort and other client-id lists as little-endian u64, keys, ciphertexts,
shares, the masked ring vector), so a header stays small whatever the cohort size.

The setup travels with every request because a device answers each stage in a fresh
process (a Flower ClientApp) and must not trust its own disk to say which round it is in.
Decoding trusts nothing: a wrong type, length or stage is one :class:`ProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedlab.protocol.types import ProtocolError
from fedlab.protocol.wire import KIND_SECAGG, pack_frame, unpack_frame
from fedlab.secure.secagg import (
    ADVERTISE,
    MASKED_INPUT,
    SHARE,
    SHARE_CIPHERTEXT_BYTES,
    STAGES,
    UNMASK,
    AdvertiseKeys,
    KeyBroadcast,
    MaskedInput,
    RoundSetup,
    SecAggConfig,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedlab.secure.shamir import SHARE_BYTES

__all__ = [
    "SecAggReply",
    "SecAggRequest",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

#: What the server sends for each stage (``None`` for advertise: "send your keys").
SecAggRequestBody = KeyBroadcast | ShareDelivery | UnmaskRequest | None
#: What a client answers.
SecAggReply = AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse

_REPLY_KIND: dict[str, type] = {
    ADVERTISE: AdvertiseKeys,
    SHARE: ShareKeys,
    MASKED_INPUT: MaskedInput,
    UNMASK: UnmaskResponse,
}
_REQUEST_KIND: dict[str, type | None] = {
    ADVERTISE: None,
    SHARE: KeyBroadcast,
    MASKED_INPUT: ShareDelivery,
    UNMASK: UnmaskRequest,
}


@dataclass(frozen=True, slots=True)
class SecAggRequest:
    """Server → client for one stage.

    Attributes
    ----------
    stage : str
        One of :data:`~fedlab.secure.secagg.STAGES`.
    setup : RoundSetup
        The round's public parameters.
    client_id : int
        The addressee (a cohort member).
    body : KeyBroadcast, ShareDelivery, UnmaskRequest or None
        The stage's server message for this client (``None`` at advertise).
    """

    stage: str
    setup: RoundSetup
    client_id: int
    body: SecAggRequestBody = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        want = _REQUEST_KIND[self.stage]
        if (want is None and self.body is not None) or (
            want is not None and not isinstance(self.body, want)
        ):
            raise TypeError(f"a {self.stage} request carries {want}, got {type(self.body)}")
        if self.client_id not in self.setup.cohort:
            raise ValueError(f"client {self.client_id!r} is not in the round's cohort")


# -- header field readers: every failure is a ProtocolError naming the field --------------
def _field(header: Mapping[str, Any], key: str) -> Any:
    if key not in header:
        raise ProtocolError(f"secagg message has no {key!r}")
    return header[key]


def _int(header: Mapping[str, Any], key: str) -> int:
    value = _field(header, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"secagg {key!r} must be an int >= 0, got {value!r:.40}")
    return value


def _hex(value: Any, what: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"secagg {what} must be hex text, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ProtocolError(f"secagg {what} is not hex") from None
    if len(raw) != size:
        raise ProtocolError(f"secagg {what} must be {size} bytes, got {len(raw)}")
    return raw


# -- the binary parts ---------------------------------------------------------------------
_U64 = struct.Struct("<Q")


class _Parts:
    """Named runs of fixed-size items, laid out one after the other in the payload."""

    def __init__(self) -> None:
        self.table: list[list[Any]] = []
        self.chunks: list[bytes] = []

    def add(self, name: str, items: Sequence[bytes], size: int) -> None:
        for item in items:
            if len(item) != size:
                raise ValueError(f"{name}: an item of {len(item)} bytes, the wire carries {size}")
        self.table.append([name, len(items), size])
        self.chunks.extend(items)

    def ids(self, name: str, ids: Iterable[int]) -> None:
        self.add(name, [_U64.pack(int(i)) for i in ids], 8)

    def payload(self) -> bytes:
        return b"".join(self.chunks)


def _read_parts(
    header: Mapping[str, Any], payload: bytes, wanted: Mapping[str, int | None]
) -> dict[str, list[bytes]]:
    """Split ``payload`` by the header's ``parts`` table: exactly the ``wanted`` names, in
    any order, each with its item size (``None``: any size, the caller checks it)."""
    table = _field(header, "parts")
    if not isinstance(table, list):
        raise ProtocolError("secagg 'parts' must be a list")
    out: dict[str, list[bytes]] = {}
    offset = 0
    for entry in table:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in entry[1:])
        ):
            raise ProtocolError(f"secagg part {entry!r:.60} is not [name, count, size]")
        name, count, size = entry
        if name not in wanted or name in out:
            raise ProtocolError(f"secagg part {name!r:.40} is unexpected or repeated")
        if wanted[name] is not None and size != wanted[name]:
            raise ProtocolError(
                f"secagg part {name!r} has items of {size} bytes, expected {wanted[name]}"
            )
        end = offset + count * size
        if end > len(payload):
            raise ProtocolError(f"secagg part {name!r} runs past the payload")
        out[name] = [payload[offset + i * size : offset + (i + 1) * size] for i in range(count)]
        offset = end
    if offset != len(payload):
        raise ProtocolError(
            f"secagg payload has {len(payload) - offset} bytes no part accounts for"
        )
    missing = sorted(set(wanted) - set(out))
    if missing:
        raise ProtocolError(f"secagg message lacks parts {missing}")
    return out


def _ids(items: list[bytes]) -> list[int]:
    return [_U64.unpack(i)[0] for i in items]


def _keyed(ids: list[bytes], values: list[bytes], what: str) -> dict[int, bytes]:
    keys = _ids(ids)
    if len(keys) != len(values) or len(set(keys)) != len(keys):
        raise ProtocolError(f"secagg {what}: ids and values do not pair up one to one")
    return dict(zip(keys, values, strict=True))


def _setup_header(setup: RoundSetup) -> dict[str, Any]:
    return {
        "config": setup.config.to_dict(),
        "round_index": setup.round_index,
        "dimension": setup.dimension,
        "seed": setup.seed.hex(),
    }


def _setup(value: Any, cohort: list[int]) -> RoundSetup:
    if not isinstance(value, dict):
        raise ProtocolError("secagg 'setup' must be an object")
    try:
        config = value["config"]
        if not isinstance(config, dict):
            raise TypeError("config must be an object")
        seed = value["seed"]
        if not isinstance(seed, str):
            raise TypeError("seed must be hex text")
        return RoundSetup(
            SecAggConfig.from_dict(config),
            value["round_index"],
            tuple(cohort),
            value["dimension"],
            bytes.fromhex(seed),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"secagg setup is invalid: {exc}") from None


# -- requests ---------------------------------------------------------------------------------
def encode_request(request: SecAggRequest) -> bytes:
    """One frame carrying ``request``."""
    parts = _Parts()
    parts.ids("cohort", request.setup.cohort)
    body = request.body
    if isinstance(body, KeyBroadcast):
        order = sorted(body.keys)
        parts.ids("key_ids", order)
        parts.add("keys", [body.keys[j][0] + body.keys[j][1] for j in order], 64)
    elif isinstance(body, ShareDelivery):
        order = sorted(body.ciphertexts)
        parts.ids("ct_ids", order)
        parts.add("cts", [body.ciphertexts[j] for j in order], SHARE_CIPHERTEXT_BYTES)
    elif isinstance(body, UnmaskRequest):
        parts.ids("survivors", sorted(body.survivors))
        parts.ids("dropped", sorted(body.dropped))
    header = {
        "request": {
            "stage": request.stage,
            "setup": _setup_header(request.setup),
            "client_id": request.client_id,
        },
        "parts": parts.table,
    }
    return pack_frame(KIND_SECAGG, header, payload=parts.payload())


_REQUEST_PARTS: dict[str, dict[str, int | None]] = {
    ADVERTISE: {"cohort": 8},
    SHARE: {"cohort": 8, "key_ids": 8, "keys": 64},
    MASKED_INPUT: {"cohort": 8, "ct_ids": 8, "cts": SHARE_CIPHERTEXT_BYTES},
    UNMASK: {"cohort": 8, "survivors": 8, "dropped": 8},
}


def decode_request(data: bytes | bytearray | memoryview) -> SecAggRequest:
    """The request a frame holds.

    Raises
    ------
    ProtocolError
        Not a valid secagg request frame (the reason names the field).
    """
    frame = unpack_frame(data)
    header = frame.header.get("request") if isinstance(frame.header, dict) else None
    if frame.kind != KIND_SECAGG or not isinstance(header, dict):
        raise ProtocolError("expected a secure-aggregation request")
    stage = _field(header, "stage")
    if stage not in STAGES:
        raise ProtocolError(f"secagg stage {stage!r:.40} is not one of {STAGES}")
    parts = _read_parts(frame.header, frame.payload, _REQUEST_PARTS[stage])
    setup = _setup(_field(header, "setup"), _ids(parts["cohort"]))
    cid = _int(header, "client_id")
    r = setup.round_index
    body: SecAggRequestBody = None
    if stage == SHARE:
        keys = _keyed(parts["key_ids"], parts["keys"], "neighbour keys")
        body = KeyBroadcast(r, {j: (k[:32], k[32:]) for j, k in keys.items()})
    elif stage == MASKED_INPUT:
        body = ShareDelivery(r, _keyed(parts["ct_ids"], parts["cts"], "ciphertexts"))
    elif stage == UNMASK:
        body = UnmaskRequest(
            r, frozenset(_ids(parts["survivors"])), frozenset(_ids(parts["dropped"]))
        )
    try:
        return SecAggRequest(stage, setup, cid, body)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"secagg request is invalid: {exc}") from None


# -- replies ----------------------------------------------------------------------------------
def encode_reply(message: SecAggReply) -> bytes:
    """One frame carrying a client's stage message."""
    header: dict[str, Any] = {"client_id": message.client_id, "round_index": message.round_index}
    parts = _Parts()
    if isinstance(message, AdvertiseKeys):
        header["stage"] = ADVERTISE
        parts.add("keys", [message.cipher_key + message.mask_key], 64)
        parts.add("signature", [message.signature] if message.signature else [], 64)
    elif isinstance(message, ShareKeys):
        header["stage"] = SHARE
        order = sorted(message.ciphertexts)
        parts.ids("ct_ids", order)
        parts.add("cts", [message.ciphertexts[j] for j in order], SHARE_CIPHERTEXT_BYTES)
        parts.add("commitment", [message.commitment], 32)
    elif isinstance(message, MaskedInput):
        header["stage"] = MASKED_INPUT
        vector = message.payload()
        parts.add("vector", [vector], len(vector))
    elif isinstance(message, UnmaskResponse):
        header["stage"] = UNMASK
        for name, shares in (("seed", message.seed_shares), ("key", message.key_shares)):
            order = sorted(shares)
            parts.ids(f"{name}_ids", order)
            parts.add(f"{name}_shares", [shares[j] for j in order], SHARE_BYTES)
    else:
        raise TypeError(f"not a secure-aggregation client message: {type(message).__name__}")
    return pack_frame(KIND_SECAGG, {"reply": header, "parts": parts.table}, payload=parts.payload())


_REPLY_PARTS: dict[str, dict[str, int | None]] = {
    ADVERTISE: {"keys": 64, "signature": 64},
    SHARE: {"ct_ids": 8, "cts": SHARE_CIPHERTEXT_BYTES, "commitment": 32},
    MASKED_INPUT: {"vector": None},
    UNMASK: {"seed_ids": 8, "seed_shares": SHARE_BYTES, "key_ids": 8, "key_shares": SHARE_BYTES},
}


def decode_reply(
    data: bytes | bytearray | memoryview, setup: RoundSetup, *, stage: str
) -> SecAggReply:
    """The client message a frame holds, for ``stage`` of the round ``setup`` describes.

    Sizes of keys and the masked vector are checked here; whether the message is the
    right one for this client and round is the server's call
    (:class:`~fedlab.secure.secagg.SecAggServer` refuses and counts it as dropped).

    Raises
    ------
    ProtocolError
        Not a valid reply frame for ``stage``.
    """
    frame = unpack_frame(data)
    header = frame.header.get("reply") if isinstance(frame.header, dict) else None
    if frame.kind != KIND_SECAGG or not isinstance(header, dict):
        raise ProtocolError("expected a secure-aggregation reply")
    got = _field(header, "stage")
    if got != stage:
        raise ProtocolError(f"expected a {stage} reply, got {got!r:.40}")
    cid, r = _int(header, "client_id"), _int(header, "round_index")
    parts = _read_parts(frame.header, frame.payload, _REPLY_PARTS[stage])
    if stage == ADVERTISE:
        (keys,) = _one(parts["keys"], "keys")
        signature = parts["signature"]
        if len(signature) > 1:
            raise ProtocolError("secagg advert carries more than one signature")
        return AdvertiseKeys(cid, r, keys[:32], keys[32:], signature[0] if signature else None)
    if stage == SHARE:
        cts = _keyed(parts["ct_ids"], parts["cts"], "ciphertexts")
        (commitment,) = _one(parts["commitment"], "commitment")
        return ShareKeys(cid, r, cts, commitment)
    if stage == MASKED_INPUT:
        (vector,) = _one(parts["vector"], "masked vector")
        try:
            masked = MaskedInput.from_payload(setup, cid, vector)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        return MaskedInput(cid, r, masked.vector)
    seeds = _keyed(parts["seed_ids"], parts["seed_shares"], "seed shares")
    key_shares = _keyed(parts["key_ids"], parts["key_shares"], "key shares")
    return UnmaskResponse(cid, r, seeds, key_shares)


def _one(items: list[bytes], what: str) -> list[bytes]:
    if len(items) != 1:
        raise ProtocolError(f"secagg {what}: expected one, got {len(items)}")
    return items
