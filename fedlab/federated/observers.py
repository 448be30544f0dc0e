"""Observers: how dashboards, registries and logs follow a federation without coupling."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedlab.federated.federation import ClientOutcome, Federation
    from fedlab.federated.types import RoundResult

__all__ = ["Observer", "RecordingObserver"]


class Observer:
    """Base class with no-op hooks; override the ones you need.

    Hooks run on the thread that runs the round. The federation's state is consistent
    when each hook is called; an exception raised by a hook propagates to the caller of
    ``run_round`` after the round has been committed, so nothing is lost.
    """

    def on_round_start(
        self, federation: Federation, round_index: int, selected: tuple[int, ...]
    ) -> None:
        """A round began with these clients invited."""

    def on_training_start(
        self, federation: Federation, round_index: int, client_ids: tuple[int, ...]
    ) -> None:
        """These clients (the invited ones that neither dropped out nor were sure stragglers)
        start local training."""

    def on_client_done(
        self, federation: Federation, round_index: int, outcome: ClientOutcome
    ) -> None:
        """One client's outcome is known (completed, dropped, straggler, failed, rejected)."""

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """A round was committed to the history."""


class RecordingObserver(Observer):
    """Keeps every event in a list, in order (useful in tests and notebooks)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, object]] = []

    def on_round_start(
        self, federation: Federation, round_index: int, selected: tuple[int, ...]
    ) -> None:
        """Record the start."""
        self.events.append(("round_start", round_index, selected))

    def on_training_start(
        self, federation: Federation, round_index: int, client_ids: tuple[int, ...]
    ) -> None:
        """Record the start of local training."""
        self.events.append(("training_start", round_index, client_ids))

    def on_client_done(
        self, federation: Federation, round_index: int, outcome: ClientOutcome
    ) -> None:
        """Record a client outcome."""
        self.events.append(("client_done", round_index, outcome))

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Record the end."""
        self.events.append(("round_end", result.round_index, result))
