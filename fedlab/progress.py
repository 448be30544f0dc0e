"""Progress of federated rounds: a tqdm bar and log lines, both as observers.

``Federation.run`` says nothing while it works; these observers give it a voice without the
round loop knowing about them:

* :class:`RoundProgress` — a ``tqdm.auto`` bar (a widget in Jupyter, text on a terminal)
  advanced after every committed round, with accuracy, loss and reporting clients;
* :class:`RoundLogger` — one INFO line per round on the ``fedlab.progress`` logger, for
  scripts and services (shown with ``--log-level info``);
* :func:`track` — subscribe a bar for the length of a ``with`` block.

Examples
--------
>>> with track(federation, total=50, desc="FedAvg"):  # doctest: +SKIP
...     history = federation.run(50)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fedlab.federated.observers import Observer
from fedlab.log import get_logger

if TYPE_CHECKING:
    from fedlab.federated.federation import Federation
    from fedlab.federated.types import RoundResult

__all__ = ["RoundLogger", "RoundProgress", "round_summary", "track"]

_log = get_logger(__name__)


def round_summary(result: RoundResult) -> dict[str, str]:
    """The few numbers a person watching rounds wants, as short strings.

    Parameters
    ----------
    result : RoundResult
        A committed round.

    Returns
    -------
    dict
        ``clients`` (reported/invited), and ``acc`` and ``loss`` when the round was
        evaluated (NaN otherwise, then left out).
    """
    summary = {"clients": f"{len(result.completed)}/{len(result.selected)}"}
    if math.isfinite(result.test_accuracy):
        summary["acc"] = f"{result.test_accuracy:.3f}"
    if math.isfinite(result.test_loss):
        summary["loss"] = f"{result.test_loss:.3f}"
    return summary


class RoundProgress(Observer):
    """A ``tqdm.auto`` progress bar over rounds.

    Parameters
    ----------
    total : int, optional
        Rounds expected (the bar's length); None shows a counter without an end.
    desc : str
        Label in front of the bar.
    leave : bool
        Keep the finished bar on screen.
    **tqdm_kwargs
        Passed to ``tqdm.auto.tqdm`` (``file=``, ``disable=``, ``mininterval=`` …).

    Notes
    -----
    The bar is created on the first round event, not in the constructor, so an observer
    made and never used draws nothing. Hooks run on the round's thread; tqdm is thread-safe
    for this (one writer).
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "rounds",
        leave: bool = True,
        **tqdm_kwargs: Any,
    ) -> None:
        if total is not None and (
            not isinstance(total, int) or isinstance(total, bool) or total < 1
        ):
            raise ValueError(f"total must be an int >= 1 or None, got {total!r}")
        if not isinstance(desc, str):
            raise TypeError(f"desc must be a str, got {desc!r}")
        self.total = total
        self.desc = desc
        self.leave = leave
        self._kwargs = tqdm_kwargs
        self._bar: Any = None
        self.rounds_seen = 0

    @property
    def bar(self) -> Any:
        """The tqdm bar (created on first use)."""
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, leave=self.leave, **self._kwargs)
        return self._bar

    def on_round_start(
        self, federation: Federation, round_index: int, selected: tuple[int, ...]
    ) -> None:
        """Show the bar as soon as the first round starts."""
        _ = self.bar

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Advance by one round and show its accuracy, loss and reporting clients."""
        self.rounds_seen += 1
        self.bar.set_postfix(round_summary(result), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()


class RoundLogger(Observer):
    """One INFO record per committed round on the ``fedlab.progress`` logger.

    Parameters
    ----------
    name : str
        Shown in every line, to tell runs apart.
    """

    def __init__(self, name: str = "federation") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Log the round's index, clients, accuracy and loss, and its wall time."""
        fields = " ".join(f"{k}={v}" for k, v in round_summary(result).items())
        _log.info(
            "%s round %d: %s wall=%.2fs", self.name, result.round_index, fields, result.wall_time_s
        )


@contextmanager
def track(
    federation: Federation, total: int | None = None, *, desc: str = "rounds", **tqdm_kwargs: Any
) -> Iterator[RoundProgress]:
    """Subscribe a :class:`RoundProgress` to ``federation`` for a ``with`` block.

    The bar is unsubscribed and closed on the way out, also when a round raises.

    Parameters
    ----------
    federation : Federation
        The federation whose rounds to follow.
    total : int, optional
        Rounds expected in the block.
    desc : str
        Label of the bar.
    **tqdm_kwargs
        Passed to ``tqdm.auto.tqdm``.

    Yields
    ------
    RoundProgress
    """
    progress = RoundProgress(total, desc=desc, **tqdm_kwargs)
    federation.add_observer(progress)
    try:
        yield progress
    finally:
        federation.remove_observer(progress)
        progress.close()
