"""How tasks reach a device and updates leave it. The agent only sees :class:`Transport`;
the local file exchange here and a Flower client later implement the same two calls.

Everything read from the exchange folder is foreign input: a task file on the device, an
update file on the workbench. Both are parsed member by member (shapes and sizes checked
before an array is read, every member's CRC verified) and each update file is accepted
or rejected on its own, with the reason, by the same
:class:`~fedlab.federated.stages.ValidateUpdate` the simulated federation uses.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedlab.edge.model import atomic_write_bytes
from fedlab.federated.stages import (
    StageContext,
    UpdatePolicy,
    ValidateUpdate,
    roster_rejections,
)
from fedlab.federated.types import ClientPlan, ClientUpdate, Envelope, UpdateRejected, is_int

__all__ = ["FileTransport", "InProcessTransport", "Task", "Transport", "weights_version"]


def weights_version(weights: tuple[np.ndarray, ...]) -> str:
    """Content hash of a global model as it travels (float32): names the model a task
    carries and every update must echo, so last round's update cannot pass for this one."""
    h = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(w, dtype=np.float32)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Task:
    """One round's work for a device: the global weights and the training plan.

    Attributes
    ----------
    plan : ClientPlan
        What to train.
    weights : tuple of arrays
        The global model.
    model_version : str
        The kit's model version the task is for (``kit.manifest.info["model"]["version"]``);
        required: a device refuses a task for another kit.
    base_version : str
        Content hash of ``weights`` (computed when empty; a given one must match). Updates
        echo it, so a stale update computed from another global model is refused.
    """

    plan: ClientPlan
    weights: tuple[np.ndarray, ...]
    model_version: str
    base_version: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.plan, ClientPlan):
            raise TypeError(f"plan must be a ClientPlan, got {type(self.plan).__name__}")
        if not isinstance(self.model_version, str) or not self.model_version:
            raise ValueError(
                "model_version must be the kit's model version (a non-empty string), "
                f"got {self.model_version!r}"
            )
        weights = tuple(np.asarray(w) for w in self.weights)
        object.__setattr__(self, "weights", weights)
        digest = weights_version(weights)
        if not self.base_version:
            object.__setattr__(self, "base_version", digest)
        elif self.base_version != digest:
            raise ValueError(
                f"base_version {self.base_version!r} does not match the weights ({digest!r})"
            )

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
_UPDATE_HEADER = frozenset(
    {
        "device_id",
        "client_id",
        "round_index",
        "num_examples",
        "num_steps",
        "train_loss",
        "model_version",
        "base_version",
    }
)
_HEADER_BYTES = 1 << 16  # a JSON header is a few hundred bytes


class _Unreadable(Exception):
    """An archive member that is not what it must be."""


def _read_member(
    archive: zipfile.ZipFile, name: str, shape: tuple[int, ...] | None, kind: str
) -> np.ndarray:
    """One ``.npy`` member: its size, header, shape and dtype are checked before the data
    is read, and the whole member is read through ``ZipFile.read`` (CRC verified)."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise _Unreadable(f"{name}: compressed members are not accepted")
    limit = _HEADER_BYTES if shape is None else 8 * int(np.prod(shape, dtype=np.int64)) + 4096
    if info.file_size > limit:
        raise _Unreadable(f"{name}: {info.file_size} bytes, more than the {limit} expected")
    data = archive.read(name)
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    if version == (1, 0):
        got_shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
    elif version == (2, 0):
        got_shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    else:
        raise _Unreadable(f"{name}: .npy format {version} is not accepted")
    if dtype.kind != kind or dtype.hasobject or (kind == "f" and dtype.itemsize > 8):
        raise _Unreadable(f"{name}: dtype {dtype} is not accepted")
    if shape is not None and tuple(got_shape) != tuple(shape):
        raise UpdateRejected(f"{name}: shape {tuple(got_shape)} does not fit the model {shape}")
    count = int(np.prod(got_shape, dtype=np.int64))
    body = data[buf.tell() :]
    if len(body) != count * dtype.itemsize:
        raise _Unreadable(f"{name}: {len(body)} data bytes, expected {count * dtype.itemsize}")
    array = np.frombuffer(body, dtype=dtype, count=count)
    return array.reshape(got_shape, order="F" if fortran else "C").copy()


def _read_update_file(
    path: Path, shapes: tuple[tuple[int, ...], ...]
) -> tuple[Any, tuple[np.ndarray, ...]]:
    names = [f"d{i:03d}" for i in range(len(shapes))]
    with zipfile.ZipFile(path) as archive:
        members = archive.namelist()
        wanted = {f"{n}.npy" for n in ("header", *names)}
        if len(members) != len(set(members)) or set(members) != wanted:
            extra = sorted(set(members) - wanted)
            missing = sorted(wanted - set(members))
            raise UpdateRejected(
                f"{path.name}: arrays do not fit the model (unexpected {extra}, "
                f"missing {missing}, {len(members)} members)"
            )
        header = _read_member(archive, "header.npy", None, "U")
        delta = tuple(
            _read_member(archive, f"{n}.npy", tuple(s), "f")
            for n, s in zip(names, shapes, strict=True)
        )
    if header.shape != ():
        raise _Unreadable(f"header has shape {header.shape}, expected a single string")
    return json.loads(str(header)), delta


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
                "base_version": task.base_version,
            }
        )
        arrays = {f"w{i:03d}": np.asarray(w, np.float32) for i, w in enumerate(task.weights)}
        arrays["header"] = np.array(header)
        return atomic_write_bytes(self.folder / "task.npz", _npz_bytes(arrays))

    def collect(
        self,
        task: Task,
        *,
        devices: Mapping[str, int | None] | Collection[str],
        policy: UpdatePolicy | None = None,
    ) -> tuple[list[tuple[str, ClientUpdate]], list[tuple[str, str]]]:
        """Updates for ``task``: the valid ones, and (file, reason) for each rejected one.

        Parameters
        ----------
        task : Task
            The round's task: its round, model version, base version and weights are what
            an update must match (and the norm bound is relative to its weights).
        devices : mapping or collection of str
            The devices asked for an update this round; a mapping gives each device's
            enrolled number of examples, the cap on the ``num_examples`` it may claim.
        policy : UpdatePolicy, optional
            The server's update policy (default: ``UpdatePolicy()``).

        Returns
        -------
        accepted, rejected
            ``[(file name, update)]`` and ``[(file name, reason)]``. Every file of the
            round is in one of them: damaged, forged, stale, duplicate, unknown-device,
            wrong-shape, non-finite or out-of-bounds updates are rejected one by one and
            never cost the valid updates of the round. Nothing is deleted.
        """
        caps: Mapping[str, int | None] = (
            devices if isinstance(devices, Mapping) else dict.fromkeys(devices)
        )
        validate = ValidateUpdate(policy=policy or UpdatePolicy())
        paths = sorted(self.updates.glob(f"*-r{task.round_index}.npz"))
        senders: list[str] = []
        for path in paths:
            match = _UPDATE.match(path.name)
            senders.append(match["device"] if match else path.name)
        accepted: list[tuple[str, ClientUpdate]] = []
        rejected: list[tuple[str, str]] = []
        for path, sender, refused in zip(
            paths, senders, roster_rejections(senders, caps), strict=True
        ):
            if refused is not None:
                rejected.append((path.name, f"{path.name}: {refused}"))
                continue
            try:
                update = self.read_update(path, task, max_examples=caps[sender], validate=validate)
            except UpdateRejected as exc:
                rejected.append((path.name, str(exc)))
            except Exception as exc:  # a reader bug must cost this file, not the round
                rejected.append((path.name, f"{path.name}: unexpected {exc!r}"))
            else:
                accepted.append((path.name, update))
        return accepted, rejected

    @staticmethod
    def read_update(
        path: Path,
        task: Task,
        *,
        max_examples: int | None = None,
        validate: ValidateUpdate | None = None,
    ) -> ClientUpdate:
        """One update file for ``task``, validated (raises :class:`UpdateRejected` naming
        the file and the problem)."""
        match = _UPDATE.match(path.name)
        if not match or int(match["round"]) != task.round_index:
            raise UpdateRejected(f"{path.name}: not an update of round {task.round_index}")
        shapes = tuple(tuple(int(d) for d in w.shape) for w in task.weights)
        try:
            header, delta = _read_update_file(path, shapes)
        except UpdateRejected as exc:
            raise UpdateRejected(f"{path.name}: {exc}") from None
        except Exception as exc:  # any damage: zip, CRC, npy header, JSON, encoding
            raise UpdateRejected(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from None
        if not isinstance(header, dict):
            raise UpdateRejected(f"{path.name}: header is not a JSON object")
        unknown = sorted(set(header) - _UPDATE_HEADER)
        if unknown:
            raise UpdateRejected(f"{path.name}: unknown header fields {unknown}")
        if header.get("device_id") != match["device"]:
            raise UpdateRejected(f"{path.name}: header does not match the file name")
        client_id: Any = header.get("client_id")
        if not is_int(client_id) or client_id < 0:
            raise UpdateRejected(f"{path.name}: client_id must be an int >= 0, got {client_id!r}")
        loss = header.get("train_loss")
        envelope = Envelope(
            client_id=client_id,
            num_examples=header.get("num_examples"),  # type: ignore[arg-type]  # validated
            body=delta,
            num_steps=header.get("num_steps", 0),
            metrics={} if loss is None else {"train_loss": loss},
            headers={k: header.get(k) for k in ("round_index", "model_version", "base_version")},
        )
        context = StageContext(
            round_index=task.round_index,
            weight_shapes=shapes,
            weights=task.weights,
            max_examples=max_examples,
            expect_headers={
                "round_index": task.round_index,
                "model_version": task.model_version,
                "base_version": task.base_version,
            },
        )
        try:
            (validate or ValidateUpdate()).apply(envelope, context)
        except UpdateRejected as exc:
            raise UpdateRejected(f"{path.name}: {exc}") from None
        return ClientUpdate(
            client_id=int(client_id),
            delta=tuple(d.astype(np.float32) for d in delta),
            num_examples=int(envelope.num_examples),
            num_steps=int(envelope.num_steps),
            metrics={k: float(v) for k, v in envelope.metrics.items()},
        )

    # -- device side -----------------------------------------------------------------
    def fetch(self, device_id: str) -> Task | None:
        """The published task, or None if there is none.

        Raises
        ------
        ValueError
            The task file is damaged or its values are not a valid plan (naming the field).
        """
        path = self.folder / "task.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                header = json.loads(str(f["header"]))
                names = sorted(n for n in f.files if n != "header")
                weights = tuple(np.array(f[n]) for n in names)
            if not isinstance(header, dict) or not isinstance(header.get("plan"), dict):
                raise ValueError("the header has no plan")
            plan = header["plan"]
            unknown = set(plan) - set(_PLAN_FIELDS)
            if unknown:
                raise ValueError(f"unknown plan fields {sorted(unknown)}")
            if any(not np.issubdtype(w.dtype, np.floating) for w in weights):
                raise ValueError("weights must be floating point arrays")
            return Task(
                ClientPlan(**plan),
                weights,
                header.get("model_version", ""),
                header.get("base_version", ""),
            )
        except Exception as exc:  # everything in a foreign file is a reason to refuse it
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
            "base_version": task.base_version,
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
