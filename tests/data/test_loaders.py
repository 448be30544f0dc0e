"""Loaders parse real file layouts; the fixtures are tiny files written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedlab.data import federate, load_leaf_femnist, load_uci_har


def write_har(
    root: Path, split: str, labels: list[int], subjects: list[int], steps: int = 128
) -> np.ndarray:
    signals = root / split / "Inertial Signals"
    signals.mkdir(parents=True)
    rng = np.random.default_rng(len(labels))
    data = rng.normal(size=(3, len(labels), steps)).astype(np.float32)
    for axis, values in zip("xyz", data, strict=True):
        np.savetxt(signals / f"total_acc_{axis}_{split}.txt", values, fmt="%.7e")
    np.savetxt(root / split / f"y_{split}.txt", labels, fmt="%d")
    np.savetxt(root / split / f"subject_{split}.txt", subjects, fmt="%d")
    return data


def test_uci_har_layout(tmp_path: Path) -> None:
    root = tmp_path / "UCI HAR Dataset"
    raw = write_har(root, "train", [1, 6, 3, 2], [1, 1, 3, 5])
    write_har(root, "test", [4, 5], [2, 2])
    train, test = load_uci_har(root)
    assert train.x.shape == (4, 128, 3) and test.x.shape == (2, 128, 3)
    assert train.y.tolist() == [0, 5, 2, 1]  # 1..6 → 0..5
    assert np.allclose(train.x[1, :, 2], raw[2, 1], atol=1e-6)  # window 1, z axis
    assert train.groups is not None and train.groups.tolist() == [1, 1, 3, 5]
    natural = federate(train, test, scheme="natural", num_classes=6)
    assert natural.num_clients == 3 and natural.sizes.tolist() == [2, 1, 1]


def test_uci_har_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_uci_har(tmp_path / "nope")
    root = tmp_path / "har"
    write_har(root, "train", [1], [1])
    with pytest.raises(FileNotFoundError, match="total_acc_x_test.txt"):
        load_uci_har(root)


def test_uci_har_malformed_file_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "har"
    write_har(root, "train", [1, 2], [1, 1])
    write_har(root, "test", [1], [1])
    (root / "train" / "y_train.txt").write_text("1\nwalking\n")
    with pytest.raises(ValueError, match="y_train.txt"):
        load_uci_har(root)


def test_uci_har_bad_label_range(tmp_path: Path) -> None:
    root = tmp_path / "har"
    write_har(root, "train", [1, 9], [1, 1])
    write_har(root, "test", [1], [1])
    with pytest.raises(ValueError, match="labels must be 1..6"):
        load_uci_har(root)


def write_leaf(folder: Path, users: dict[str, int], seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = list(users)
    half = len(names) // 2 or 1
    for shard, group in enumerate([names[:half], names[half:]]):
        blob = {
            "users": group,
            "num_samples": [users[u] for u in group],
            "user_data": {
                u: {
                    "x": rng.random((users[u], 784)).round(3).tolist(),
                    "y": rng.integers(0, 62, users[u]).tolist(),
                }
                for u in group
            },
        }
        (folder / f"all_data_{shard}.json").write_text(json.dumps(blob))


def test_leaf_femnist(tmp_path: Path) -> None:
    write_leaf(tmp_path / "train", {"f0001_41": 3, "f0002_07": 5, "f0003_33": 2}, seed=0)
    write_leaf(tmp_path / "test", {"f0001_41": 1, "f0002_07": 2}, seed=1)
    data = load_leaf_femnist(tmp_path)
    assert data.num_clients == 3 and data.sizes.tolist() == [3, 5, 2]
    assert data.input_shape == (28, 28, 1) and len(data.test) == 3 and data.num_classes == 62


def test_leaf_bad_shapes_and_json(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.json").write_text(
        json.dumps(
            {"users": ["u"], "num_samples": [1], "user_data": {"u": {"x": [[0.0] * 10], "y": [1]}}}
        )
    )
    with pytest.raises(ValueError, match=r"\(1, 10\)"):
        load_leaf_femnist(tmp_path)
    (tmp_path / "train" / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="a.json"):
        load_leaf_femnist(tmp_path)
    (tmp_path / "train" / "a.json").unlink()
    with pytest.raises(FileNotFoundError, match="no LEAF"):
        load_leaf_femnist(tmp_path)
