"""The binary frame: exact sizes, lossless round trips, and a reader that refuses garbage
with one exception type and never allocates what a header claims."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlab.protocol import (
    FORMAT_VERSION,
    KIND_ENVELOPE,
    KIND_TASK,
    MAGIC,
    OptimizerSpec,
    ProtocolError,
    RoundTask,
    TrainPlan,
    UpdateEnvelope,
    decode,
    decode_envelope,
    decode_task,
    encode,
    encoded_size,
    pack_frame,
    unpack_frame,
)
from tests.protocol.conftest import DIGITS_SHAPES, FUZZ, small_envelope, small_task

TENSORS = st.lists(
    hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
        elements={"allow_nan": False, "allow_infinity": False},
    ),
    max_size=4,
)
TEXT = st.text(min_size=1, max_size=12)
NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def tasks(draw) -> RoundTask:
    plan = TrainPlan(
        epochs=draw(st.integers(1, 50)),
        batch_size=draw(st.integers(1, 512)),
        learning_rate=draw(st.floats(1e-6, 10.0)),
        optimizer=OptimizerSpec(
            name=draw(st.sampled_from(["sgd", "momentum", "adam"])),
            momentum=draw(st.floats(0.0, 0.99)),
        ),
        proximal_mu=draw(st.floats(0.0, 5.0)),
        seed=draw(st.integers(0, 2**40)),
    )
    inline = draw(st.booleans())
    return RoundTask(
        round_index=draw(st.integers(0, 10**6)),
        client_id=draw(st.integers(0, 10**6)),
        model_version=draw(TEXT),
        plan=plan,
        weights=tuple(draw(TENSORS)) if inline else None,
        weights_ref="" if inline else draw(TEXT),
        base_version="" if inline else "f" * 32,
        deadline=draw(st.floats(0.0, 4e9)),
    )


@st.composite
def envelopes(draw) -> UpdateEnvelope:
    opaque = draw(st.booleans())
    return UpdateEnvelope(
        client_id=draw(st.integers(0, 10**6)),
        device_id=draw(st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,10}\Z") | st.just("")),
        round_index=draw(st.integers(0, 10**6)),
        model_version=draw(TEXT),
        base_version=draw(TEXT),
        num_examples=draw(st.integers(0, 10**9)),
        num_steps=draw(st.integers(0, 10**6)),
        metrics=draw(st.dictionaries(TEXT, NUMBER, max_size=3)),
        headers=draw(st.dictionaries(TEXT, TEXT | st.integers() | st.booleans(), max_size=3)),
        body=draw(st.binary(max_size=64)) if opaque else tuple(draw(TENSORS)),
    )


@FUZZ
@given(obj=tasks() | envelopes())
def test_every_task_and_envelope_round_trips_in_exactly_encoded_size_bytes(obj) -> None:
    data = encode(obj)
    assert len(data) == encoded_size(obj)
    assert decode(data) == obj


def test_the_layout_is_the_documented_one() -> None:
    envelope = small_envelope()
    data = encode(envelope)
    magic, version, kind, flags, hlen, count, plen = struct.unpack_from("<4sHBBIIQ", data)
    assert (magic, version, kind, flags, count, plen) == (MAGIC, FORMAT_VERSION, 2, 0, 2, 0)
    header = json.loads(data[24 : 24 + hlen])
    assert header["num_examples"] == 20 and header["body"] == "tensors"
    at = 24 + hlen
    assert struct.unpack_from("<BBHII", data, at) == (2, 2, 0, 2, 3)  # f4, 2 dims: 2 x 3
    assert struct.unpack_from("<BBHI", data, at + 12) == (2, 1, 0, 3)
    at += 12 + 8
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", 6, at), 0.25)
    assert len(data) == at + 4 * 9 + 4
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


def test_the_digits_cnn_frames_have_these_exact_sizes() -> None:
    """The numbers quoted in the report: the 38,282-weight digits CNN (float32)."""
    weights = tuple(np.zeros(s, np.float32) for s in DIGITS_SHAPES)
    plan = TrainPlan(epochs=3, batch_size=16, learning_rate=0.1, seed=3)
    task = RoundTask(round_index=3, model_version="e" * 64, plan=plan, weights=weights)
    envelope = UpdateEnvelope(
        client_id=0,
        device_id="raspberry-pi-003",
        round_index=3,
        model_version=task.model_version,
        base_version=task.base_version,
        num_examples=120,
        num_steps=24,
        metrics={"train_loss": 0.43215678912345},
        body=weights,
    )
    tensors = sum(w.nbytes for w in weights)
    descriptors = sum(4 + 4 * len(s) for s in DIGITS_SHAPES)
    assert (tensors, descriptors) == (153_128, 96)
    for obj, header in ((task, 365), (envelope, 301)):
        assert len(encode(obj)) == encoded_size(obj) == 28 + header + descriptors + tensors
    assert encoded_size(envelope) == 153_553 and encoded_size(task) == 153_617


def test_decode_refuses_the_wrong_kind_and_non_bytes() -> None:
    with pytest.raises(ProtocolError, match="expected a round task, got an update envelope"):
        decode_task(encode(small_envelope()))
    with pytest.raises(ProtocolError, match="expected an update envelope, got a round task"):
        decode_envelope(encode(small_task()))
    with pytest.raises(ProtocolError, match="a frame is bytes, got str"):
        decode("FLAB")  # type: ignore[arg-type]


def test_every_single_byte_flip_is_refused() -> None:
    """CRC-32 detects every burst of up to 32 bits: no flip of any byte is accepted."""
    for original in (encode(small_task()), encode(small_envelope())):
        for at in range(len(original)):
            for xor in (0x01, 0x80, 0xFF):
                raw = bytearray(original)
                raw[at] ^= xor
                with pytest.raises(ProtocolError):
                    decode(bytes(raw))


@FUZZ
@given(obj=tasks() | envelopes(), data=st.data())
def test_random_byte_flips_and_truncations_are_refused(obj, data) -> None:
    original = encode(obj)
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        raw[data.draw(st.integers(0, len(raw) - 1), label="at")] ^= data.draw(st.integers(1, 255))
    if bytes(raw) != original:
        with pytest.raises(ProtocolError):
            decode(bytes(raw))
    cut = data.draw(st.integers(0, len(original) - 1), label="length")
    with pytest.raises(ProtocolError):
        decode(original[:cut])
    with pytest.raises(ProtocolError, match="sizes do not add up|checksum"):
        decode(original + b"\x00")


@FUZZ
@given(raw=st.binary(max_size=200))
def test_random_bytes_are_refused(raw) -> None:
    with pytest.raises(ProtocolError):
        decode(raw)
    with pytest.raises(ProtocolError):
        decode(MAGIC + raw)


def seal(body: bytes) -> bytes:
    """A frame body with a correct CRC: what a hostile writer (not a damaged file) sends."""
    return body + struct.pack("<I", zlib.crc32(body))


@FUZZ
@given(
    version=st.integers(0, 3),
    kind=st.integers(0, 3),
    flags=st.integers(0, 2),
    hlen=st.integers(0, 2**32 - 1) | st.integers(0, 80),
    count=st.integers(0, 2**32 - 1) | st.integers(0, 4),
    plen=st.integers(0, 2**64 - 1) | st.integers(0, 16),
    tail=st.binary(max_size=120),
)
def test_random_prefixes_with_a_valid_checksum_are_refused_or_decoded(
    version, kind, flags, hlen, count, plen, tail
) -> None:
    body = struct.pack("<4sHBBIIQ", MAGIC, version, kind, flags, hlen, count, plen) + tail
    try:
        obj = decode(seal(body))
    except ProtocolError:
        return
    assert isinstance(obj, RoundTask | UpdateEnvelope)  # then every field was valid


@FUZZ
@given(
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=8),
    code=st.integers(0, 4),
    reserved=st.integers(0, 1),
)
def test_random_descriptors_with_a_valid_checksum_are_refused_or_decoded(
    dims, code, reserved
) -> None:
    good = encode(small_envelope())
    _, _, _, _, hlen, _, _ = struct.unpack_from("<4sHBBIIQ", good)
    head = good[24 : 24 + hlen]
    descriptor = struct.pack(f"<BBH{len(dims)}I", code, len(dims), reserved, *dims)
    body = struct.pack("<4sHBBIIQ", MAGIC, 1, KIND_ENVELOPE, 0, hlen, 1, 0) + head + descriptor
    body += b"\x00" * 24  # room for a (2, 3) float32 tensor
    try:
        obj = decode(seal(body))
    except ProtocolError:
        return
    assert isinstance(obj, UpdateEnvelope) and obj.nbytes == 24


def test_a_frame_claiming_huge_tensors_is_refused_without_allocating_them() -> None:
    good = encode(small_envelope())
    _, _, _, _, hlen, _, _ = struct.unpack_from("<4sHBBIIQ", good)
    head = good[24 : 24 + hlen]
    huge = struct.pack("<BBH3I", 3, 3, 0, 2**32 - 1, 2**32 - 1, 2**32 - 1)  # 6e29 bytes
    body = struct.pack("<4sHBBIIQ", MAGIC, 1, KIND_ENVELOPE, 0, hlen, 1, 0) + head + huge
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="sizes do not add up: the descriptors claim"):
            decode(seal(body + b"\x00" * 64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    many = struct.pack("<4sHBBIIQ", MAGIC, 1, KIND_TASK, 0, 2, 2**32 - 1, 0) + b"{}"
    with pytest.raises(ProtocolError, match="truncated or damaged: the prefix declares"):
        decode(seal(many))
    payload = struct.pack("<4sHBBIIQ", MAGIC, 1, KIND_ENVELOPE, 0, 2, 0, 2**64 - 1) + b"{}"
    with pytest.raises(ProtocolError, match="truncated or damaged"):
        decode(seal(payload))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | NUMBER | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(
    kind=st.sampled_from([KIND_TASK, KIND_ENVELOPE]),
    changes=st.dictionaries(
        st.sampled_from(
            [
                "round_index",
                "client_id",
                "model_version",
                "base_version",
                "weights_ref",
                "deadline",
                "plan",
                "num_examples",
                "num_steps",
                "metrics",
                "headers",
                "body",
                "device_id",
            ]
        )
        | st.text(max_size=6),
        JSON,
        max_size=3,
    ),
    header=JSON,
)
def test_random_headers_are_refused_or_decoded_never_a_crash(kind, changes, header) -> None:
    source = small_task() if kind == KIND_TASK else small_envelope()
    frame = unpack_frame(encode(source))
    for candidate in ({**frame.header, **changes}, header):
        try:
            obj = decode(pack_frame(kind, candidate, frame.tensors, frame.payload))
        except ProtocolError as exc:
            assert str(exc)
            continue
        assert type(obj) is type(source)
        assert encoded_size(obj) == len(encode(obj))


def test_duplicate_keys_and_nonstandard_json_are_refused() -> None:
    frame = unpack_frame(encode(small_envelope()))
    text = json.dumps(frame.header)[:-1] + ', "num_examples": 1}'
    body = struct.pack("<4sHBBIIQ", MAGIC, 1, KIND_ENVELOPE, 0, len(text), 0, 0) + text.encode()
    with pytest.raises(ProtocolError, match="header repeats the key 'num_examples'"):
        decode(seal(body))
    bad = b"\xff\xfe{}"
    body = struct.pack("<4sHBBIIQ", MAGIC, 1, KIND_TASK, 0, len(bad), 0, 0) + bad
    with pytest.raises(ProtocolError, match="header is not valid JSON"):
        decode(seal(body))
    with pytest.raises(ValueError, match="header is not plain JSON"):
        pack_frame(KIND_TASK, {"x": float("nan")})


def test_a_run_id_travels_with_the_task_and_is_echoed_by_the_update() -> None:
    import numpy as np

    from fedlab.protocol import (
        ProtocolError,
        RoundTask,
        TrainPlan,
        UpdateEnvelope,
        decode_task,
        encode,
    )

    plan = TrainPlan(epochs=1, batch_size=2, learning_rate=0.1)
    weights = (np.ones(3, np.float32),)
    plain = RoundTask(round_index=0, model_version="m", plan=plan, weights=weights)
    tagged = RoundTask(round_index=0, model_version="m", plan=plan, weights=weights, run_id="r-1")
    assert decode_task(encode(tagged)).run_id == "r-1"
    assert b"run_id" not in encode(plain)  # frames without a run keep their old bytes
    assert tagged.expect_headers()["run_id"] == "r-1" and "run_id" not in plain.expect_headers()

    class Update:
        client_id, delta, num_examples, num_steps, metrics = 0, weights, 3, 1, {}

    envelope = UpdateEnvelope.from_client_update(Update(), tagged)
    assert envelope.engine_fields()["headers"]["run_id"] == "r-1"
    from fedlab.protocol import KIND_TASK, pack_frame
    from fedlab.protocol.wire import _task_header

    bad = pack_frame(KIND_TASK, {**_task_header(tagged), "run_id": "../x"}, weights, b"")
    with pytest.raises(ProtocolError, match="run_id must be empty or"):
        decode_task(bad)  # a well-formed frame (CRC fine) with a bad run id
