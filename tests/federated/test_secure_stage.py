"""Secure aggregation as a cohort stage of the round loop: the model equals plain FedAvg to
the fixed-point resolution, clients lost mid-protocol are dropouts, and an aborted protocol
applies nothing. DP-FedAvg's client-side clipping form runs on the secure sum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlab.federated import Federation, Pipeline
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.stages import ClipUpdate, StageContext, clip_arrays
from fedlab.federated.types import Envelope
from fedlab.secure import SecAggConfig
from tests.federated.test_dispatch import CFG, NumpyRuntime, tiny_fleet

# 6 clients per round on the complete graph (k = 5): t must be 3, 4 or 5.
SECAGG = SecAggConfig(threshold=3, clip=4.0, max_examples=32, ring_bits=64)


def federation(**kwargs) -> Federation:
    return Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG, **kwargs)


def test_a_securely_aggregated_federation_equals_plain_fedavg() -> None:
    plain, secure = federation(), federation(secure_aggregation=SecureAggregation(SECAGG))
    plain.run(3)
    history = secure.run(3)
    assert all(not r.aggregation_failure for r in history)
    assert [r.completed for r in history] == [r.completed for r in plain.history]
    for a, b in zip(secure.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)  # fixed-point resolution, over 3 rounds
    # the wire cost is the protocol's: masked vectors, keys and shares, not float32 deltas
    assert history.rounds[0].bytes_up > plain.history.rounds[0].bytes_up


def test_clients_lost_during_the_protocol_are_dropouts_and_the_rest_is_summed() -> None:
    stage = SecureAggregation(SECAGG, dropout={"masked_input": 0.3}, seed=4)
    fed = federation(secure_aggregation=stage)
    result = fed.run_round()
    lost = list(result.dropped)
    assert lost, "seed 4 loses someone at masked_input"
    assert not result.aggregation_failure
    assert set(result.completed).isdisjoint(lost) and len(result.completed) == 6 - len(lost)
    # the model moved by the weighted mean of the survivors only
    data = tiny_fleet()
    targets = {c: float(np.mean(data.clients[c].x)) for c in result.completed}
    n = {c: data.clients[c].num_examples for c in result.completed}
    lr_epochs = CFG.client_lr * CFG.local_epochs
    expected = sum(n[c] * lr_epochs * targets[c] for c in targets) / sum(n.values())
    np.testing.assert_allclose(fed.weights[1], np.full(3, expected), atol=1e-6)


def test_a_survivor_that_misses_unmasking_is_still_in_the_sum() -> None:
    # Its masked input arrived; its neighbours rebuild its self mask. It contributed, so it
    # is "completed", and the model equals the run without any loss.
    stage = SecureAggregation(SECAGG, dropout={"unmask": 0.3}, seed=7)
    draws = np.random.default_rng([7, 0, 0x5EC]).random((4, 6))[3]  # the stage's own draws
    assert (draws < 0.3).sum() == 2, "seed 7 silences two clients at unmask"
    fed, reference = federation(secure_aggregation=stage), federation()
    result = fed.run_round()
    reference.run_round()
    assert not result.aggregation_failure and result.dropped == ()
    assert len(result.completed) == 6
    for a, b in zip(fed.weights, reference.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_below_the_threshold_nothing_is_applied_and_the_next_round_runs() -> None:
    stage = SecureAggregation(SECAGG, dropout={"share_keys": 0.9}, seed=1)
    fed = federation(secure_aggregation=stage)
    before = fed.weights
    result = fed.run_round()
    assert "secure aggregation aborted" in result.aggregation_failure
    assert "nothing applied" in result.aggregation_failure
    assert not result.completed and fed.rounds_done == 1
    for a, b in zip(fed.weights, before, strict=True):
        np.testing.assert_array_equal(a, b)
    fed.secure_aggregation = SecureAggregation(SECAGG)
    assert not fed.run_round().aggregation_failure  # the federation goes on


def test_bad_stage_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown stages"):
        SecureAggregation(SECAGG, dropout={"upload": 0.1})
    with pytest.raises(ValueError, match=r"dropout\[.share_keys.\] must be in \[0, 1\)"):
        SecureAggregation(SECAGG, dropout={"share_keys": 1.0})
    with pytest.raises(TypeError, match="SecAggConfig"):
        SecureAggregation({"threshold": 3})  # type: ignore[arg-type]


def test_client_clip_stage_scales_long_updates_and_leaves_short_ones() -> None:
    clip = ClipUpdate(1.0)
    ctx = StageContext(round_index=0, weight_shapes=((2,), (2,)))
    long = Envelope(0, 5, (np.array([3.0, 0.0], np.float32), np.array([0.0, 4.0], np.float32)))
    out = clip.apply(long, ctx)
    assert out.headers["clip_norm_before"] == pytest.approx(5.0)
    clipped = np.concatenate(out.body)
    # scaled to just below C (1e-6 relative), so float32 rounding never lands above it
    np.testing.assert_allclose(clipped, np.array([0.6, 0.0, 0.0, 0.8]) * (1 - 1e-6), rtol=1e-6)
    assert float(np.linalg.norm(clipped.astype(np.float64))) <= 1.0
    short = Envelope(0, 5, (np.array([0.3], np.float32),))
    assert clip.apply(short, ctx).body is short.body
    huge = Envelope(0, 5, (np.full(3, 3e38, np.float32),))  # its norm overflows float32
    assert np.isfinite(np.concatenate(clip.apply(huge, ctx).body)).all()
    with pytest.raises(ValueError, match="clip_norm must be finite and > 0"):
        ClipUpdate(float("inf"))


def test_dp_fedavg_client_side_clipping_on_the_secure_sum() -> None:
    pytest.importorskip("tensorflow_privacy")
    from fedlab.privacy import DPFedAvg

    unweighted = SecAggConfig(threshold=3, clip=4.0, max_examples=32, weighted=False)
    dp = DPFedAvg(noise_multiplier=0.0, clip_norm=0.05, expected_clients=6)
    pipeline = Pipeline().with_stages(client=[ClipUpdate(0.05)])
    secure = federation(
        strategy=dp, pipeline=pipeline, secure_aggregation=SecureAggregation(unweighted)
    )
    server_side = federation(strategy=dp)  # DP-FedAvg clipping on the server, no SecAgg
    secure.run(2)
    server_side.run(2)
    for a, b in zip(secure.weights, server_side.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    values=hnp.arrays(
        np.float32,
        st.integers(1, 50),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False),
    ),
    clip=st.floats(1e-4, 1e3),
)
def test_a_clipped_update_never_exceeds_its_bound_in_float32(values, clip) -> None:
    clipped, _ = clip_arrays([values], clip)
    out = values if clipped is None else clipped[0]
    assert float(np.linalg.norm(out.astype(np.float64))) <= clip or clipped is None
