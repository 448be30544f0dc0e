"""How tasks reach a device and updates leave it, in the protocol's encoding
(:mod:`fedlab.protocol`). The agent only sees :class:`Transport`; the local file exchange
here and a Flower client later implement the same two calls.

Everything read from the exchange folder is foreign input: a task file on the device, an
update file on the workbench. Each is one protocol frame, decoded by
:func:`fedlab.protocol.decode` (sizes checked against the bytes present before anything
is allocated, CRC verified, every field typed). Each update file is accepted or rejected
on its own, with the reason: the transport checks only what is its own (the file's name,
size and sender), and the server's update policy is
:class:`~fedlab.federated.stages.ValidateUpdate`, run through the same
:class:`~fedlab.federated.stages.Pipeline` as in the simulated federation.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from fedlab.edge.model import atomic_write_bytes
from fedlab.federated.stages import (
    Pipeline,
    StageContext,
    UpdatePolicy,
    ValidateUpdate,
    roster_rejections,
)
from fedlab.federated.types import ClientUpdate, Envelope, UpdateRejected
from fedlab.protocol import (
    ProtocolError,
    RoundTask,
    UpdateEnvelope,
    decode_envelope,
    decode_task,
    encode,
    weights_version,
)
from fedlab.protocol.wire import MAX_HEADER_BYTES

__all__ = [
    "SUFFIX",
    "TASK_FILE",
    "FileTransport",
    "InProcessTransport",
    "Transport",
    "update_file_name",
    "weights_version",
]

#: File name suffix of a protocol frame in the exchange folder.
SUFFIX = ".flab"
#: The published task.
TASK_FILE = "task" + SUFFIX

#: Per-device tasks (a plan of its own: epochs, seed, client id) go in this subfolder.
TASKS_DIR = "tasks"

_DEVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_UPDATE = re.compile(
    r"^(?P<device>[A-Za-z0-9][A-Za-z0-9_.-]*)-r(?P<round>\d+)" + re.escape(SUFFIX) + "$"
)


def update_file_name(device_id: str, round_index: int) -> str:
    """``<device>-r<round>.flab``: where a device's update for a round goes."""
    return f"{device_id}-r{round_index}{SUFFIX}"


class Transport(Protocol):
    """Task in, envelope out."""

    def fetch(self, device_id: str) -> RoundTask | None:
        """The device's current task, or None when there is nothing to do."""
        ...

    def submit(self, device_id: str, envelope: UpdateEnvelope) -> None:
        """Deliver the envelope answering the current task."""
        ...


def _inline(task: RoundTask) -> tuple:
    if task.weights is None:
        raise ValueError(
            f"task names its weights by reference ({task.weights_ref!r}); the file exchange "
            "carries them inline"
        )
    return task.weights


class FileTransport:
    """Tasks and updates as protocol frames in one folder (a shared or synced directory,
    or a USB stick carried between the workbench and a board).

    Layout: ``task.flab`` (a :class:`~fedlab.protocol.RoundTask` with its weights inline,
    for every device), ``tasks/<device>.flab`` (a task for one device, which it reads in
    preference to the shared one: how the round engine gives each device its own plan)
    and ``updates/<device>-r<round>.flab`` (an :class:`~fedlab.protocol.UpdateEnvelope`).
    Every file is written atomically, so a reader never sees half a file, even if the
    writer is killed.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.updates = self.folder / "updates"

    # -- workbench side --------------------------------------------------------------
    def publish(self, task: RoundTask, *, device_id: str | None = None) -> Path:
        """Write ``task`` for every device, or for ``device_id`` only (replacing the
        previous one); returns the file written.

        Raises
        ------
        ValueError
            The task names its weights by reference (the exchange carries them inline), or
            ``device_id`` is not a valid device name.
        """
        _inline(task)
        return atomic_write_bytes(self.task_path(device_id), encode(task))

    def task_path(self, device_id: str | None = None) -> Path:
        """Where the shared task (``device_id=None``) or one device's task is written."""
        if device_id is None:
            return self.folder / TASK_FILE
        if not isinstance(device_id, str) or not _DEVICE.match(device_id):
            raise ValueError(
                f"device_id must be 1-64 letters, digits, '_', '.' or '-', got {device_id!r}"
            )
        return self.folder / TASKS_DIR / f"{device_id}{SUFFIX}"

    def envelopes(
        self, task: RoundTask, *, devices: Collection[str]
    ) -> tuple[list[tuple[str, UpdateEnvelope]], list[tuple[str, str]]]:
        """The round's update files, decoded: ``[(file name, envelope)]`` and
        ``[(file name, reason)]``.

        Only the transport's own checks are applied here (the file's name and size, the
        sender among ``devices`` and not twice, the envelope decodes and names the same
        device): what the server's pipeline then does with the envelopes is its business
        (:meth:`collect` runs the update policy).
        """
        paths = sorted(self.updates.glob(f"*-r{task.round_index}{SUFFIX}"))
        senders: list[str] = []
        for path in paths:
            match = _UPDATE.match(path.name)
            senders.append(match["device"] if match else path.name)
        decoded: list[tuple[str, UpdateEnvelope]] = []
        rejected: list[tuple[str, str]] = []
        for path, refused in zip(paths, roster_rejections(senders, devices), strict=True):
            if refused is not None:
                rejected.append((path.name, f"{path.name}: {refused}"))
                continue
            try:
                decoded.append((path.name, self.read_envelope(path, task)))
            except UpdateRejected as exc:
                rejected.append((path.name, str(exc)))
            except OSError as exc:  # unreadable file (permissions, I/O): this file only
                rejected.append((path.name, f"{path.name}: cannot be read ({exc})"))
            except Exception as exc:  # a reader bug must cost this file, not the round
                rejected.append((path.name, f"{path.name}: unexpected {exc!r}"))
        return decoded, rejected

    def collect(
        self,
        task: RoundTask,
        *,
        devices: Mapping[str, int | None] | Collection[str],
        policy: UpdatePolicy | None = None,
    ) -> tuple[list[tuple[str, ClientUpdate]], list[tuple[str, str]]]:
        """Updates for ``task``: the valid ones, and (file, reason) for each rejected one.

        Parameters
        ----------
        task : RoundTask
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
        decoded, rejected = self.envelopes(task, devices=caps)
        accepted: list[tuple[str, ClientUpdate]] = []
        for name, envelope in decoded:
            cap = caps[envelope.device_id]
            try:
                update = self.judge(envelope, task, max_examples=cap, validate=validate)
            except UpdateRejected as exc:
                rejected.append((name, f"{name}: {exc}"))
            except Exception as exc:  # a policy bug must cost this file, not the round
                rejected.append((name, f"{name}: unexpected {exc!r}"))
            else:
                accepted.append((name, update))
        rejected.sort()
        return accepted, rejected

    @staticmethod
    def read_envelope(path: Path, task: RoundTask) -> UpdateEnvelope:
        """One update file for ``task``, decoded (raises :class:`UpdateRejected` naming
        the file and the problem; the update policy is not applied here)."""
        match = _UPDATE.match(path.name)
        if not match or int(match["round"]) != task.round_index:
            raise UpdateRejected(f"{path.name}: not an update of round {task.round_index}")
        # the largest honest update: float64 tensors of the model's shapes, full headers
        limit = sum(8 * w.size + 4 * w.ndim + 4 for w in _inline(task)) + 4 * MAX_HEADER_BYTES
        size = path.stat().st_size
        if size > limit:
            raise UpdateRejected(
                f"{path.name}: {size} bytes, more than the {limit} an update of this model takes"
            )
        try:
            envelope = decode_envelope(path.read_bytes())
        except ProtocolError as exc:
            raise UpdateRejected(f"{path.name}: not a valid update envelope ({exc})") from None
        if envelope.device_id != match["device"]:
            raise UpdateRejected(
                f"{path.name}: the envelope's device_id {envelope.device_id!r} does not "
                "match the file name"
            )
        return envelope

    @staticmethod
    def judge(
        envelope: UpdateEnvelope,
        task: RoundTask,
        *,
        max_examples: int | None = None,
        validate: ValidateUpdate | None = None,
    ) -> ClientUpdate:
        """The server's update policy on one envelope: the validated update, or
        :class:`UpdateRejected` with the reason."""
        weights = _inline(task)
        context = StageContext(
            round_index=task.round_index,
            weight_shapes=tuple(tuple(int(d) for d in w.shape) for w in weights),
            weights=weights,
            max_examples=max_examples,
            expect_headers=task.expect_headers(),
        )
        pipeline = Pipeline(validate=validate or ValidateUpdate())
        return pipeline.receive(Envelope(**envelope.engine_fields()), context)

    @staticmethod
    def read_update(
        path: Path,
        task: RoundTask,
        *,
        max_examples: int | None = None,
        validate: ValidateUpdate | None = None,
    ) -> ClientUpdate:
        """One update file for ``task``, decoded and validated (raises
        :class:`UpdateRejected` naming the file and the problem)."""
        envelope = FileTransport.read_envelope(path, task)
        try:
            return FileTransport.judge(envelope, task, max_examples=max_examples, validate=validate)
        except UpdateRejected as exc:
            raise UpdateRejected(f"{path.name}: {exc}") from None

    # -- device side -----------------------------------------------------------------
    def fetch(self, device_id: str) -> RoundTask | None:
        """This device's task (``tasks/<device>.flab``) if there is one, else the shared
        task, else None.

        Raises
        ------
        ValueError
            The task file is damaged or its values are not a valid task (naming the field).
        """
        path = self.task_path(device_id)
        if not path.is_file():
            path = self.folder / TASK_FILE
        if not path.is_file():
            return None
        try:
            task = decode_task(path.read_bytes())
            _inline(task)
        except (ProtocolError, ValueError) as exc:
            raise ValueError(f"{path}: not a valid task ({exc})") from None
        return task

    def submit(self, device_id: str, envelope: UpdateEnvelope) -> None:
        """Write ``updates/<device>-r<round>.flab`` atomically (an envelope without a
        ``device_id`` is given this one; one naming another device is a ``ValueError``)."""
        if envelope.device_id not in ("", device_id):
            raise ValueError(
                f"envelope of device {envelope.device_id!r} submitted as {device_id!r}"
            )
        if not envelope.device_id:
            envelope = replace(envelope, device_id=device_id)
        path = self.updates / update_file_name(device_id, envelope.round_index)
        atomic_write_bytes(path, encode(envelope))


@dataclass
class InProcessTransport:
    """Tasks and envelopes in memory (tests, notebooks, one-process demos)."""

    task: RoundTask | None = None
    submitted: list[tuple[str, UpdateEnvelope]] = field(default_factory=list)

    def fetch(self, device_id: str) -> RoundTask | None:
        """The current task."""
        return self.task

    def submit(self, device_id: str, envelope: UpdateEnvelope) -> None:
        """Keep the envelope."""
        self.submitted.append((device_id, envelope))
