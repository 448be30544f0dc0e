"""Headless tests of the dashboard: buttons via .click(), state, plots, grid, errors."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from fedlab.federated import Federation, FederationConfig, History
from fedlab.federated.selection import sample_profiles
from fedlab.federated.strategies import FedAvgM
from fedlab.ui import (
    ClientStates,
    DashboardSettings,
    FederationDashboard,
    RoundRunner,
    render_client_grid,
)

CFG = FederationConfig(clients_per_round=5, local_epochs=1, batch_size=8, client_lr=0.1, seed=3)
TIMEOUT = 120.0


def make_fed(data, runtime, **config) -> Federation:
    return Federation(data=data, runtime=runtime, config=replace(CFG, **config))


@pytest.fixture
def dash(small_digits, digits_runtime, tmp_path):
    d = FederationDashboard(
        make_fed(small_digits, digits_runtime), target_rounds=40, refresh_interval=0.0,
        export_dir=tmp_path,
    )  # fmt: skip
    yield d
    d.runner.pause()
    d.runner.wait(TIMEOUT)


def test_start_pause_step_reset_through_the_buttons(dash) -> None:
    fed = dash.federation
    assert dash.runner.state == "idle" and dash.pause_button.disabled
    dash.start_button.click()
    assert dash.runner.state in ("running", "paused")  # a round may already be done
    assert dash.runner.wait_for_rounds(2, TIMEOUT)
    dash.pause_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "paused"
    paused_at = fed.rounds_done
    time.sleep(0.3)
    assert fed.rounds_done == paused_at  # nothing runs after a pause
    assert "paused" in dash.status.value and f">{paused_at}<" in dash.status.value
    assert not dash.start_button.disabled and dash.pause_button.disabled

    dash.step_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert fed.rounds_done == paused_at + 1 and dash.runner.state == "paused"

    dash.reset_button.click()
    assert fed.rounds_done == 0 and len(fed.history) == 0 and dash.runner.state == "idle"
    assert len(dash.accuracy_line.x) == 0 and len(dash.up_line.x) == 0
    assert set(dash.clients.snapshot()) == {"idle"} and dash.progress.value == 0


def test_plots_hold_one_point_per_completed_round(dash) -> None:
    for _ in range(3):
        dash.step_button.click()
        assert dash.runner.wait(TIMEOUT)
    history = dash.federation.history
    assert list(dash.accuracy_line.x) == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(dash.accuracy_line.y, history.series("test_accuracy"))
    np.testing.assert_allclose(dash.loss_line.y, history.series("test_loss"))
    np.testing.assert_allclose(dash.up_line.y, history.series("bytes_up") / 1e3)
    np.testing.assert_allclose(dash.down_line.y, history.series("bytes_down") / 1e3)
    np.testing.assert_allclose(dash.raw_line.y, history.stage_bytes("update") / 1e3)
    assert dash.progress.value == 3 and len(dash.epsilon_line.x) == 0
    assert dash.log.value.count("<tr>") == 1 + 3  # header + one row per round
    # which runtime trained each round is in the log (the fixture uses the reference one)
    assert [r.runtime for r in history] == ["reference"] * 3
    assert dash.log.value.count('<td title="reference">reference</td>') == 3


def test_round_log_flags_a_runtime_fallback_with_its_reason(dash) -> None:
    dash.step_button.click()
    assert dash.runner.wait(TIMEOUT)
    fed = dash.federation
    fallback = "vectorized; 3 clients retried on reference (+1.2 s): InvalidArgumentError: x"
    rounds = fed.history.rounds
    fed._history = History((*rounds[:-1], replace(rounds[-1], runtime=fallback)))
    html = dash._log_html()
    assert f'title="{fallback}"' in html and "vectorized ⚠" in html


def test_client_grid_matches_the_round_result(small_digits, digits_runtime, tmp_path) -> None:
    fed = Federation(
        data=small_digits,
        runtime=digits_runtime,
        config=replace(CFG, clients_per_round=8, dropout_rate=0.25, deadline_s=3.0),
        profiles=sample_profiles(20, heterogeneity=1.5, seed=0),
    )
    dash = FederationDashboard(fed, refresh_interval=0.0, export_dir=tmp_path)
    seen = set()
    for _ in range(4):
        dash.step_button.click()
        assert dash.runner.wait(TIMEOUT)
        result = fed.history[-1]
        assert dash.clients.matches(result)
        counts = dash.clients.counts()
        assert counts["uploaded"] == len(result.completed)
        assert counts["dropped"] == len(result.dropped)
        assert counts["straggler"] == len(result.stragglers)
        assert counts["idle"] == 20 - len(result.selected)
        assert dash.grid.value.count('class="fl-cell') == 20
        assert f'class="fl-count-uploaded">{len(result.completed)}<' in dash.grid.value
        seen |= {s for s, n in counts.items() if n}
    assert {"uploaded", "dropped", "straggler", "idle"} <= seen


def test_a_control_change_applies_from_the_next_round(dash) -> None:
    fed = dash.federation
    dash.step_button.click()
    assert dash.runner.wait(TIMEOUT)
    dash.clients_per_round.value = 9
    dash.local_epochs.value = 2
    dash.strategy.value = "fedavgm"
    assert len(fed.history[-1].selected) == 5 and fed.config.local_epochs == 1  # not yet
    dash.step_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert len(fed.history[-1].selected) == 9
    assert fed.config.local_epochs == 2 and isinstance(fed.strategy, FedAvgM)
    assert dash.settings == DashboardSettings.from_federation(fed)


def test_an_exception_in_a_round_is_shown_and_kept(dash) -> None:
    class Maintenance:
        def before_round(self, federation, round_index):
            if round_index == 2:
                raise RuntimeError("maintenance window: no rounds now")

    guard = Maintenance()
    dash.federation.add_guard(guard)
    dash.start_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "error" and dash.federation.rounds_done == 2
    assert "maintenance window" in dash.error_box.value
    assert "round 3 failed: RuntimeError" in dash.error_box.value
    assert "maintenance window" in dash.log.value and "traceback" in dash.error_box.value
    (error,) = dash.runner.errors
    assert isinstance(error.error, RuntimeError) and "before_round" in error.traceback
    # Fixed: the run goes on from where it stopped.
    dash.federation.remove_guard(guard)
    dash.step_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "paused" and dash.federation.rounds_done == 3
    assert dash.error_box.value == ""


def test_start_stops_at_the_target_rounds(small_digits, digits_runtime, tmp_path) -> None:
    dash = FederationDashboard(
        make_fed(small_digits, digits_runtime), target_rounds=2, export_dir=tmp_path
    )
    dash.start_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "finished" and dash.federation.rounds_done == 2
    assert dash.start() is False and dash.federation.rounds_done == 2
    dash.rounds.value = 3
    assert dash.start() is True and dash.runner.wait(TIMEOUT)
    assert dash.federation.rounds_done == 3 and dash.progress.max == 3


def test_export_writes_csv_and_json(dash, tmp_path) -> None:
    for _ in range(2):
        dash.step_button.click()
        assert dash.runner.wait(TIMEOUT)
    dash.csv_button.click()
    dash.json_button.click()
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("round_index")
    records = json.loads((tmp_path / "history.json").read_text())
    assert History.from_records(records).deterministic_records() == (
        dash.federation.history.deterministic_records()
    )
    assert "history.json" in dash.export_label.value
    with pytest.raises(ValueError, match="'csv' or 'json'"):
        dash.export("xml")


def test_dp_spends_epsilon_and_is_locked_after_round_one(dash) -> None:
    dash.dp.value = True
    dash.noise_multiplier.value = 1.0
    for _ in range(2):
        dash.step_button.click()
        assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "paused", dash.error_box.value
    eps = np.asarray(dash.epsilon_line.y)
    assert len(eps) == 2 and 0 < eps[0] < eps[1]
    assert "δ" in dash.epsilon_figure.title and dash.dp.disabled
    dash.dp.value = False  # refused: ε covers every release since round 1
    assert "only before the first round" in dash.error_box.value and dash.dp.value is True
    dash.reset_button.click()
    assert not dash.dp.disabled and dash.tracker is None and len(dash.epsilon_line.x) == 0
    dash.dp.value = False
    dash.step_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "paused" and dash.tracker is None
    assert type(dash.federation.strategy).__name__ == "FedAvg"


def test_an_epsilon_budget_stops_the_run_with_a_clear_message(dash) -> None:
    dash.dp.value = True
    # z = 1 fits 3 rounds in ε = 10 (replace-one accounting, z/2); z = 0.5 fits none.
    dash.noise_multiplier.value = 1.0
    dash.epsilon_budget.value = 10.0
    dash.start_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert dash.runner.state == "error"
    assert "BudgetExceeded" in dash.error_box.value
    assert dash.tracker is not None and dash.tracker.epsilons[-1][1] <= 10.0
    assert dash.federation.rounds_done == len(dash.tracker.epsilons) == 3


def test_the_dashboard_does_not_change_training(small_digits, digits_runtime, tmp_path) -> None:
    plain = make_fed(small_digits, digits_runtime)
    plain.run(3)
    watched = make_fed(small_digits, digits_runtime)
    dash = FederationDashboard(watched, target_rounds=3, export_dir=tmp_path)
    dash.start_button.click()
    assert dash.runner.wait(TIMEOUT)
    assert watched.history.deterministic_records() == plain.history.deterministic_records()


def test_settings_and_constructor_errors(small_digits, digits_runtime, tmp_path) -> None:
    fed = make_fed(small_digits, digits_runtime)
    base = DashboardSettings.from_federation(fed)
    with pytest.raises(ValueError, match="unknown strategy 'sgd'"):
        base.with_changes(strategy="sgd")
    with pytest.raises(ValueError, match="deadline_s must be >= 0"):
        base.with_changes(deadline_s=-1.0)
    with pytest.raises(ValueError, match="dropout_rate must be in"):
        base.with_changes(dropout_rate=1.0)
    with pytest.raises(ValueError, match="noise_multiplier must be > 0"):
        base.with_changes(noise_multiplier=0.0)
    with pytest.raises(TypeError, match="must be a Federation"):
        FederationDashboard(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dp_delta"):
        FederationDashboard(fed, dp_delta=2.0, export_dir=tmp_path)

    class Custom:
        def init_state(self, weights):
            return {}

        def aggregate(self, weights, updates, state):
            return weights, state

    fed.set_strategy(Custom())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="controls only the named strategies"):
        FederationDashboard(fed, export_dir=tmp_path)


def test_runner_commands_are_idempotent(small_digits, digits_runtime) -> None:
    fed = make_fed(small_digits, digits_runtime)
    changes: list[str] = []
    runner = RoundRunner(fed, on_change=lambda r: changes.append(r.state))
    assert runner.pause() is False and runner.wait() is True
    assert runner.start() is True
    assert runner.start() is False and runner.step() is False  # already running
    assert runner.wait_for_rounds(1, TIMEOUT)
    runner.pause()
    assert runner.start() in (True, False)  # a pending pause is cancelled, or already done
    runner.pause()
    assert runner.wait(TIMEOUT) and runner.state == "paused"
    assert changes[0] == "running" and changes[-1] == "paused"
    with pytest.raises(ValueError, match="target_rounds"):
        RoundRunner(fed, target_rounds=0)


def test_client_states_and_grid_html() -> None:
    states = ClientStates(3)
    assert states.counts()["idle"] == 3
    html = render_client_grid(("idle", "uploaded", "dropped"))
    assert html.count('class="fl-cell') == 3 and 'class="fl-count-dropped">1<' in html
    big = render_client_grid(("idle",) * 12, max_cells=10)
    assert big.count('class="fl-cell') == 10 and "2 more clients" in big
    with pytest.raises(ValueError, match="population"):
        ClientStates(0)
