"""Upload scheduling in the simulator: when devices may upload, how many at once, and what
it costs them in energy.

A device's :class:`Availability` is a daily pattern: when it is charging, when it is on
Wi-Fi (otherwise on a metered cellular link), its battery capacity. The server's
:class:`UploadSchedule` says which conditions an upload waits for (Wi-Fi, charging, the
server's off-peak hours), how many uploads it accepts at once, and the
:class:`EnergyModel`. The :class:`~fedlab.federated.dispatch.SimulatedDispatcher` keeps a
simulated clock: a client trains as soon as it gets the task, then its upload waits for
its next window and for a free upload slot; the round's simulated time includes the wait.

Simulated time starts at ``UploadSchedule.start_hour`` o'clock and advances by each
round's simulated duration (the last arrival, or the deadline when someone was late).

Energy (joules, per device per round) = compute (``joules_per_example`` × example-epochs
÷ compute speed) + radio (bytes × per-byte cost of the link in use: Wi-Fi or cellular).
The defaults are order-of-magnitude figures for a Raspberry-Pi-class device (about 2 mJ per
example-step of a small CNN; Wi-Fi ≈ 0.4 µJ/byte, LTE ≈ 4 µJ/byte including tail energy):
assumptions to replace with measurements, not measurements.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ALWAYS",
    "Availability",
    "DailyWindows",
    "EligibleFirstSampler",
    "EnergyModel",
    "UploadSchedule",
    "plan_uploads",
    "sample_availability",
]

DAY_S = 86_400.0


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class DailyWindows:
    """Hours of every day when a condition holds: ``((start, end), …)`` in hours
    ``0 ≤ h ≤ 24``; a span with ``start > end`` wraps past midnight (``(22, 7)``)."""

    spans: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        spans = tuple(tuple(s) for s in self.spans)
        for span in spans:
            if len(span) != 2 or not all(_finite(h) and 0 <= h <= 24 for h in span):
                raise ValueError(f"each span must be (start, end) hours in [0, 24], got {span!r}")
            if span[0] == span[1]:
                raise ValueError(f"empty span {span!r}: use (0, 24) for always")
        object.__setattr__(self, "spans", tuple((float(a), float(b)) for a, b in spans))

    def _intervals(self) -> list[tuple[float, float]]:
        """Spans as [start, end) seconds within one day (wrapping ones split in two)."""
        out = []
        for a, b in self.spans:
            if a < b:
                out.append((a * 3600, b * 3600))
            else:
                out.extend([(a * 3600, DAY_S), (0.0, b * 3600)])
        return out

    def contains(self, t_s: float) -> bool:
        """Whether the condition holds at simulated second ``t_s`` (0 = midnight, day 0)."""
        s = t_s % DAY_S
        return any(a <= s < b for a, b in self._intervals())

    def starts(self, t0: float, t1: float) -> list[float]:
        """Times in ``(t0, t1]`` where a span begins."""
        out = []
        for day in range(int(t0 // DAY_S), int(t1 // DAY_S) + 1):
            for a, _ in self.spans:
                t = day * DAY_S + a * 3600
                if t0 < t <= t1:
                    out.append(t)
        return out


ALWAYS = DailyWindows(((0.0, 24.0),))


@dataclass(frozen=True, slots=True)
class Availability:
    """A device's daily pattern.

    Attributes
    ----------
    charging : DailyWindows
        When it is plugged in (always, by default).
    wifi : DailyWindows
        When it is on Wi-Fi; otherwise its link is metered cellular.
    battery_wh : float
        Battery capacity (Wh), to express a round's energy as a share of it.
    """

    charging: DailyWindows = ALWAYS
    wifi: DailyWindows = ALWAYS
    battery_wh: float = 10.0

    def __post_init__(self) -> None:
        for name in ("charging", "wifi"):
            if not isinstance(getattr(self, name), DailyWindows):
                raise TypeError(f"{name} must be DailyWindows, got {getattr(self, name)!r}")
        if not (_finite(self.battery_wh) and self.battery_wh > 0):
            raise ValueError(f"battery_wh must be finite and > 0, got {self.battery_wh!r}")


@dataclass(frozen=True, slots=True)
class EnergyModel:
    """Joules per example-epoch of compute (on a speed-1.0 device) and per byte sent or
    received over Wi-Fi and cellular (see the module docstring for the defaults)."""

    joules_per_example: float = 2e-3
    joules_per_byte_wifi: float = 4e-7
    joules_per_byte_cellular: float = 4e-6

    def __post_init__(self) -> None:
        for name in ("joules_per_example", "joules_per_byte_wifi", "joules_per_byte_cellular"):
            value = getattr(self, name)
            if not (_finite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")

    def radio(self, nbytes: int, on_wifi: bool) -> float:
        """Joules to move ``nbytes`` over the link in use."""
        per = self.joules_per_byte_wifi if on_wifi else self.joules_per_byte_cellular
        return nbytes * per


@dataclass(frozen=True, slots=True)
class UploadSchedule:
    """When the server lets devices upload.

    Attributes
    ----------
    require_wifi, require_charging : bool
        An upload waits until the device is on Wi-Fi / charging.
    off_peak : DailyWindows
        Hours the server accepts uploads (always by default).
    max_concurrent_uploads : int, optional
        Uploads in flight at once; later ones queue for a free slot (no cap by default).
    start_hour : float
        Time of day of round 0's opening.
    max_wait_s : float
        An upload with no window within this long after training is a straggler.
    energy : EnergyModel
        Per-device energy accounting.
    """

    require_wifi: bool = False
    require_charging: bool = False
    off_peak: DailyWindows = ALWAYS
    max_concurrent_uploads: int | None = None
    start_hour: float = 0.0
    max_wait_s: float = 2 * DAY_S
    energy: EnergyModel = field(default_factory=EnergyModel)

    def __post_init__(self) -> None:
        for name in ("require_wifi", "require_charging"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.off_peak, DailyWindows):
            raise TypeError(f"off_peak must be DailyWindows, got {self.off_peak!r}")
        cap = self.max_concurrent_uploads
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"max_concurrent_uploads must be an int >= 1 or None, got {cap!r}")
        if not (_finite(self.start_hour) and 0 <= self.start_hour < 24):
            raise ValueError(f"start_hour must be in [0, 24), got {self.start_hour!r}")
        if not (_finite(self.max_wait_s) and self.max_wait_s > 0):
            raise ValueError(f"max_wait_s must be finite and > 0, got {self.max_wait_s!r}")
        if not isinstance(self.energy, EnergyModel):
            raise TypeError(f"energy must be an EnergyModel, got {self.energy!r}")

    def _conditions(self, availability: Availability) -> list[DailyWindows]:
        out = [self.off_peak]
        if self.require_wifi:
            out.append(availability.wifi)
        if self.require_charging:
            out.append(availability.charging)
        return out

    def eligible(self, availability: Availability, t_s: float) -> bool:
        """Whether a device with ``availability`` may upload at simulated second ``t_s``."""
        return all(w.contains(t_s) for w in self._conditions(availability))

    def next_window(self, availability: Availability, t_s: float) -> float | None:
        """The first time ``≥ t_s`` the device may upload, or None within ``max_wait_s``."""
        conditions = self._conditions(availability)
        horizon = t_s + self.max_wait_s
        candidates = [t_s, *sorted({s for w in conditions for s in w.starts(t_s, horizon)})]
        for t in candidates:
            if all(w.contains(t) for w in conditions):
                return t
        return None


def plan_uploads(
    ready: Sequence[tuple[int, float, float]], cap: int | None
) -> dict[int, tuple[float, float]]:
    """Upload start and end times under a cap on concurrent uploads.

    ``ready`` holds ``(client, window opens at, upload seconds)``; uploads are served in
    order of their window (ties by client id), each on the first free slot.
    """
    order = sorted(ready, key=lambda item: (item[1], item[0]))
    slots: list[float] = [0.0] * (cap if cap is not None else len(order))
    heapq.heapify(slots)
    out: dict[int, tuple[float, float]] = {}
    for cid, opens, seconds in order:
        free = heapq.heappop(slots) if slots else 0.0
        start = max(opens, free)
        out[cid] = (start, start + seconds)
        heapq.heappush(slots, start + seconds)
    return out


def sample_availability(
    num_devices: int, *, seed: int = 0, always_on_share: float = 0.2
) -> tuple[Availability, ...]:
    """Availability patterns of a phone/wearable-like fleet.

    ``always_on_share`` of the devices are mains-powered on Wi-Fi (gateways, wall sensors);
    the others charge overnight (from about 22:00 ± 1.5 h for 7–9 h) and are on home Wi-Fi
    in the evening and night (about 18:00 ± 2 h until 8:00 ± 1 h).
    """
    if not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be an int >= 1, got {num_devices!r}")
    if not 0 <= always_on_share <= 1:
        raise ValueError(f"always_on_share must be in [0, 1], got {always_on_share!r}")
    rng = np.random.default_rng([seed, 0xA7A1])
    out = []
    for _ in range(num_devices):
        if rng.random() < always_on_share:
            out.append(Availability(battery_wh=float(rng.uniform(5, 20))))
            continue
        plug = float(rng.normal(22.0, 1.5)) % 24
        unplug = (plug + float(rng.uniform(7, 9))) % 24
        home = float(np.clip(rng.normal(18.0, 2.0), 12, 23.5))
        leave = float(np.clip(rng.normal(8.0, 1.0), 5, 11))
        out.append(
            Availability(
                charging=DailyWindows(((round(plug, 2), round(unplug, 2)),)),
                wifi=DailyWindows(((round(home, 2), round(leave, 2)),)),
                battery_wh=float(rng.uniform(3, 15)),
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class EligibleFirstSampler:
    """Selection that prefers devices allowed to upload now: a uniform draw among the
    eligible ones, topped up uniformly from the others when too few are.

    ``dispatcher`` is the simulated dispatcher whose clock and device availability decide
    (its :meth:`~fedlab.federated.dispatch.SimulatedDispatcher.eligible_now`).
    """

    dispatcher: object

    def __post_init__(self) -> None:
        if not callable(getattr(self.dispatcher, "eligible_now", None)):
            raise TypeError(
                f"dispatcher must have eligible_now(client_id), got {self.dispatcher!r}"
            )

    def select(
        self, candidates: np.ndarray, count: int, rng: np.random.Generator, round_index: int
    ) -> np.ndarray:
        """Eligible devices first (uniformly), then the rest (uniformly)."""
        ok = self.dispatcher.eligible_now  # type: ignore[attr-defined]
        eligible = np.asarray([c for c in candidates if ok(int(c))], dtype=candidates.dtype)
        others = np.asarray([c for c in candidates if not ok(int(c))], dtype=candidates.dtype)
        take = min(count, len(eligible))
        chosen = rng.choice(eligible, size=take, replace=False) if take else eligible[:0]
        if take < count:
            extra = rng.choice(others, size=count - take, replace=False)
            chosen = np.concatenate([chosen, extra])
        return np.sort(chosen)
