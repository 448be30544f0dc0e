"""``FederationDashboard``: live federated rounds in JupyterLab.

A thin observer of a :class:`~fedlab.federated.Federation`: it turns controls into
:class:`~fedlab.ui.settings.DashboardSettings`, runs rounds through a
:class:`~fedlab.ui.runner.RoundRunner` on a worker thread, and shows what the round events
say. No training logic lives here.
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
from bqplot import Axis, Figure, LinearScale, Lines

from fedlab.federated.observers import Observer
from fedlab.federated.strategies import STRATEGIES
from fedlab.ui.client_grid import ClientStates, render_client_grid
from fedlab.ui.runner import RoundRunner
from fedlab.ui.settings import DashboardSettings, apply_settings

if TYPE_CHECKING:
    from fedlab.federated.federation import Federation
    from fedlab.federated.types import RoundResult
    from fedlab.privacy.tracker import PrivacyTracker

__all__ = ["FederationDashboard"]

_STATE_COLOURS = {
    "idle": "#6b7280",
    "running": "#16a34a",
    "pausing": "#ca8a04",
    "paused": "#2563eb",
    "finished": "#7c3aed",
    "error": "#dc2626",
}


def _line(scales: dict[str, Any], label: str, colour: str) -> Lines:
    return Lines(
        x=np.zeros(0),
        y=np.zeros(0),
        scales=scales,
        labels=[label],
        colors=[colour],
        display_legend=True,
        marker="circle",
        marker_size=12,
    )


def _figure(title: str, marks: list[Lines], rounds: LinearScale, axes: list[Axis]) -> Figure:
    """A plot against the round number (the shared x axis), with ``axes`` for the values."""
    return Figure(
        marks=marks,
        axes=[Axis(scale=rounds, label="round", tick_format="d"), *axes],
        title=title,
        legend_location="bottom-right",
        fig_margin={"top": 40, "bottom": 40, "left": 50, "right": 50},
        layout=widgets.Layout(width="370px", height="260px"),
        animation_duration=0,
    )


class FederationDashboard(Observer):
    """Controls, live plots, a client grid and a round log for one federation.

    Parameters
    ----------
    federation : Federation
        The federation to drive; the dashboard subscribes to its round events.
    target_rounds : int
        Start runs until the federation has completed this many rounds (the progress bar's
        end); raise it with the "rounds" control.
    refresh_interval : float
        Minimum seconds between two redraws while rounds run (the last state is always
        drawn when the run stops), so drawing never slows the federation down.
    export_dir : str or Path
        Folder of the CSV/JSON exports of the history.
    dp_delta : float, optional
        δ of the privacy accounting when DP is switched on; default ``1 / N**1.1`` for a
        population of N devices.
    log_rows : int
        Rounds shown in the round log (newest first).

    Notes
    -----
    Every control change applies from the next round: the worker thread reads the current
    settings just before it starts a round. DP can be switched on or off only before the
    first round (after Reset), because ε accounts for every release since round 1.
    """

    def __init__(
        self,
        federation: Federation,
        *,
        target_rounds: int = 50,
        refresh_interval: float = 0.25,
        export_dir: str | Path = "build/exports",
        dp_delta: float | None = None,
        log_rows: int = 12,
    ) -> None:
        from fedlab.federated.federation import Federation

        if not isinstance(federation, Federation):
            raise TypeError(f"federation must be a Federation, got {type(federation).__name__}")
        if not refresh_interval >= 0:
            raise ValueError(f"refresh_interval must be >= 0, got {refresh_interval!r}")
        population = federation.dispatcher.num_clients
        self.federation = federation
        self.refresh_interval = float(refresh_interval)
        self.export_dir = Path(export_dir)
        self.dp_delta = float(dp_delta) if dp_delta is not None else 1.0 / population**1.1
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"dp_delta must be in (0, 1), got {self.dp_delta!r}")
        self.log_rows = int(log_rows)
        self.clients = ClientStates(population)
        self.tracker: PrivacyTracker | None = None
        self._settings = DashboardSettings.from_federation(federation)
        self._applied: DashboardSettings | None = None
        self._draw_lock = threading.Lock()
        self._last_draw = -math.inf
        self._drawn_rounds = -1
        self._drawn_grid = ""
        self._errors_before = 0  # errors of runs before the last Reset stay in runner.errors
        self.runner = RoundRunner(
            federation,
            prepare=self._prepare_round,
            on_change=self._on_runner_change,
            target_rounds=target_rounds,
        )
        self._build_widgets(target_rounds)
        federation.add_observer(self.clients)
        federation.add_observer(self)
        self.refresh(force=True)

    # -- widgets -------------------------------------------------------------------
    def _build_widgets(self, target_rounds: int) -> None:
        s, population = self._settings, self.federation.dispatcher.num_clients
        style = {"description_width": "150px"}
        wide = widgets.Layout(width="380px")
        self.clients_per_round = widgets.IntSlider(
            value=s.clients_per_round, min=1, max=population, description="clients / round",
            style=style, layout=wide,
        )  # fmt: skip
        self.local_epochs = widgets.IntSlider(
            value=s.local_epochs, min=1, max=20, description="local epochs",
            style=style, layout=wide,
        )  # fmt: skip
        self.learning_rate = widgets.FloatLogSlider(
            value=s.client_lr, base=10, min=-4, max=0, step=0.05, description="learning rate",
            readout_format=".3g", style=style, layout=wide,
        )  # fmt: skip
        self.strategy = widgets.Dropdown(
            options=sorted(STRATEGIES), value=s.strategy, description="strategy",
            style=style, layout=wide,
        )  # fmt: skip
        self.dropout_rate = widgets.FloatSlider(
            value=s.dropout_rate, min=0.0, max=0.9, step=0.05, description="dropout rate",
            style=style, layout=wide,
        )  # fmt: skip
        self.deadline = widgets.BoundedFloatText(
            value=s.deadline_s, min=0.0, max=1e6, step=1.0,
            description="deadline s (0 = none)", style=style, layout=wide,
        )  # fmt: skip
        self.dp = widgets.Checkbox(value=s.dp, description="differential privacy", indent=False)
        self.noise_multiplier = widgets.FloatSlider(
            value=s.noise_multiplier, min=0.1, max=5.0, step=0.1, description="noise multiplier z",
            style=style, layout=wide,
        )  # fmt: skip
        self.clip_norm = widgets.FloatLogSlider(
            value=s.clip_norm, base=10, min=-2, max=1, step=0.05, description="clip norm",
            readout_format=".3g", style=style, layout=wide,
        )  # fmt: skip
        self.epsilon_budget = widgets.BoundedFloatText(
            value=0.0, min=0.0, max=1e4, description="ε budget (0 = none)",
            style=style, layout=wide,
        )  # fmt: skip
        self.rounds = widgets.BoundedIntText(
            value=target_rounds, min=1, max=100_000, description="rounds", style=style,
            layout=wide,
        )  # fmt: skip
        self.controls: dict[str, widgets.ValueWidget] = {
            "clients_per_round": self.clients_per_round,
            "local_epochs": self.local_epochs,
            "client_lr": self.learning_rate,
            "strategy": self.strategy,
            "dropout_rate": self.dropout_rate,
            "deadline_s": self.deadline,
            "dp": self.dp,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
        }
        for control in (*self.controls.values(), self.epsilon_budget):
            control.observe(self._on_control, names="value")
        self.rounds.observe(self._on_rounds, names="value")

        def button(label: str, icon: str, handler: Any, style: str = "") -> widgets.Button:
            b = widgets.Button(description=label, icon=icon, button_style=style)
            b.add_class(f"fl-{label.lower()}")
            b.on_click(handler)
            return b

        self.start_button = button("Start", "play", lambda _: self.start(), "success")
        self.pause_button = button("Pause", "pause", lambda _: self.pause(), "warning")
        self.step_button = button("Step", "step-forward", lambda _: self.step(), "info")
        self.reset_button = button("Reset", "undo", lambda _: self.reset(), "danger")
        self.csv_button = button("CSV", "download", lambda _: self.export("csv"))
        self.json_button = button("JSON", "download", lambda _: self.export("json"))
        self.progress = widgets.IntProgress(value=0, min=0, max=target_rounds, description="")
        self.status = widgets.HTML()
        self.status.add_class("fl-status")
        self.error_box = widgets.HTML()
        self.error_box.add_class("fl-error")
        self.export_label = widgets.HTML()

        # Round axes run from 1 to max(5, rounds): integer ticks even before round 1.
        x_acc, x_b, x_e = (LinearScale(min=1.0, max=5.0) for _ in range(3))
        self._round_scales = (x_acc, x_b, x_e)
        y_acc, y_loss = LinearScale(min=0.0, max=1.0), LinearScale(min=0.0)
        self.accuracy_line = _line({"x": x_acc, "y": y_acc}, "test accuracy", "#2563eb")
        self.loss_line = _line({"x": x_acc, "y": y_loss}, "test loss", "#dc2626")
        self.accuracy_figure = _figure(
            "Accuracy and loss",
            [self.accuracy_line, self.loss_line],
            x_acc,
            [
                Axis(scale=y_acc, side="left", label="accuracy"),
                Axis(scale=y_loss, side="right", label="loss"),
            ],
        )
        self.accuracy_figure.add_class("fl-accuracy-plot")
        y_b = LinearScale(min=0.0)
        self.up_line = _line({"x": x_b, "y": y_b}, "uploaded", "#16a34a")
        self.down_line = _line({"x": x_b, "y": y_b}, "downloaded", "#6b7280")
        # what the uploads would have cost as dense float32 (before any codec stage)
        self.raw_line = _line({"x": x_b, "y": y_b}, "uploaded as float32", "#86efac")
        self.raw_line.line_style = "dashed"
        self.bytes_figure = _figure(
            "Bytes per round (kB)",
            [self.up_line, self.raw_line, self.down_line],
            x_b,
            [Axis(scale=y_b, side="left", label="kB")],
        )
        y_e = LinearScale(min=0.0)
        self.epsilon_line = _line({"x": x_e, "y": y_e}, "ε spent", "#7c3aed")
        self.epsilon_figure = _figure(
            "Privacy spent ε (DP off)",
            [self.epsilon_line],
            x_e,
            [Axis(scale=y_e, side="left", label="ε")],
        )
        self.grid = widgets.HTML()
        self.log = widgets.HTML()

        buttons = widgets.HBox(
            [self.start_button, self.pause_button, self.step_button, self.reset_button]
        )
        exports = widgets.HBox([widgets.Label("export history"), self.csv_button,
                                self.json_button])  # fmt: skip
        round_box = widgets.VBox(
            [
                widgets.HTML("<b>Rounds</b>"), *(self.controls[k] for k in (
                    "clients_per_round", "local_epochs", "client_lr", "strategy",
                    "dropout_rate", "deadline_s")),
            ]
        )  # fmt: skip
        dp_box = widgets.VBox(
            [widgets.HTML("<b>Privacy</b>"), self.dp, self.noise_multiplier, self.clip_norm,
             self.epsilon_budget, widgets.HTML("<b>Run</b>"), self.rounds, buttons,
             self.progress, self.status, exports, self.export_label]
        )  # fmt: skip
        self.widget = widgets.VBox(
            [
                widgets.HBox([round_box, dp_box]),
                self.error_box,
                widgets.HBox([self.accuracy_figure, self.bytes_figure, self.epsilon_figure]),
                widgets.HBox(
                    [
                        widgets.VBox([widgets.HTML("<b>Clients this round</b>"), self.grid]),
                        widgets.VBox([widgets.HTML("<b>Round log</b>"), self.log]),
                    ]
                ),
            ]
        )
        self.widget.add_class("fl-dashboard")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- controls ------------------------------------------------------------------
    @property
    def settings(self) -> DashboardSettings:
        """What the controls say now (applied at the start of the next round)."""
        return self._settings

    def _on_control(self, change: dict[str, Any]) -> None:
        if change["owner"] is self.dp and (self.federation.rounds_done > 0 or self.runner.busy):
            self.dp.unobserve(self._on_control, names="value")
            self.dp.value = change["old"]
            self.dp.observe(self._on_control, names="value")
            self.error_box.value = self._error_html(
                "differential privacy can be switched only before the first round "
                "(ε covers every release since round 1): press Reset first"
            )
            return
        values = {name: control.value for name, control in self.controls.items()}
        try:
            self._settings = DashboardSettings(**values)
        except (ValueError, TypeError) as exc:
            self.error_box.value = self._error_html(f"control not applied: {exc}")
            return
        if self.tracker is not None:
            budget = float(self.epsilon_budget.value)
            self.tracker.budget_epsilon = budget if budget > 0 else None
        with self._draw_lock:
            self._draw_status()

    def _on_rounds(self, change: dict[str, Any]) -> None:
        self.runner.target_rounds = int(change["new"])
        self.progress.max = int(change["new"])
        with self._draw_lock:
            self._draw_status()

    def _prepare_round(self) -> None:
        """Worker thread, before each round: apply the settings of that moment."""
        fed, settings = self.federation, self._settings
        if fed.rounds_done > 0 and settings.dp != (self.tracker is not None):
            raise ValueError(
                "differential privacy can be switched only before the first round "
                "(ε covers every release since round 1): press Reset first"
            )
        apply_settings(fed, settings, self._applied)
        self._applied = settings
        if settings.dp and self.tracker is None:
            from fedlab.privacy.tracker import PrivacyTracker

            budget = float(self.epsilon_budget.value)
            self.tracker = PrivacyTracker(
                population=fed.dispatcher.num_clients,
                delta=self.dp_delta,
                budget_epsilon=budget if budget > 0 else None,
            ).attach(fed)
        if not settings.dp and self.tracker is not None:
            self._detach_tracker()

    def _detach_tracker(self) -> None:
        if self.tracker is not None:
            self.federation.remove_observer(self.tracker)
            self.federation.remove_guard(self.tracker)
            self.tracker = None

    # -- commands (the buttons call these) -----------------------------------------
    def start(self) -> bool:
        """Run rounds on the worker thread until paused or the target is reached."""
        self.error_box.value = ""
        return self.runner.start()

    def pause(self) -> bool:
        """Stop at the end of the current round."""
        return self.runner.pause()

    def step(self) -> bool:
        """Run one round on the worker thread."""
        self.error_box.value = ""
        return self.runner.step()

    def reset(self, timeout: float | None = 120.0) -> None:
        """Finish the current round, then back to the initial model with empty plots."""
        self.runner.reset(timeout)
        self._errors_before = len(self.runner.errors)
        self._detach_tracker()
        self.clients.clear()
        self.error_box.value = ""
        self.refresh(force=True)

    def export(self, kind: str = "csv") -> Path:
        """Write the history as ``history.csv`` or ``history.json`` into ``export_dir``."""
        if kind not in ("csv", "json"):
            raise ValueError(f"kind must be 'csv' or 'json', got {kind!r}")
        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / f"history.{kind}"
        history = self.federation.history
        history.to_csv(path) if kind == "csv" else history.to_json(path)
        self.export_label.value = f"<code>{html.escape(str(path))}</code> ({len(history)} rounds)"
        return path

    # -- events (worker thread) ----------------------------------------------------
    def on_round_start(
        self, federation: Federation, round_index: int, selected: tuple[int, ...]
    ) -> None:
        """Redraw (throttled) so the grid shows the selection."""
        self.refresh()

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Redraw (throttled)."""
        self.refresh()

    def _on_runner_change(self, runner: RoundRunner) -> None:
        if runner.state in ("running", "pausing"):
            # A click's answer (and a round's count) is the status line: drawn at once.
            # The plots follow with the throttled redraw of the round events.
            with self._draw_lock:
                self._draw_status()
        else:
            self.refresh(force=True)

    # -- drawing -------------------------------------------------------------------
    def series(self) -> dict[str, np.ndarray]:
        """What the plots show: rounds (1-based), accuracy, loss, kB up/down (and up before
        any codec stage: dense float32), ε."""
        history = self.federation.history
        rounds = np.arange(1, len(history) + 1, dtype=np.float64)
        eps = self.tracker.epsilons if self.tracker is not None else []
        return {
            "round": rounds,
            "test_accuracy": history.series("test_accuracy"),
            "test_loss": history.series("test_loss"),
            "kb_up": history.series("bytes_up") / 1e3,
            "kb_down": history.series("bytes_down") / 1e3,
            "kb_raw": (
                history.stage_bytes("update") / 1e3
                if "update" in history.stage_names()
                else np.full(len(history), np.nan)
            ),
            "epsilon_round": np.array([r + 1 for r, _ in eps], dtype=np.float64),
            "epsilon": np.array([e for _, e in eps], dtype=np.float64),
        }

    def refresh(self, force: bool = False) -> None:
        """Redraw everything (at most every ``refresh_interval`` s unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_draw < self.refresh_interval:
            return
        with self._draw_lock:
            self._last_draw = now
            self._draw_plots()
            self._draw_grid()
            self._draw_status()

    @staticmethod
    def _set_line(line: Lines, x: np.ndarray, y: np.ndarray) -> None:
        keep = np.isfinite(y)
        with line.hold_sync():
            line.x, line.y = x[keep], y[keep]

    def _draw_plots(self) -> None:
        s = self.series()
        done = len(s["round"])
        if done != self._drawn_rounds:
            self._drawn_rounds = done
            for scale in self._round_scales:
                scale.max = float(max(5, done))
            self._set_line(self.accuracy_line, s["round"], s["test_accuracy"])
            self._set_line(self.loss_line, s["round"], s["test_loss"])
            self._set_line(self.up_line, s["round"], s["kb_up"])
            self._set_line(self.down_line, s["round"], s["kb_down"])
            self._set_line(self.raw_line, s["round"], s["kb_raw"])
            self.log.value = self._log_html()
        if len(s["epsilon"]) != len(self.epsilon_line.x):
            self._set_line(self.epsilon_line, s["epsilon_round"], s["epsilon"])
        title = (
            f"Privacy spent ε (δ = {self.dp_delta:.2g})"
            if self.tracker is not None
            else "Privacy spent ε (DP off)"
        )
        if self.epsilon_figure.title != title:
            self.epsilon_figure.title = title

    def _draw_grid(self) -> None:
        grid = render_client_grid(self.clients.snapshot())
        if grid != self._drawn_grid:
            self._drawn_grid = grid
            self.grid.value = grid

    def _draw_status(self) -> None:
        runner, fed = self.runner, self.federation
        state = runner.state
        history = fed.history
        acc = history.last_accuracy() if len(history) else math.nan
        parts = [
            f'<b class="fl-state" style="color:{_STATE_COLOURS[state]}">{state}</b>',
            f'round <b class="fl-rounds">{fed.rounds_done}</b> / {runner.target_rounds}',
        ]
        if math.isfinite(acc):
            parts.append(f"accuracy <b>{acc:.3f}</b>")
        if self.tracker is not None and self.tracker.epsilons:
            parts.append(f"ε <b>{self.tracker.epsilons[-1][1]:.3g}</b>")
        self.status.value = " · ".join(parts)
        self.progress.value = min(fed.rounds_done, self.progress.max)
        busy = state in ("running", "pausing")
        self.start_button.disabled = state == "running"
        self.pause_button.disabled = state != "running"
        self.step_button.disabled = busy
        self.dp.disabled = fed.rounds_done > 0 or busy
        if state == "error" and runner.errors:
            last = runner.errors[-1]
            self.log.value = self._log_html()
            self.error_box.value = self._error_html(
                f"round {last.round_index + 1} failed: {last.message}", last.traceback
            )

    @staticmethod
    def _error_html(message: str, trace: str = "") -> str:
        details = (
            f"<details><summary>traceback</summary><pre>{html.escape(trace)}</pre></details>"
            if trace
            else ""
        )
        return (
            '<div style="border-left:4px solid #dc2626;padding:4px 8px;background:#fef2f2">'
            f"<b>{html.escape(message)}</b>{details}</div>"
        )

    def _log_html(self) -> str:
        rows = []
        errors = {e.round_index: e for e in self.runner.errors[self._errors_before :]}
        for r in reversed(self.federation.history.rounds[-self.log_rows :]):
            acc = f"{r.test_accuracy:.3f}" if math.isfinite(r.test_accuracy) else "–"
            # The runtime that trained the round; a fallback is flagged, its reason and cost
            # in the cell's tooltip.
            runtime, _, fallback = r.runtime.partition(";")
            flag = ' style="color:#b45309"' if fallback else ""
            runtime_cell = (
                f'<td title="{html.escape(r.runtime)}"{flag}>'
                f"{html.escape(runtime)}{' ⚠' if fallback else ''}</td>"
            )
            rows.append(
                f"<tr><td>{r.round_index + 1}</td><td>{len(r.selected)}</td>"
                f"<td>{len(r.completed)}</td><td>{len(r.dropped)}</td>"
                f"<td>{len(r.stragglers)}</td><td>{len(r.failed) + len(r.rejected)}</td>"
                f"<td>{acc}</td><td>{r.bytes_up / 1e3:.1f}</td><td>{r.sim_time_s:.1f}</td>"
                f"{runtime_cell}</tr>"
            )
        for index, error in sorted(errors.items(), reverse=True)[: self.log_rows]:
            rows.insert(
                0,
                f'<tr style="color:#dc2626"><td>{index + 1}</td>'
                f'<td colspan="9">failed: {html.escape(error.message)}</td></tr>',
            )
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "round",
                "sel",
                "ok",
                "drop",
                "late",
                "bad",
                "acc",
                "kB up",
                "sim s",
                "runtime",
            )
        )
        return (
            '<table class="fl-log" style="font-size:12px;border-collapse:collapse">'
            f"<tr>{head}</tr>{''.join(rows)}</table>"
        )
