"""Emulated boards on the workbench, and the round engine's dispatcher for a device fleet.

Each emulated device is a folder (config + local data) and, per round, a separate Python
process that can import only what a board has (``fedlab.edge.emulate``). The
:class:`DeviceDispatcher` puts a fleet of devices behind the round engine's
:class:`~fedlab.federated.dispatch.Dispatcher` interface: ``Federation`` runs its rounds
on them exactly as on simulated clients (select → plan → dispatch → server pipeline →
reduce + server step → commit); this module never aggregates and never judges an update.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.codec import Codec
from fedlab.data.federated_dataset import ClientData
from fedlab.edge.transport import SUFFIX, FileTransport, update_file_name
from fedlab.federated.dispatch import Dispatched, Report, RoundTasks
from fedlab.federated.selection import ClientProfile
from fedlab.federated.stages import UpdatePolicy
from fedlab.federated.types import ClientUpdate, Envelope, UpdateRejected, is_int
from fedlab.kits.builder import Kit
from fedlab.protocol import RoundTask, UpdateEnvelope
from fedlab.secure.identity import IdentityRegistry

__all__ = [
    "AgentRun",
    "DeviceDispatcher",
    "EmulatedDevice",
    "EmulatedRound",
    "enrol_devices",
    "make_emulated_devices",
    "run_agents",
    "run_emulated_round",
]


@dataclass(frozen=True, slots=True)
class EmulatedDevice:
    """One emulated board: its id, folder and ``device.json``, and the number of examples
    it enrolled with (the cap on the ``num_examples`` its updates may claim)."""

    device_id: str
    folder: Path
    config: Path
    num_examples: int | None = None


@dataclass(frozen=True, slots=True)
class EmulatedRound:
    """What one round on emulated devices produced.

    Attributes
    ----------
    reports : dict
        Each device's report line (its JSON on stdout).
    accepted, rejected : list
        ``[(update file, validated update)]`` and ``[(update file, reason)]``.
    failures : dict
        Devices whose agent failed: exit code and message.
    bytes_down : int
        Size of the task frame every device read.
    bytes_up : int
        Total size of the round's update frames (accepted or not).
    """

    reports: dict[str, dict[str, Any]]
    accepted: list[tuple[str, ClientUpdate]]
    rejected: list[tuple[str, str]]
    failures: dict[str, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0


def make_emulated_devices(
    kit: Kit, clients: Sequence[ClientData], root: str | Path, **config: Any
) -> list[EmulatedDevice]:
    """A device folder per client under ``root``, sharing ``root/exchange`` as transport.

    ``**config`` overrides fields of the kit's ``device.json`` template (``coral_fallback``…).
    """
    base = Path(root)
    template = json.loads((kit.folder / "device.json.template").read_text())
    devices = []
    for client in clients:
        device_id = f"{kit.manifest.info['target'].replace('_', '-')}-{client.client_id:03d}"
        folder = base / device_id
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "data.npz", x=client.x, y=client.y)
        settings = {
            **template,
            "device_id": device_id,
            "kit_dir": str(kit.folder.resolve()),
            "data_path": "data.npz",
            "transport": {"kind": "files", "folder": str((base / "exchange").resolve())},
            "state_dir": "state",
            **config,
        }
        path = folder / "device.json"
        path.write_text(json.dumps(settings, indent=1))
        devices.append(EmulatedDevice(device_id, folder, path, client.num_examples))
    return devices


@dataclass(frozen=True, slots=True)
class AgentRun:
    """One emulated agent process: its exit code (None: killed at the time limit), its
    report line (the JSON it printed), the last line of its stderr, and when it ended
    (seconds after the batch started)."""

    device_id: str
    exit_code: int | None
    report: Mapping[str, Any]
    message: str
    seconds: float


def _agent_command(device: EmulatedDevice) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedlab.edge.emulate",
        "fedlab.edge.agent",
        "--config",
        str(device.config),
    ]


def run_agents(
    devices: Sequence[EmulatedDevice],
    *,
    timeout_s: float = 300.0,
    parallel: int | None = None,
) -> dict[str, AgentRun]:
    """Run one agent round on each device, ``parallel`` processes at a time (default: one
    per core), each in its own process with TensorFlow blocked; a process still running
    ``timeout_s`` after the batch started is killed (``exit_code=None``)."""
    if not (timeout_s > 0):
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    workers = parallel if parallel is not None else max(1, os.cpu_count() or 1)
    if not is_int(workers) or workers < 1:
        raise ValueError(f"parallel must be an int >= 1, got {parallel!r}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.monotonic()
    waiting = list(devices)
    running: dict[str, tuple[EmulatedDevice, subprocess.Popen[bytes], Any, Any]] = {}
    runs: dict[str, AgentRun] = {}

    def finish(device: EmulatedDevice, proc: subprocess.Popen[bytes], killed: bool) -> None:
        # Output goes to files, not pipes: a chatty agent never blocks on a full pipe
        # (which would look like a straggler).
        _, _, out_file, err_file = running[device.device_id]
        proc.wait()
        out_file.seek(0)
        err_file.seek(0)
        out = out_file.read().decode(errors="replace")
        err = err_file.read().decode(errors="replace")
        out_file.close()
        err_file.close()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        report = json.loads(lines[-1]) if lines else {}
        message = err.strip().splitlines()[-1] if err.strip() else ""
        runs[device.device_id] = AgentRun(
            device.device_id,
            None if killed else proc.returncode,
            report,
            f"killed after {timeout_s:g} s" if killed else message,
            time.monotonic() - start,
        )

    try:
        while waiting or running:
            while waiting and len(running) < workers:
                device = waiting.pop(0)
                out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()
                proc = subprocess.Popen(
                    _agent_command(device), stdout=out_file, stderr=err_file, env=env
                )
                running[device.device_id] = (device, proc, out_file, err_file)
            time.sleep(0.02)
            over = time.monotonic() - start > timeout_s
            for device_id, (device, proc, _, _) in list(running.items()):
                if proc.poll() is not None or over:
                    if proc.poll() is None:
                        proc.kill()
                        finish(device, proc, killed=True)
                    else:
                        finish(device, proc, killed=False)
                    del running[device_id]
            if over:
                for device in waiting:  # never started: the time was up
                    runs[device.device_id] = AgentRun(
                        device.device_id, None, {}, "not started before the time limit", 0.0
                    )
                waiting = []
    finally:
        for _, proc, out_file, err_file in running.values():  # never leave agents behind
            proc.kill()
            proc.wait()
            out_file.close()
            err_file.close()
    return runs


def enrol_devices(
    devices: Sequence[EmulatedDevice], *, timeout_s: float = 120.0
) -> IdentityRegistry:
    """The server's registry of the devices' signing keys, client ``i`` = ``devices[i]``.

    Each device prints its public key itself (``python -m fedlab.edge.agent --enrol``, in
    its own process: the private key is generated there and never read here).

    Raises
    ------
    RuntimeError
        A device could not report its key (with its message).
    """
    registry = IdentityRegistry()
    for cid, device in enumerate(devices):
        try:
            proc = subprocess.run(
                [*_agent_command(device), "--enrol"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{device.device_id}: --enrol gave no answer in {timeout_s:g} s"
            ) from None
        if proc.returncode != 0:
            raise RuntimeError(f"{device.device_id}: --enrol failed: {proc.stderr.strip()}")
        try:
            record = json.loads(proc.stdout.strip().splitlines()[-1])
            record["device_id"], bytes.fromhex(record["public_key"])
        except (IndexError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RuntimeError(
                f"{device.device_id}: --enrol printed no enrolment record ({exc!r}): "
                f"{proc.stdout.strip()[-200:]!r}"
            ) from None
        if record["device_id"] != device.device_id:
            raise RuntimeError(f"{device.device_id}: the device reports id {record['device_id']!r}")
        registry.enrol(cid, bytes.fromhex(record["public_key"]))
    return registry


def run_emulated_round(
    devices: Sequence[EmulatedDevice],
    exchange: str | Path,
    task: RoundTask,
    *,
    timeout_s: float = 300.0,
    policy: UpdatePolicy | None = None,
) -> EmulatedRound:
    """One shared task on every device, outside the round engine (a latency benchmark, a
    kit smoke test): publish ``task`` (inline weights), run every device's agent, and
    collect the envelopes with the server's update ``policy`` (default ``UpdatePolicy()``).
    A device that fails is reported with its exit code and message, not hidden; an update
    refused by the policy or from a device not in ``devices`` is listed in ``rejected``
    with its reason. For federated rounds use :class:`DeviceDispatcher` with
    ``Federation``."""
    transport = FileTransport(exchange)
    bytes_down = transport.publish(task).stat().st_size
    runs = run_agents(devices, timeout_s=timeout_s, parallel=1)
    failures = {d: f"exit {r.exit_code}: {r.message}" for d, r in runs.items() if r.exit_code != 0}
    reports = {d: dict(r.report) for d, r in runs.items() if r.exit_code == 0 and r.report}
    enrolled = {d.device_id: d.num_examples for d in devices}
    accepted, rejected = transport.collect(task, devices=enrolled, policy=policy)
    files = transport.updates.glob(f"*-r{task.round_index}{SUFFIX}")
    bytes_up = sum(path.stat().st_size for path in files)
    return EmulatedRound(reports, accepted, rejected, failures, bytes_down, bytes_up)


class DeviceDispatcher:
    """A fleet of devices behind a file exchange, as the round engine's dispatcher.

    Client ``i`` is ``devices[i]``. Each round every invited device gets a task of its own
    (``tasks/<device>.flab``: the global weights, its plan — epochs, seed, FedProx μ — and
    its client id); the others' tasks are withdrawn. With ``launch`` (emulated boards) the
    dispatcher runs the invited devices' agents itself, ``parallel`` at a time; without it
    (real boards whose agents poll the exchange) it waits for their updates. Updates are
    collected until the round's deadline (``deadline_s`` of the config, else
    ``timeout_s``): a device that answered is ``reported`` with its envelope (the server's
    pipeline then judges it, refusing any that does not echo this round's round index,
    model version and global-weights hash), one whose agent failed or whose file could not
    be read is ``failed`` with the reason, one still training at the deadline a
    ``straggler``, and one that sent nothing ``dropped``.

    Parameters
    ----------
    devices : sequence of EmulatedDevice
        The fleet, each with its enrolled number of examples (the cap on what it may claim).
    exchange : str or Path
        The exchange folder the devices' transport names.
    model_version : str
        The kit's model version (``kit.manifest.info["model"]["version"]``).
    profiles : sequence of ClientProfile, optional
        For epoch policies that plan by device speed (identical devices by default).
    launch : bool
        Run the emulated agents (True) or wait for real ones (False).
    parallel : int, optional
        Agent processes at a time when launching (default: one per core).
    timeout_s : float
        Longest wait per round when the config sets no deadline.
    poll_s : float
        How often the exchange is checked when waiting for real devices.
    run_id : str, optional
        This run's id, echoed by every update (an answer to another run's task is refused,
        and devices answer each run once). Default: a new random id per dispatcher; give
        the same one to a server resumed from its checkpoint so that devices which
        already answered are not asked to train again.
    codec : Codec, optional
        Tell the devices to encode their updates with this ``fedlab.codec`` codec (the
        task's plan carries its config; each device keeps the codec's state — error
        feedback's residual — in its state folder). The federation's pipeline then needs
        ``DecodeUpdate(codec)`` among its server stages.

    Attributes
    ----------
    last_runs : dict
        The last round's :class:`AgentRun` per launched device (report lines: time, peak
        memory, whether TensorFlow was imported).
    last_tasks : dict
        The last round's :class:`~fedlab.protocol.RoundTask` per client id.
    """

    def __init__(
        self,
        devices: Sequence[EmulatedDevice],
        exchange: str | Path,
        *,
        model_version: str,
        profiles: Sequence[ClientProfile] | None = None,
        launch: bool = True,
        parallel: int | None = None,
        timeout_s: float = 300.0,
        poll_s: float = 0.5,
        codec: Codec | None = None,
        run_id: str | None = None,
    ) -> None:
        if codec is not None and not isinstance(codec, Codec):
            raise TypeError(f"codec must be a fedlab.codec Codec, got {codec!r}")
        self.codec = codec
        self.run_id = run_id if run_id is not None else f"run-{secrets.token_hex(6)}"
        self._codec_json = (
            json.dumps(codec.get_config(), sort_keys=True, separators=(",", ":"))
            if codec is not None
            else ""
        )
        self.devices = tuple(devices)
        if not self.devices:
            raise ValueError("a device fleet needs at least one device")
        for device in self.devices:
            if not isinstance(device, EmulatedDevice):
                raise TypeError(f"devices must be EmulatedDevice, got {type(device).__name__}")
            n = device.num_examples
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(
                    f"device {device.device_id!r}: num_examples (its enrolled data size, the "
                    f"cap on what it may claim) must be an int >= 1, got {device.num_examples!r}"
                )
        ids = [d.device_id.casefold() for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be unique (case-insensitively)")
        if not isinstance(model_version, str) or not model_version:
            raise ValueError(f"model_version must be a non-empty string, got {model_version!r}")
        if profiles is not None and len(profiles) != len(self.devices):
            raise ValueError(f"got {len(profiles)} profiles for {len(self.devices)} devices")
        for name, value in (("timeout_s", timeout_s), ("poll_s", poll_s)):
            if not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        self.transport = FileTransport(exchange)
        self.model_version = model_version
        self.profiles = tuple(profiles) if profiles else (ClientProfile(),) * len(self.devices)
        self.launch = bool(launch)
        self.parallel = parallel
        self.timeout_s = float(timeout_s)
        self.poll_s = float(poll_s)
        self.last_runs: dict[str, AgentRun] = {}
        self.last_tasks: dict[int, RoundTask] = {}

    @property
    def num_clients(self) -> int:
        """Number of devices."""
        return len(self.devices)

    def enrolled_examples(self, client_id: int) -> int:
        """The device's enrolled data size."""
        return int(self.devices[client_id].num_examples)  # type: ignore[arg-type]

    def profile(self, client_id: int) -> ClientProfile:
        """The device's profile."""
        return self.profiles[client_id]

    def dispatch(
        self,
        tasks: RoundTasks,
        *,
        rng: np.random.Generator,
        on_training_start: Callable[[tuple[int, ...]], None],
    ) -> Dispatched:
        """Publish one task per invited device, run or await them, collect (see the class
        docstring). ``rng`` is not used: a real fleet draws nothing."""
        wait = tasks.deadline_s if tasks.deadline_s is not None else self.timeout_s
        start, opened = time.monotonic(), time.time()
        asked = {plan.client_id: self.devices[plan.client_id] for plan in tasks.plans}
        by_id = {d.device_id: cid for cid, d in asked.items()}
        round_tasks = {
            cid: self._task(plan, tasks, deadline=opened + wait)
            for cid, plan in zip(asked, tasks.plans, strict=True)
        }
        for device in self.devices:  # a device not invited must not redo an old task
            if device.device_id not in by_id:
                self.transport.task_path(device.device_id).unlink(missing_ok=True)
        bytes_down = 0
        for cid, task in round_tasks.items():
            device_id = asked[cid].device_id
            self._clear_stale(device_id, task)
            bytes_down += self.transport.publish(task, device_id=device_id).stat().st_size
        on_training_start(tuple(asked))
        arrival: dict[str, float] = {}
        runs: dict[str, AgentRun] = {}
        if self.launch:
            runs = run_agents(list(asked.values()), timeout_s=wait, parallel=self.parallel)
            arrival = {d: r.seconds for d, r in runs.items() if r.exit_code == 0}
        else:
            arrival = self._await(list(by_id), tasks.round_index, start, wait)
        first = next(iter(round_tasks.values()))
        decoded, refused = self.transport.envelopes(first, devices=list(by_id))
        got = {env.device_id: env for _, env in decoded}
        refusals = {name: reason for name, reason in refused}
        reports = []
        for cid, device in asked.items():
            did, run = device.device_id, runs.get(device.device_id)
            name = update_file_name(did, tasks.round_index)
            envelope = got.get(did)
            if run is not None and run.exit_code is None:
                reports.append(Report(cid, "straggler", duration_s=wait, detail=run.message))
            elif run is not None and run.exit_code != 0:
                reports.append(
                    Report(cid, "failed", detail=f"agent exit {run.exit_code}: {run.message}")
                )
            elif name in refusals:
                reports.append(
                    Report(cid, "failed", detail=f"refused on arrival: {refusals[name]}")
                )
            elif envelope is None:
                late = not self.launch and time.monotonic() - start >= wait
                reports.append(
                    Report(
                        cid,
                        "straggler" if late else "dropped",
                        duration_s=wait if late else 0.0,
                        detail=f"no update by the deadline ({wait:g} s)"
                        if late
                        else "the agent sent no update",
                    )
                )
            else:
                reports.append(
                    Report(
                        cid,
                        "reported",
                        Envelope(**envelope.engine_fields()),
                        duration_s=arrival.get(did, time.monotonic() - start),
                        num_examples=self.enrolled_examples(cid),
                        stage_bytes=self._stage_bytes(envelope, tasks),
                    )
                )
        self.last_runs = runs
        self.last_tasks = round_tasks
        mode = "emulated" if self.launch else "remote"
        return Dispatched(
            tuple(reports),
            runtime=f"{len(asked)} devices ({mode}, LiteRT)",
            expect_headers=first.expect_headers(),
            bytes_down=bytes_down,
        )

    def _task(self, plan: Any, tasks: RoundTasks, *, deadline: float) -> RoundTask:
        task = RoundTask.from_client_plan(
            plan, model_version=self.model_version, weights=tasks.weights, deadline=deadline
        )
        return replace(task, run_id=self.run_id, plan=replace(task.plan, codec=self._codec_json))

    def _stage_bytes(
        self, envelope: UpdateEnvelope, tasks: RoundTasks
    ) -> tuple[tuple[str, int], ...]:
        if not self._codec_json:
            return (("update", envelope.nbytes),)
        dense = int(sum(int(np.prod(w.shape)) * 4 for w in tasks.weights))  # float32 update
        return (("update", dense), ("encode", envelope.nbytes))

    def _clear_stale(self, device_id: str, task: RoundTask) -> None:
        """Remove an update file of this round left by an earlier run, unless it answers
        this very task (same client, round and global weights: a server resumed after a
        crash re-issues it, and a device that answered does not train it twice)."""
        path = self.transport.updates / update_file_name(device_id, task.round_index)
        if not path.is_file():
            return
        try:
            old = self.transport.read_envelope(path, task)
        except (UpdateRejected, OSError):
            old = None
        fields = old.engine_fields() if old is not None else {}
        answers = (
            old is not None
            and fields["client_id"] == task.client_id
            and all(
                fields["headers"].get(key) == value for key, value in task.expect_headers().items()
            )
        )
        if not answers:
            path.unlink(missing_ok=True)

    def _await(
        self, device_ids: list[str], round_index: int, start: float, wait: float
    ) -> dict[str, float]:
        arrival: dict[str, float] = {}
        while len(arrival) < len(device_ids) and time.monotonic() - start < wait:
            for did in device_ids:
                if (
                    did not in arrival
                    and (self.transport.updates / update_file_name(did, round_index)).is_file()
                ):
                    arrival[did] = time.monotonic() - start
            if len(arrival) < len(device_ids):
                time.sleep(self.poll_s)
        return arrival
