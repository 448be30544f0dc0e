"""Per-client round states (a plain observer of the round events) and their HTML grid."""

from __future__ import annotations

import html
import threading
from collections import Counter
from typing import TYPE_CHECKING

from fedlab.federated.observers import Observer

if TYPE_CHECKING:
    from fedlab.federated.federation import ClientOutcome, Federation
    from fedlab.federated.types import RoundResult

__all__ = ["CLIENT_STATES", "ClientStates", "render_client_grid"]

#: Every state a client can be in during a round, with its colour in the grid.
CLIENT_STATES: dict[str, str] = {
    "idle": "#e5e7eb",
    "selected": "#93c5fd",
    "training": "#fbbf24",
    "uploaded": "#22c55e",
    "dropped": "#9ca3af",
    "straggler": "#f97316",
    "failed": "#dc2626",
    "rejected": "#7c3aed",
}

_OUTCOME_STATE = {
    "completed": "uploaded",
    "dropped": "dropped",
    "straggler": "straggler",
    "failed": "failed",
    "rejected": "rejected",
}


class ClientStates(Observer):
    """Each client's state in the current (or last) round, kept from the round events.

    Parameters
    ----------
    population : int
        Number of clients.
    """

    def __init__(self, population: int) -> None:
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population!r}")
        self.population = population
        self.round_index: int | None = None
        self._states = ["idle"] * population
        self._lock = threading.Lock()

    def snapshot(self) -> tuple[str, ...]:
        """The states, by client id."""
        with self._lock:
            return tuple(self._states)

    def counts(self) -> dict[str, int]:
        """How many clients are in each state (every state listed, zeros included)."""
        c = Counter(self.snapshot())
        return {state: c.get(state, 0) for state in CLIENT_STATES}

    def clear(self) -> None:
        """Everybody idle (after a reset)."""
        with self._lock:
            self._states = ["idle"] * self.population
            self.round_index = None

    def on_round_start(
        self, federation: Federation, round_index: int, selected: tuple[int, ...]
    ) -> None:
        """New round: the invited clients are selected, everybody else idle."""
        with self._lock:
            self._states = ["idle"] * self.population
            for cid in selected:
                self._states[cid] = "selected"
            self.round_index = round_index

    def on_training_start(
        self, federation: Federation, round_index: int, client_ids: tuple[int, ...]
    ) -> None:
        """The clients that did not drop out train."""
        with self._lock:
            for cid in client_ids:
                self._states[cid] = "training"

    def on_client_done(
        self, federation: Federation, round_index: int, outcome: ClientOutcome
    ) -> None:
        """A client's outcome is known."""
        with self._lock:
            self._states[outcome.client_id] = _OUTCOME_STATE[outcome.status]

    def matches(self, result: RoundResult) -> bool:
        """True when the states agree with a committed round's result."""
        states = self.snapshot()
        expected = ["idle"] * self.population
        for cid in result.selected:
            expected[cid] = "selected"
        for cid in result.completed:
            expected[cid] = "uploaded"
        for cid in result.dropped:
            expected[cid] = "dropped"
        for cid in result.stragglers:
            expected[cid] = "straggler"
        for cid, _ in result.failed:
            expected[cid] = "failed"
        for cid, _ in result.rejected:
            expected[cid] = "rejected"
        return list(states) == expected


def render_client_grid(states: tuple[str, ...], *, max_cells: int = 1000) -> str:
    """HTML: one coloured cell per client (hover shows id and state) and a legend with counts.

    Parameters
    ----------
    states : tuple of str
        States by client id (from :meth:`ClientStates.snapshot`).
    max_cells : int
        Draw at most this many cells (the counts still cover everybody).
    """
    counts = Counter(states)
    cells = "".join(
        f'<div class="fl-cell fl-{s}" title="client {i}: {s}" '
        f'style="width:11px;height:11px;margin:1px;background:{CLIENT_STATES[s]}"></div>'
        for i, s in enumerate(states[:max_cells])
    )
    more = (
        f"<div style='font-size:11px'>… {len(states) - max_cells} more clients</div>"
        if len(states) > max_cells
        else ""
    )
    legend = " ".join(
        f'<span style="white-space:nowrap"><span style="display:inline-block;width:10px;'
        f'height:10px;background:{colour}"></span> {html.escape(state)} '
        f'<b class="fl-count-{state}">{counts.get(state, 0)}</b></span>'
        for state, colour in CLIENT_STATES.items()
    )
    return (
        f'<div class="fl-grid" style="display:flex;flex-wrap:wrap;max-width:560px">{cells}</div>'
        f'{more}<div style="font-size:12px;margin-top:4px">{legend}</div>'
    )
