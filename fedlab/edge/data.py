"""Local training data on the device: ``.npz`` (``x``, ``y``) or CSV (features…, label)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedlab.edge.trainer import check_examples

__all__ = ["DataError", "DataMissing", "load_local_data"]


class DataError(ValueError):
    """The device's local data is missing or does not fit the model."""


class DataMissing(DataError):
    """The local data file is not there yet (a first install: the service waits for it)."""


def load_local_data(
    path: str | Path,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    csv_header: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Examples and labels from ``path``, checked against the model.

    A CSV row holds ``prod(input_shape)`` feature values followed by the integer label.
    A header row is skipped only when declared (``csv_header=True``, the device config's
    ``csv_header``): an undeclared text row is an error, never a silently dropped example.
    An ``.npz`` must hold plain numeric arrays ``x`` and ``y`` (no pickled objects).

    Raises
    ------
    DataError
        Saying exactly what is missing, damaged or does not fit.
    """
    p = Path(path)
    if not p.is_file():
        raise DataMissing(f"{p}: local data file not found")
    features = int(np.prod(input_shape))
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as f:
                missing = {"x", "y"} - set(f.files)
                if missing:
                    raise DataError(f"{p}: needs arrays 'x' and 'y', missing {sorted(missing)}")
                x, y = np.asarray(f["x"]), np.asarray(f["y"])
        except DataError:
            raise
        except Exception as exc:
            # empty, truncated, not a zip, damaged member (CRC, zlib, compression method),
            # pickled object arrays: whatever the damage, it is the data that is refused
            raise DataError(f"{p}: not a readable .npz ({type(exc).__name__}: {exc})") from None
        for name, array in (("x", x), ("y", y)):
            if array.dtype.kind not in "biuf":
                raise DataError(f"{p}: {name} has dtype {array.dtype}, expected numbers")
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise DataError(
                f"{p}: x has examples of shape {tuple(x.shape[1:])}, "
                f"the model expects {tuple(input_shape)}"
            )
    elif p.suffix == ".csv":
        if not p.read_bytes().strip():
            raise DataError(f"{p}: no rows")
        try:
            table = np.loadtxt(
                p,
                delimiter=",",
                skiprows=1 if csv_header else 0,
                ndmin=2,
                dtype=np.float64,
                encoding="utf-8",
            )
        except (ValueError, UnicodeDecodeError) as exc:
            hint = "" if csv_header else " (a header row must be declared: csv_header=true)"
            raise DataError(f"{p}: not a numeric CSV{hint} ({exc})") from None
        if table.size == 0:
            raise DataError(f"{p}: no rows")
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
