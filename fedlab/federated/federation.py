"""``Federation``: the round loop. It only composes the stages; each stage is its own object."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from fedlab.data.arrays import LabeledArrays
from fedlab.data.federated_dataset import FederatedDataset
from fedlab.federated.batching import client_seed
from fedlab.federated.checkpoint import (
    CheckpointError,
    FederationState,
    check_checkpoint_dir,
    latest_checkpoint,
    save_checkpoint,
)
from fedlab.federated.config import FederationConfig
from fedlab.federated.dispatch import Dispatched, Dispatcher, RoundTasks, SimulatedDispatcher
from fedlab.federated.history import History
from fedlab.federated.observers import Observer
from fedlab.federated.runtime_base import ClientRuntime
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.selection import (
    ClientProfile,
    EpochPolicy,
    FixedEpochs,
    Sampler,
    UniformSampler,
)
from fedlab.federated.stages import Pipeline, StageContext
from fedlab.federated.strategies import Strategy, StrategyState, strategy_to_dict
from fedlab.federated.strategies.fedavg import FedAvg
from fedlab.federated.types import (
    ClientPlan,
    ClientUpdate,
    Envelope,
    RoundResult,
    UpdateRejected,
    Weights,
    is_int,
)

__all__ = ["ClientOutcome", "Federation", "RoundGuard"]

Status = Literal["completed", "dropped", "straggler", "failed", "rejected"]


class RoundGuard(Protocol):
    """Decides whether the next round may run."""

    def before_round(self, federation: Federation, round_index: int) -> None:
        """Raise (with a clear message) to refuse the round."""
        ...


@dataclass(frozen=True, slots=True)
class ClientOutcome:
    """What happened to one invited client in one round."""

    client_id: int
    status: Status
    duration_s: float = 0.0
    num_examples: int = 0
    detail: str = ""


def _dataset_digest(data: FederatedDataset) -> str:
    h = hashlib.sha256()
    h.update(data.label_counts().tobytes())
    h.update(np.asarray(data.input_shape).tobytes())
    for client in data.clients[:: max(1, data.num_clients // 64)]:
        h.update(np.ascontiguousarray(client.x[:4]).tobytes())
    return h.hexdigest()[:16]


@dataclass(slots=True)
class _Received:
    """What the server holds after its pipeline, while one round is being aggregated."""

    outcomes: dict[int, ClientOutcome] = field(default_factory=dict)
    accepted: list[ClientUpdate] = field(default_factory=list)
    bytes_up: int = 0
    stage_bytes: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    held_examples: int | None = None  # devices held their updates: the protocol's total


def _check_sum_compatible(strategy: object, stage: SecureAggregation | None) -> None:
    """Secure aggregation gives the strategy only a sum: refuse, before any round, a
    strategy that needs every client's update (a robust reducer, adaptive clipping)."""
    if stage is not None and getattr(strategy, "needs_individual_updates", False):
        raise ValueError(
            f"strategy {getattr(strategy, 'name', type(strategy).__name__)!r} needs every "
            "client's update, but secure aggregation gives the server only their sum: use a "
            "strategy that aggregates sums, or no secure aggregation"
        )


def _stage_identity(stage: object) -> str:
    """A client stage's settings, stably (no object addresses: keys are left out)."""
    parts = [type(stage).__name__, str(getattr(stage, "name", ""))]
    codec = getattr(stage, "codec", None)
    if codec is not None:
        config = getattr(codec, "wire_config", None)
        parts.append(config.hex() if isinstance(config, bytes) else repr(codec))
    clip = getattr(stage, "clip_norm", None)
    if clip is not None:
        parts.append(repr(clip))
    return ":".join(parts)


def _given_or(value: int | None, default: int) -> int:
    return default if value is None else value


def _fleet_digest(test: LabeledArrays, dispatcher: Dispatcher) -> str:
    """A fleet's identity: its size, its clients' enrolled sizes and the test set."""
    h = hashlib.sha256()
    h.update(type(dispatcher).__name__.encode())
    n = dispatcher.num_clients
    h.update(np.asarray([dispatcher.enrolled_examples(c) for c in range(n)]).tobytes())
    h.update(np.ascontiguousarray(test.x[:64]).tobytes())
    h.update(np.ascontiguousarray(test.y).tobytes())
    codec = getattr(dispatcher, "codec", None)
    if codec is not None:  # devices told to encode: a dense run's checkpoint is another one
        h.update(repr(codec.get_config()).encode())
    return h.hexdigest()[:16]


class Federation:
    """The server's round loop, and a history of rounds.

    Each round: guards → select → plan → ``dispatcher.dispatch`` (where clients run: by
    default a :class:`~fedlab.federated.dispatch.SimulatedDispatcher` over ``data`` and
    ``runtime``) → the pipeline's server stages on every envelope that arrived, one by one
    → reduce + server step (``strategy``) → evaluate → commit (history, observers,
    checkpoint). The loop never knows where clients run; a dispatcher never aggregates.

    Parameters
    ----------
    data : FederatedDataset, optional
        The clients' data and the central test set, for clients simulated in this process
        (the default dispatcher). With a ``dispatcher`` whose clients hold their own data
        (devices, a Flower fleet) give ``test`` instead.
    runtime : ClientRuntime
        Local training (``KerasRuntime`` is the reference); it also gives the initial
        model and evaluates the global model on the central test set.
    config : FederationConfig
        Round parameters; defaults to ``FederationConfig()``.
    strategy : Strategy
        Server aggregation; defaults to ``FedAvg()``.
    sampler : Sampler
        Client selection; defaults to uniform sampling.
    pipeline : Pipeline
        Client and server update stages; identity plus validation by default.
    profiles : sequence of ClientProfile
        One per client (speeds for the straggler model); identical devices by default.
    epoch_policy : EpochPolicy
        Per-client local epochs (adaptive epochs); fixed by default.
    observers : iterable of Observer
        Notified of round start, client outcomes and round end.
    guards : iterable of RoundGuard
        Asked before every round; one that raises refuses the round before anything changes
        (a privacy budget, a maintenance window).
    checkpoint_dir : str or Path, optional
        Folder for atomic per-round checkpoints.
    checkpoint_every : int
        Write a checkpoint every this many rounds (when ``checkpoint_dir`` is set).
    resume : bool
        Continue from the newest checkpoint in ``checkpoint_dir`` if there is one.
    dispatcher : Dispatcher, optional
        Where clients run; by default simulated in this process over ``data`` and
        ``runtime``. With ``data`` too, its population must be ``data``'s.
    test : LabeledArrays, optional
        The central test set when there is no ``data`` (default: ``data.test``).
    secure_aggregation : SecureAggregation, optional
        A cohort stage: the accepted updates are summed by SecAgg+ and the strategy gets
        only the sum (``aggregate_sum``); clients lost during the protocol are recorded as
        dropped, and an aborted protocol applies nothing (``aggregation_failure``).
    """

    def __init__(
        self,
        *,
        data: FederatedDataset | None = None,
        runtime: ClientRuntime,
        config: FederationConfig | None = None,
        strategy: Strategy | None = None,
        sampler: Sampler | None = None,
        pipeline: Pipeline | None = None,
        profiles: Sequence[ClientProfile] | None = None,
        epoch_policy: EpochPolicy | None = None,
        observers: Iterable[Observer] = (),
        guards: Iterable[RoundGuard] = (),
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 1,
        resume: bool = False,
        dispatcher: Dispatcher | None = None,
        secure_aggregation: SecureAggregation | None = None,
        test: LabeledArrays | None = None,
    ) -> None:
        if data is None:
            if dispatcher is None:
                raise ValueError("give data (clients simulated here) or a dispatcher and test")
            if not isinstance(test, LabeledArrays):
                raise TypeError(
                    "a federation without data needs test=LabeledArrays (the central test "
                    f"set), got {type(test).__name__}"
                )
        elif not isinstance(data, FederatedDataset):
            raise TypeError(f"data must be a FederatedDataset, got {type(data).__name__}")
        elif test is not None:
            raise ValueError("give test only without data (data.test is the test set)")
        if not isinstance(runtime, ClientRuntime):
            raise TypeError(f"runtime does not implement ClientRuntime: {type(runtime).__name__}")
        if data is not None:
            population, central = data.num_clients, data.test
        else:
            assert dispatcher is not None and test is not None  # checked above
            population, central = dispatcher.num_clients, test
        self.config = config or FederationConfig()
        self.config.cohort_size(population)  # raises if the cohort exceeds the population
        if profiles is not None and len(profiles) != population:
            raise ValueError(f"got {len(profiles)} profiles for {population} clients")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every!r}")
        if checkpoint_dir is not None:
            # Found at the first save otherwise: after a round was already committed.
            check_checkpoint_dir(checkpoint_dir)
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir")
        self.data = data
        self.test = central
        self.runtime = runtime
        self.strategy: Strategy = strategy if strategy is not None else FedAvg()
        self.sampler: Sampler = sampler or UniformSampler()
        self.pipeline = pipeline or Pipeline()
        self.profiles = tuple(profiles) if profiles is not None else (ClientProfile(),) * population
        self.epoch_policy: EpochPolicy = epoch_policy or FixedEpochs()
        self.observers: list[Observer] = list(observers)
        self.guards: list[RoundGuard] = list(guards)
        if dispatcher is not None and dispatcher.num_clients != population:
            raise ValueError(
                f"the dispatcher enrols {dispatcher.num_clients} clients, data has {population}"
            )
        self._simulated = (
            None
            if dispatcher is not None
            else SimulatedDispatcher(
                data=data,  # type: ignore[arg-type]  # not None without a dispatcher
                runtime=runtime,
                pipeline=self.pipeline,
                profiles=self.profiles,
                dropout_rate=self.config.dropout_rate,
                seconds_per_example=self.config.seconds_per_example,
            )
        )
        self.dispatcher: Dispatcher = dispatcher if dispatcher is not None else self._simulated  # type: ignore[assignment]
        self._secure: SecureAggregation | None = None
        self.secure_aggregation = secure_aggregation
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self._initial = runtime.initial_weights()
        self._shapes = tuple(w.shape for w in self._initial)
        self.reset()
        if resume:
            self._resume()

    # -- state -----------------------------------------------------------------------
    @property
    def config(self) -> FederationConfig:
        """Round parameters (change them with :meth:`update_config`)."""
        return self._config

    @config.setter
    def config(self, config: FederationConfig) -> None:
        self._config = config
        simulated = getattr(self, "_simulated", None)
        if simulated is not None:  # the default dispatcher's simulation follows the config
            simulated.dropout_rate = config.dropout_rate
            simulated.seconds_per_example = config.seconds_per_example

    @property
    def secure_aggregation(self) -> SecureAggregation | None:
        """The cohort stage that sums the accepted updates (None: the server sees them)."""
        return self._secure

    @secure_aggregation.setter
    def secure_aggregation(self, stage: SecureAggregation | None) -> None:
        _check_sum_compatible(self.strategy, stage)
        self._secure = stage

    @property
    def population(self) -> int:
        """Number of enrolled clients (the dispatcher's)."""
        return self.dispatcher.num_clients

    @property
    def weights(self) -> Weights:
        """The current global model."""
        return self._weights

    @property
    def history(self) -> History:
        """Completed rounds."""
        return self._history

    @property
    def rounds_done(self) -> int:
        """Number of completed rounds."""
        return self._rounds_done

    def reset(self) -> None:
        """Back to the initial model with an empty history (checkpoints are left alone)."""
        self._weights: Weights = tuple(w.copy() for w in self._initial)
        self._strategy_state = dict(self.strategy.init_state(self._weights))
        self._history = History()
        self._rounds_done = 0
        for holder in (self.dispatcher, *self.pipeline.client, *self.pipeline.server):
            forget = getattr(holder, "reset", None)
            if callable(forget):  # clients' state, a verifier's replay memory: a fresh start
                forget()

    def update_config(self, config: FederationConfig) -> None:
        """Use ``config`` from the next round on (validated before anything changes)."""
        if not isinstance(config, FederationConfig):
            raise TypeError(f"config must be a FederationConfig, got {type(config).__name__}")
        config.cohort_size(self.population)
        self.config = config

    def set_strategy(self, strategy: Strategy) -> None:
        """Aggregate with ``strategy`` from the next round on.

        The new strategy starts from a fresh server state (a server optimizer's moments
        are not carried over from the old one); the global weights and history are kept.
        """
        if not callable(getattr(strategy, "aggregate", None)) or not callable(
            getattr(strategy, "init_state", None)
        ):
            raise TypeError(f"not a Strategy: {type(strategy).__name__}")
        _check_sum_compatible(strategy, self.secure_aggregation)
        state = dict(strategy.init_state(self._weights))
        self.strategy = strategy
        self._strategy_state = state

    def set_weights(self, weights: Weights) -> None:
        """Continue from ``weights`` (a registry version, a rollback) from the next round.

        The server optimizer's state restarts (its moments belong to the old trajectory);
        the history is kept.

        Raises
        ------
        ValueError
            The weights do not fit the model (count, shapes) or are not finite.
        """
        arrays = tuple(np.array(w, dtype=np.float32) for w in weights)
        if tuple(a.shape for a in arrays) != self._shapes:
            raise ValueError(
                f"weights of shapes {[a.shape for a in arrays]} do not fit the model "
                f"{list(self._shapes)}"
            )
        if not all(np.isfinite(a).all() for a in arrays):
            raise ValueError("weights hold NaN or Inf")
        state = dict(self.strategy.init_state(arrays))
        self._weights = arrays
        self._strategy_state = state

    def add_observer(self, observer: Observer) -> None:
        """Subscribe ``observer`` to round events."""
        self.observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Unsubscribe ``observer`` (a ``ValueError`` if it was not subscribed)."""
        self.observers.remove(observer)

    def add_guard(self, guard: RoundGuard) -> None:
        """Ask ``guard`` before every round."""
        self.guards.append(guard)

    def remove_guard(self, guard: RoundGuard) -> None:
        """Stop asking ``guard`` (a ``ValueError`` if it was not registered)."""
        self.guards.remove(guard)

    def fingerprint(self) -> str:
        """Identity of the experiment: data, model shapes, strategy and config."""
        identity = {
            "data": (
                _dataset_digest(self.data)
                if self.data is not None
                else _fleet_digest(self.test, self.dispatcher)
            ),
            "shapes": [list(s) for s in self._shapes],
            "strategy": strategy_to_dict(self.strategy),
            "config": self.config.to_dict(),
        }
        if self.secure_aggregation is not None:  # only then, so older checkpoints still match
            identity["secure_aggregation"] = repr(self.secure_aggregation)
        if self.pipeline.client:  # a codec or clip changes what the server aggregates
            identity["client_stages"] = [_stage_identity(s) for s in self.pipeline.client]
        blob = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def _state(self) -> FederationState:
        return FederationState(
            rounds_done=self._rounds_done,
            weights=self._weights,
            strategy_state={k: tuple(v) for k, v in self._strategy_state.items()},
            history=self._history.to_records(),
            fingerprint=self.fingerprint(),
            dispatcher_state=self._dispatcher_state(),
        )

    def _dispatcher_state(self) -> dict[str, np.ndarray]:
        """What the dispatcher keeps between rounds for its clients (codec residuals, the
        models devices hold, a simulated clock): part of an exact resume."""
        state_dict = getattr(self.dispatcher, "state_dict", None)
        return dict(state_dict()) if callable(state_dict) else {}

    def save_checkpoint(self, folder: str | Path | None = None) -> Path:
        """Write the current state atomically (to ``checkpoint_dir`` by default)."""
        target = folder if folder is not None else self.checkpoint_dir
        if target is None:
            raise ValueError("no folder given and no checkpoint_dir configured")
        return save_checkpoint(target, self._state())

    def _resume(self) -> None:
        assert self.checkpoint_dir is not None
        state = latest_checkpoint(self.checkpoint_dir)
        if state is None:
            return
        if state.fingerprint != self.fingerprint():
            raise CheckpointError(
                f"checkpoint in {self.checkpoint_dir} belongs to a different experiment "
                f"(fingerprint {state.fingerprint}, this federation {self.fingerprint()}); "
                "use the same data, model, strategy and config, or another folder"
            )
        if tuple(w.shape for w in state.weights) != self._shapes:
            raise CheckpointError(f"checkpoint weights do not fit the model: {self._shapes}")
        load = getattr(self.dispatcher, "load_state_dict", None)
        if state.dispatcher_state and not callable(load):
            raise CheckpointError(
                f"checkpoint in {self.checkpoint_dir} holds client-side state "
                f"({len(state.dispatcher_state)} entries) that this dispatcher "
                f"({type(self.dispatcher).__name__}) cannot take"
            )
        if callable(load):
            try:
                load(state.dispatcher_state)  # checked before anything changes
            except ValueError as exc:
                raise CheckpointError(f"checkpoint's dispatcher state refused: {exc}") from exc
        self._weights = state.weights
        self._strategy_state = dict(state.strategy_state)
        self._history = History.from_records(state.history)
        self._rounds_done = state.rounds_done

    # -- the round -------------------------------------------------------------------
    def _notify(self, errors: list[BaseException], hook: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(self, *args)
            except Exception as exc:
                errors.append(exc)

    def run_round(self, *, evaluate: bool | None = None) -> RoundResult:
        """Run one round and commit it; returns its :class:`RoundResult`.

        Parameters
        ----------
        evaluate : bool, optional
            Force (or skip) central evaluation; by default every ``config.eval_every`` rounds.
        """
        for guard in self.guards:
            guard.before_round(self, self._rounds_done)  # raises to refuse; nothing changed yet
        start = time.perf_counter()
        cfg, r = self.config, self._rounds_done
        errors: list[BaseException] = []
        rng = np.random.default_rng([cfg.seed, r, 0xF1])
        selected = self._select(rng, r)
        self._notify(errors, "on_round_start", r, selected)
        context = StageContext(round_index=r, weight_shapes=self._shapes, weights=self._weights)
        hold = self._fleet_holds_updates()
        tasks = RoundTasks(
            r, self._weights, self._plan(selected, r), cfg.deadline_s, context, hold_updates=hold
        )
        dispatched = self.dispatcher.dispatch(
            tasks,
            rng=rng,
            on_training_start=lambda ids: self._notify(errors, "on_training_start", r, ids),
        )
        if len(dispatched.reports) != len(tasks.plans) or any(
            rep.client_id != plan.client_id
            for rep, plan in zip(dispatched.reports, tasks.plans, strict=True)
        ):
            raise RuntimeError("the dispatcher must return one report per task, in order")
        cpu = time.process_time()
        got = self._receive(dispatched, context, hold=hold)
        weights, state, failure = self._aggregate(r, got, hold=hold)
        got.server_cpu_s = time.process_time() - cpu
        for cid in selected:
            self._notify(errors, "on_client_done", r, got.outcomes[cid])
        do_eval = evaluate if evaluate is not None else (r + 1) % cfg.eval_every == 0
        metrics = {"loss": math.nan, "accuracy": math.nan}
        if do_eval:
            metrics = self.runtime.evaluate(
                weights, self.test.x, self.test.y, batch_size=cfg.eval_batch_size
            )
        result = self._result(
            tasks, dispatched, got, metrics, failure, wall_time_s=time.perf_counter() - start
        )
        # Commit: every change of state happens here, after all the work succeeded.
        self._weights = weights
        self._strategy_state = dict(state)
        self._history = self._history.append(result)
        self._rounds_done = r + 1
        # Observers first: the round is released once committed, so whoever keeps books on
        # releases (the privacy ledger) records it even if the checkpoint write fails below.
        self._notify(errors, "on_round_end", result)
        if self.checkpoint_dir is not None and self._rounds_done % self.checkpoint_every == 0:
            self.save_checkpoint()
        if errors:
            raise errors[0]
        return result

    # -- the round's phases (each reads the federation, none changes it) --------------
    def _select(self, rng: np.random.Generator, r: int) -> tuple[int, ...]:
        population = self.dispatcher.num_clients
        size = self.config.selection_size(population)
        selected = tuple(int(c) for c in self.sampler.select(np.arange(population), size, rng, r))
        if len(set(selected)) != len(selected) or not all(0 <= c < population for c in selected):
            raise ValueError(f"sampler returned invalid client ids {selected}")
        return selected

    def _plan(self, selected: tuple[int, ...], r: int) -> tuple[ClientPlan, ...]:
        """The server's plan for every invited client; where and how they run is the
        dispatcher's business."""
        cfg, dispatcher = self.config, self.dispatcher
        return tuple(
            ClientPlan(
                client_id=cid,
                round_index=r,
                epochs=int(
                    self.epoch_policy.epochs(
                        cid,
                        dispatcher.enrolled_examples(cid),
                        dispatcher.profile(cid),
                        cfg.local_epochs,
                    )
                ),
                batch_size=cfg.batch_size,
                learning_rate=cfg.client_lr,
                optimizer=cfg.client_optimizer,
                momentum=cfg.client_momentum,
                proximal_mu=self.strategy.client_proximal_mu,
                seed=client_seed(cfg.seed, r, cid),
            )
            for cid in selected
        )

    def _fleet_holds_updates(self) -> bool:
        """True when secure aggregation runs on the devices themselves: the dispatcher
        reaches clients that keep their updates (``secure_clients``), so the server never
        holds one. Refuses, before the round, settings that would need an update's body."""
        secure = self._secure
        if secure is None or not callable(getattr(self.dispatcher, "secure_clients", None)):
            return False
        unfit = self.pipeline.unfit_for_held()
        if unfit or self.pipeline.client:
            raise ValueError(
                "with secure aggregation on a fleet the server never holds an update: server "
                f"stages that need its body ({list(unfit)}) and engine client stages "
                f"({[s.name for s in self.pipeline.client]}) cannot run; keep only "
                "metadata-only server stages such as VerifySignature"
            )
        if secure.dropout:
            raise ValueError(
                "SecureAggregation.dropout simulates losses in process; a fleet has its own: "
                "leave it empty with a fleet dispatcher"
            )
        return True

    def _receive(self, dispatched: Dispatched, context: StageContext, *, hold: bool) -> _Received:
        """Close the cohort, then run the server pipeline on each envelope that made it
        (with ``hold``, on its metadata only: the device keeps the update)."""
        dispatcher = self.dispatcher
        cohort = self.config.cohort_size(dispatcher.num_clients)
        got = _Received()
        arrived: list[tuple[float, int, Envelope]] = []
        sizes = {rep.client_id: rep.stage_bytes for rep in dispatched.reports}
        for rep in dispatched.reports:
            if rep.status == "reported":
                assert rep.envelope is not None
                arrived.append((rep.duration_s, rep.client_id, rep.envelope))
            else:
                got.outcomes[rep.client_id] = ClientOutcome(
                    rep.client_id, rep.status, rep.duration_s, rep.num_examples, rep.detail
                )
        arrived.sort(key=lambda item: (item[0], item[1]))
        # With over-selection the server closes the round once the cohort has reported.
        keep = cohort if self.config.over_selection > 0 else len(arrived)
        for duration, cid, _ in arrived[keep:]:
            got.outcomes[cid] = ClientOutcome(
                cid,
                "straggler",
                duration,
                dispatcher.enrolled_examples(cid),
                f"cohort of {cohort} already complete",
            )
        expect = dict(dispatched.expect_headers)
        for duration, cid, envelope in arrived[:keep]:
            got.bytes_up += envelope.nbytes
            for stage, n in sizes[cid]:
                got.stage_bytes[stage] = got.stage_bytes.get(stage, 0) + n
            # Each update is judged on its own (the pipeline's UpdatePolicy: this client's
            # id, its enrolled data size as the cap on num_examples, the norm bound, the
            # headers a wire dispatcher expects echoed): one malformed update is recorded as
            # rejected with its reason, never the round lost.
            own = replace(
                context,
                client_id=cid,
                max_examples=dispatcher.enrolled_examples(cid),
                expect_headers=expect,
            )
            try:
                if hold:
                    update = self.pipeline.receive_held(envelope, own)
                else:
                    update = self.pipeline.receive(envelope, own)
            except Exception as exc:
                stage = (exc.stage if isinstance(exc, UpdateRejected) else "") or "error"
                got.refusals[stage] = got.refusals.get(stage, 0) + 1
                reason = str(exc) if isinstance(exc, UpdateRejected) else f"{exc!r}"
                claimed = envelope.num_examples if is_int(envelope.num_examples) else 0
                got.outcomes[cid] = ClientOutcome(cid, "rejected", duration, int(claimed), reason)
                continue
            got.accepted.append(update)
            got.outcomes[cid] = ClientOutcome(cid, "completed", duration, update.num_examples)
        return got

    def _aggregate(
        self, r: int, got: _Received, *, hold: bool
    ) -> tuple[Weights, StrategyState, str]:
        """The next weights and server state (unchanged when nothing was accepted), and
        why nothing was applied if secure aggregation aborted."""
        weights: Weights = self._weights
        state: StrategyState = self._strategy_state
        secure = self.secure_aggregation
        if got.accepted and secure is not None:
            # A cohort stage: the server gets only the sum of the accepted updates.
            if hold:  # the devices hold them: the protocol runs over the dispatcher
                clients = self.dispatcher.secure_clients(r)  # type: ignore[attr-defined]
                ids = [u.client_id for u in got.accepted]
                summed = secure.aggregate_remote(r, ids, self._shapes, clients)
            else:
                summed = secure.aggregate(r, got.accepted)
            for cid, stage in summed.lost.items():
                why = summed.notes.get(cid)
                got.outcomes[cid] = ClientOutcome(
                    cid,
                    "dropped",
                    got.outcomes[cid].duration_s,
                    0,
                    "secure aggregation aborted: nothing of this round applied"
                    if stage == "aborted"
                    else f"secure aggregation: lost at {stage}" + (f" ({why})" if why else ""),
                )
            got.accepted = [u for u in got.accepted if u.client_id not in summed.lost]
            if hold:  # held reports carry no count: the one the server learns is the sum's
                got.held_examples = summed.num_examples if summed.cohort is not None else 0
            # Simulated: plaintext bodies would never be sent, the protocol's bytes replace
            # them. Held: the metadata went up with the reports, the protocol's bytes add.
            got.bytes_up = (got.bytes_up if hold else 0) + summed.upload_bytes
            if summed.cohort is None:
                return (
                    weights,
                    state,
                    f"secure aggregation aborted ({summed.failure}): nothing applied",
                )
            weights, state = self.strategy.aggregate_sum(weights, summed.cohort, state)
        elif got.accepted:
            weights, state = self.strategy.aggregate(weights, got.accepted, state)
        return weights, state, ""

    def _result(
        self,
        tasks: RoundTasks,
        dispatched: Dispatched,
        got: _Received,
        metrics: Mapping[str, float],
        failure: str,
        *,
        wall_time_s: float,
    ) -> RoundResult:
        cfg, outcomes = self.config, got.outcomes
        selected = tuple(p.client_id for p in tasks.plans)
        cohort = cfg.cohort_size(self.dispatcher.num_clients)
        counts = [u.num_examples for u in got.accepted]
        losses = [float(u.metrics.get("train_loss", math.nan)) for u in got.accepted]
        train_loss = float(np.average(losses, weights=counts)) if got.accepted else math.nan
        if got.held_examples is not None:  # no per-device count or loss left the devices
            counts, train_loss = [got.held_examples], math.nan
        used = [
            outcomes[c].duration_s
            for c in selected
            if outcomes[c].status in ("completed", "rejected")
        ]
        late = any(o.status == "straggler" for o in outcomes.values())
        sim_time = max(used, default=0.0)
        if late and cfg.deadline_s is not None and len(used) < cohort:
            sim_time = cfg.deadline_s  # the server waited until the deadline

        def having(status: str) -> tuple[int, ...]:
            return tuple(c for c in selected if outcomes[c].status == status)

        def reasons(status: str) -> tuple[tuple[int, str], ...]:
            return tuple((c, outcomes[c].detail) for c in having(status))

        return RoundResult(
            round_index=tasks.round_index,
            selected=selected,
            completed=having("completed"),
            dropped=having("dropped"),
            stragglers=having("straggler"),
            failed=reasons("failed"),
            rejected=reasons("rejected"),
            num_examples=int(sum(counts)),
            train_loss=train_loss,
            test_accuracy=float(metrics["accuracy"]),
            test_loss=float(metrics["loss"]),
            bytes_up=got.bytes_up,
            bytes_down=_given_or(dispatched.bytes_down, tasks.model_bytes * len(selected)),
            sim_time_s=float(sim_time),
            wall_time_s=wall_time_s,
            runtime=dispatched.runtime,
            aggregation_failure=failure,
            stage_bytes=tuple(got.stage_bytes.items()),
            stage_rejections=tuple(sorted(got.refusals.items())),
            server_cpu_s=got.server_cpu_s,
            energy_j=tuple(sorted((int(c), float(j)) for c, j in dispatched.energy_j.items())),
        )

    def run(self, rounds: int) -> History:
        """Run ``rounds`` more rounds; returns the whole history.

        Splitting a run (``run(3); run(2)``), or resuming from a checkpoint, gives the same
        history as one ``run(5)``.
        """
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
        for _ in range(rounds):
            self.run_round()
        return self._history

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy of the current global model on the central test set."""
        return self.runtime.evaluate(
            self._weights,
            self.test.x,
            self.test.y,
            batch_size=self.config.eval_batch_size,
        )
