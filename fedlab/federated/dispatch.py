"""Where clients run: a :class:`Dispatcher` takes a round's tasks and returns what came back.

The round loop in :class:`~fedlab.federated.federation.Federation` does only the server's
job (select → plan → dispatch → server pipeline → reduce + server step → commit); every
detail of *where and how* clients train lives behind this interface:

* :class:`SimulatedDispatcher` — clients in this process: a client runtime (reference or
  vectorised), device profiles, dropouts, upload windows and simulated time against the
  deadline, and each client's stage state (codec residuals);
* :class:`fedlab.kits.DeviceDispatcher` — devices behind the file exchange: emulated
  TF-free processes (notebook 02) or real boards polling a shared folder;
* :class:`fedlab.fleet.FlowerDispatcher` — SuperNodes over gRPC through a Flower
  SuperLink (TLS, node authentication), from inside a Flower ``ServerApp``.

A dispatcher never aggregates and never judges an update: it reports, per task, either an
envelope (what the client sent, after its client-side pipeline stages) with the time it
arrived, or why nothing usable came back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from fedlab.codec import ModelDelta
from fedlab.data.federated_dataset import FederatedDataset
from fedlab.federated.runtime_base import ClientFailure, ClientRuntime, RunNote
from fedlab.federated.scheduling import EnergyModel, UploadSchedule, plan_uploads
from fedlab.federated.selection import ClientProfile, simulated_duration
from fedlab.federated.stages import ClientStateStore, Pipeline, StageContext
from fedlab.federated.types import ClientPlan, Envelope, Weights

__all__ = ["Dispatched", "Dispatcher", "Report", "RoundTasks", "SimulatedDispatcher"]

ReportStatus = Literal["reported", "dropped", "straggler", "failed"]


@dataclass(frozen=True, slots=True)
class RoundTasks:
    """What the server sends out in one round: the global model and one plan per client.

    ``hold_updates`` (secure aggregation on a fleet whose dispatcher has
    ``secure_clients``): tell every device to keep its update and report only its metadata;
    the sum is then collected through the dispatcher's :class:`SecureClients` channel.
    """

    round_index: int
    weights: Weights
    plans: tuple[ClientPlan, ...]
    deadline_s: float | None
    context: StageContext
    hold_updates: bool = False

    @property
    def model_bytes(self) -> int:
        """Bytes of the broadcast model (each client downloads it)."""
        return int(sum(w.nbytes for w in self.weights))


@dataclass(frozen=True, slots=True)
class Report:
    """What came back from one client: an envelope that arrived ``duration_s`` after the
    round opened, or the reason nothing usable did (``dropped``, ``straggler``, ``failed``).
    ``stage_bytes`` is the body size after each client stage when the dispatcher saw them
    (:meth:`~fedlab.federated.stages.Pipeline.send_measured`)."""

    client_id: int
    status: ReportStatus
    envelope: Envelope | None = None
    duration_s: float = 0.0
    num_examples: int = 0
    detail: str = ""
    stage_bytes: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if (self.status == "reported") != (self.envelope is not None):
            raise ValueError(
                f"client {self.client_id}: a {self.status!r} report "
                f"{'needs' if self.status == 'reported' else 'carries no'} envelope"
            )


@dataclass(frozen=True, slots=True)
class Dispatched:
    """One report per task, in the tasks' order, and what trained them (for the history).

    Attributes
    ----------
    reports : tuple of Report
        One per task, in order.
    runtime : str
        What trained the clients (shown in the round log).
    expect_headers : mapping
        Headers every reported envelope must carry with exactly these values (a wire
        dispatcher's ``round_index``, ``model_version``, ``base_version``): the server's
        validation refuses a stale or foreign update that does not echo them.
    bytes_down : int, optional
        Bytes really sent to the clients, when the dispatcher knows (frames, delta-encoded
        models); by default the round counts the raw model once per invited client.
    energy_j : mapping, optional
        Simulated energy each invited device spent this round (joules), when known.
    """

    reports: tuple[Report, ...]
    runtime: str = ""
    expect_headers: Mapping[str, Any] = field(default_factory=dict)
    bytes_down: int | None = None
    energy_j: Mapping[int, float] = field(default_factory=dict)


class Dispatcher(Protocol):
    """Runs a round's tasks wherever the clients are."""

    @property
    def num_clients(self) -> int:
        """Size of the enrolled population (client ids are ``0 … num_clients − 1``)."""
        ...

    def enrolled_examples(self, client_id: int) -> int:
        """The client's enrolled data size: the cap on the ``num_examples`` it may claim."""
        ...

    def profile(self, client_id: int) -> ClientProfile:
        """The device's profile (speeds, link), for planning epochs and deadlines."""
        ...

    def dispatch(
        self,
        tasks: RoundTasks,
        *,
        rng: np.random.Generator,
        on_training_start: Callable[[tuple[int, ...]], None],
    ) -> Dispatched:
        """Send ``tasks``, collect until the deadline; one :class:`Report` per plan.

        ``rng`` is the round's random stream (a simulation draws dropouts from it; a real
        fleet ignores it); ``on_training_start`` is called with the clients that start.
        """
        ...


class SimulatedDispatcher:
    """Clients simulated in this process.

    Each invited client drops out with probability ``dropout_rate`` (drawn from the round's
    stream); a client whose download and compute alone exceed the deadline is a straggler
    without training; the others train on ``runtime`` (all at once when it is vectorised),
    pass their update through the pipeline's client stages, and arrive at the simulated
    time of their profile (compute at ``seconds_per_example``, download, upload); past the
    deadline they are stragglers.

    Client-side state is kept here, as each device would keep its own: one
    :class:`~fedlab.federated.stages.ClientStateStore` per client for the pipeline's
    stateful stages (error-feedback residuals), and — with ``downlink`` — the model each
    device holds. :meth:`state_dict` / :meth:`load_state_dict` checkpoint both;
    :meth:`reset` forgets them.

    Parameters
    ----------
    downlink : ModelDelta, optional
        Send the broadcast as an exact delta (:class:`fedlab.codec.ModelDelta` without a
        lossy codec) against the model the device last received; a device that never
        received one (or whose delta would be larger) downloads the dense float32 model;
        one that already holds this version downloads nothing. Bytes really sent are reported in
        :attr:`Dispatched.bytes_down` (dropped clients are taken to have gone offline
        before the download and are not counted). ``None`` (default): every invited
        client downloads the dense model.
    schedule : UploadSchedule, optional
        Upload windows and a cap on concurrent uploads
        (:mod:`fedlab.federated.scheduling`): a trained client's upload waits for its
        profile's next window and a free slot, on a simulated clock that starts at
        ``schedule.start_hour`` and advances by each round's duration. ``None`` (default):
        uploads start as soon as training ends, no cap.

    Every round the simulated energy of each invited device is computed
    (``schedule.energy``, or the default :class:`EnergyModel`): it is in
    :attr:`Dispatched.energy_j` and :attr:`energy_log`; it changes nothing else.
    """

    def __init__(
        self,
        *,
        data: FederatedDataset,
        runtime: ClientRuntime,
        pipeline: Pipeline,
        profiles: Sequence[ClientProfile],
        dropout_rate: float = 0.0,
        seconds_per_example: float = 0.0,
        downlink: ModelDelta | None = None,
        schedule: UploadSchedule | None = None,
    ) -> None:
        if len(profiles) != data.num_clients:
            raise ValueError(f"got {len(profiles)} profiles for {data.num_clients} clients")
        if downlink is not None:
            if not isinstance(downlink, ModelDelta):
                raise TypeError(f"downlink must be a ModelDelta or None, got {downlink!r}")
            if downlink.codec is not None:
                raise ValueError(
                    "downlink: only the exact ModelDelta() is simulated (every simulated "
                    f"client trains from the same global model), got codec {downlink.codec!r}"
                )
        self.data = data
        self.runtime = runtime
        self.pipeline = pipeline
        self.profiles = tuple(profiles)
        self.dropout_rate = dropout_rate
        self.seconds_per_example = seconds_per_example
        if schedule is not None and not isinstance(schedule, UploadSchedule):
            raise TypeError(f"schedule must be an UploadSchedule or None, got {schedule!r}")
        self.downlink = downlink
        self.schedule = schedule
        self.energy_model = schedule.energy if schedule is not None else EnergyModel()
        self.energy_log: list[tuple[int, dict[int, float]]] = []
        self._stores: dict[int, ClientStateStore] = {}
        self._held: dict[int, Weights] = {}
        self._clock_s = self._start_clock()

    def _start_clock(self) -> float:
        return 0.0 if self.schedule is None else 3600.0 * self.schedule.start_hour

    @property
    def clock_s(self) -> float:
        """Simulated seconds since midnight of day 0 at the opening of the next round."""
        return self._clock_s

    def eligible_now(self, client_id: int) -> bool:
        """Whether the device may upload at the simulated clock (always without a schedule)."""
        avail = self.profiles[client_id].availability
        if self.schedule is None or avail is None:
            return True
        return self.schedule.eligible(avail, self._clock_s)

    def _on_wifi(self, client_id: int, t_s: float) -> bool:
        avail = self.profiles[client_id].availability
        return avail is None or avail.wifi.contains(t_s)

    @property
    def num_clients(self) -> int:
        """Number of simulated clients."""
        return self.data.num_clients

    def enrolled_examples(self, client_id: int) -> int:
        """The client's local dataset size."""
        return self.data.clients[client_id].num_examples

    def profile(self, client_id: int) -> ClientProfile:
        """The simulated device's profile."""
        return self.profiles[client_id]

    # -- client-side state ------------------------------------------------------------
    def client_state(self, client_id: int) -> ClientStateStore:
        """The state store of simulated client ``client_id`` (created on first use)."""
        store = self._stores.get(client_id)
        if store is None:
            store = self._stores[client_id] = ClientStateStore(client_id)
        return store

    def reset(self) -> None:
        """Forget every client's stage state and held model (a fresh fleet)."""
        self._stores.clear()
        self._held.clear()
        self.energy_log.clear()
        self._clock_s = self._start_clock()

    def state_dict(self) -> dict[str, np.ndarray]:
        """The client-side state as flat ``{key: array}`` (``.npz``-ready, no pickles).

        Keys: ``clock`` (the simulated clock, with a schedule), ``client/<id>/<stage>``
        (uint8 bytes of each stateful stage's state) and, with a downlink, ``held/<id>``
        (index of the model the device holds) and ``model/<k>/<i>`` (tensor ``i`` of
        distinct held model ``k``).
        """
        # Without a schedule the clock decides nothing: a plain run's state stays empty
        # (its checkpoints then resume under any dispatcher, as before client state).
        out: dict[str, np.ndarray] = {}
        if self.schedule is not None:
            out["clock"] = np.array(self._clock_s, np.float64)
        for cid, store in sorted(self._stores.items()):
            for name, blob in store.state_dict(self.pipeline.client).items():
                out[f"client/{cid}/{name}"] = np.frombuffer(blob, np.uint8).copy()
        models: dict[int, int] = {}
        for cid, held in sorted(self._held.items()):
            if id(held) not in models:
                k = models[id(held)] = len(models)
                for i, a in enumerate(held):
                    out[f"model/{k}/{i}"] = np.array(a)
            out[f"held/{cid}"] = np.array(models[id(held)], np.int64)
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output; everything is checked before anything
        changes (a ``ValueError`` names the bad key)."""
        blobs: dict[int, dict[str, bytes]] = {}
        models: dict[int, dict[int, np.ndarray]] = {}
        held_index: dict[int, int] = {}
        clock = self._clock_s
        for key, value in state.items():
            parts = key.split("/")
            try:
                if parts[0] == "client" and len(parts) == 3:
                    blobs.setdefault(int(parts[1]), {})[parts[2]] = np.asarray(
                        value, np.uint8
                    ).tobytes()
                elif parts[0] == "model" and len(parts) == 3:
                    models.setdefault(int(parts[1]), {})[int(parts[2])] = np.asarray(value)
                elif parts[0] == "held" and len(parts) == 2:
                    held_index[int(parts[1])] = int(np.asarray(value))
                elif key == "clock":
                    clock = float(np.asarray(value))
                    if not math.isfinite(clock) or clock < 0:
                        raise ValueError(f"clock {clock!r}")
                else:
                    raise ValueError("unknown key")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"dispatcher state: bad entry {key!r} ({exc})") from None
        for cid in (*blobs, *held_index):
            if not 0 <= cid < self.num_clients:
                raise ValueError(f"dispatcher state: client {cid} is not enrolled")
        built = {
            k: tuple(np.asarray(t[i], np.float32) for i in range(len(t))) for k, t in models.items()
        }
        for cid, k in held_index.items():
            if k not in built:
                raise ValueError(f"dispatcher state: held/{cid} names missing model {k}")
        stores = {}
        for cid, named in blobs.items():
            store = ClientStateStore(cid)
            store.load_state_dict(named, self.pipeline.client)
            stores[cid] = store
        self._stores = stores
        self._held = {cid: built[k] for cid, k in held_index.items()}
        self._clock_s = clock

    def _downloads(self, tasks: RoundTasks, receivers: Sequence[int]) -> dict[int, int]:
        """Bytes each receiver downloads this round (and record what it now holds)."""
        dense = tasks.model_bytes
        if self.downlink is None:
            return dict.fromkeys(receivers, dense)
        sizes: dict[int, int] = {}
        by_base: dict[int, int] = {}
        for cid in receivers:
            base = self._held.get(cid)
            if base is None:
                sizes[cid] = dense
            elif base is tasks.weights:
                sizes[cid] = 0  # already holds this version (nothing changed since)
            else:
                if id(base) not in by_base:
                    payload = self.downlink.encode(tasks.weights, base)
                    rebuilt = self.downlink.decode(payload, base)
                    if any(
                        a.tobytes() != np.asarray(b, np.float32).tobytes()
                        for a, b in zip(rebuilt, tasks.weights, strict=True)
                    ):
                        raise RuntimeError("downlink delta did not rebuild the model exactly")
                    # the server sends whichever is smaller (a tiny model's delta header
                    # can outweigh it)
                    by_base[id(base)] = min(len(payload), dense)
                sizes[cid] = by_base[id(base)]
            self._held[cid] = tasks.weights
        return sizes

    def dispatch(
        self,
        tasks: RoundTasks,
        *,
        rng: np.random.Generator,
        on_training_start: Callable[[tuple[int, ...]], None],
    ) -> Dispatched:
        """Simulate the round's clients (see the class docstring)."""
        deadline = tasks.deadline_s
        drop_draw = rng.random(len(tasks.plans))
        dropped = {
            plan.client_id
            for plan, u in zip(tasks.plans, drop_draw, strict=True)
            if u < self.dropout_rate
        }
        down = self._downloads(
            tasks, [p.client_id for p in tasks.plans if p.client_id not in dropped]
        )
        reports: dict[int, Report] = {}
        jobs = []
        for plan in tasks.plans:
            cid = plan.client_id
            client = self.data.clients[cid]
            if cid in dropped:
                reports[cid] = Report(cid, "dropped", detail="did not report")
                continue
            # Download and compute alone already past the deadline: a sure straggler.
            floor = simulated_duration(
                self.profiles[cid],
                examples_processed=plan.epochs * client.num_examples,
                seconds_per_example=self.seconds_per_example,
                bytes_down=down[cid],
                bytes_up=0,
            )
            if deadline is not None and floor > deadline:
                reports[cid] = Report(
                    cid,
                    "straggler",
                    duration_s=floor,
                    num_examples=client.num_examples,
                    detail=f"needs ≥ {floor:.1f} s > deadline {deadline:g} s",
                )
                continue
            jobs.append((client, plan))

        on_training_start(tuple(c.client_id for c, _ in jobs))
        results = self.runtime.train_clients(tasks.weights, jobs) if jobs else []
        if len(results) != len(jobs):
            raise RuntimeError(f"runtime returned {len(results)} results for {len(jobs)} jobs")
        stateful = self.pipeline.stateful
        arrived: list[tuple[int, Envelope, tuple[tuple[str, int], ...], float]] = []
        examples = {c.client_id: p.epochs * c.num_examples for c, p in jobs}
        for (client, _), trained in zip(jobs, results, strict=True):
            cid = client.client_id
            if isinstance(trained, ClientFailure):
                reports[cid] = Report(cid, "failed", detail=trained.error)
                continue
            try:
                # The device's store is updated only if every client stage succeeds; an
                # update that then arrives late was still sent (its residual moved on).
                envelope, sizes = self.pipeline.send_measured(
                    trained, tasks.context, self.client_state(cid) if stateful else None
                )
            except Exception as exc:  # a client-side stage failed: this client's failure
                reports[cid] = Report(cid, "failed", detail=f"{type(exc).__name__}: {exc}")
                continue
            duration = simulated_duration(
                self.profiles[cid],
                examples_processed=examples[cid],
                seconds_per_example=self.seconds_per_example,
                bytes_down=down[cid],
                bytes_up=envelope.nbytes,
            )
            arrived.append((cid, envelope, sizes, duration))
        upload_start = self._schedule_uploads(tasks, arrived, examples, down)
        for cid, envelope, sizes, duration in arrived:
            client = self.data.clients[cid]
            if cid in upload_start:
                start, duration = upload_start[cid]
                if start is None:
                    reports[cid] = Report(
                        cid,
                        "straggler",
                        duration_s=duration,
                        num_examples=client.num_examples,
                        detail="no upload window within the schedule's max_wait_s",
                    )
                    continue
            if deadline is not None and duration > deadline:
                reports[cid] = Report(
                    cid,
                    "straggler",
                    duration_s=duration,
                    num_examples=client.num_examples,
                    detail=f"reported at {duration:.1f} s > deadline {deadline:g} s",
                )
                continue
            reports[cid] = Report(
                cid, "reported", envelope, duration, client.num_examples, stage_bytes=sizes
            )
        sent = {cid: envelope.nbytes for cid, envelope, _, _ in arrived}
        energy = self._energy(tasks, examples, sent, down, upload_start)
        self.energy_log.append((tasks.round_index, energy))
        self._advance_clock(reports.values(), deadline)
        note = getattr(self.runtime, "last_run", None)
        if not jobs:
            runtime = ""
        elif isinstance(note, RunNote):
            runtime = note.describe()
        else:
            runtime = type(self.runtime).__name__
        return Dispatched(
            tuple(reports[p.client_id] for p in tasks.plans),
            runtime,
            bytes_down=None if self.downlink is None else int(sum(down.values())),
            energy_j=energy,
        )

    def _schedule_uploads(
        self,
        tasks: RoundTasks,
        arrived: Sequence[tuple[int, Envelope, Any, float]],
        examples: Mapping[int, int],
        down: Mapping[int, int],
    ) -> dict[int, tuple[float | None, float]]:
        """With a schedule: each arrived update's upload start (absolute seconds, None if it
        found no window) and its arrival after the round opened; ``{}`` without one."""
        schedule = self.schedule
        if schedule is None:
            return {}
        out: dict[int, tuple[float | None, float]] = {}
        queue = []
        ready_at: dict[int, float] = {}
        unscheduled = {cid: duration for cid, _, _, duration in arrived}
        for cid, envelope, _, _ in arrived:
            profile = self.profiles[cid]
            ready = self._clock_s + simulated_duration(
                profile,
                examples_processed=examples[cid],
                seconds_per_example=self.seconds_per_example,
                bytes_down=down[cid],
                bytes_up=0,
            )
            ready_at[cid] = ready
            avail = profile.availability
            opens = ready if avail is None else schedule.next_window(avail, ready)
            if opens is None:
                out[cid] = (None, ready - self._clock_s)
                continue
            queue.append((cid, opens, 8 * envelope.nbytes / profile.uplink_bps))
        for cid, (start, end) in plan_uploads(queue, schedule.max_concurrent_uploads).items():
            # An upload that did not wait keeps the unscheduled duration bit for bit.
            waited = start != ready_at[cid]
            out[cid] = (start, end - self._clock_s if waited else unscheduled[cid])
        return out

    def _energy(
        self,
        tasks: RoundTasks,
        trained: Mapping[int, int],
        sent: Mapping[int, int],
        down: Mapping[int, int],
        upload_start: Mapping[int, tuple[float | None, float]],
    ) -> dict[int, float]:
        """Joules each invited device spent: download, training (``trained``: example-epochs
        of those that trained), upload (``sent``: bytes of those whose client stages
        succeeded, late or not; none for an upload that found no window)."""
        model = self.energy_model
        out: dict[int, float] = {}
        for plan in tasks.plans:
            cid = plan.client_id
            if cid not in down:  # dropped before the download
                out[cid] = 0.0
                continue
            joules = model.radio(down[cid], self._on_wifi(cid, self._clock_s))
            if cid in trained:
                joules += model.joules_per_example * trained[cid] / self.profiles[cid].compute_speed
            start = upload_start.get(cid, (self._clock_s, 0.0))[0]
            if cid in sent and start is not None:
                joules += model.radio(sent[cid], self._on_wifi(cid, start))
            out[cid] = joules
        return out

    def _advance_clock(self, reports: Iterable[Report], deadline: float | None) -> None:
        """The next round opens when this one closes: its last arrival, or the deadline
        when someone was late (over-selection closing earlier is not seen here)."""
        reports = list(reports)
        used = [r.duration_s for r in reports if r.status == "reported"]
        late = any(r.status == "straggler" for r in reports)
        elapsed = max(used, default=0.0)
        if late and deadline is not None:
            elapsed = max(elapsed, deadline)
        self._clock_s += elapsed
