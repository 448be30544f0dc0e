"""Deterministic synthetic IoT accelerometer data for fleets of any size.

This data is **synthetic**. It models a fleet of wearable/pocket devices that record 3-axis
accelerometer windows (default 50 Hz × 2 s, in units of g) of the six activities of the UCI
HAR dataset, so that a model trained here can later be pointed at the real set with
:func:`fedlab.data.loaders.load_uci_har`. What it models, per device:

* **sensor orientation** – every device is mounted at its own random rotation;
* **gain and offset** – per-axis calibration error of a cheap MEMS sensor;
* **noise** – white noise whose level differs from device to device;
* **personal gait frequency** – each wearer walks at their own cadence (≈1.5–2.2 Hz);
* **activity mix** – each device sees its own share of activities (Dirichlet);
* **quantity** – devices hold different numbers of windows (log-normal);
* **drift** (optional) – over a device's time line the mounting rotates and the offset
  creeps, so that a model trained on early windows degrades on late ones.

Signals are a gravity vector that depends on posture, plus periodic gait components
(vertical bounce with harmonics, forward surge, lateral sway at half cadence) for the
dynamic activities. Every device draws from its own random stream seeded by
``(seed, device_id)``, so device *k* has the same data whatever the fleet size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedlab.data.arrays import LabeledArrays

__all__ = ["ACTIVITIES", "SensorFleetConfig", "generate_sensor_fleet"]

ACTIVITIES: tuple[str, ...] = (
    "walking",
    "walking_upstairs",
    "walking_downstairs",
    "sitting",
    "standing",
    "laying",
)

# Per activity: cadence factor, vertical amplitude, 2nd-harmonic share, forward and lateral
# amplitude (g), posture pitch and roll (degrees).
_CADENCE = np.array([1.0, 0.85, 1.12, 0.0, 0.0, 0.0])
_A_VERT = np.array([0.30, 0.38, 0.50, 0.0, 0.0, 0.0])
_H2 = np.array([0.30, 0.25, 0.60, 0.0, 0.0, 0.0])
_A_FWD = np.array([0.15, 0.20, 0.18, 0.0, 0.0, 0.0])
_A_LAT = np.array([0.08, 0.08, 0.10, 0.0, 0.0, 0.0])
_PITCH = np.array([5.0, 15.0, -8.0, 75.0, 3.0, 0.0])
_ROLL = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 90.0])


@dataclass(frozen=True, slots=True)
class SensorFleetConfig:
    """Parameters of a synthetic accelerometer fleet.

    Attributes
    ----------
    num_devices : int
        Number of devices (any positive number; 10,000+ is fine).
    windows_per_device : int
        Median number of windows a device holds.
    quantity_sigma : float
        Log-normal spread of the per-device window count (0 = every device the same).
    rate_hz, window_s : float
        Sampling rate and window length; a window has ``round(rate_hz * window_s)`` samples.
    mix_alpha : float
        Dirichlet concentration of each device's activity mix (small = skewed devices).
    orientation_deg : float
        Maximum mounting rotation of a device about each axis, in degrees.
    gain_sd, offset_sd : float
        Spread of per-axis gain (around 1) and offset (g).
    noise_min, noise_max : float
        Range of per-device white-noise level (g), drawn log-uniformly.
    drift : float
        0 for none; 1 rotates the mounting by up to 30° and shifts offsets by up to 0.15 g
        over a device's time line.
    seed : int
        Root seed; device *k* uses the stream ``(seed, k)``.
    """

    num_devices: int = 100
    windows_per_device: int = 40
    quantity_sigma: float = 0.5
    rate_hz: float = 50.0
    window_s: float = 2.0
    mix_alpha: float = 1.0
    orientation_deg: float = 25.0
    gain_sd: float = 0.05
    offset_sd: float = 0.03
    noise_min: float = 0.01
    noise_max: float = 0.06
    drift: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.num_devices, int) or self.num_devices < 1:
            raise ValueError(f"num_devices must be a positive int, got {self.num_devices!r}")
        if not isinstance(self.windows_per_device, int) or self.windows_per_device < 1:
            raise ValueError(
                f"windows_per_device must be a positive int, got {self.windows_per_device!r}"
            )
        positive = {"rate_hz": self.rate_hz, "window_s": self.window_s, "mix_alpha": self.mix_alpha}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        non_negative = {
            "quantity_sigma": self.quantity_sigma,
            "orientation_deg": self.orientation_deg,
            "gain_sd": self.gain_sd,
            "offset_sd": self.offset_sd,
            "drift": self.drift,
        }
        for name, value in non_negative.items():
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0 < self.noise_min <= self.noise_max:
            raise ValueError(
                f"need 0 < noise_min <= noise_max, got {self.noise_min!r}, {self.noise_max!r}"
            )
        if self.samples_per_window < 8:
            raise ValueError(
                f"a window needs at least 8 samples, got rate_hz={self.rate_hz!r} × "
                f"window_s={self.window_s!r}"
            )

    @property
    def samples_per_window(self) -> int:
        """Samples in one window."""
        return round(self.rate_hz * self.window_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON and papermill friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensorFleetConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown SensorFleetConfig fields: {sorted(unknown)}")
        return cls(**data)


def _rotation(pitch: np.ndarray, roll: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Rotation matrices (…, 3, 3) from angles in radians (applied yaw·pitch·roll)."""
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    cy, sy = np.cos(yaw), np.sin(yaw)
    one, zero = np.ones_like(pitch), np.zeros_like(pitch)
    rx = np.stack([one, zero, zero, zero, cr, -sr, zero, sr, cr], -1).reshape(*pitch.shape, 3, 3)
    ry = np.stack([cp, zero, sp, zero, one, zero, -sp, zero, cp], -1).reshape(*pitch.shape, 3, 3)
    rz = np.stack([cy, -sy, zero, sy, cy, zero, zero, zero, one], -1).reshape(*pitch.shape, 3, 3)
    return rz @ ry @ rx


def _device_windows(cfg: SensorFleetConfig, device: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng([cfg.seed, device])
    n = max(1, round(cfg.windows_per_device * rng.lognormal(0.0, cfg.quantity_sigma)))
    if cfg.quantity_sigma == 0:
        n = cfg.windows_per_device
    mix = rng.dirichlet(np.full(len(ACTIVITIES), cfg.mix_alpha))
    labels = rng.choice(len(ACTIVITIES), size=n, p=mix)
    gait_hz = rng.uniform(1.5, 2.2)
    max_rot = np.deg2rad(cfg.orientation_deg)
    mount = _rotation(*(rng.uniform(-max_rot, max_rot, size=3)[:, None]))[0]
    gain = rng.normal(1.0, cfg.gain_sd, size=3)
    offset = rng.normal(0.0, cfg.offset_sd, size=3)
    noise = np.exp(rng.uniform(np.log(cfg.noise_min), np.log(cfg.noise_max)))
    drift_axis = rng.integers(0, 3)
    drift_offset = rng.normal(0.0, 1.0, size=3)
    drift_offset *= 0.15 / max(np.abs(drift_offset).max(), 1e-9)

    steps = cfg.samples_per_window
    t = np.arange(steps) / cfg.rate_hz
    time = np.sort(rng.uniform(0.0, 1.0, size=n))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    freq = (gait_hz * _CADENCE[labels] * rng.normal(1.0, 0.05, size=n))[:, None]
    amp = rng.normal(1.0, 0.15, size=(n, 1))
    arg = 2 * np.pi * freq * t[None, :] + phase
    vert = _A_VERT[labels][:, None] * amp * (np.sin(arg) + _H2[labels][:, None] * np.sin(2 * arg))
    fwd = _A_FWD[labels][:, None] * amp * np.sin(arg + np.pi / 2)
    lat = _A_LAT[labels][:, None] * amp * np.sin(arg / 2)
    sway = 0.01 * np.sin(2 * np.pi * 0.3 * t[None, :] + phase)
    dynamic = np.stack([fwd + sway, lat, vert], axis=-1)  # (n, T, 3) body frame

    pitch = np.deg2rad(_PITCH[labels] + rng.normal(0, 3, size=n))
    roll = np.deg2rad(_ROLL[labels] + rng.normal(0, 3, size=n))
    posture = _rotation(pitch, roll, np.zeros(n))  # (n, 3, 3)
    gravity = posture @ np.array([0.0, 0.0, 1.0])  # (n, 3)
    body = dynamic + gravity[:, None, :]

    angles = np.zeros((n, 3))
    angles[:, drift_axis] = np.deg2rad(30.0) * cfg.drift * time
    rot = mount[None] @ _rotation(angles[:, 0], angles[:, 1], angles[:, 2])  # (n, 3, 3)
    sensed = np.einsum("nij,ntj->nti", rot, body)
    sensed = sensed * gain + offset + (cfg.drift * time)[:, None, None] * drift_offset
    sensed += rng.normal(0.0, noise, size=sensed.shape)
    return sensed.astype(np.float32), labels.astype(np.int64), time.astype(np.float32)


def generate_sensor_fleet(
    config: SensorFleetConfig | None = None, **overrides: Any
) -> LabeledArrays:
    """Generate the windows of every device of a synthetic fleet.

    Parameters
    ----------
    config : SensorFleetConfig, optional
        Fleet parameters; defaults to ``SensorFleetConfig()``.
    **overrides
        Field overrides applied on top of ``config`` (``num_devices=5000``, ``drift=1.0``…).

    Returns
    -------
    LabeledArrays
        ``x`` of shape ``(n, samples_per_window, 3)`` float32 in g, ``y`` activity ids
        (see :data:`ACTIVITIES`), ``groups`` the device id of every window and ``time`` its
        position in [0, 1] on the device's time line.
    """
    cfg = config or SensorFleetConfig()
    if overrides:
        cfg = SensorFleetConfig.from_dict({**cfg.to_dict(), **overrides})
    xs, ys, ts, gs = [], [], [], []
    for device in range(cfg.num_devices):
        x, y, time = _device_windows(cfg, device)
        xs.append(x)
        ys.append(y)
        ts.append(time)
        gs.append(np.full(len(y), device, dtype=np.int64))
    return LabeledArrays(
        np.concatenate(xs),
        np.concatenate(ys),
        name=f"synthetic-sensors-{cfg.num_devices}",
        groups=np.concatenate(gs),
        time=np.concatenate(ts),
    )
