"""Signed updates through the round engine: a forged, replayed, cross-round, unknown or
unsigned update is refused with its reason and costs nobody else (numpy runtime, no TF)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from fedlab.federated import Federation
from fedlab.federated.authenticate import SignUpdate, VerifySignature
from fedlab.federated.stages import Pipeline, StageContext
from fedlab.federated.types import Envelope, UpdateRejected
from fedlab.protocol import RoundTask, UpdateEnvelope, decode_envelope, encode, weights_version
from fedlab.protocol.signing import SIGNATURE_HEADER, payload_sha256, sign_envelope
from fedlab.secure.identity import DeviceIdentity, IdentityRegistry
from tests.federated.test_dispatch import CFG, SHAPES, NumpyRuntime, tiny_fleet

N = 12


@pytest.fixture(scope="module")
def identities() -> dict[int, DeviceIdentity]:
    return {c: DeviceIdentity.generate(c) for c in range(N)}


def registry_of(identities: dict[int, DeviceIdentity], skip: tuple[int, ...] = ()):
    reg = IdentityRegistry()
    for cid, identity in identities.items():
        if cid not in skip:
            reg.enrol(cid, identity.public_bytes)
    return reg


@dataclass(frozen=True)
class Tamper:
    """A client stage after signing: a man in the middle (or a lying client)."""

    victim: int
    what: str
    name: str = "tamper"

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        if envelope.client_id != self.victim:
            return envelope
        if self.what == "body":
            body = tuple(np.asarray(a) * 2 for a in envelope.body)
            return replace(envelope, body=body)
        if self.what == "examples":
            return replace(envelope, num_examples=envelope.num_examples * 100)
        if self.what == "unsigned":
            headers = {k: v for k, v in envelope.headers.items() if k != SIGNATURE_HEADER}
            return replace(envelope, headers=headers)
        raise AssertionError(self.what)


def run(pipeline: Pipeline, rounds: int = 2) -> Federation:
    cfg = replace(CFG, clients_per_round=N)
    fed = Federation(data=tiny_fleet(N), runtime=NumpyRuntime(), config=cfg, pipeline=pipeline)
    fed.run(rounds)
    return fed


def test_signed_rounds_equal_unsigned_ones(identities) -> None:
    signed = run(
        Pipeline(
            client=(SignUpdate(identities),),
            server=(VerifySignature(registry_of(identities)),),
        )
    )
    plain = run(Pipeline())
    assert all(len(r.completed) == N and not r.rejected for r in signed.history)
    assert [w.tobytes() for w in signed.weights] == [w.tobytes() for w in plain.weights]
    assert dict(signed.history[-1].stage_bytes) == dict(plain.history[-1].stage_bytes) | {
        "sign": dict(plain.history[-1].stage_bytes)["update"]
    }


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        ("body", "forged: signature does not verify"),
        ("examples", "forged: signature does not verify"),
        ("unsigned", "unsigned update"),
    ],
)
def test_a_tampered_update_is_refused_and_costs_nobody_else(identities, what, reason) -> None:
    fed = run(
        Pipeline(
            client=(SignUpdate(identities), Tamper(victim=4, what=what)),
            server=(VerifySignature(registry_of(identities)),),
        ),
        rounds=1,
    )
    result = fed.history[-1]
    ((cid, why),) = result.rejected
    assert cid == 4 and reason in why
    assert dict(result.stage_rejections) == {"verify": 1}
    assert len(result.completed) == N - 1


def test_an_unknown_client_is_refused(identities) -> None:
    fed = run(
        Pipeline(
            client=(SignUpdate(identities),),
            server=(VerifySignature(registry_of(identities, skip=(7,))),),
        ),
        rounds=1,
    )
    ((cid, why),) = fed.history[-1].rejected
    assert cid == 7 and "unknown client 7" in why


def test_unsigned_updates_pass_only_when_not_required(identities) -> None:
    fed = run(Pipeline(server=(VerifySignature(registry_of(identities), required=False),)), 1)
    assert len(fed.history[-1].completed) == N


def _context(round_index: int, weights) -> StageContext:
    return StageContext(
        round_index=round_index, weight_shapes=tuple(w.shape for w in weights), weights=weights
    )


def test_replayed_cross_round_and_wrong_model_updates(identities) -> None:
    weights = tuple(np.ones(s, np.float32) for s in SHAPES)
    other = tuple(np.zeros(s, np.float32) for s in SHAPES)
    sign = SignUpdate(identities)
    verify = VerifySignature(registry_of(identities))
    body = tuple(np.full(s, 0.1, np.float32) for s in SHAPES)
    env = sign.apply(Envelope(client_id=1, num_examples=5, body=body), _context(0, weights))
    assert verify.apply(env, _context(0, weights)).headers.get(SIGNATURE_HEADER) is None
    with pytest.raises(UpdateRejected, match="replayed: signed for round 0"):
        verify.apply(env, _context(1, weights))  # the same signed update again, next round
    later = sign.apply(Envelope(client_id=1, num_examples=5, body=body), _context(3, weights))
    with pytest.raises(UpdateRejected, match="cross-round: signed for round 3, this is 2"):
        verify.apply(later, _context(2, weights))
    stale = sign.apply(Envelope(client_id=2, num_examples=5, body=body), _context(2, other))
    with pytest.raises(UpdateRejected, match="wrong model version"):
        verify.apply(stale, _context(2, weights))
    garbage = replace(env, headers={**env.headers, SIGNATURE_HEADER: "zz"})
    with pytest.raises(UpdateRejected, match="not a 64-byte hex signature"):
        verify.apply(garbage, _context(5, weights))
    # a refusal changes nothing: client 2's genuine update for round 2 is still accepted
    good = sign.apply(Envelope(client_id=2, num_examples=5, body=body), _context(2, weights))
    verify.apply(good, _context(2, weights))


def test_a_device_signed_envelope_survives_the_wire(identities) -> None:
    weights = tuple(np.ones(s, np.float32) for s in SHAPES)
    task = RoundTask.from_client_plan(
        type(
            "Plan",
            (),
            dict(
                client_id=3,
                round_index=4,
                epochs=1,
                batch_size=8,
                learning_rate=0.1,
                optimizer="sgd",
                momentum=0.0,
                proximal_mu=0.0,
                seed=1,
            ),
        )(),
        model_version="kit-v1",
        weights=weights,
    )
    device = UpdateEnvelope(
        client_id=3,
        round_index=4,
        model_version="kit-v1",
        base_version=task.base_version,
        num_examples=9,
        body=tuple(np.full(s, -0.2, np.float32) for s in SHAPES),
        device_id="pi-3",
    )
    signed = sign_envelope(device, identities[3])
    arrived = Envelope(**decode_envelope(encode(signed)).engine_fields())
    context = replace(_context(4, weights), expect_headers=task.expect_headers())
    assert task.base_version == weights_version(weights)
    VerifySignature(registry_of(identities)).apply(arrived, context)
    with pytest.raises(ValueError, match="cannot sign an update of client 3"):
        sign_envelope(device, identities[4])
    assert payload_sha256(device.body) == payload_sha256(arrived.body)
    assert payload_sha256(b"x") != payload_sha256((np.frombuffer(b"x", np.uint8),))


def test_constructors_are_strict(identities) -> None:
    with pytest.raises(TypeError, match="IdentityRegistry"):
        VerifySignature({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identities\\[1\\]"):
        SignUpdate({1: identities[2]})
    with pytest.raises(KeyError, match="no signing key"):
        SignUpdate({}).apply(
            Envelope(client_id=0, num_examples=1, body=(np.zeros(3, np.float32),)),
            _context(0, (np.zeros(3, np.float32),)),
        )


def test_the_run_id_is_signed_and_a_reset_forgets_the_accepted_rounds(identities) -> None:
    weights = tuple(np.ones(s, np.float32) for s in SHAPES)
    body = tuple(np.full(s, 0.1, np.float32) for s in SHAPES)
    run_a = replace(_context(0, weights), expect_headers={"run_id": "run-a"})
    signed = SignUpdate(identities).apply(Envelope(client_id=1, num_examples=5, body=body), run_a)
    assert signed.headers["run_id"] == "run-a"
    # copied into another run (its header edited to match): the signature no longer verifies
    moved = replace(signed, headers={**signed.headers, "run_id": "run-b"})
    verify = VerifySignature(registry_of(identities))
    with pytest.raises(UpdateRejected, match="forged"):
        verify.apply(moved, replace(run_a, expect_headers={"run_id": "run-b"}))
    verify.apply(signed, run_a)
    with pytest.raises(UpdateRejected, match="replayed"):
        verify.apply(signed, run_a)
    verify.reset()  # what Federation.reset() calls: a fresh run starts at round 0 again
    verify.apply(signed, run_a)


def test_a_federation_reset_resets_the_verifiers_memory(identities) -> None:
    pipeline = Pipeline(
        client=(SignUpdate(identities),), server=(VerifySignature(registry_of(identities)),)
    )
    fed = run(pipeline, rounds=2)
    fed.reset()
    fed.run(1)
    assert len(fed.history[-1].completed) == N and not fed.history[-1].rejected
