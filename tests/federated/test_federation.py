"""The round engine: determinism, failures, stragglers, observers, checkpoint/resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from fedlab.federated import (
    CheckpointError,
    ClientProfile,
    Envelope,
    FedAdam,
    Federation,
    FederationConfig,
    KerasRuntime,
    Observer,
    Pipeline,
    RecordingObserver,
    StageContext,
    latest_checkpoint,
)

CFG = FederationConfig(clients_per_round=5, local_epochs=1, batch_size=8, client_lr=0.1, seed=3)


def make(data, runtime, **kwargs) -> Federation:
    kwargs.setdefault("config", CFG)
    return Federation(data=data, runtime=runtime, **kwargs)


def weights_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_rounds_improve_accuracy_and_record_everything(small_digits, digits_runtime) -> None:
    fed = make(small_digits, digits_runtime, config=replace(CFG, local_epochs=3))
    history = fed.run(6)
    assert len(history) == 6 and fed.rounds_done == 6
    first, last = history[0], history[-1]
    assert last.test_accuracy > max(0.5, first.test_accuracy)
    for r in history:
        assert len(r.selected) == 5 and r.completed == r.selected
        assert r.num_examples == sum(small_digits.clients[c].num_examples for c in r.completed)
        model_bytes = sum(w.nbytes for w in fed.weights)
        assert r.bytes_up == 5 * model_bytes and r.bytes_down == 5 * model_bytes
        assert math.isfinite(r.train_loss) and r.wall_time_s > 0


def test_same_seed_same_history_other_seed_other_history(small_digits, digits_runtime) -> None:
    a = make(small_digits, digits_runtime)
    b = make(small_digits, digits_runtime)
    a.run(3)
    b.run(3)
    assert a.history.deterministic_records() == b.history.deterministic_records()
    assert weights_equal(a.weights, b.weights)
    c = make(small_digits, digits_runtime, config=replace(CFG, seed=4))
    c.run(3)
    assert [r.selected for r in c.history] != [r.selected for r in a.history]


def test_split_runs_equal_one_run(small_digits, digits_runtime) -> None:
    whole = make(small_digits, digits_runtime)
    whole.run(4)
    split = make(small_digits, digits_runtime)
    split.run(1)
    split.run(3)
    assert whole.history.deterministic_records() == split.history.deterministic_records()


def test_dropouts_are_recorded_and_not_aggregated(small_digits, digits_runtime) -> None:
    fed = make(
        small_digits, digits_runtime, config=replace(CFG, clients_per_round=10, dropout_rate=0.4)
    )
    fed.run(5)
    dropped = sum(len(r.dropped) for r in fed.history)
    assert 5 <= dropped <= 35  # 50 draws at p = 0.4
    for r in fed.history:
        assert set(r.completed) | set(r.dropped) == set(r.selected)
        assert not set(r.completed) & set(r.dropped)
        assert r.num_examples == sum(small_digits.clients[c].num_examples for c in r.completed)


def test_deadline_cuts_slow_devices_and_over_selection_fills_the_cohort(
    small_digits, digits_runtime
) -> None:
    profiles = [ClientProfile(compute_speed=0.01 if c % 2 else 1.0) for c in range(20)]
    cfg = replace(CFG, deadline_s=5.0, over_selection=1.0, seconds_per_example=0.01)
    fed = make(small_digits, digits_runtime, config=cfg, profiles=profiles)
    fed.run(4)
    for r in fed.history:
        assert len(r.selected) == 10
        assert all(c % 2 == 0 for c in r.completed), "slow devices never make the deadline"
        assert all(c % 2 == 1 for c in r.stragglers if c % 2)  # slow ones are stragglers
        assert len(r.completed) <= 5
        assert set(r.completed) | set(r.stragglers) == set(r.selected)
        assert r.sim_time_s <= 5.0


def test_surplus_reports_beyond_the_cohort_are_stragglers(small_digits, digits_runtime) -> None:
    fed = make(small_digits, digits_runtime, config=replace(CFG, over_selection=0.6))
    r = fed.run_round()
    assert len(r.selected) == 8 and len(r.completed) == 5 and len(r.stragglers) == 3


class ExplodingRuntime(KerasRuntime):
    """The real runtime, except that one client's device crashes."""

    def train_one(self, global_weights, data, plan):
        if data.client_id == self.bad:
            raise MemoryError("device ran out of memory")
        return super().train_one(global_weights, data, plan)


def test_a_client_that_raises_is_recorded_and_the_round_goes_on(small_digits) -> None:
    from fedlab.models import digits_cnn

    runtime = ExplodingRuntime(lambda: digits_cnn(seed=0))
    fed = make(small_digits, runtime, config=replace(CFG, clients_per_round=20))
    runtime.bad = 4
    r = fed.run_round()
    assert r.failed == ((4, "MemoryError: device ran out of memory"),)
    assert 4 not in r.completed and len(r.completed) == 19


@dataclass(frozen=True)
class Corrupt:
    """A client-side stage playing a broken (or malicious) device."""

    victim: int
    how: str
    name: str = "corrupt"

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        if envelope.client_id != self.victim:
            return envelope
        body = [a.copy() for a in envelope.body]
        if self.how == "nan":
            body[0].flat[3] = np.nan
        elif self.how == "inf":
            body[-1].flat[0] = np.inf
        elif self.how == "shape":
            body[1] = np.zeros(7, np.float32)
        elif self.how == "missing":
            body = body[:-1]
        elif self.how == "bytes":
            return replace(envelope, body=b"\x00garbage")
        return replace(envelope, body=tuple(body))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("nan", "non-finite values (NaN)"),
        ("inf", "non-finite values (Inf)"),
        ("shape", "has shape (7,)"),
        ("missing", "update has 7 tensors, the model has 8"),
        ("bytes", "encoded bytes"),
    ],
)
def test_bad_updates_are_rejected_with_the_reason(
    small_digits, digits_runtime, how, reason
) -> None:
    pipeline = Pipeline().with_stages(client=[Corrupt(victim=6, how=how)])
    fed = make(
        small_digits, digits_runtime, config=replace(CFG, clients_per_round=20), pipeline=pipeline
    )
    r = fed.run_round()
    assert [c for c, _ in r.rejected] == [6]
    assert reason in r.rejected[0][1]
    assert 6 not in r.completed and len(r.completed) == 19
    assert all(np.isfinite(w).all() for w in fed.weights)


def test_all_rejected_keeps_the_model(small_digits, digits_runtime) -> None:
    class AllNaN:
        name = "nan-all"

        def apply(self, envelope, context):
            return replace(envelope, body=tuple(np.full_like(a, np.nan) for a in envelope.body))

    fed = make(small_digits, digits_runtime, pipeline=Pipeline(client=(AllNaN(),)))
    before = fed.weights
    r = fed.run_round()
    assert len(r.rejected) == 5 and r.completed == ()
    assert weights_equal(before, fed.weights) and math.isnan(r.train_loss)


def test_observers_see_every_event_in_order(small_digits, digits_runtime) -> None:
    rec = RecordingObserver()
    fed = make(small_digits, digits_runtime, observers=[rec])
    fed.run(2)
    kinds = [e[0] for e in rec.events]
    assert kinds == (["round_start", "training_start"] + ["client_done"] * 5 + ["round_end"]) * 2
    outcomes = [e[2] for e in rec.events if e[0] == "client_done"]
    assert all(o.status == "completed" for o in outcomes)
    starts = [e for e in rec.events if e[0] == "round_start"]
    trains = [e for e in rec.events if e[0] == "training_start"]
    assert [s[2] for s in starts] == [t[2] for t in trains]  # nobody dropped out here
    fed.remove_observer(rec)
    fed.run_round()
    assert len(rec.events) == 16
    with pytest.raises(ValueError):
        fed.remove_observer(rec)


def test_dropped_clients_do_not_start_training(small_digits, digits_runtime) -> None:
    rec = RecordingObserver()
    fed = make(small_digits, digits_runtime, observers=[rec], config=replace(CFG, dropout_rate=0.5))
    result = fed.run_round()
    (training,) = [e[2] for e in rec.events if e[0] == "training_start"]
    assert result.dropped and set(training) == set(result.selected) - set(result.dropped)


def test_set_strategy_applies_from_the_next_round_with_fresh_state(
    small_digits, digits_runtime
) -> None:
    from fedlab.federated.strategies import FedAvgM

    fed = make(small_digits, digits_runtime)
    fed.run_round()
    kept = fed.weights
    fed.set_strategy(FedAvgM(momentum=0.9))
    assert weights_equal(kept, fed.weights) and len(fed.history) == 1
    fed.run_round()
    assert isinstance(fed.strategy, FedAvgM)
    with pytest.raises(TypeError, match="not a Strategy"):
        fed.set_strategy(object())  # type: ignore[arg-type]
    assert isinstance(fed.strategy, FedAvgM)


def test_an_observer_error_surfaces_after_the_round_is_committed(
    small_digits, digits_runtime
) -> None:
    class Broken(Observer):
        def on_round_end(self, federation, result):
            raise RuntimeError("plot failed")

    fed = make(small_digits, digits_runtime, observers=[Broken()])
    with pytest.raises(RuntimeError, match="plot failed"):
        fed.run_round()
    assert fed.rounds_done == 1 and len(fed.history) == 1


def test_invalid_arguments(small_digits, digits_runtime) -> None:
    with pytest.raises(ValueError, match="rounds must be an int >= 1, got 0"):
        make(small_digits, digits_runtime).run(0)
    with pytest.raises(ValueError, match="clients_per_round=50 exceeds the population of 20"):
        make(small_digits, digits_runtime, config=replace(CFG, clients_per_round=50))
    with pytest.raises(ValueError, match="3 profiles for 20 clients"):
        make(small_digits, digits_runtime, profiles=[ClientProfile()] * 3)
    with pytest.raises(TypeError, match="FederatedDataset"):
        Federation(data=[1, 2], runtime=digits_runtime)  # type: ignore[arg-type]
    fed = make(small_digits, digits_runtime)
    with pytest.raises(ValueError, match="exceeds"):
        fed.update_config(replace(CFG, clients_per_round=21))
    assert fed.config == CFG  # unchanged after the refused update


def test_update_config_applies_from_the_next_round(small_digits, digits_runtime) -> None:
    fed = make(small_digits, digits_runtime)
    fed.run_round()
    fed.update_config(replace(CFG, clients_per_round=8))
    assert len(fed.run_round().selected) == 8
    fed.reset()
    assert fed.rounds_done == 0 and len(fed.history) == 0


def test_checkpoint_resume_equals_an_uninterrupted_run(
    small_digits, digits_runtime, tmp_path
) -> None:
    strategy = FedAdam(server_lr=0.01)  # has server state that must survive the restart
    whole = make(small_digits, digits_runtime, strategy=strategy)
    whole.run(5)
    first = make(small_digits, digits_runtime, strategy=strategy, checkpoint_dir=tmp_path)
    first.run(3)
    resumed = make(
        small_digits, digits_runtime, strategy=strategy, checkpoint_dir=tmp_path, resume=True
    )
    assert resumed.rounds_done == 3
    resumed.run(2)
    assert resumed.history.deterministic_records() == whole.history.deterministic_records()
    assert weights_equal(resumed.weights, whole.weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000004.npz", "round-000005.npz"]


def test_resume_refuses_another_experiment(small_digits, digits_runtime, tmp_path) -> None:
    make(small_digits, digits_runtime, checkpoint_dir=tmp_path).run(1)
    with pytest.raises(CheckpointError, match="different experiment"):
        make(
            small_digits,
            digits_runtime,
            config=replace(CFG, client_lr=0.2),
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_damaged_checkpoints_fall_back_to_the_previous_one(
    small_digits, digits_runtime, tmp_path
) -> None:
    make(small_digits, digits_runtime, checkpoint_dir=tmp_path).run(2)
    (tmp_path / ".round-000003.npz.999.tmp").write_bytes(b"half a checkpoint")  # killed mid-write
    newest = tmp_path / "round-000002.npz"
    newest.write_bytes(newest.read_bytes()[:200])  # truncated by a disk fault
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = latest_checkpoint(tmp_path)
    assert state is not None and state.rounds_done == 1
    assert any("round-000002.npz" in str(w.message) for w in caught)
    (tmp_path / "round-000001.npz").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no usable checkpoint"), pytest.warns(RuntimeWarning):
        latest_checkpoint(tmp_path)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from fedlab.data import federated_digits
    from fedlab.federated import Federation, FederationConfig, KerasRuntime
    from fedlab.models import digits_cnn

    cfg = FederationConfig(clients_per_round=5, local_epochs=1, batch_size=8, client_lr=0.1, seed=3)
    fed = Federation(data=federated_digits(num_clients=20, alpha=0.5, seed=1),
                     runtime=KerasRuntime(lambda: digits_cnn(seed=0)), config=cfg,
                     checkpoint_dir=sys.argv[1], resume=True)
    while True:
        fed.run_round()
        print(fed.rounds_done, flush=True)
    """
)


def test_a_killed_run_resumes_to_the_uninterrupted_history(
    small_digits, digits_runtime, tmp_path
) -> None:
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ckpt)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= 3:
            break
    proc.send_signal(signal.SIGKILL)  # no cleanup, possibly in the middle of a checkpoint write
    proc.wait(timeout=30)
    resumed = make(small_digits, digits_runtime, checkpoint_dir=ckpt, resume=True)
    done = resumed.rounds_done
    assert done >= 3
    resumed.run(6 - done if done < 6 else 1)
    whole = make(small_digits, digits_runtime)
    whole.run(resumed.rounds_done)
    assert resumed.history.deterministic_records() == whole.history.deterministic_records()
    assert weights_equal(resumed.weights, whole.weights)
