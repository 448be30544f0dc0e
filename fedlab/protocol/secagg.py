"""Secure-aggregation stage messages on the wire (frame kind 3).

A real fleet runs the four SecAgg+ stages (:mod:`fedlab.secure.secagg`) as message
exchanges: the server sends each cohort member a :class:`SecAggRequest` (the round's public
:class:`~fedlab.secure.secagg.RoundSetup` plus that client's part of the stage: nothing,
its neighbours' keys, the shares addressed to it, or which neighbours survived) and the
device answers with the stage's client message. Every message is one frame of
:mod:`fedlab.protocol.wire` (CRC, size checks) whose JSON header carries the fields, byte
strings as hex; a masked input's ring vector is the frame's opaque payload.

The setup travels with every request because a device answers each stage in a fresh
process (a Flower ClientApp) and must not trust its own disk to say which round it is in.
Decoding trusts nothing: a wrong type, length or stage is one :class:`ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedlab.protocol.types import ProtocolError
from fedlab.protocol.wire import KIND_SECAGG, pack_frame, unpack_frame
from fedlab.secure.secagg import (
    ADVERTISE,
    MASKED_INPUT,
    SHARE,
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


def _bytes(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"secagg {what} must be hex text, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ProtocolError(f"secagg {what} is not hex") from None
    if size is not None and len(raw) != size:
        raise ProtocolError(f"secagg {what} must be {size} bytes, got {len(raw)}")
    return raw


def _id(key: Any, what: str) -> int:
    if not isinstance(key, str) or not key.isdigit() or len(key) > 19:
        raise ProtocolError(f"secagg {what}: {key!r:.40} is not a client id")
    return int(key)


def _by_id(header: Mapping[str, Any], key: str) -> dict[int, Any]:
    value = _field(header, key)
    if not isinstance(value, dict):
        raise ProtocolError(f"secagg {key!r} must be an object keyed by client id")
    return {_id(k, key): v for k, v in value.items()}


def _id_list(header: Mapping[str, Any], key: str) -> frozenset[int]:
    value = _field(header, key)
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value
    ):
        raise ProtocolError(f"secagg {key!r} must be a list of client ids")
    return frozenset(value)


def _setup_header(setup: RoundSetup) -> dict[str, Any]:
    return {
        "config": setup.config.to_dict(),
        "round_index": setup.round_index,
        "cohort": list(setup.cohort),
        "dimension": setup.dimension,
        "seed": setup.seed.hex(),
    }


def _setup(value: Any) -> RoundSetup:
    if not isinstance(value, dict):
        raise ProtocolError("secagg 'setup' must be an object")
    try:
        config = value["config"]
        if not isinstance(config, dict):
            raise TypeError("config must be an object")
        cohort = value["cohort"]
        if not isinstance(cohort, list):
            raise TypeError("cohort must be a list")
        return RoundSetup(
            SecAggConfig.from_dict(config),
            value["round_index"],
            tuple(cohort),
            value["dimension"],
            _bytes(value["seed"], "setup seed"),
        )
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"secagg setup is invalid: {exc}") from None


def _pairs(value: Any, what: str) -> tuple[bytes, bytes]:
    if not isinstance(value, list) or len(value) != 2:
        raise ProtocolError(f"secagg {what} must be a pair of keys")
    return _bytes(value[0], what, 32), _bytes(value[1], what, 32)


# -- requests ---------------------------------------------------------------------------------
def encode_request(request: SecAggRequest) -> bytes:
    """One frame carrying ``request``."""
    header: dict[str, Any] = {
        "stage": request.stage,
        "setup": _setup_header(request.setup),
        "client_id": request.client_id,
    }
    body = request.body
    if isinstance(body, KeyBroadcast):
        header["keys"] = {str(j): [a.hex(), b.hex()] for j, (a, b) in sorted(body.keys.items())}
    elif isinstance(body, ShareDelivery):
        header["ciphertexts"] = {str(j): c.hex() for j, c in sorted(body.ciphertexts.items())}
    elif isinstance(body, UnmaskRequest):
        header["survivors"] = sorted(body.survivors)
        header["dropped"] = sorted(body.dropped)
    return pack_frame(KIND_SECAGG, {"request": header})


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
    setup = _setup(_field(header, "setup"))
    cid = _int(header, "client_id")
    r = setup.round_index
    body: SecAggRequestBody = None
    if stage == SHARE:
        keys = {j: _pairs(v, "neighbour keys") for j, v in _by_id(header, "keys").items()}
        body = KeyBroadcast(r, keys)
    elif stage == MASKED_INPUT:
        cts = {j: _bytes(v, "ciphertext") for j, v in _by_id(header, "ciphertexts").items()}
        body = ShareDelivery(r, cts)
    elif stage == UNMASK:
        body = UnmaskRequest(r, _id_list(header, "survivors"), _id_list(header, "dropped"))
    try:
        return SecAggRequest(stage, setup, cid, body)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"secagg request is invalid: {exc}") from None


# -- replies ----------------------------------------------------------------------------------
def encode_reply(message: SecAggReply) -> bytes:
    """One frame carrying a client's stage message."""
    header: dict[str, Any] = {"client_id": message.client_id, "round_index": message.round_index}
    payload = b""
    if isinstance(message, AdvertiseKeys):
        header.update(
            stage=ADVERTISE,
            cipher_key=message.cipher_key.hex(),
            mask_key=message.mask_key.hex(),
            signature=(message.signature or b"").hex(),
        )
    elif isinstance(message, ShareKeys):
        header.update(
            stage=SHARE,
            ciphertexts={str(j): c.hex() for j, c in sorted(message.ciphertexts.items())},
            commitment=message.commitment.hex(),
        )
    elif isinstance(message, MaskedInput):
        header["stage"] = MASKED_INPUT
        payload = message.payload()
    elif isinstance(message, UnmaskResponse):
        header.update(
            stage=UNMASK,
            seed_shares={str(j): v.hex() for j, v in sorted(message.seed_shares.items())},
            key_shares={str(j): v.hex() for j, v in sorted(message.key_shares.items())},
        )
    else:
        raise TypeError(f"not a secure-aggregation client message: {type(message).__name__}")
    return pack_frame(KIND_SECAGG, {"reply": header}, payload=payload)


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
    if stage != MASKED_INPUT and frame.payload:
        raise ProtocolError(f"a {stage} reply carries no payload")
    if stage == ADVERTISE:
        signature = _bytes(_field(header, "signature"), "signature")
        return AdvertiseKeys(
            cid,
            r,
            _bytes(_field(header, "cipher_key"), "cipher key", 32),
            _bytes(_field(header, "mask_key"), "mask key", 32),
            signature or None,
        )
    if stage == SHARE:
        cts = {j: _bytes(v, "ciphertext") for j, v in _by_id(header, "ciphertexts").items()}
        return ShareKeys(cid, r, cts, _bytes(_field(header, "commitment"), "commitment", 32))
    if stage == MASKED_INPUT:
        try:
            masked = MaskedInput.from_payload(setup, cid, frame.payload)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        return MaskedInput(cid, r, masked.vector)
    seeds = {j: _bytes(v, "seed share") for j, v in _by_id(header, "seed_shares").items()}
    keys = {j: _bytes(v, "key share") for j, v in _by_id(header, "key_shares").items()}
    return UnmaskResponse(cid, r, seeds, keys)
