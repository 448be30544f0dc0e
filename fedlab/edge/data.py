"""Local training data on the device: ``.npz`` (``x``, ``y``) or CSV (features…, label)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedlab.edge.trainer import check_examples

__all__ = ["DataError", "load_local_data"]


class DataError(ValueError):
    """The device's local data is missing or does not fit the model."""


def load_local_data(
    path: str | Path, input_shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Examples and labels from ``path``, checked against the model.

    A CSV row holds ``prod(input_shape)`` feature values followed by the integer label; a
    header row is skipped.

    Raises
    ------
    DataError
        Saying exactly what is missing or does not fit.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: local data file not found")
    features = int(np.prod(input_shape))
    if p.suffix == ".npz":
        try:
            archive = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: not a readable .npz ({exc})") from None
        with archive as f:
            missing = {"x", "y"} - set(f.files)
            if missing:
                raise DataError(f"{p}: needs arrays 'x' and 'y', missing {sorted(missing)}")
            x, y = f["x"], f["y"]
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise DataError(
                f"{p}: x has examples of shape {tuple(x.shape[1:])}, "
                f"the model expects {tuple(input_shape)}"
            )
    elif p.suffix == ".csv":
        with p.open() as f:
            first = f.readline()
        skip = 1 if first and not _numeric(first) else 0
        try:
            table = np.loadtxt(p, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise DataError(f"{p}: not a numeric CSV ({exc})") from None
        if table.shape[1] != features + 1:
            raise DataError(
                f"{p}: rows have {table.shape[1]} columns, expected {features + 1} "
                f"({features} features for input shape {tuple(input_shape)} and the label)"
            )
        x = table[:, :features].reshape(len(table), *input_shape)
        y = table[:, features]
    else:
        raise DataError(f"{p}: unsupported data file (use .npz or .csv)")
    try:
        return check_examples(x, y, tuple(input_shape), num_classes)
    except ValueError as exc:
        raise DataError(f"{p}: {exc}") from None


def _numeric(line: str) -> bool:
    try:
        [float(v) for v in line.strip().split(",")]
    except ValueError:
        return False
    return True
