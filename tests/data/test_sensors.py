from __future__ import annotations

import numpy as np
import pytest

from fedlab.data import ACTIVITIES, SensorFleetConfig, federated_sensors, generate_sensor_fleet


def test_shapes_labels_groups_and_time() -> None:
    fleet = generate_sensor_fleet(num_devices=12, windows_per_device=10, seed=4)
    assert fleet.x.shape[1:] == (100, 3) and fleet.x.dtype == np.float32
    assert set(np.unique(fleet.y)) <= set(range(len(ACTIVITIES)))
    assert fleet.groups is not None and fleet.time is not None
    assert set(np.unique(fleet.groups)) == set(range(12))
    assert 0.0 <= fleet.time.min() and fleet.time.max() <= 1.0
    assert np.isfinite(fleet.x).all()


def test_a_device_has_the_same_data_whatever_the_fleet_size() -> None:
    small = generate_sensor_fleet(num_devices=3, seed=7)
    large = generate_sensor_fleet(num_devices=40, seed=7)
    for device in range(3):
        a = small.x[small.groups == device]
        b = large.x[large.groups == device]
        assert np.array_equal(a, b)


def test_seed_changes_the_data() -> None:
    a = generate_sensor_fleet(num_devices=2, seed=0)
    b = generate_sensor_fleet(num_devices=2, seed=1)
    assert a.x.shape != b.x.shape or not np.array_equal(a.x, b.x)


def test_devices_are_heterogeneous() -> None:
    """Orientation differs per device: the mean 'standing' gravity vector differs too."""
    fleet = generate_sensor_fleet(num_devices=30, windows_per_device=60, mix_alpha=50.0, seed=2)
    means = []
    for device in range(30):
        mask = (fleet.groups == device) & (fleet.y == ACTIVITIES.index("standing"))
        if mask.sum():
            means.append(fleet.x[mask].mean(axis=(0, 1)))
    spread = np.std(np.array(means), axis=0)
    assert spread.max() > 0.1  # tenths of g between devices, from mounting rotations
    sizes = np.bincount(fleet.groups)
    assert sizes.max() > sizes.min()  # quantity skew


def test_activity_classes_differ_in_signal() -> None:
    fleet = generate_sensor_fleet(num_devices=20, orientation_deg=0.0, seed=3)
    energy = {a: fleet.x[fleet.y == i].std(axis=1).mean() for i, a in enumerate(ACTIVITIES)}
    assert energy["walking_downstairs"] > energy["walking"] > energy["standing"]
    assert energy["sitting"] < 0.1 and energy["laying"] < 0.1


def test_drift_changes_late_windows_not_early_ones() -> None:
    kwargs = dict(num_devices=5, windows_per_device=80, seed=9)
    still = generate_sensor_fleet(**kwargs)
    drifted = generate_sensor_fleet(**kwargs, drift=1.0)
    diff = np.abs(still.x - drifted.x).mean(axis=(1, 2))
    assert still.time is not None
    early, late = still.time < 0.1, still.time > 0.9
    assert diff[late].mean() > 5 * diff[early].mean()
    assert diff[late].mean() > 0.05


def test_ten_thousand_devices() -> None:
    fleet = generate_sensor_fleet(num_devices=10_000, windows_per_device=2, quantity_sigma=0.0)
    assert len(fleet) == 20_000
    assert len(np.unique(fleet.groups)) == 10_000


def test_federated_sensors_tests_on_unseen_devices() -> None:
    data = federated_sensors(num_devices=15, test_devices=5, seed=0)
    assert data.num_clients == 15 and data.num_classes == 6
    assert data.input_shape == (100, 3)
    train_rows = {c.x[0].tobytes() for c in data.clients}
    assert not any(x.tobytes() in train_rows for x in data.test.x)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_devices", 0),
        ("windows_per_device", -1),
        ("mix_alpha", 0.0),
        ("drift", -0.1),
        ("noise_min", 0.0),
        ("rate_hz", 2.0),
    ],
)
def test_invalid_config_is_a_value_error_quoting_the_value(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=str(value).replace(".", r"\.")):
        SensorFleetConfig(**{field: value})


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    cfg = SensorFleetConfig(num_devices=7, drift=0.5)
    assert SensorFleetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        SensorFleetConfig.from_dict({"bogus": 1})
