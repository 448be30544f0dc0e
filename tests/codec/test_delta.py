"""Downlink: the new model as a delta against the version the device holds."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.codec import QSGD, CodecError, ModelDelta, TopK, Zlib, chain, from_config

from .conftest import SHAPES, update


def model(seed: int = 0):
    return update(SHAPES, seed=seed, scale=0.2)


def next_round(weights, seed: int = 1, step: float = 1e-3):
    return tuple(w + d for w, d in zip(weights, update(SHAPES, seed=seed, scale=step), strict=True))


def test_lossless_delta_rebuilds_the_new_model_bit_for_bit() -> None:
    old = (*model(), np.array([0.0, -0.0, 1e-45, 3e38], np.float32))
    new = (*next_round(model()), np.array([-0.0, 0.0, -1e-45, -3e38], np.float32))
    payload = ModelDelta().encode(new, old)
    out = ModelDelta().decode(payload, old)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(out, new, strict=True))


def test_lossless_delta_is_smaller_than_the_model_and_tiny_when_nothing_changed() -> None:
    old = model()
    dense = 4 * sum(a.size for a in old)
    assert len(ModelDelta().encode(next_round(old), old)) < dense
    assert len(ModelDelta().encode(old, old)) < 400


def test_delta_refuses_another_base() -> None:
    old, other = model(0), model(5)
    payload = ModelDelta().encode(next_round(old), old)
    with pytest.raises(CodecError, match="the device holds"):
        ModelDelta().decode(payload, other)
    with pytest.raises(CodecError, match="expects"):
        ModelDelta(QSGD(bits=8)).decode(payload, old)
    with pytest.raises(ValueError, match="base shapes"):
        ModelDelta().encode(old, old[:-1])


def test_lossy_delta_tracked_by_the_server_does_not_drift() -> None:
    """The server keeps what the device holds; every broadcast is against it, so the
    device follows the true model to within one step's quantization error."""
    downlink = ModelDelta(chain(QSGD(bits=8), Zlib()))
    truth = held_by_device = held_by_server = model()
    state = downlink.codec.init_state(seed=1)  # type: ignore[union-attr]
    for r in range(20):
        truth = next_round(truth, seed=r + 1)
        diff = [t - h for t, h in zip(truth, held_by_server, strict=True)]
        payload = downlink.encode(truth, held_by_server, state)
        held_by_device = downlink.decode(payload, held_by_device)
        held_by_server = downlink.decode(payload, held_by_server)
        state = state.advanced()
        assert len(payload) < 4 * sum(a.size for a in truth) / 3.5
    for t, d, s, last in zip(truth, held_by_device, held_by_server, diff, strict=True):
        assert d.tobytes() == s.tobytes()  # both sides hold the same model, bit for bit
        # within one quantization level of the last broadcast (max-abs / 127): no drift
        assert np.max(np.abs(t - d)) <= np.max(np.abs(last)) / 127 * 1.001 + 1e-7


def test_model_delta_config_round_trips() -> None:
    for delta in (ModelDelta(), ModelDelta(chain(TopK(0.1), QSGD(bits=4)))):
        assert from_config(delta.get_config()) == delta
    with pytest.raises(TypeError, match="got 'qsgd'"):
        ModelDelta("qsgd")  # type: ignore[arg-type]
