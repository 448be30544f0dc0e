"""Atomic checkpoints of a federation's state, one file per round in a folder.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed,
then renamed over its final name (``os.replace`` is atomic on POSIX), and the folder is
fsync'ed. A process killed mid-write leaves at most a ``*.tmp`` file, which loading
ignores; the previous checkpoint is intact. A checkpoint that fails to load (truncated
by a disk fault, edited by hand) is skipped with a warning in favour of the one before.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.federated.types import Weights

__all__ = [
    "CheckpointError",
    "FederationState",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT_VERSION = 1
_NAME = re.compile(r"^round-(\d{6})\.npz$")


class CheckpointError(Exception):
    """No usable checkpoint, or one that belongs to a different experiment."""


@dataclass(frozen=True, slots=True)
class FederationState:
    """Everything needed to continue a federation exactly where it stopped."""

    rounds_done: int
    weights: Weights
    strategy_state: dict[str, Weights]
    history: list[dict[str, Any]]
    fingerprint: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(folder: str | Path, state: FederationState, *, keep: int = 2) -> Path:
    """Write ``state`` atomically as ``folder/round-NNNNNN.npz``; keep the newest ``keep``.

    Returns
    -------
    Path
        The checkpoint file.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep!r}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {f"w/{i}": w for i, w in enumerate(state.weights)}
    for slot, tensors in state.strategy_state.items():
        if "/" in slot:
            raise ValueError(f"strategy state slot names cannot contain '/', got {slot!r}")
        arrays.update({f"s/{slot}/{i}": t for i, t in enumerate(tensors)})
    meta = {
        "format": FORMAT_VERSION,
        "rounds_done": state.rounds_done,
        "num_weights": len(state.weights),
        "slots": {k: len(v) for k, v in state.strategy_state.items()},
        "history": state.history,
        "fingerprint": state.fingerprint,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    final = root / f"round-{state.rounds_done:06d}.npz"
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in _checkpoints(root)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def _checkpoints(root: Path) -> list[Path]:
    found = [p for p in root.iterdir() if _NAME.match(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def load_checkpoint(path: str | Path) -> FederationState:
    """Read one checkpoint file; raises ``CheckpointError`` if it is damaged."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != FORMAT_VERSION:
                raise CheckpointError(
                    f"{path}: format {meta.get('format')!r}, expected {FORMAT_VERSION}"
                )
            weights = tuple(np.array(data[f"w/{i}"]) for i in range(meta["num_weights"]))
            slots = {
                name: tuple(np.array(data[f"s/{name}/{i}"]) for i in range(count))
                for name, count in meta["slots"].items()
            }
    except CheckpointError:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
        EOFError,
    ) as exc:
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    return FederationState(
        rounds_done=int(meta["rounds_done"]),
        weights=weights,
        strategy_state=slots,
        history=list(meta["history"]),
        fingerprint=str(meta["fingerprint"]),
    )


def latest_checkpoint(folder: str | Path) -> FederationState | None:
    """The newest loadable checkpoint in ``folder`` (None if the folder has none).

    Damaged files are skipped with a ``RuntimeWarning``; if every file is damaged a
    ``CheckpointError`` lists them, rather than silently starting from scratch.
    """
    files = _checkpoints(Path(folder))
    problems = []
    for path in reversed(files):
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping damaged checkpoint: {exc}", RuntimeWarning, stacklevel=2)
            problems.append(str(exc))
    if problems:
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
    return None
