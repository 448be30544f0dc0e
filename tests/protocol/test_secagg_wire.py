"""The secure-aggregation stage messages on the wire: exact round trips, and hostile
frames refused with one ProtocolError (never another exception, never a half-read message)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab.protocol import ProtocolError, decode, pack_frame, unpack_frame
from fedlab.protocol.secagg import (
    SecAggRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from fedlab.protocol.wire import KIND_SECAGG
from fedlab.secure import (
    ADVERTISE,
    MASKED_INPUT,
    SHARE,
    UNMASK,
    DeviceIdentity,
    KeyBroadcast,
    RoundSetup,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
)


def _setup(n: int = 4, dimension: int = 7) -> RoundSetup:
    return RoundSetup.create(
        SecAggConfig(threshold=2, clip=1.0, max_examples=20),
        round_index=5,
        cohort=range(n),
        dimension=dimension,
        seed=b"s" * 32,
    )


def _play(setup: RoundSetup):
    """One full round; every request and reply the wire would carry."""
    rng = np.random.default_rng(0)
    ids = {c: DeviceIdentity.generate(c) for c in setup.cohort}
    clients = {c: SecAggClient(setup, c, identity=ids[c]) for c in setup.cohort}
    server = SecAggServer(setup)
    frames: list[tuple[str, SecAggRequest, object]] = []
    inbox: dict = dict.fromkeys(setup.cohort)
    for stage, act, collect in (
        (ADVERTISE, lambda cl, _: cl.advertise_keys(), server.receive_advertisements),
        (SHARE, lambda cl, b: cl.share_keys(b), server.receive_shares),
        (
            MASKED_INPUT,
            lambda cl, d: cl.masked_input(d, rng.normal(0, 0.1, setup.dimension), 10),
            server.receive_masked_inputs,
        ),
        (UNMASK, lambda cl, r: cl.unmask(r), server.receive_unmask_responses),
    ):
        replies = []
        for c, body in inbox.items():
            req = SecAggRequest(stage, setup, c, body)
            reply = act(clients[c], body)
            frames.append((stage, req, reply))
            replies.append(reply)
        inbox = collect(replies)
    return frames, inbox


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(
            _same(getattr(a, k), getattr(b, k)) for k in a.__dataclass_fields__
        )
    return a == b


def test_every_stage_message_round_trips_exactly():
    setup = _setup()
    frames, result = _play(setup)
    assert len(frames) == 16
    for stage, req, reply in frames:
        assert _same(decode_request(encode_request(req)), req), stage
        assert _same(decode_reply(encode_reply(reply), setup, stage=stage), reply), stage
    assert result.contributors == (0, 1, 2, 3)


def test_a_masked_input_costs_its_ring_words_plus_a_small_header():
    setup = _setup(dimension=10_000)
    frames, _ = _play(setup)
    masked = [r for s, _, r in frames if s == MASKED_INPUT]
    size = len(encode_reply(masked[0]))
    assert 4 * 10_001 < size < 4 * 10_001 + 200


@pytest.fixture(scope="module")
def played():
    setup = _setup()
    frames, _ = _play(setup)
    return setup, frames


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_byte_flip_or_truncation_is_one_protocol_error(played, data):
    setup, frames = played
    stage, req, reply = data.draw(st.sampled_from(frames))
    raw = bytearray(data.draw(st.sampled_from([encode_request(req), encode_reply(reply)])))
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    else:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    with pytest.raises(ProtocolError):
        if data.draw(st.booleans()):
            decode_request(bytes(raw))
        else:
            decode_reply(bytes(raw), setup, stage=stage)


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("request", "stage"), "steal", "not one of"),
        (("request", "client_id"), -1, "client_id"),
        (("request", "client_id"), 99, "not in the round's cohort"),
        (("request", "setup", "seed"), "zz", "setup is invalid"),
        (("request", "setup", "config"), {"threshold": 2}, "setup is invalid"),
        (("request", "setup", "dimension"), "7", "setup is invalid"),
        (("request",), "nothing", "expected a secure-aggregation request"),
        (("parts",), "x", "'parts' must be a list"),
        (("parts", 0), ["cohort", 99, 8], "runs past the payload"),
        (("parts", 0), ["cohort", 1, 8], "no part accounts for"),
        (("parts", 1), ["key_ids", 3, 7], "items of 7 bytes"),
        (("parts", 1), ["evil", 3, 8], "unexpected or repeated"),
        (("parts", 1), ["cohort", 3, 8], "unexpected or repeated"),
        (("parts", 1), ["key_ids", 3], "is not \\[name, count, size\\]"),
    ],
)
def test_forged_request_fields_are_refused_with_the_field_named(played, path, value, why):
    _, frames = played
    req = next(r for s, r, _ in frames if s == SHARE)
    frame = unpack_frame(encode_request(req))
    header = json.loads(json.dumps(frame.header))
    node = header
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ProtocolError, match=why):
        decode_request(pack_frame(KIND_SECAGG, header, payload=frame.payload))


def test_a_forged_payload_is_refused(played):
    _, frames = played
    req = next(r for s, r, _ in frames if s == SHARE)
    frame = unpack_frame(encode_request(req))
    twice = frame.payload[:8] * 2 + frame.payload[16:]  # cohort [0, 0, 2, 3]
    with pytest.raises(ProtocolError, match="distinct"):
        decode_request(pack_frame(KIND_SECAGG, frame.header, payload=twice))
    header = json.loads(json.dumps(frame.header))
    header["parts"][1][1] += 1  # one more key id than keys
    extra = frame.payload[:32] + frame.payload[24:32] + frame.payload[32:]
    with pytest.raises(ProtocolError, match="pair up"):
        decode_request(pack_frame(KIND_SECAGG, header, payload=extra))


def test_a_reply_for_another_stage_or_of_the_wrong_size_is_refused(played):
    setup, frames = played
    masked = next(r for s, _, r in frames if s == MASKED_INPUT)
    frame = encode_reply(masked)
    with pytest.raises(ProtocolError, match="expected a unmask reply"):
        decode_reply(frame, setup, stage=UNMASK)
    with pytest.raises(ProtocolError, match="masked payload"):
        decode_reply(frame, _setup(dimension=8), stage=MASKED_INPUT)
    advert = unpack_frame(encode_reply(next(r for s, _, r in frames if s == ADVERTISE)))
    short = {**advert.header, "parts": [["keys", 1, 63], ["signature", 1, 64]]}
    with pytest.raises(ProtocolError, match="items of 63 bytes, expected 64"):
        decode_reply(
            pack_frame(KIND_SECAGG, short, payload=advert.payload[1:]), setup, stage=ADVERTISE
        )
    with pytest.raises(ProtocolError, match="no part accounts for"):
        decode_reply(
            pack_frame(KIND_SECAGG, advert.header, payload=advert.payload + b"x"),
            setup,
            stage=ADVERTISE,
        )


def test_headers_stay_small_for_large_cohorts():
    # The complete graph of 400 clients: every list and share travels in the payload.
    setup = RoundSetup.create(
        SecAggConfig(threshold=201, clip=1.0), round_index=0, cohort=range(400), dimension=10
    )
    clients = {c: SecAggClient(setup, c) for c in (0, 1)}
    adverts = {c: cl.advertise_keys() for c, cl in clients.items()}
    keys = {j: (adverts[j % 2].cipher_key, adverts[j % 2].mask_key) for j in range(1, 400)}
    req = SecAggRequest(SHARE, setup, 0, KeyBroadcast(0, keys))
    frame = encode_request(req)
    assert len(json.dumps(unpack_frame(frame).header)) < 4096
    back = decode_request(frame)
    assert back.body == req.body and back.setup == setup


def test_generic_decode_refuses_a_secagg_frame(played):
    _, frames = played
    with pytest.raises(ProtocolError, match="secure-aggregation message"):
        decode(encode_request(frames[0][1]))
