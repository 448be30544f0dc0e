"""Unbiasedness of the stochastic codecs (tested statistically, with a power check) and
error feedback (the accumulated error stays bounded instead of growing)."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.codec import QSGD, CodecState, ErrorFeedback, RandomK, Sign, Ternary, TopK, chain

DRAWS = 2000
X = (
    np.concatenate(
        [
            0.05 * np.random.default_rng(0).standard_t(3, size=37),
            [0.0, 0.003, -0.3],  # a zero, a small value, the max-abs element
        ]
    ).astype(np.float32),
)


def t_statistics(codec) -> np.ndarray:
    """Per element: (mean of DRAWS decodings − x) / standard error; independent draws
    come from independent client seeds."""
    shapes = [X[0].shape]
    draws = np.stack(
        [codec.decode(codec.encode(X, CodecState(seed=s))[0], shapes)[0] for s in range(DRAWS)]
    ).astype(np.float64)
    mean, sd = draws.mean(axis=0), draws.std(axis=0, ddof=1)
    err = mean - X[0]
    exact = sd == 0
    assert np.all(err[exact] == 0), "a deterministic element must decode exactly"
    t = np.zeros_like(err)
    t[~exact] = err[~exact] / (sd[~exact] / np.sqrt(DRAWS))
    return t


@pytest.mark.parametrize(
    "codec",
    [
        QSGD(bits=8),
        QSGD(bits=4),
        QSGD(bits=2),
        QSGD(bits=4, norm="l2"),
        Ternary(),
        RandomK(0.25),
        chain(RandomK(0.5), QSGD(bits=2)),
    ],
    ids=lambda c: str(c.get_config()),
)
def test_stochastic_codecs_are_unbiased(codec) -> None:
    t = t_statistics(codec)
    # 40 elements, each |t| > 5 with probability ~6e-7 under unbiasedness.
    assert np.max(np.abs(t)) < 5, t
    assert abs(float(np.mean(t))) < 5 / np.sqrt(t.size)


def test_the_unbiasedness_test_detects_a_biased_codec() -> None:
    # Random-k without the n/k rescaling shrinks the mean to k/n of x: the test must see it.
    t = t_statistics(RandomK(0.25, unbiased=False))
    assert np.max(np.abs(t)) > 20


def updates(steps: int, size: int = 2000):
    """Correlated updates (a persistent direction plus noise), as successive gradients are."""
    rng = np.random.default_rng(1)
    drift = rng.standard_normal(size).astype(np.float32)
    for _ in range(steps):
        yield ((drift + 0.5 * rng.standard_normal(size)).astype(np.float32),)


def accumulated_error(codec, steps: int) -> tuple[float, float, CodecState]:
    """‖Σ sent − Σ true‖ / ‖Σ true‖ after ``steps`` updates, and the last state."""
    state = codec.init_state(seed=5)
    total = sent = np.zeros(2000, np.float64)
    for g in updates(steps):
        payload, state = codec.encode(g, state)
        total = total + g[0]
        sent = sent + codec.decode(payload, [(2000,)])[0]
    return float(np.linalg.norm(total - sent) / np.linalg.norm(total)), total - sent, state


@pytest.mark.parametrize(
    "inner", [TopK(0.05), Sign(), chain(TopK(0.01), QSGD(bits=2))], ids=["topk", "sign", "tk+q2"]
)
def test_error_feedback_keeps_the_accumulated_error_bounded(inner) -> None:
    without, _, _ = accumulated_error(inner, 300)
    with_ef, gap, state = accumulated_error(ErrorFeedback(inner), 300)
    assert with_ef < 0.2 * without
    # Nothing is lost, only delayed: what was not sent is exactly the residual.
    assert state.residual is not None
    np.testing.assert_allclose(gap, state.residual[0], rtol=1e-3, atol=1e-3)
    # ...so the relative error of the sum shrinks as more updates are sent.
    early, _, _ = accumulated_error(ErrorFeedback(inner), 30)
    assert with_ef < early / 3


def test_error_feedback_state_carries_the_residual_norm() -> None:
    codec = ErrorFeedback(TopK(0.1))
    x = (np.arange(10, dtype=np.float32),)
    payload, state = codec.encode(x, codec.init_state())
    (sent,) = codec.decode(payload, [(10,)])
    np.testing.assert_array_equal(sent, np.eye(10, dtype=np.float32)[9] * 9)
    assert state.residual_norm() == pytest.approx(np.linalg.norm(np.arange(9)))


@pytest.mark.parametrize(
    "inner",
    [
        TopK(0.05),
        Sign(),
        QSGD(bits=4),
        Ternary(),
        RandomK(0.2),
        chain(TopK(0.01), QSGD(bits=2)),
        chain(RandomK(0.3, unbiased=False), Sign()),
    ],
    ids=lambda c: str(c.get_config()),
)
def test_error_feedback_residual_is_exactly_what_the_server_did_not_get(inner) -> None:
    """The encoder computes what the server will decode without decoding its own payload:
    it must agree with the decoder bit for bit."""
    codec = ErrorFeedback(inner)
    rng = np.random.default_rng(3)
    state = codec.init_state(seed=2)
    for _ in range(3):
        x = (
            rng.standard_normal((7, 5)).astype(np.float32),
            rng.standard_normal(40).astype(np.float32),
        )
        corrected = (
            x
            if state.residual is None
            else tuple(a + r for a, r in zip(x, state.residual, strict=True))
        )
        payload, state = codec.encode(x, state)
        decoded = codec.decode(payload, [(7, 5), (40,)])
        assert state.residual is not None
        for c, d, r in zip(corrected, decoded, state.residual, strict=True):
            assert (c - d).tobytes() == r.tobytes()
