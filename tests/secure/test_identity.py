"""Signed updates: accepted when genuine, refused with the reason otherwise; sealing."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedlab.secure import (
    DeviceIdentity,
    IdentityRegistry,
    SealError,
    SignedUpdate,
    UpdateVerifier,
    open_sealed,
    seal,
)
from fedlab.secure.seal import public_bytes

V1, V2 = "a" * 64, "b" * 64


@pytest.fixture
def fleet():
    ids = {c: DeviceIdentity.generate(c) for c in (1, 2, 3)}
    registry = IdentityRegistry()
    for c, ident in ids.items():
        registry.enrol(c, ident.public_bytes)
    return ids, UpdateVerifier(registry, max_examples=1000)


def signed(ident, round_index=5, version=V1, n=10, payload=b"update bytes"):
    return ident.sign_update(
        round_index=round_index, model_version=version, num_examples=n, payload=payload
    )


def test_a_genuine_update_is_accepted_once(fleet):
    ids, verifier = fleet
    u = signed(ids[1])
    assert verifier.verify(u, round_index=5, model_version=V1).accepted
    assert verifier.last_accepted_round(1) == 5
    again = verifier.verify(u, round_index=5, model_version=V1)
    assert not again.accepted and again.reason.startswith("replayed")


def tamper(u: SignedUpdate, **header) -> SignedUpdate:
    return dataclasses.replace(u, header=dataclasses.replace(u.header, **header))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda ids: dataclasses.replace(signed(ids[1]), signature=None), "unsigned"),
        (lambda ids: dataclasses.replace(signed(ids[1]), signature=b""), "unsigned"),
        (lambda ids: signed(DeviceIdentity.generate(9)), "unknown client 9"),
        (lambda ids: signed(DeviceIdentity.generate(1)), "forged: signature"),
        (lambda ids: tamper(signed(ids[1]), num_examples=999), "forged: signature"),
        (lambda ids: tamper(signed(ids[1]), client_id=2), "forged: signature"),
        (lambda ids: dataclasses.replace(signed(ids[1]), payload=b"other"), "forged: payload"),
        (lambda ids: signed(ids[1], round_index=6), "cross-round: signed for round 6, this is 5"),
        (lambda ids: signed(ids[1], round_index=4), "cross-round: signed for round 4"),
        (lambda ids: signed(ids[1], version=V2), "wrong model version"),
        (lambda ids: signed(ids[1], n=5000), "num_examples 5000 above the cap 1000"),
        (lambda ids: "not an update", "malformed"),
    ],
)
def test_bad_updates_are_refused_with_the_reason_and_cost_nothing_else(fleet, make, reason):
    ids, verifier = fleet
    verdict = verifier.verify(make(ids), round_index=5, model_version=V1)
    assert not verdict.accepted and verdict.reason.startswith(reason), verdict.reason
    # the refusal recorded nothing: every genuine update is still accepted
    for c in (1, 2, 3):
        assert verifier.verify(signed(ids[c]), round_index=5, model_version=V1).accepted


def test_an_earlier_round_replayed_later_is_a_replay(fleet):
    ids, verifier = fleet
    old = signed(ids[2], round_index=3)
    assert verifier.verify(old, round_index=3, model_version=V1).accepted
    v = verifier.verify(old, round_index=5, model_version=V1)
    assert v.reason == (
        "replayed: signed for round 3, and client 2 already had an update accepted for round 3"
    )


def test_verify_many_judges_each_update_on_its_own(fleet):
    ids, verifier = fleet
    good = [signed(ids[1]), signed(ids[2])]
    bad = [signed(ids[1]), signed(DeviceIdentity.generate(7))]
    accepted, refused = verifier.verify_many(
        [good[0], bad[0], good[1], bad[1]], round_index=5, model_version=V1
    )
    assert accepted == good
    assert [(v.client_id, v.reason.split(":")[0]) for v in refused] == [
        (1, "replayed"),
        (7, "unknown client 7"),
    ]


def test_registry_round_trips_and_refuses_silent_rekeying():
    ident = DeviceIdentity.generate(4)
    reg = IdentityRegistry()
    reg.enrol(4, ident.public_bytes)
    assert IdentityRegistry.from_dict(reg.to_dict()).to_dict() == reg.to_dict()
    with pytest.raises(ValueError, match="already enrolled"):
        reg.enrol(4, DeviceIdentity.generate(4).public_bytes)
    reg.revoke(4)
    assert 4 not in reg
    with pytest.raises(ValueError, match="-1"):
        reg.enrol(-1, ident.public_bytes)
    with pytest.raises(ValueError, match="32 raw bytes"):
        reg.enrol(5, b"short")
    same = DeviceIdentity.from_private_bytes(4, ident.private_bytes())
    assert same.public_bytes == ident.public_bytes


def test_sealed_payload_opens_only_with_the_aggregator_key_and_header():
    aggregator = X25519PrivateKey.generate()
    header = b"round 5 client 1"
    blob = seal(b"secret update", public_bytes(aggregator), aad=header)
    assert len(blob) == len(b"secret update") + 48 and b"secret" not in blob
    assert open_sealed(blob, aggregator, aad=header) == b"secret update"
    with pytest.raises(SealError, match="does not open"):
        open_sealed(blob, X25519PrivateKey.generate(), aad=header)
    with pytest.raises(SealError, match="does not open"):
        open_sealed(blob, aggregator, aad=b"round 6 client 1")
    flipped = blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]
    with pytest.raises(SealError, match="does not open"):
        open_sealed(flipped, aggregator, aad=header)
    with pytest.raises(SealError, match="too short"):
        open_sealed(b"x" * 10, aggregator)
