"""How tasks reach a device and updates leave it. The agent only sees :class:`Transport`;
the local file exchange here and a Flower client later implement the same two calls."""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedlab.edge.model import atomic_write_bytes
from fedlab.federated.types import ClientPlan, ClientUpdate, UpdateRejected

__all__ = ["FileTransport", "InProcessTransport", "Task", "Transport"]


@dataclass(frozen=True, slots=True)
class Task:
    """One round's work for a device: the global weights and the training plan."""

    plan: ClientPlan
    weights: tuple[np.ndarray, ...]
    model_version: str = ""

    @property
    def round_index(self) -> int:
        """The round this task belongs to."""
        return self.plan.round_index


class Transport(Protocol):
    """Task in, update out."""

    def fetch(self, device_id: str) -> Task | None:
        """The device's current task, or None when there is nothing to do."""
        ...

    def submit(self, device_id: str, task: Task, update: ClientUpdate) -> None:
        """Deliver the update computed for ``task``."""
        ...


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_PLAN_FIELDS = tuple(ClientPlan.__dataclass_fields__)
_UPDATE = re.compile(r"^(?P<device>[A-Za-z0-9][A-Za-z0-9_.-]*)-r(?P<round>\d+)\.npz$")


class FileTransport:
    """Tasks and updates as files in one folder (a shared or synced directory, or a USB
    stick carried between the workbench and a board).

    Layout: ``task.npz`` (the global weights, plus the plan as JSON) and
    ``updates/<device>-r<round>.npz`` (the delta, plus a JSON header). Every file is written
    atomically, so a reader never sees half a file, even if the writer is killed.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.updates = self.folder / "updates"

    # -- workbench side --------------------------------------------------------------
    def publish(self, task: Task) -> Path:
        """Write ``task`` for every device (replacing the previous one)."""
        header = json.dumps(
            {
                "plan": {k: getattr(task.plan, k) for k in _PLAN_FIELDS},
                "model_version": task.model_version,
            }
        )
        arrays = {f"w{i:03d}": np.asarray(w, np.float32) for i, w in enumerate(task.weights)}
        arrays["header"] = np.array(header)
        return atomic_write_bytes(self.folder / "task.npz", _npz_bytes(arrays))

    def collect(
        self, round_index: int, shapes: tuple[tuple[int, ...], ...]
    ) -> tuple[list[tuple[str, ClientUpdate]], list[tuple[str, str]]]:
        """Updates of ``round_index``: the valid ones, and (file, reason) for each rejected
        one (damaged, forged header, wrong shapes, NaN/Inf). Nothing is deleted."""
        accepted: list[tuple[str, ClientUpdate]] = []
        rejected: list[tuple[str, str]] = []
        for path in sorted(self.updates.glob(f"*-r{round_index}.npz")):
            try:
                accepted.append((path.name, self.read_update(path, round_index, shapes)))
            except UpdateRejected as exc:
                rejected.append((path.name, str(exc)))
        return accepted, rejected

    @staticmethod
    def read_update(
        path: Path, round_index: int, shapes: tuple[tuple[int, ...], ...]
    ) -> ClientUpdate:
        """One update file, validated (raises :class:`UpdateRejected` naming the problem)."""
        match = _UPDATE.match(path.name)
        if not match or int(match["round"]) != round_index:
            raise UpdateRejected(f"{path.name}: not an update of round {round_index}")
        try:
            with np.load(path, allow_pickle=False) as f:
                header = json.loads(str(f["header"]))
                delta = tuple(np.array(f[f"d{i:03d}"]) for i in range(len(shapes)))
                extra = set(f.files) - {"header"} - {f"d{i:03d}" for i in range(len(shapes))}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise UpdateRejected(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from None
        if extra:
            raise UpdateRejected(f"{path.name}: unexpected arrays {sorted(extra)}")
        if header.get("device_id") != match["device"] or header.get("round_index") != round_index:
            raise UpdateRejected(f"{path.name}: header does not match the file name")
        got = tuple(tuple(d.shape) for d in delta)
        if got != tuple(tuple(s) for s in shapes):
            raise UpdateRejected(f"{path.name}: update shapes {got} do not fit the model {shapes}")
        if not all(np.isfinite(d).all() for d in delta):
            raise UpdateRejected(f"{path.name}: update contains NaN or Inf")
        n = header.get("num_examples")
        if not isinstance(n, int) or n < 1:
            raise UpdateRejected(f"{path.name}: num_examples must be a positive int, got {n!r}")
        loss = header.get("train_loss")
        metrics = {"train_loss": float(loss)} if isinstance(loss, int | float) else {}
        return ClientUpdate(
            client_id=int(header.get("client_id", -1)),
            delta=tuple(d.astype(np.float32) for d in delta),
            num_examples=n,
            num_steps=int(header.get("num_steps", 0)),
            metrics=metrics,
        )

    # -- device side -----------------------------------------------------------------
    def fetch(self, device_id: str) -> Task | None:
        """The published task, or None if there is none."""
        path = self.folder / "task.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                header = json.loads(str(f["header"]))
                names = sorted(n for n in f.files if n != "header")
                weights = tuple(np.array(f[n]) for n in names)
            plan = header["plan"]
            unknown = set(plan) - set(_PLAN_FIELDS)
            if unknown:
                raise ValueError(f"unknown plan fields {sorted(unknown)}")
            return Task(ClientPlan(**plan), weights, str(header.get("model_version", "")))
        except (OSError, KeyError, TypeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
            raise ValueError(f"{path}: not a valid task ({type(exc).__name__}: {exc})") from None

    def submit(self, device_id: str, task: Task, update: ClientUpdate) -> None:
        """Write ``updates/<device>-r<round>.npz`` atomically."""
        loss = update.metrics.get("train_loss", math.nan)
        header = {
            "device_id": device_id,
            "client_id": update.client_id,
            "round_index": task.round_index,
            "num_examples": update.num_examples,
            "num_steps": update.num_steps,
            "train_loss": float(loss) if math.isfinite(loss) else None,
            "model_version": task.model_version,
        }
        arrays: dict[str, Any] = {f"d{i:03d}": d for i, d in enumerate(update.delta)}
        arrays["header"] = np.array(json.dumps(header))
        atomic_write_bytes(
            self.updates / f"{device_id}-r{task.round_index}.npz", _npz_bytes(arrays)
        )


@dataclass
class InProcessTransport:
    """Tasks and updates in memory (tests, notebooks, one-process demos)."""

    task: Task | None = None
    submitted: list[tuple[str, Task, ClientUpdate]] = field(default_factory=list)

    def fetch(self, device_id: str) -> Task | None:
        """The current task."""
        return self.task

    def submit(self, device_id: str, task: Task, update: ClientUpdate) -> None:
        """Keep the update."""
        self.submitted.append((device_id, task, update))
