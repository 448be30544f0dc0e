"""Loaders for public datasets that the user has downloaded to a local path.

fedlab never downloads at run time. Point these at the extracted folders:

* UCI HAR (Anguita et al. 2013): the ``UCI HAR Dataset`` folder, with
  ``train/Inertial Signals/total_acc_{x,y,z}_train.txt``, ``train/y_train.txt``,
  ``train/subject_train.txt`` and the same under ``test/``.
* LEAF FEMNIST (Caldas et al. 2018): a folder of LEAF JSON shards, each
  ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [[784 floats]],
  "y": [...]}}}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedlab.data.arrays import LabeledArrays
from fedlab.data.federated_dataset import ClientData, FederatedDataset

__all__ = ["load_leaf_femnist", "load_uci_har"]


def _read_matrix(path: Path, *, dtype: type = np.float32) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"expected file {path} (is this the extracted UCI HAR folder?)")
    try:
        data: np.ndarray = np.loadtxt(path, dtype=dtype, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not a whitespace-separated numeric table ({exc})") from exc
    return data


def _load_har_split(root: Path, split: str) -> LabeledArrays:
    signals = root / split / "Inertial Signals"
    axes = [_read_matrix(signals / f"total_acc_{axis}_{split}.txt") for axis in "xyz"]
    if len({a.shape for a in axes}) != 1:
        raise ValueError(f"{signals}: x/y/z files differ in shape {[a.shape for a in axes]}")
    x = np.stack(axes, axis=-1)
    y = _read_matrix(root / split / f"y_{split}.txt", dtype=np.int64).ravel() - 1
    subject = _read_matrix(root / split / f"subject_{split}.txt", dtype=np.int64).ravel()
    if not (len(x) == len(y) == len(subject)):
        raise ValueError(
            f"{root / split}: {len(x)} windows, {len(y)} labels, {len(subject)} subjects disagree"
        )
    if len(y) and (y.min() < 0 or y.max() > 5):
        raise ValueError(
            f"{root / split}: activity labels must be 1..6, got {y.min() + 1}..{y.max() + 1}"
        )
    return LabeledArrays(x.astype(np.float32), y, name=f"uci-har-{split}", groups=subject)


def load_uci_har(path: str | Path) -> tuple[LabeledArrays, LabeledArrays]:
    """Load UCI HAR's total-acceleration windows (128 samples × 3 axes, in g).

    Labels are the six activities minus one (0 = walking … 5 = laying, the same order as
    :data:`fedlab.data.sensors.ACTIVITIES`); ``groups`` holds the subject id, so
    ``federate(train, test, scheme="natural")`` gives one client per person.

    Parameters
    ----------
    path : str or Path
        The extracted ``UCI HAR Dataset`` folder.

    Returns
    -------
    tuple of LabeledArrays
        ``(train, test)``.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"UCI HAR folder {root} does not exist")
    return _load_har_split(root, "train"), _load_har_split(root, "test")


def _read_leaf_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no LEAF .json files in {folder}")
    users: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for file in files:
        try:
            blob = json.loads(file.read_text())
            names, user_data = blob["users"], blob["user_data"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{file}: not a LEAF JSON shard ({exc!r})") from exc
        for name in names:
            record = user_data.get(name)
            if record is None:
                raise ValueError(f"{file}: user {name!r} listed but has no user_data")
            x = np.asarray(record["x"], dtype=np.float32)
            y = np.asarray(record["y"], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 784 or len(x) != len(y):
                raise ValueError(
                    f"{file}: user {name!r} has x of shape {x.shape} and {len(y)} labels; "
                    "FEMNIST needs (n, 784) and n labels"
                )
            if name in users:
                old_x, old_y = users[name]
                x, y = np.concatenate([old_x, x]), np.concatenate([old_y, y])
            users[name] = (x, y)
    return users


def load_leaf_femnist(path: str | Path, *, num_classes: int = 62) -> FederatedDataset:
    """Load LEAF FEMNIST as a natural partition: one client per writer.

    Parameters
    ----------
    path : str or Path
        A folder with ``train/`` and ``test/`` subfolders of LEAF JSON shards (as LEAF's
        ``preprocess.sh`` writes them). Test examples of all writers form the central test set.
    num_classes : int
        62 for full FEMNIST (digits and both cases of letters).

    Returns
    -------
    FederatedDataset
        Images shaped ``(28, 28, 1)``; writers sorted by name become clients ``0..n-1``.
    """
    root = Path(path)
    train = _read_leaf_folder(root / "train")
    test = _read_leaf_folder(root / "test")
    names = sorted(train)
    clients = tuple(
        ClientData(i, train[n][0].reshape(-1, 28, 28, 1), train[n][1]) for i, n in enumerate(names)
    )
    test_x = np.concatenate([v[0] for v in test.values()]).reshape(-1, 28, 28, 1)
    test_y = np.concatenate([v[1] for v in test.values()])
    return FederatedDataset(
        clients,
        LabeledArrays(test_x, test_y, name="femnist-test"),
        num_classes,
        name="leaf-femnist",
    )
