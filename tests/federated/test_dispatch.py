"""The round loop against the Dispatcher interface, on a numpy model: no TensorFlow, fast.

The server's job (select, plan, server pipeline, reduce + server step, commit) must not care
where clients run; these tests drive it through the simulated dispatcher and through a
scripted one that returns every kind of report a real fleet can.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from fedlab.data.arrays import LabeledArrays
from fedlab.data.federated_dataset import ClientData, FederatedDataset
from fedlab.federated import Federation, FederationConfig
from fedlab.federated.dispatch import Dispatched, Report, RoundTasks, SimulatedDispatcher
from fedlab.federated.runtime_base import ClientFailure
from fedlab.federated.selection import ClientProfile
from fedlab.federated.types import ClientPlan, ClientUpdate, Envelope, Weights

SHAPES = [(4, 3), (3,)]


class NumpyRuntime:
    """A client runtime without TensorFlow: each client pulls the model towards its own
    target (the mean of its examples), ``epochs`` small steps."""

    def initial_weights(self) -> Weights:
        return tuple(np.zeros(s, np.float32) for s in SHAPES)

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        out: list[ClientUpdate | ClientFailure] = []
        for data, plan in jobs:
            target = float(np.mean(data.x))
            delta = tuple(
                (plan.learning_rate * plan.epochs * (target - w)).astype(np.float32)
                for w in global_weights
            )
            out.append(ClientUpdate(data.client_id, delta, data.num_examples, plan.epochs))
        return out

    def evaluate(self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024):
        err = float(np.mean([np.mean((w - np.mean(x)) ** 2) for w in weights]))
        return {"loss": err, "accuracy": 1.0 / (1.0 + err)}


def tiny_fleet(n: int = 12) -> FederatedDataset:
    rng = np.random.default_rng(0)
    clients = tuple(
        ClientData(i, rng.normal(i / n, 0.1, (5 + i, 2)).astype(np.float32), np.zeros(5 + i, int))
        for i in range(n)
    )
    test = LabeledArrays(rng.normal(0.5, 0.1, (20, 2)).astype(np.float32), np.zeros(20, int))
    return FederatedDataset(clients=clients, test=test, num_classes=2, name="tiny")


CFG = FederationConfig(clients_per_round=6, local_epochs=2, client_lr=0.1, seed=3)


def test_the_simulated_dispatcher_runs_a_federation_without_tensorflow() -> None:
    fed = Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG)
    assert isinstance(fed.dispatcher, SimulatedDispatcher)
    history = fed.run(4)
    assert [len(r.completed) for r in history] == [6] * 4
    assert history.rounds[-1].test_loss < history.rounds[0].test_loss  # it learns
    assert {r.runtime for r in history} == {"NumpyRuntime"}


def test_dropouts_and_deadline_stragglers_come_from_the_dispatcher() -> None:
    slow = [ClientProfile(compute_speed=0.01 if i % 2 else 1.0) for i in range(12)]
    cfg = replace(CFG, dropout_rate=0.3, deadline_s=5.0, seconds_per_example=0.01)
    fed = Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=cfg, profiles=slow)
    history = fed.run(5)
    assert sum(len(r.dropped) for r in history) > 0
    stragglers = {c for r in history for c in r.stragglers}
    assert stragglers and all(c % 2 for c in stragglers)  # only the slow devices
    for r in history:
        assert set(r.completed) | set(r.dropped) | set(r.stragglers) == set(r.selected)


class ScriptedDispatcher:
    """Returns, for each plan, the report ``script(plan, tasks)`` makes."""

    def __init__(self, data: FederatedDataset, script: Callable[[ClientPlan, RoundTasks], Report]):
        self.data, self.script = data, script

    @property
    def num_clients(self) -> int:
        return self.data.num_clients

    def enrolled_examples(self, client_id: int) -> int:
        return self.data.clients[client_id].num_examples

    def profile(self, client_id: int) -> ClientProfile:
        return ClientProfile()

    def dispatch(self, tasks, *, rng, on_training_start) -> Dispatched:
        on_training_start(tuple(p.client_id for p in tasks.plans))
        return Dispatched(tuple(self.script(p, tasks) for p in tasks.plans), "scripted fleet")


def honest(plan: ClientPlan, tasks: RoundTasks) -> Envelope:
    body = tuple(np.full(w.shape, 0.01, np.float32) for w in tasks.weights)
    return Envelope(plan.client_id, 5, body, metrics={"train_loss": 1.0})


def test_every_kind_of_report_from_any_dispatcher_is_recorded_and_nothing_else_lost() -> None:
    data = tiny_fleet()

    def script(plan: ClientPlan, tasks: RoundTasks) -> Report:
        cid, position = plan.client_id, tasks.plans.index(plan)
        kinds = [
            Report(cid, "dropped", detail="node offline"),
            Report(cid, "failed", detail="OSError: disk full"),
            Report(cid, "straggler", duration_s=99.0, detail="timed out"),
            # claims more examples than it enrolled: the server's policy rejects it
            Report(cid, "reported", replace(honest(plan, tasks), num_examples=10**9), 1.0),
        ]
        return (
            kinds[position] if position < 4 else Report(cid, "reported", honest(plan, tasks), 2.0)
        )

    fed = Federation(
        data=data, runtime=NumpyRuntime(), config=CFG, dispatcher=ScriptedDispatcher(data, script)
    )
    result = fed.run_round()
    s = result.selected
    assert result.runtime == "scripted fleet"
    assert result.dropped == (s[0],) and result.stragglers == (s[2],)
    assert [c for c, _ in result.failed] == [s[1]] and "disk full" in result.failed[0][1]
    assert [c for c, _ in result.rejected] == [s[3]] and "num_examples" in result.rejected[0][1]
    assert result.completed == s[4:]
    # the honest ones moved the model by exactly their mean delta, the rejected one not at all
    np.testing.assert_allclose(fed.weights[1], np.full(3, 0.01), rtol=1e-6)


def test_a_dispatcher_that_loses_track_of_its_tasks_is_an_error_before_any_commit() -> None:
    data = tiny_fleet()
    lost = ScriptedDispatcher(data, lambda plan, tasks: Report(plan.client_id + 1, "dropped"))
    fed = Federation(data=data, runtime=NumpyRuntime(), config=CFG, dispatcher=lost)
    with pytest.raises(RuntimeError, match="one report per task, in order"):
        fed.run_round()
    assert fed.rounds_done == 0 and len(fed.history) == 0


def test_a_dispatcher_for_another_population_is_refused() -> None:
    other = ScriptedDispatcher(tiny_fleet(5), lambda plan, tasks: Report(plan.client_id, "dropped"))
    with pytest.raises(ValueError, match="enrols 5 clients, data has 12"):
        Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG, dispatcher=other)


def test_a_report_and_its_envelope_must_agree() -> None:
    with pytest.raises(ValueError, match="needs envelope"):
        Report(1, "reported")
    with pytest.raises(ValueError, match="carries no envelope"):
        Report(1, "dropped", Envelope(1, 1, ()))


def test_the_round_engine_runs_with_tensorflow_blocked() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        sys.path.insert(0, {tests!r})
        from federated.test_dispatch import CFG, NumpyRuntime, tiny_fleet
        from fedlab.federated import Federation
        history = Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG).run(3)
        print("rounds", len(history), "tensorflow" in sys.modules and sys.modules["tensorflow"])
        """
    ).format(tests=os.path.dirname(os.path.dirname(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rounds 3 None" in done.stdout


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_any_round(tmp_path) -> None:
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    with pytest.raises(
        ValueError, match="checkpoint_dir must be a folder, got .*not-a-folder.*, which is a file"
    ):
        Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG, checkpoint_dir=afile)
