"""The decoders never crash on garbage: any malformed input is one CodecError.

Hypothesis runs derandomized with a bounded number of examples (``FUZZ``). Mutations are
tried twice: as they arrive (the checksum must catch them) and *resealed* with a valid
checksum, which is what drives the fuzzer into every parser behind it.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlab.codec import (
    QSGD,
    CodecError,
    CodecState,
    ErrorFeedback,
    ModelDelta,
    RandomK,
    Sign,
    Ternary,
    TopK,
    Zlib,
    chain,
    decode,
)
from fedlab.protocol.container import KIND_UPDATE, MAGIC, WIRE_VERSION, config_bytes, pack_container

from .conftest import FUZZ, SHAPES, SMALL, codecs, update

CODECS = codecs()
NAMES = sorted(CODECS)
PAYLOADS = {
    name: codec.encode(update(SMALL, seed=2), codec.init_state(seed=1))[0]
    for name, codec in CODECS.items()
}
BASE = update(SMALL, seed=4, scale=0.3)
DELTAS = {
    "lossless": (ModelDelta(), ModelDelta().encode(update(SMALL, seed=5), BASE)),
    "lossy": (
        ModelDelta(chain(TopK(0.5), QSGD(bits=4), Zlib())),
        ModelDelta(chain(TopK(0.5), QSGD(bits=4), Zlib())).encode(update(SMALL, seed=5), BASE),
    ),
}


def reseal(data: bytes) -> bytes:
    """``data`` with its last four bytes replaced by a valid checksum of the rest."""
    body = data[:-4] if len(data) >= 4 else data
    return body + struct.pack("<I", zlib.crc32(body))


def judge(decoder, payload: bytes, shapes) -> str:
    """``"rejected"`` for a CodecError; otherwise the output must be a valid update.
    (``shapes`` may be a model: a downlink decoder's base.)"""
    arg = shapes
    if shapes is BASE:
        shapes = [a.shape for a in BASE]
    try:
        out = decoder(payload, arg)
    except CodecError as exc:
        assert str(exc)  # a clear message, never empty
        return "rejected"
    assert [a.shape for a in out] == [tuple(s) for s in shapes]
    assert all(a.dtype == np.float32 and np.all(np.isfinite(a)) for a in out)
    return "accepted"


def decoders(name: str):
    codec = CODECS[name]
    return (codec.decode, decode)


def flipped(payload: bytes, flips) -> bytes:
    data = bytearray(payload)
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    return bytes(data)


FLIPS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
    min_size=1,
    max_size=4,
    unique_by=lambda f: f[0],
)


@FUZZ
@given(name=st.sampled_from(NAMES), flips=FLIPS)
def test_flipped_bytes_are_caught_by_the_checksum(name: str, flips) -> None:
    bad = flipped(PAYLOADS[name], flips)
    if bad == PAYLOADS[name]:
        return  # positions that collided and cancelled out
    for decoder in decoders(name):
        assert judge(decoder, bad, SMALL) == "rejected"


@FUZZ
@given(name=st.sampled_from(NAMES), flips=FLIPS)
def test_resealed_flipped_bytes_are_rejected_or_decode_to_a_valid_update(name, flips) -> None:
    bad = reseal(flipped(PAYLOADS[name], flips))
    for decoder in decoders(name):
        judge(decoder, bad, SMALL)


@FUZZ
@given(name=st.sampled_from(NAMES), cut=st.integers(0, 10**6), resealed=st.booleans())
def test_truncated_payloads_are_rejected(name: str, cut: int, resealed: bool) -> None:
    payload = PAYLOADS[name]
    short = payload[: cut % len(payload)]
    if resealed:
        short = reseal(short)
    for decoder in decoders(name):
        # A resealed cut can only be "valid" if it removed nothing but the old checksum.
        assert judge(decoder, short, SMALL) == "rejected"


@FUZZ
@given(name=st.sampled_from(NAMES), body=st.binary(max_size=400))
def test_a_valid_header_with_a_random_body_is_rejected_or_valid(name: str, body: bytes) -> None:
    codec = CODECS[name]
    inner = getattr(codec, "codec", codec)
    config = config_bytes([s.get_config() for s in chain(inner).stages])
    payload = pack_container(KIND_UPDATE, config, SMALL, body)
    for decoder in decoders(name):
        judge(decoder, payload, SMALL)


@FUZZ
@given(data=st.binary(max_size=600), framed=st.booleans())
def test_random_bytes_are_rejected(data: bytes, framed: bool) -> None:
    if framed:  # the right magic, version and kind, a valid checksum, then garbage
        data = reseal(MAGIC + bytes((WIRE_VERSION, KIND_UPDATE)) + data + b"\0\0\0\0")
    for name in ("float32", "topk+qsgd4+zlib"):
        for decoder in decoders(name):
            judge(decoder, data, SMALL)
    for delta, _ in DELTAS.values():
        judge(delta.decode, data, BASE)


@FUZZ
@given(mode=st.sampled_from(sorted(DELTAS)), flips=FLIPS, resealed=st.booleans())
def test_downlink_decoder_rejects_damage(mode: str, flips, resealed: bool) -> None:
    delta, payload = DELTAS[mode]
    bad = flipped(payload, flips)
    if resealed:
        bad = reseal(bad)
    outcome = judge(delta.decode, bad, BASE)
    if not resealed and bad != payload:
        assert outcome == "rejected"


@FUZZ
@given(
    config=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    )
)
def test_generic_decoder_rejects_any_other_codec_config(config) -> None:
    import json

    raw = json.dumps(config).encode()
    payload = pack_container(KIND_UPDATE, raw, SMALL, b"")
    judge(decode, payload, SMALL)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 3000 + b"]" * 3000,  # nesting deeper than the JSON parser's recursion limit
        b'[{"name":"chain","stages":[]}]',  # a chain inside a chain
        b'[{"name":"zlib","level":9},{"name":"topk","ratio":0.1,"index":"auto"}]',  # order
        b'[{"name": "sign"}]',  # valid but not canonical
        b"\xff\xfe",
    ],
)
def test_generic_decoder_rejects_crafted_configs(raw: bytes) -> None:
    from fedlab.protocol.container import MAX_CONFIG_BYTES

    if len(raw) > MAX_CONFIG_BYTES:  # too long to pack: write the frame by hand
        head = MAGIC + bytes((WIRE_VERSION, KIND_UPDATE, 0x80 | 0x7F, 0x7F, 0))
        payload = reseal(head + b"\0\0\0\0")
    else:
        payload = pack_container(KIND_UPDATE, raw, SMALL, b"")
    with pytest.raises(CodecError):
        decode(payload, SMALL)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except CodecError:
        pass
    else:
        raise AssertionError("expected a CodecError")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


HUGE = ((2**31 - 1,), (2**31 - 1,))


@pytest.mark.parametrize(
    "codec",
    [chain(), TopK(0.5), RandomK(0.5), QSGD(bits=4), Ternary(), Sign(), chain(Zlib())],
    ids=lambda c: str(c.get_config()),
)
def test_huge_declared_sizes_do_not_allocate(codec) -> None:
    config = config_bytes([s.get_config() for s in chain(codec).stages])
    payload = pack_container(KIND_UPDATE, config, HUGE, b"\x01" * 64)
    # A server expecting the model's shapes refuses the declaration before reading on.
    assert peak_bytes(lambda: codec.decode(payload, SHAPES)) < 1 << 20
    # Even a caller that does expect huge tensors is not made to allocate for them.
    assert peak_bytes(lambda: codec.decode(payload, HUGE)) < 1 << 20


def test_huge_declared_header_fields_are_refused() -> None:
    def frame(after_kind: bytes) -> bytes:
        return reseal(MAGIC + bytes((WIRE_VERSION, KIND_UPDATE)) + after_kind + b"\0\0\0\0")

    cases = {
        "config length": frame(b"\xff\xff\xff\xff\x0f"),  # 2**32 − 1 bytes of config
        "tensor count": frame(b"\x02[]" + b"\xff\xff\xff\xff\x0f"),
        "ndim": frame(b"\x02[]\x01\xff"),
        "long varint": frame(b"\x02[]\x01\x01\xff\xff\xff\xff\xff\x01"),
    }
    for what, payload in cases.items():
        with pytest.raises(CodecError):
            decode(payload, ((3,),))
        assert peak_bytes(lambda p=payload: decode(p, ((3,),))) < 1 << 20, what


def test_decompression_bombs_are_refused_without_inflating() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = bomb.compress(b"\0" * (64 << 20)) + bomb.flush()  # 64 MiB of zeros in ~64 KiB
    config = config_bytes([Zlib().get_config()])
    payload = pack_container(KIND_UPDATE, config, SMALL, body)
    with pytest.raises(CodecError, match="inflates beyond"):
        chain(Zlib()).decode(payload, SMALL)
    assert peak_bytes(lambda: chain(Zlib()).decode(payload, SMALL)) < 4 << 20


def test_non_bytes_and_wrong_kinds_are_codec_errors() -> None:
    with pytest.raises(CodecError, match="must be bytes"):
        decode("FLCD", SMALL)  # type: ignore[arg-type]
    payload = PAYLOADS["float32"]
    with pytest.raises(CodecError, match="kind 1, expected 2"):
        ModelDelta().decode(payload, BASE)
    with pytest.raises(CodecError, match="kind 2, expected 1"):
        decode(DELTAS["lossless"][1], SMALL)
    with pytest.raises(CodecError, match="wire version 9"):
        decode(reseal(payload[:4] + b"\x09" + payload[5:]), SMALL)


def test_state_survives_a_refused_update() -> None:
    codec = ErrorFeedback(Sign())
    state = codec.init_state(seed=1)
    with pytest.raises(ValueError):
        codec.encode((np.array([np.inf], np.float32),), state)
    assert state.step == 0 and state.residual is None
    assert codec.encode(update(SMALL), state)[1].step == 1


STATE = ErrorFeedback(Sign()).encode(update(SMALL), CodecState(seed=2, step=5))[1].to_bytes()


@FUZZ
@given(flips=FLIPS, resealed=st.booleans(), cut=st.none() | st.integers(0, 10**6))
def test_saved_state_loader_rejects_damage(flips, resealed: bool, cut) -> None:
    bad = flipped(STATE, flips)
    if cut is not None:
        bad = bad[: cut % len(bad)]
    if resealed:
        bad = reseal(bad)
    try:
        state = CodecState.from_bytes(bad, SMALL)
    except CodecError as exc:
        assert str(exc)
        return
    assert resealed or bad == STATE  # only a valid checksum gets this far
    assert state.residual is None or [r.shape for r in state.residual] == list(SMALL)
