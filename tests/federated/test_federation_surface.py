"""What operations need from the loop: continue from given weights, refuse a strategy that
cannot run on a secure sum before any round, and charge the server's CPU per round."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.federated import FedAvgM, Federation
from fedlab.federated.robust import CoordinateMedian
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.strategies.robust import RobustAggregation
from fedlab.secure import SecAggConfig
from tests.federated.test_dispatch import CFG, SHAPES, NumpyRuntime, tiny_fleet

SECAGG = SecAggConfig(threshold=3, clip=4.0, max_examples=32, ring_bits=64)


def federation(**kwargs) -> Federation:
    return Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG, **kwargs)


def test_set_weights_continues_from_a_given_model_with_a_fresh_server_state() -> None:
    fed = federation(strategy=FedAvgM(momentum=0.9))
    fed.run(2)
    target = tuple(np.full(s, 0.25, np.float32) for s in SHAPES)
    fed.set_weights(target)
    assert [w.tobytes() for w in fed.weights] == [t.tobytes() for t in target]
    # the same as a fresh federation started from that model, at the same round
    fresh = federation(strategy=FedAvgM(momentum=0.9))
    fresh.run(2)
    fresh.set_weights(target)
    fed.run_round()
    fresh.run_round()
    assert [w.tobytes() for w in fed.weights] == [w.tobytes() for w in fresh.weights]
    assert len(fed.history) == 3
    with pytest.raises(ValueError, match="do not fit the model"):
        fed.set_weights(target[:1])
    with pytest.raises(ValueError, match="NaN or Inf"):
        fed.set_weights((np.full(SHAPES[0], np.nan, np.float32), target[1]))


def test_a_robust_reducer_with_secure_aggregation_is_refused_before_any_round() -> None:
    robust = RobustAggregation(FedAvgM(momentum=0.0), CoordinateMedian())
    with pytest.raises(ValueError, match="needs every client's update"):
        federation(strategy=robust, secure_aggregation=SecureAggregation(SECAGG))
    fed = federation(secure_aggregation=SecureAggregation(SECAGG))
    with pytest.raises(ValueError, match="needs every client's update"):
        fed.set_strategy(robust)
    plain = federation(strategy=robust)
    with pytest.raises(ValueError, match="needs every client's update"):
        plain.secure_aggregation = SecureAggregation(SECAGG)
    assert plain.secure_aggregation is None and plain.rounds_done == 0


def test_rounds_record_the_servers_cpu_and_keep_it_out_of_the_deterministic_view() -> None:
    fed = federation(secure_aggregation=SecureAggregation(SECAGG))
    result = fed.run_round()
    assert result.server_cpu_s > 0
    assert "server_cpu_s" not in result.deterministic_view()
    assert type(result).from_dict(result.to_dict()) == result


def test_rounds_record_each_devices_simulated_energy() -> None:
    result = federation().run_round()
    energy = dict(result.energy_j)
    assert sorted(energy) == sorted(result.selected)
    assert all(j > 0 for j in energy.values())
    assert type(result).from_dict(result.to_dict()).energy_j == result.energy_j


def test_a_checkpoint_of_a_dense_run_does_not_resume_under_a_codec(tmp_path) -> None:
    from fedlab.codec import QSGD
    from fedlab.federated import DecodeUpdate, EncodeUpdate, Pipeline
    from fedlab.federated.checkpoint import CheckpointError

    federation(checkpoint_dir=tmp_path).run(1)
    codec = Pipeline(client=(EncodeUpdate(QSGD(bits=4)),), server=(DecodeUpdate(QSGD(bits=4)),))
    with pytest.raises(CheckpointError, match="different experiment"):
        federation(pipeline=codec, checkpoint_dir=tmp_path, resume=True)
    other = Pipeline(client=(EncodeUpdate(QSGD(bits=8)),), server=(DecodeUpdate(QSGD(bits=8)),))
    assert federation(pipeline=codec).fingerprint() != federation(pipeline=other).fingerprint()
    # a plain pipeline keeps the fingerprint checkpoints written before stages existed had
    assert federation().fingerprint() == federation(pipeline=Pipeline()).fingerprint()
