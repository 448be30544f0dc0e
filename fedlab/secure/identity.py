"""Device identity and authenticated updates (Ed25519).

Each device holds an Ed25519 key (generated in its kit); the server keeps an
:class:`IdentityRegistry` of enrolled public keys. A device signs every update over
``(round, model version hash, client id, num_examples, payload SHA-256)``; the server's
:class:`UpdateVerifier` refuses, with the reason, updates that are unsigned, from an unknown
client, forged (bad signature, or a payload that is not the signed one), for another model
version, replayed (a round at or before one already accepted from that client) or
cross-round (signed for a round other than the current one). A refusal changes no state, so
one bad update never costs a good one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "DeviceIdentity",
    "IdentityRegistry",
    "SignedUpdate",
    "UpdateHeader",
    "UpdateVerifier",
    "Verdict",
]

_DOMAIN = b"fedlab/update/v1\n"


def _check_id(client_id: Any) -> int:
    if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
        raise ValueError(f"client_id must be an int >= 0, got {client_id!r}")
    return client_id


@dataclass(frozen=True, slots=True)
class UpdateHeader:
    """What a device signs about one update.

    Parameters
    ----------
    round_index : int
        The round the update is for.
    model_version : str
        Content hash of the global model the update was trained from.
    client_id : int
        The sender.
    num_examples : int
        The claimed example count.
    payload_sha256 : str
        Hex SHA-256 of the payload bytes (the masked or plain update as sent).
    run_id : str
        The server's run the update answers (empty: none; then the signed bytes are the
        same as before run ids existed).
    """

    round_index: int
    model_version: str
    client_id: int
    num_examples: int
    payload_sha256: str
    run_id: str = ""

    def __post_init__(self) -> None:
        for name in ("round_index", "num_examples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        _check_id(self.client_id)
        if not isinstance(self.model_version, str) or not self.model_version:
            raise ValueError(f"model_version must be a non-empty str, got {self.model_version!r}")
        if not isinstance(self.payload_sha256, str) or len(self.payload_sha256) != 64:
            raise ValueError(f"payload_sha256 must be 64 hex chars, got {self.payload_sha256!r}")
        if not isinstance(self.run_id, str):
            raise ValueError(f"run_id must be a str, got {self.run_id!r}")

    def canonical(self) -> bytes:
        """The exact bytes signed: a domain tag and sorted compact JSON."""
        body = {
            "client_id": self.client_id,
            "model_version": self.model_version,
            "num_examples": self.num_examples,
            "payload_sha256": self.payload_sha256,
            "round_index": self.round_index,
        }
        if self.run_id:  # a run binds the signature to it (another run's copy fails)
            body["run_id"] = self.run_id
        return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpdateHeader:
        """Rebuild from :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True, slots=True)
class SignedUpdate:
    """An update as it travels: header, payload bytes, signature (``None`` if unsigned)."""

    header: UpdateHeader
    payload: bytes
    signature: bytes | None


class DeviceIdentity:
    """A device's Ed25519 signing key.

    Parameters
    ----------
    client_id : int
        The id the key is enrolled under.
    private_key : Ed25519PrivateKey
        The key (see :meth:`generate` and :meth:`from_private_bytes`).
    """

    __slots__ = ("_key", "client_id")

    def __init__(self, *, client_id: int, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError(f"private_key must be an Ed25519PrivateKey, got {private_key!r}")
        self.client_id = _check_id(client_id)
        self._key = private_key

    @classmethod
    def generate(cls, client_id: int) -> DeviceIdentity:
        """A fresh key from the OS random source."""
        return cls(client_id=client_id, private_key=Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, client_id: int, raw: bytes) -> DeviceIdentity:
        """Load a 32-byte raw private key (as stored in a device kit)."""
        return cls(client_id=client_id, private_key=Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The 32-byte raw private key (for the device kit only)."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw public key the server enrols."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        """A raw Ed25519 signature (used for protocol messages, e.g. advertised keys)."""
        return self._key.sign(message)

    def sign_update(
        self, *, round_index: int, model_version: str, num_examples: int, payload: bytes
    ) -> SignedUpdate:
        """Sign ``payload`` for ``round_index`` on top of ``model_version``."""
        header = UpdateHeader(
            round_index=round_index,
            model_version=model_version,
            client_id=self.client_id,
            num_examples=num_examples,
            payload_sha256=hashlib.sha256(payload).hexdigest(),
        )
        return SignedUpdate(header, bytes(payload), self._key.sign(header.canonical()))


class IdentityRegistry:
    """The server's enrolled device keys (client id -> Ed25519 public key)."""

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {}

    def enrol(self, client_id: int, public_key: bytes, *, replace: bool = False) -> None:
        """Enrol ``client_id``; re-enrolling with another key needs ``replace=True``."""
        _check_id(client_id)
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise ValueError(f"public_key must be 32 raw bytes, got {public_key!r:.80}")
        Ed25519PublicKey.from_public_bytes(public_key)  # validates the encoding
        old = self._keys.get(client_id)
        if old is not None and old != public_key and not replace:
            raise ValueError(f"client {client_id} is already enrolled with another key")
        self._keys[client_id] = public_key

    def revoke(self, client_id: int) -> None:
        """Remove a client (its later updates are 'unknown client')."""
        self._keys.pop(client_id, None)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, client_id: int, message: bytes, signature: bytes | None) -> str | None:
        """``None`` if ``signature`` is ``client_id``'s over ``message``, else the reason."""
        if not signature:
            return "unsigned"
        key = self._keys.get(client_id)
        if key is None:
            return f"unknown client {client_id!r}"
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        except InvalidSignature:
            return f"forged: signature does not verify under client {client_id}'s enrolled key"
        return None

    def to_dict(self) -> dict[str, str]:
        """``{client id: hex public key}`` (JSON-friendly)."""
        return {str(k): v.hex() for k, v in sorted(self._keys.items())}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> IdentityRegistry:
        """Rebuild from :meth:`to_dict`."""
        reg = cls()
        for k, v in data.items():
            reg.enrol(int(k), bytes.fromhex(v))
        return reg


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's decision on one update."""

    client_id: int | None
    accepted: bool
    reason: str


class UpdateVerifier:
    """Refuses unauthenticated, forged, replayed and cross-round updates, with the reason.

    Parameters
    ----------
    registry : IdentityRegistry
        Enrolled device keys.
    max_examples : int, optional
        Server policy cap; a signed ``num_examples`` above it is refused.
    """

    def __init__(self, registry: IdentityRegistry, *, max_examples: int | None = None) -> None:
        if not isinstance(registry, IdentityRegistry):
            raise TypeError(f"registry must be an IdentityRegistry, got {registry!r}")
        if max_examples is not None and (
            isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
        ):
            raise ValueError(f"max_examples must be an int >= 1, got {max_examples!r}")
        self.registry = registry
        self.max_examples = max_examples
        self._last_round: dict[int, int] = {}

    def last_accepted_round(self, client_id: int) -> int | None:
        """The latest round an update from ``client_id`` was accepted for."""
        return self._last_round.get(client_id)

    def check(self, update: Any, *, round_index: int, model_version: str) -> Verdict:
        """Judge ``update`` for the current round without recording anything."""
        if not isinstance(update, SignedUpdate) or not isinstance(update.header, UpdateHeader):
            return Verdict(None, False, f"malformed: not a SignedUpdate ({type(update).__name__})")
        h = update.header
        cid = h.client_id
        if not update.signature:
            return Verdict(cid, False, "unsigned")
        if cid not in self.registry:
            return Verdict(cid, False, f"unknown client {cid!r}")
        reason = self.registry.check(cid, h.canonical(), update.signature)
        if reason is not None:
            return Verdict(cid, False, reason)
        if hashlib.sha256(update.payload).hexdigest() != h.payload_sha256:
            return Verdict(cid, False, "forged: payload does not match its signed SHA-256")
        last = self._last_round.get(cid)
        if last is not None and h.round_index <= last:
            return Verdict(
                cid,
                False,
                f"replayed: signed for round {h.round_index}, and client {cid} already had an "
                f"update accepted for round {last}",
            )
        if h.round_index != round_index:
            return Verdict(
                cid, False, f"cross-round: signed for round {h.round_index}, this is {round_index}"
            )
        if h.model_version != model_version:
            return Verdict(
                cid,
                False,
                f"wrong model version: trained on {h.model_version[:12]}, "
                f"this round serves {model_version[:12]}",
            )
        if self.max_examples is not None and h.num_examples > self.max_examples:
            return Verdict(
                cid, False, f"num_examples {h.num_examples} above the cap {self.max_examples}"
            )
        return Verdict(cid, True, "accepted")

    def verify(self, update: Any, *, round_index: int, model_version: str) -> Verdict:
        """Judge ``update`` and, if accepted, record its round (so a replay is refused)."""
        verdict = self.check(update, round_index=round_index, model_version=model_version)
        if verdict.accepted and verdict.client_id is not None:
            self._last_round[verdict.client_id] = round_index
        return verdict

    def verify_many(
        self, updates: Iterable[Any], *, round_index: int, model_version: str
    ) -> tuple[list[SignedUpdate], list[Verdict]]:
        """Accepted updates, and the refusals with their reasons (each judged on its own)."""
        accepted: list[SignedUpdate] = []
        refused: list[Verdict] = []
        for u in updates:
            v = self.verify(u, round_index=round_index, model_version=model_version)
            if v.accepted:
                accepted.append(u)
            else:
                refused.append(v)
        return accepted, refused
