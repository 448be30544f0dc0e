"""Page-Hinkley against a literal transcription of its published definition, the monitor on
the synthetic sensor fleet, and the observer on a real federation. No TensorFlow."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlab.federated import Federation, FederationConfig
from fedlab.ops.drift import DriftMonitor, DriftObserver, PageHinkley, page_hinkley_statistic
from fedlab.ops.simulation import SoftmaxRuntime


def reference_statistic(x: list[float], delta: float, direction: str) -> list[float]:
    """Page-Hinkley written out as in Gama et al. (2014), recomputing every sum from scratch:
    m_T = Σ_{t≤T} (x_t − x̄_t − δ), M_T = min_{t≤T} m_t, PH_T = m_T − M_T (and mirrored)."""
    out = []
    for T in range(1, len(x) + 1):
        m = []
        for s in range(1, T + 1):
            total = 0.0
            for t in range(1, s + 1):
                mean_t = sum(x[:t]) / t
                total += x[t - 1] - mean_t - (delta if direction == "up" else -delta)
            m.append(total)
        out.append(m[-1] - min(0.0, *m) if direction == "up" else max(0.0, *m) - m[-1])
    return out


@pytest.mark.parametrize("direction", ["up", "down"])
def test_the_kernel_and_the_incremental_test_match_the_published_definition(direction) -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [rng.normal(0, 1, 40), rng.normal(1.5 if direction == "up" else -1.5, 1, 20)]
    )
    ref = reference_statistic(list(x), 0.3, direction)
    np.testing.assert_allclose(page_hinkley_statistic(x, 0.3, direction), ref, atol=1e-9)
    threshold = 6.0
    first = next(i for i, s in enumerate(ref) if s > threshold)
    test = PageHinkley(delta=0.3, threshold=threshold, direction=direction)
    fired = [i for i, v in enumerate(x) if test.update(float(v))]
    assert fired[0] == first and first >= 40  # fires after the change, where the formula says


def test_a_stationary_stream_rarely_alarms_and_a_step_is_caught_fast() -> None:
    rng = np.random.default_rng(0)
    test = PageHinkley(delta=0.5, threshold=8.0)
    false = sum(test.update(float(v)) for v in rng.normal(0, 1, 5000))
    assert false <= 5  # ≤ 1 per 1000 observations of pure noise
    test.reset()
    for v in rng.normal(0, 1, 100):
        test.update(float(v))
    delay = next(i for i, v in enumerate(rng.normal(3, 1, 50)) if test.update(float(v)))
    assert delay <= 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": -1}, "delta must be >= 0"),
        ({"threshold": 0}, "threshold must be > 0"),
        ({"threshold": math.nan}, "threshold must be a finite"),
        ({"direction": "sideways"}, "direction must be"),
        ({"min_samples": 0}, "min_samples"),
    ],
)
def test_bad_parameters_are_clear_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        PageHinkley(**kwargs)


def test_the_monitor_finds_sensor_drift_on_cohort_means(sensor_fleet, production) -> None:
    runtime = SoftmaxRuntime()
    monitor = DriftMonitor(warmup=20, direction={"accuracy": "down"})
    onset, alerts = 50, []
    for r in range(onset + 10):
        seen = sensor_fleet.monitoring_round(r, production, runtime, drifted=r >= onset)
        alert = monitor.update(r, seen)
        if alert:
            alerts.append(alert)
    assert alerts, "no alarm"
    assert onset <= alerts[0].round_index <= onset + 5, alerts
    assert {a.stream for a in alerts} <= {"loss", "accuracy", "input_shift"}
    with pytest.raises(ValueError, match="warmup"):
        DriftMonitor(warmup=1)


def test_the_observer_sees_a_federation_whose_data_changes(sensor_fleet) -> None:
    cfg = FederationConfig(
        clients_per_round=10, local_epochs=1, batch_size=16, client_lr=0.2, seed=2
    )
    monitor = DriftMonitor(warmup=10, threshold=6.0)
    observer = DriftObserver(monitor)
    fed = Federation(data=sensor_fleet.dataset(), runtime=SoftmaxRuntime(), config=cfg)
    fed.run(15)  # converge first: the warm-up must see the stationary regime
    fed.add_observer(observer)
    fed.run(20)
    before = len(observer.alerts)
    drifted = Federation(
        data=sensor_fleet.dataset(drifted=True),
        runtime=SoftmaxRuntime(initial=fed.weights),
        config=cfg,
        observers=[observer],
    )
    drifted.run(8)
    assert monitor.ready
    assert len(observer.alerts) > before, (observer.alerts, monitor._scale)
    assert {"train_loss", "update_norm"} & {a.stream for a in observer.alerts[before:]}
