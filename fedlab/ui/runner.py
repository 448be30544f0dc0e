"""``RoundRunner``: runs a federation's rounds in a worker thread, pausable at round
boundaries. No widgets here; the dashboard drives it and listens to it."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fedlab.federated.federation import Federation

__all__ = ["RoundError", "RoundRunner", "RunnerState"]

RunnerState = Literal["idle", "running", "pausing", "paused", "finished", "error"]


@dataclass(frozen=True, slots=True)
class RoundError:
    """An exception raised while running (or preparing) a round, kept with its traceback."""

    round_index: int
    error: BaseException
    traceback: str

    @property
    def message(self) -> str:
        """``Type: message`` of the exception."""
        return f"{type(self.error).__name__}: {self.error}"


class RoundRunner:
    """Runs rounds of ``federation`` on a background thread.

    Parameters
    ----------
    federation : Federation
        The federation whose ``run_round`` is called.
    prepare : callable, optional
        Called on the worker thread before every round (the dashboard applies its pending
        settings here, so a change of control takes effect from the next round).
    on_change : callable, optional
        Called with the runner after every state change and after every round, on the
        thread that caused it.
    target_rounds : int, optional
        ``start`` runs until the federation has completed this many rounds (None: until
        paused).

    Notes
    -----
    Pause never interrupts a round: the worker finishes the round it is in, commits it,
    and stops. An exception in a round (or in ``prepare``) stops the run in state
    ``"error"``; the exception is kept in :attr:`errors`, never dropped.
    """

    def __init__(
        self,
        federation: Federation,
        *,
        prepare: Callable[[], None] | None = None,
        on_change: Callable[[RoundRunner], None] | None = None,
        target_rounds: int | None = None,
    ) -> None:
        if target_rounds is not None and (not isinstance(target_rounds, int) or target_rounds < 1):
            raise ValueError(f"target_rounds must be an int >= 1 or None, got {target_rounds!r}")
        self.federation = federation
        self.target_rounds = target_rounds
        self._prepare = prepare or (lambda: None)
        self._on_change = on_change or (lambda runner: None)
        self._lock = threading.RLock()
        self._pause = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: RunnerState = "idle"
        self.errors: list[RoundError] = []

    # -- state ---------------------------------------------------------------------
    @property
    def state(self) -> RunnerState:
        """idle, running, pausing (finishing its round), paused, finished or error."""
        return self._state

    @property
    def busy(self) -> bool:
        """True while the worker thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _set_state(self, state: RunnerState) -> None:
        with self._lock:
            self._state = state
        self._on_change(self)

    def _target_reached(self) -> bool:
        return self.target_rounds is not None and self.federation.rounds_done >= self.target_rounds

    # -- commands (what the buttons call) ------------------------------------------
    def start(self) -> bool:
        """Run rounds until paused (or ``target_rounds``); True if rounds are now running.

        Pressing Start while a pause is pending cancels the pause.
        """
        with self._lock:
            self._join_finished_worker()
            if self.busy:
                if self._state == "pausing":
                    self._pause.clear()
                    self._state = "running"
                    changed = True
                else:
                    return False
            elif self._target_reached():
                self._state = "finished"
                changed = False
            else:
                self._launch(limit=None)
                changed = True
        self._on_change(self)
        return changed

    def step(self) -> bool:
        """Run exactly one round in the background; False (nothing done) if busy."""
        with self._lock:
            self._join_finished_worker()
            if self.busy:
                return False
            self._launch(limit=1)
        self._on_change(self)
        return True

    def pause(self) -> bool:
        """Stop after the current round; True if a run was interrupted."""
        with self._lock:
            if not self.busy or self._state not in ("running",):
                return False
            self._pause.set()
            self._state = "pausing"
        self._on_change(self)
        return True

    def reset(self, timeout: float | None = None) -> None:
        """Pause, wait for the worker, and put the federation back to its initial model."""
        self.pause()
        if not self.wait(timeout):
            raise TimeoutError(f"the round in progress did not finish within {timeout} s")
        self.federation.reset()
        self._set_state("idle")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has stopped; False on timeout."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def wait_for_rounds(self, rounds: int, timeout: float) -> bool:
        """Block until the federation has completed ``rounds`` rounds, or the worker stopped,
        or ``timeout`` seconds passed; True if the rounds were reached."""
        deadline = time.monotonic() + timeout
        while self.federation.rounds_done < rounds:
            if not self.busy or time.monotonic() > deadline:
                return self.federation.rounds_done >= rounds
            time.sleep(0.01)
        return True

    # -- worker --------------------------------------------------------------------
    def _join_finished_worker(self) -> None:
        # The worker has set its final state and is only notifying listeners: let it end
        # rather than ignoring a click that arrives in that instant.
        thread = self._thread
        if thread is not None and thread.is_alive() and self._state not in ("running", "pausing"):
            thread.join()

    def _launch(self, limit: int | None) -> None:
        self._pause.clear()
        self._state = "running"
        self._thread = threading.Thread(
            target=self._loop, args=(limit,), name="fedlab-rounds", daemon=True
        )
        self._thread.start()

    def _loop(self, limit: int | None) -> None:
        done = 0
        final: RunnerState = "paused"
        try:
            while not self._pause.is_set() and (limit is None or done < limit):
                if limit is None and self._target_reached():
                    break
                self._prepare()
                self.federation.run_round()
                done += 1
                self._on_change(self)
            if self._target_reached():
                final = "finished"
        except Exception as exc:
            self.errors.append(RoundError(self.federation.rounds_done, exc, traceback.format_exc()))
            final = "error"
        self._set_state(final)
