"""Atomic checkpoints of a federation's state, one file per round in a folder.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed,
then renamed over its final name (``os.replace`` is atomic on POSIX), and the folder is
fsync'ed. A process killed mid-write leaves at most a ``*.tmp`` file, which loading
ignores; the previous checkpoint is intact. A checkpoint that fails to load (truncated
by a disk fault, edited by hand) is skipped with a warning in favour of the one before.

File layout (format 2): one text line ``FEDLAB-CHECKPOINT 2 sha256=<hex>`` followed by
an ``.npz`` archive; the SHA-256 covers the archive and is verified before anything in it
is parsed, so a flipped byte anywhere is a clear "checksum mismatch", never a crash in the
zip or JSON reader nor a silently different model. ``zipfile.ZipFile`` opens the file as
it is (it skips the line); ``np.load`` needs the bytes after it. Format 1 files (a plain
``.npz`` without checksum, written before) are still read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.federated.types import Weights

__all__ = [
    "CheckpointError",
    "FederationState",
    "check_checkpoint_dir",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT_VERSION = 2
_MAGIC = b"FEDLAB-CHECKPOINT 2 sha256="
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
    #: The dispatcher's client-side state (codec residuals, models the devices hold, the
    #: simulated clock): ``{key: array}``, empty when it keeps none.
    dispatcher_state: dict[str, np.ndarray] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_checkpoint_dir(folder: Any) -> Path:
    """``folder`` as a Path, or a ``ValueError`` naming ``checkpoint_dir`` if it cannot be
    one (not a path, or an existing file). The folder need not exist yet."""
    if not isinstance(folder, str | os.PathLike) or not str(folder):
        raise ValueError(f"checkpoint_dir must be a folder path, got {folder!r}")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir must be a folder, got {str(path)!r}, which is a file")
    return path


def save_checkpoint(folder: str | Path, state: FederationState, *, keep: int = 2) -> Path:
    """Write ``state`` atomically as ``folder/round-NNNNNN.npz``; keep the newest ``keep``.

    Returns
    -------
    Path
        The checkpoint file.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep!r}")
    root = check_checkpoint_dir(folder)
    root.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {f"w/{i}": w for i, w in enumerate(state.weights)}
    for slot, tensors in state.strategy_state.items():
        if "/" in slot:
            raise ValueError(f"strategy state slot names cannot contain '/', got {slot!r}")
        arrays.update({f"s/{slot}/{i}": t for i, t in enumerate(tensors)})
    arrays.update({f"d/{key}": np.asarray(a) for key, a in state.dispatcher_state.items()})
    meta = {
        "format": FORMAT_VERSION,
        "rounds_done": state.rounds_done,
        "num_weights": len(state.weights),
        "slots": {k: len(v) for k, v in state.strategy_state.items()},
        "history": state.history,
        "fingerprint": state.fingerprint,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    archive = buf.getvalue()
    final = root / f"round-{state.rounds_done:06d}.npz"
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(_MAGIC + hashlib.sha256(archive).hexdigest().encode() + b"\n")
        handle.write(archive)
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


def _archive(path: Path) -> tuple[int, bytes]:
    """The checkpoint's format and its verified ``.npz`` bytes."""
    data = path.read_bytes()
    if data.startswith(_MAGIC):
        line, sep, archive = data.partition(b"\n")
        digest = line[len(_MAGIC) :].decode("ascii", errors="replace")
        if not sep or hashlib.sha256(archive).hexdigest() != digest:
            raise CheckpointError(
                f"{path}: checksum mismatch (the file was damaged after it was written)"
            )
        return 2, archive
    if data.startswith(b"PK\x03\x04"):
        return 1, data  # written before checksums; parsed defensively below
    raise CheckpointError(f"{path}: not a fedlab checkpoint (no checksum line)")


def load_checkpoint(path: str | Path) -> FederationState:
    """Read one checkpoint file; raises ``CheckpointError`` if it is damaged."""
    path = Path(path)
    try:
        fmt, archive = _archive(path)
        with np.load(io.BytesIO(archive), allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if not isinstance(meta, dict) or meta.get("format") not in (1, FORMAT_VERSION):
                found = meta.get("format") if isinstance(meta, dict) else meta
                raise CheckpointError(f"{path}: format {found!r}, expected {FORMAT_VERSION}")
            if meta["format"] != fmt:
                raise CheckpointError(f"{path}: format {meta['format']!r} in a format {fmt} file")
            weights = tuple(np.array(data[f"w/{i}"]) for i in range(meta["num_weights"]))
            slots = {
                str(name): tuple(np.array(data[f"s/{name}/{i}"]) for i in range(count))
                for name, count in meta["slots"].items()
            }
            state = FederationState(
                rounds_done=int(meta["rounds_done"]),
                weights=weights,
                strategy_state=slots,
                history=list(meta["history"]),
                fingerprint=str(meta["fingerprint"]),
                dispatcher_state={
                    key[2:]: np.array(data[key]) for key in data.files if key.startswith("d/")
                },
            )
    except CheckpointError:
        raise
    except Exception as exc:  # a damaged file (format 1 has no checksum): refuse it, clearly
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    return state


def latest_checkpoint(folder: str | Path) -> FederationState | None:
    """The newest loadable checkpoint in ``folder`` (None if the folder has none).

    Damaged files are skipped with a ``RuntimeWarning``; if every file is damaged a
    ``CheckpointError`` lists them, rather than silently starting from scratch.
    """
    files = _checkpoints(check_checkpoint_dir(folder))
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
