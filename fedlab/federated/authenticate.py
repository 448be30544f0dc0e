"""Authenticated updates as pipeline stages: a client signs, the server verifies.

:class:`SignUpdate` (client stage, for simulated clients; a device signs with
:func:`fedlab.protocol.signing.sign_envelope`) and :class:`VerifySignature` (server stage,
first in line: it must see the body exactly as it was signed, before any decoding). The
signature covers ``(round, global-model hash, client id, num_examples, payload SHA-256)``;
the envelope's ``round_index`` and ``base_version`` headers carry the round and model the
client *claims* (wire envelopes always carry them). The server refuses, each with its
reason and without touching any other update: unsigned, unknown-client, forged (bad
signature, or a body or ``num_examples`` that is not the signed one), replayed (a round at
or before one already accepted from that client), cross-round and wrong-model updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from fedlab.federated.stages import StageContext
from fedlab.federated.types import Envelope, UpdateRejected, is_int
from fedlab.protocol import weights_version
from fedlab.protocol.signing import SIGNATURE_HEADER, payload_bytes, signed_header
from fedlab.secure.identity import (
    DeviceIdentity,
    IdentityRegistry,
    SignedUpdate,
    UpdateVerifier,
)

__all__ = ["SignUpdate", "VerifySignature"]


def _server_base(context: StageContext) -> str:
    """The global model this round serves, as its content hash."""
    expected = context.expect_headers.get("base_version")
    if isinstance(expected, str) and expected:
        return expected
    if context.weights is None:
        raise UpdateRejected("the round's global weights are unknown: cannot check a signature")
    return weights_version(context.weights)


@dataclass(frozen=True, slots=True)
class SignUpdate:
    """Client stage: sign the update with the client's enrolled key.

    Put it last among the client stages (after any codec): the signature covers the body
    as sent. Sets the ``round_index``, ``base_version`` and ``signature`` headers.
    """

    identities: Mapping[int, DeviceIdentity]
    name: str = "sign"

    def __post_init__(self) -> None:
        if not isinstance(self.identities, Mapping):
            raise TypeError(f"identities must be a mapping, got {type(self.identities).__name__}")
        for cid, identity in self.identities.items():
            if not isinstance(identity, DeviceIdentity) or identity.client_id != cid:
                raise ValueError(f"identities[{cid!r}] is not client {cid!r}'s DeviceIdentity")

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """The envelope with its signature headers.

        Raises
        ------
        KeyError
            The client has no identity here (the client fails; nothing is sent).
        """
        identity = self.identities.get(envelope.client_id)
        if identity is None:
            raise KeyError(f"client {envelope.client_id} has no signing key")
        base = _server_base(context)
        run_id = str(context.expect_headers.get("run_id", ""))
        header = signed_header(
            client_id=envelope.client_id,
            round_index=context.round_index,
            base_version=base,
            num_examples=envelope.num_examples,
            body=envelope.body,
            run_id=run_id,
        )
        headers = {
            **envelope.headers,
            "round_index": context.round_index,
            "base_version": base,
            **({"run_id": run_id} if run_id else {}),
            SIGNATURE_HEADER: identity.sign(header.canonical()).hex(),
        }
        return replace(envelope, headers=headers)


@dataclass(frozen=True, slots=True)
class VerifySignature:
    """Server stage: refuse any update that is not signed by its enrolled client for
    this round and this global model (see the module docstring for the reasons).

    Parameters
    ----------
    registry : IdentityRegistry
        The enrolled device keys.
    required : bool
        Refuse unsigned updates (default). ``False`` lets unsigned updates pass (a fleet
        migrating to signed updates) but still refuses a bad signature.

    The stage remembers the last round it accepted from each client (a replay of an
    earlier round's signed update is refused); that memory is the stage's only state.
    """

    #: Judges the header and the payload hash only: it runs on an update a device holds
    #: for secure aggregation too (``Pipeline.receive_held``).
    metadata_only: ClassVar[bool] = True

    registry: IdentityRegistry
    required: bool = True
    name: str = "verify"
    verifier: UpdateVerifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.registry, IdentityRegistry):
            raise TypeError(f"registry must be an IdentityRegistry, got {self.registry!r}")
        if not isinstance(self.required, bool):
            raise TypeError(f"required must be a bool, got {self.required!r}")
        object.__setattr__(self, "verifier", UpdateVerifier(self.registry))

    def reset(self) -> None:
        """Forget the rounds accepted so far (a federation reset starts again at round 0;
        ``Federation.reset`` calls this)."""
        object.__setattr__(self, "verifier", UpdateVerifier(self.registry))

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Return ``envelope`` (its signature header removed) or raise ``UpdateRejected``."""
        headers = envelope.headers if isinstance(envelope.headers, Mapping) else {}
        signature = headers.get(SIGNATURE_HEADER)
        if signature is None:
            if self.required:
                raise UpdateRejected("unsigned update (this server requires signatures)")
            return envelope
        try:
            raw = bytes.fromhex(signature) if isinstance(signature, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 64:
            raise UpdateRejected("forged: the signature header is not a 64-byte hex signature")
        claimed_round: Any = headers.get("round_index")
        claimed_base = headers.get("base_version")
        if not is_int(claimed_round) or claimed_round < 0:
            raise UpdateRejected(
                f"signed update without a valid round_index header: {claimed_round!r}"
            )
        if not isinstance(claimed_base, str) or not claimed_base:
            raise UpdateRejected("signed update without a base_version header")
        cid, n = envelope.client_id, envelope.num_examples
        if not is_int(cid) or cid < 0 or not is_int(n) or n < 0:
            raise UpdateRejected(f"client_id {cid!r} / num_examples {n!r} are not ints >= 0")
        try:
            payload = payload_bytes(envelope.body)
            header = signed_header(
                client_id=int(cid),
                round_index=int(claimed_round),
                base_version=claimed_base,
                num_examples=int(n),
                body=envelope.body,
                run_id=str(headers.get("run_id", "")),
            )
        except (TypeError, ValueError) as exc:
            raise UpdateRejected(f"cannot check the signature: {exc}") from None
        verdict = self.verifier.verify(
            SignedUpdate(header, payload, raw),
            round_index=context.round_index,
            model_version=_server_base(context),
        )
        if not verdict.accepted:
            raise UpdateRejected(f"signature check: {verdict.reason}")
        rest = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
        return replace(envelope, headers=rest)
