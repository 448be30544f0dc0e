"""Round trips, configs, strict constructors and the state contract of every codec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedlab.codec import (
    QSGD,
    Chain,
    Codec,
    CodecError,
    CodecState,
    ErrorFeedback,
    Float32,
    Lzma,
    RandomK,
    Sign,
    Ternary,
    TopK,
    Zlib,
    chain,
    decode,
    from_config,
)

from .conftest import SHAPES, SMALL, codecs, update

CODECS = codecs()


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("shapes", [SHAPES, SMALL], ids=["digits_cnn", "small"])
def test_round_trip_gives_float32_arrays_of_the_shapes(name: str, shapes) -> None:
    codec = CODECS[name]
    x = update(shapes)
    payload, state = codec.encode(x, codec.init_state(seed=3))
    out = codec.decode(payload, shapes)
    assert isinstance(payload, bytes)
    assert [a.shape for a in out] == [tuple(s) for s in shapes]
    assert all(a.dtype == np.float32 and np.all(np.isfinite(a)) for a in out)
    assert state.step == 1 and state.seed == 3
    # The header names the codec: the generic decoder agrees with the codec's own.
    for a, b in zip(out, decode(payload, shapes), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("codec", [chain(), chain(Zlib()), chain(Lzma(0)), Float32()])
def test_lossless_chains_are_exact(codec: Codec) -> None:
    x = (*update(), np.array([-0.0, 1e-45, -3.4e38, 3.4e38], np.float32))
    shapes = [a.shape for a in x]
    out = codec.decode(codec.encode(x, CodecState())[0], shapes)
    for a, b in zip(x, out, strict=True):
        assert a.tobytes() == b.tobytes()


def test_topk_keeps_exactly_the_largest_magnitudes() -> None:
    x = (np.array([0.1, -5.0, 0.2, 3.0, -0.3, 0.0], np.float32),)
    (out,) = TopK(0.5).decode(TopK(0.5).encode(x, CodecState())[0], [(6,)])
    np.testing.assert_array_equal(out, np.array([0, -5.0, 0, 3.0, -0.3, 0], np.float32))


def test_topk_ratio_one_and_tiny_tensors_send_at_least_one() -> None:
    x = (np.array([1.0, -2.0], np.float32), np.array([7.0], np.float32))
    (a, b) = TopK(1e-6).decode(TopK(1e-6).encode(x, CodecState())[0], [(2,), (1,)])
    np.testing.assert_array_equal(a, [0, -2.0])
    np.testing.assert_array_equal(b, [7.0])
    out = TopK(1.0).decode(TopK(1.0).encode(x, CodecState())[0], [(2,), (1,)])
    np.testing.assert_array_equal(out[0], x[0])


def test_quantizers_hit_their_levels_and_keep_the_scale() -> None:
    x = (np.linspace(-1, 1, 101, dtype=np.float32),)
    for codec, levels in ((QSGD(bits=8), 127), (QSGD(bits=4), 7), (QSGD(bits=2), 1)):
        (out,) = codec.decode(codec.encode(x, CodecState(seed=1))[0], [(101,)])
        np.testing.assert_allclose(out * levels, np.round(out * levels), atol=1e-4)
        assert np.max(np.abs(out - x[0])) <= 1 / levels + 1e-6
    (t,) = Ternary().decode(Ternary().encode(x, CodecState())[0], [(101,)])
    assert set(np.unique(t)) <= {-1.0, 0.0, 1.0}
    (s,) = Sign().decode(Sign().encode(x, CodecState())[0], [(101,)])
    np.testing.assert_allclose(np.abs(s), np.mean(np.abs(x[0])), rtol=1e-6)
    assert np.all(np.sign(s[x[0] != 0]) == np.sign(x[0][x[0] != 0]))


def test_zero_update_is_zero_for_every_codec() -> None:
    zero = tuple(np.zeros(s, np.float32) for s in SHAPES)
    for name, codec in CODECS.items():
        out = codec.decode(codec.encode(zero, codec.init_state())[0], SHAPES)
        assert all(not a.any() for a in out), name


def test_encoding_is_a_pure_function_of_update_and_state() -> None:
    codec = ErrorFeedback(chain(RandomK(0.1), QSGD(bits=2), Zlib()))
    x, state = update(), CodecState(seed=7, step=4)
    before = [a.copy() for a in x]
    p1, s1 = codec.encode(x, state)
    p2, s2 = codec.encode(x, state)
    assert p1 == p2 and s1.step == s2.step == 5
    assert state.step == 4 and state.residual is None  # the caller's state is untouched
    assert all(np.array_equal(a, b) for a, b in zip(x, before, strict=True))
    p3, _ = codec.encode(x, s1)
    assert p3 != p1  # the next update draws fresh randomness
    assert codec.encode(x, CodecState(seed=8, step=4))[0] != p1


def test_state_residual_is_a_private_read_only_copy() -> None:
    r = np.ones(3, np.float32)
    state = CodecState(residual=(r,))
    r[0] = 5
    assert state.residual is not None and state.residual[0][0] == 1
    with pytest.raises(ValueError):
        state.residual[0][0] = 2
    assert state.residual_norm() == pytest.approx(np.sqrt(3))


@pytest.mark.parametrize("name", sorted(CODECS))
def test_config_round_trips_through_json(name: str) -> None:
    codec = CODECS[name]
    config = json.loads(json.dumps(codec.get_config()))
    assert from_config(config) == codec


def test_chain_flattens_and_single_stages_are_chains() -> None:
    assert chain(chain(TopK(0.1)), QSGD(bits=4)) == Chain((TopK(0.1), QSGD(bits=4)))
    x = update()
    state = CodecState(seed=2)
    assert TopK(0.1).encode(x, state)[0] == chain(TopK(0.1)).encode(x, state)[0]


@pytest.mark.parametrize(
    ("stages", "error", "match"),
    [
        ((QSGD(bits=4), TopK(0.1)), ValueError, "at most one sparsifier"),
        ((TopK(0.1), RandomK(0.1)), ValueError, "at most one sparsifier"),
        ((Zlib(), QSGD(bits=4)), ValueError, "entropy"),
        ((Zlib(), Lzma()), ValueError, "entropy"),
        ((ErrorFeedback(Sign()),), TypeError, "ErrorFeedback wraps a whole chain"),
        (("topk",), TypeError, "'topk'"),
    ],
)
def test_chain_refuses_bad_orders(stages, error, match) -> None:
    with pytest.raises(error, match=match):
        chain(*stages)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: TopK(0), ValueError, r"\(0, 1\], got 0"),
        (lambda: TopK(1.5), ValueError, "got 1.5"),
        (lambda: TopK(float("nan")), ValueError, "got nan"),
        (lambda: TopK("0.1"), TypeError, "got '0.1'"),
        (lambda: TopK(True), TypeError, "got True"),
        (lambda: TopK(0.1, index="list"), ValueError, "got 'list'"),
        (lambda: RandomK(-0.1), ValueError, "got -0.1"),
        (lambda: RandomK(0.1, unbiased=1), TypeError, "got 1"),
        (lambda: QSGD(bits=3), ValueError, "got 3"),
        (lambda: QSGD(bits=4.0), TypeError, "got 4.0"),
        (lambda: QSGD(bits=4, norm="l1"), ValueError, "got 'l1'"),
        (lambda: Ternary(norm="inf"), ValueError, "got 'inf'"),
        (lambda: Zlib(10), ValueError, "got 10"),
        (lambda: Lzma("9"), TypeError, "got '9'"),
        (lambda: ErrorFeedback("topk"), TypeError, "got 'topk'"),
        (lambda: ErrorFeedback(ErrorFeedback(Sign())), TypeError, "two residuals"),
        (lambda: CodecState(seed=-1), ValueError, "got -1"),
        (lambda: CodecState(step=1.0), TypeError, "got 1.0"),
        (lambda: from_config({"name": "gzip"}), ValueError, "unknown codec 'gzip'"),
        (lambda: from_config({"name": "topk", "ratio": 0.1, "k": 3}), ValueError, "'k'"),
        (lambda: from_config(["topk"]), TypeError, r"\['topk'\]"),
    ],
)
def test_strict_constructors_quote_the_bad_value(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        (np.zeros(3), TypeError, "sequence of arrays"),
        ((np.array([1.0, np.nan]),), ValueError, "non-finite value"),
        ((np.array([1e39]),), ValueError, "non-finite value .*inf"),
        ((np.array(["a"]),), TypeError, "dtype <U1"),
    ],
)
def test_encode_refuses_bad_updates(arrays, error, match) -> None:
    with pytest.raises(error, match=match):
        TopK(0.5).encode(arrays, CodecState())


def test_encode_refuses_a_foreign_state_and_mismatched_residual() -> None:
    with pytest.raises(TypeError, match="CodecState"):
        chain().encode(update(), {"seed": 0})  # type: ignore[arg-type]
    state = CodecState(residual=(np.zeros(2, np.float32),))
    with pytest.raises(ValueError, match="residual shapes"):
        ErrorFeedback(Sign()).encode(update(), state)


def test_decoder_refuses_another_codec_and_other_shapes() -> None:
    x = update()
    payload, _ = QSGD(bits=4).encode(x, CodecState())
    with pytest.raises(CodecError, match="expects"):
        QSGD(bits=8).decode(payload, SHAPES)
    with pytest.raises(CodecError, match=r"tensor 0 declares shape \(3, 3, 1, 16\)"):
        QSGD(bits=4).decode(payload, ((3, 3, 1, 17), *SHAPES[1:]))
    with pytest.raises(CodecError, match="declares 8 tensors, expected 7"):
        QSGD(bits=4).decode(payload, SHAPES[:-1])
    # Error feedback does not change the wire: its inner codec decodes its payloads.
    ef_payload, _ = ErrorFeedback(QSGD(bits=4)).encode(x, CodecState())
    assert len(QSGD(bits=4).decode(ef_payload, SHAPES)) == len(SHAPES)


def test_state_saves_and_loads_on_a_device() -> None:
    codec = ErrorFeedback(chain(TopK(0.01), QSGD(bits=4), Zlib()))
    _, state = codec.encode(update(), codec.init_state(seed=11))
    loaded = CodecState.from_bytes(state.to_bytes(), SHAPES)
    assert (loaded.seed, loaded.step) == (11, 1)
    assert loaded.residual is not None and state.residual is not None
    assert all(
        a.tobytes() == b.tobytes() for a, b in zip(loaded.residual, state.residual, strict=True)
    )
    # The next update from the loaded state is the one the live state would have sent.
    assert codec.encode(update(seed=1), loaded)[0] == codec.encode(update(seed=1), state)[0]
    fresh = CodecState(seed=3, step=9)
    assert CodecState.from_bytes(fresh.to_bytes()) == fresh
    with pytest.raises(CodecError, match="saved residual shapes"):
        CodecState.from_bytes(state.to_bytes(), SMALL)
    with pytest.raises(CodecError, match="kind 1, expected 3"):
        CodecState.from_bytes(chain().encode(update(), fresh)[0])
