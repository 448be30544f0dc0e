"""Drift detection on what the server may see: aggregated metrics, update norms, input stats.

The detector is the **Page-Hinkley test** (Page 1954, "Continuous inspection schemes"), in
the sequential form of Mouss et al. (2004) and Gama et al. (2014, "A survey on concept drift
adaptation", §3.2): for observations ``x₁ … x_T`` with running means ``x̄_t``,

    m_T = Σ_{t=1..T} (x_t − x̄_t − δ),    M_T = min_{t ≤ T} m_t,    alarm when m_T − M_T > λ

(an increase of the mean; the decrease test mirrors it with ``+δ`` and the maximum). ``δ`` is
the magnitude of change that is tolerated, ``λ`` the alarm threshold.

Why not ``river`` (which has this detector and ADWIN): against ``requirements.lock`` pip
resolves only river 0.19.0 (2023): 0.20–0.2x require pandas < 3 (the lock has 3.0.6) and the
newest (0.26) numpy ≥ 2.2.5 (the lock has 1.26.4, which tensorflow-privacy needs). Pinning a
two-year-old release of a large compiled package for a dozen lines of arithmetic is not worth
it; the test is implemented here and checked against a literal transcription of the formulas
above (``tests/ops/test_drift.py``).

:class:`DriftMonitor` watches several named streams (the cohort's mean loss, the norm of the
global update, device-reported input shift…). Each stream is standardised with the mean and
standard deviation of its first ``warmup`` rounds, so ``δ`` and ``λ`` are in units of the
stream's own round-to-round noise, and then fed to its own Page-Hinkley test. The first
stream to fire raises a :class:`DriftAlert` with the round; the tests restart after an alarm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedlab.federated.observers import Observer
from fedlab.federated.robust import update_norm

if TYPE_CHECKING:
    from fedlab.federated.federation import Federation
    from fedlab.federated.types import RoundResult

__all__ = [
    "DriftAlert",
    "DriftMonitor",
    "DriftObserver",
    "PageHinkley",
    "page_hinkley_statistic",
]

Direction = Literal["up", "down", "both"]


def _check(name: str, value: float, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def page_hinkley_statistic(x: np.ndarray, delta: float, direction: str = "up") -> np.ndarray:
    """``m_T − M_T`` (``up``) or ``M'_T − m'_T`` (``down``) for every prefix of ``x``.

    A vectorised kernel of the definition in the module docstring (no state, no I/O).
    """
    x = np.asarray(x, np.float64)
    running = np.cumsum(x) / np.arange(1, len(x) + 1)
    if direction == "up":
        m = np.cumsum(x - running - delta)
        return m - np.minimum.accumulate(m)
    if direction == "down":
        m = np.cumsum(x - running + delta)
        return np.maximum.accumulate(m) - m
    raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")


@dataclass(slots=True)
class PageHinkley:
    """Incremental Page-Hinkley test.

    Parameters
    ----------
    delta : float
        Tolerated change of the mean (δ ≥ 0), in the stream's units.
    threshold : float
        Alarm threshold λ > 0.
    direction : {"up", "down", "both"}
        Detect an increase, a decrease, or either.
    min_samples : int
        No alarm before this many observations.
    """

    delta: float = 0.5
    threshold: float = 8.0
    direction: Direction = "up"
    min_samples: int = 1
    _n: int = field(default=0, init=False, repr=False)
    _mean: float = field(default=0.0, init=False, repr=False)
    _up: float = field(default=0.0, init=False, repr=False)
    _up_min: float = field(default=0.0, init=False, repr=False)
    _down: float = field(default=0.0, init=False, repr=False)
    _down_max: float = field(default=0.0, init=False, repr=False)
    last_alarm: float = field(default=math.nan, init=False)

    def __post_init__(self) -> None:
        self.delta = _check("delta", self.delta, positive=False)
        self.threshold = _check("threshold", self.threshold, positive=True)
        if self.direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be 'up', 'down' or 'both', got {self.direction!r}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int):
            raise ValueError(f"min_samples must be an int >= 1, got {self.min_samples!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be an int >= 1, got {self.min_samples!r}")

    def reset(self) -> None:
        """Forget everything (after an alarm, or a new model)."""
        self._n, self._mean = 0, 0.0
        self._up = self._up_min = self._down = self._down_max = 0.0

    @property
    def statistic(self) -> float:
        """The current test statistic (the larger of the two sides for ``both``)."""
        up = self._up - self._up_min
        down = self._down_max - self._down
        return {"up": up, "down": down}.get(self.direction, max(up, down))

    def update(self, x: float) -> bool:
        """Add one observation; True if the test fires now (the state is then reset)."""
        if not math.isfinite(x):
            raise ValueError(f"observation must be finite, got {x!r}")
        self._n += 1
        self._mean += (x - self._mean) / self._n
        self._up += x - self._mean - self.delta
        self._up_min = min(self._up_min, self._up)
        self._down += x - self._mean + self.delta
        self._down_max = max(self._down_max, self._down)
        statistic = self.statistic
        if self._n >= self.min_samples and statistic > self.threshold:
            self.reset()
            self.last_alarm = statistic
            return True
        return False


@dataclass(frozen=True, slots=True)
class DriftAlert:
    """A detector fired: which stream, at which round, with what statistic."""

    round_index: int
    stream: str
    statistic: float
    value: float


class DriftMonitor:
    """Page-Hinkley tests on several standardised streams.

    Parameters
    ----------
    warmup : int
        Rounds used to estimate each stream's mean and standard deviation (no alarms then).
    delta, threshold : float
        δ and λ of every stream's test, in units of that stream's standard deviation.
    direction : {"up", "down", "both"} or mapping of stream → direction
        Which change matters (loss and input shift: up; accuracy: down).
    min_sd : float
        Floor of a stream's standard deviation (a constant warm-up would divide by 0).
    """

    def __init__(
        self,
        *,
        warmup: int = 30,
        delta: float = 0.5,
        threshold: float = 8.0,
        direction: Direction | Mapping[str, Direction] = "up",
        min_sd: float = 1e-6,
    ) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 2:
            raise ValueError(f"warmup must be an int >= 2, got {warmup!r}")
        self.warmup = warmup
        self.delta = _check("delta", delta, positive=False)
        self.threshold = _check("threshold", threshold, positive=True)
        self.min_sd = _check("min_sd", min_sd, positive=True)
        self.direction = direction
        PageHinkley(self.delta, self.threshold, self._direction("any"))  # validates direction
        self._seen: dict[str, list[float]] = {}
        self._scale: dict[str, tuple[float, float]] = {}
        self._tests: dict[str, PageHinkley] = {}
        self.alerts: list[DriftAlert] = []

    def _direction(self, stream: str) -> Direction:
        if isinstance(self.direction, Mapping):
            return self.direction.get(stream, "up")
        return self.direction

    def reset(self) -> None:
        """Start over, warm-up included (after the model was replaced by a fine-tuned one)."""
        self._seen.clear()
        self._scale.clear()
        self._tests.clear()

    def update(self, round_index: int, values: Mapping[str, float]) -> DriftAlert | None:
        """Feed one round's values; returns the first alert this round raises, if any.

        Non-finite values (a round without that metric) are skipped for that stream.
        """
        fired: DriftAlert | None = None
        for stream, value in values.items():
            value = float(value)
            if not math.isfinite(value):
                continue
            if stream not in self._scale:
                seen = self._seen.setdefault(stream, [])
                seen.append(value)
                if len(seen) >= self.warmup:
                    sd = max(float(np.std(seen, ddof=1)), self.min_sd)
                    self._scale[stream] = (float(np.mean(seen)), sd)
                    self._tests[stream] = PageHinkley(
                        self.delta, self.threshold, self._direction(stream)
                    )
                continue
            mean, sd = self._scale[stream]
            test = self._tests[stream]
            z = (value - mean) / sd
            if test.update(z):
                alert = DriftAlert(round_index, stream, test.last_alarm, value)
                self.alerts.append(alert)
                fired = fired or alert
        return fired

    @property
    def ready(self) -> bool:
        """True once every stream seen so far has finished its warm-up."""
        return bool(self._scale) and set(self._scale) == set(self._seen)


class DriftObserver(Observer):
    """Feeds a :class:`DriftMonitor` from a federation's committed rounds.

    Streams: ``train_loss`` (the cohort's example-weighted training loss), ``update_norm``
    (the L2 norm of the change of the global model this round) and, if evaluated,
    ``test_loss``. Only aggregates: nothing per client.
    """

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self._previous: tuple[np.ndarray, ...] | None = None
        self.alerts: list[DriftAlert] = []

    def on_round_start(
        self, federation: Federation, round_index: int, selected: tuple[int, ...]
    ) -> None:
        """Remember the global model the round starts from."""
        self._previous = federation.weights

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Feed the round's aggregates to the monitor."""
        values = {"train_loss": result.train_loss, "test_loss": result.test_loss}
        if self._previous is not None and result.completed:
            change = tuple(
                np.asarray(a, np.float64) - b
                for a, b in zip(federation.weights, self._previous, strict=True)
            )
            values["update_norm"] = update_norm(change)
        alert = self.monitor.update(result.round_index, values)
        if alert is not None:
            self.alerts.append(alert)
