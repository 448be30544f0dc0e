"""The update pipeline: client stages (clip → compress → sign → seal) and server stages
(verify → open → decode), then validation. Identity by default; later modules add stages.

A stage is any object with a ``name`` and ``apply(envelope, context) -> envelope``. A
server stage that refuses an update raises :class:`~fedlab.federated.types.UpdateRejected`
with the reason, which the round records.

Every rule a server applies to an incoming update lives here, in :class:`UpdatePolicy`
and :class:`ValidateUpdate` (and :func:`roster_rejections` for the round's cohort): the
simulated federation and the device file transport both call them, so the two worlds
accept and refuse exactly the same updates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedlab.federated.types import (
    ClientUpdate,
    Envelope,
    UpdateRejected,
    Weights,
    is_int,
    is_real,
)

__all__ = [
    "ClientStateStore",
    "ClipUpdate",
    "Pipeline",
    "Stage",
    "StageContext",
    "StatefulStage",
    "UpdatePolicy",
    "ValidateUpdate",
    "l2_norm",
    "roster_rejections",
]


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a stage may know about the round and about the update it is looking at.

    Attributes
    ----------
    round_index : int
        The round.
    weight_shapes : tuple of shapes
        Shapes of the global model's tensors.
    weights : tuple of arrays, optional
        The global model the updates were computed from (the norm bound is relative to
        it; without it no norm bound is applied).
    client_id : int, optional
        The client this update was asked of; an update claiming another id is refused.
    max_examples : int, optional
        Cap on this client's ``num_examples`` (its enrolled data size, or the plan's).
    expect_headers : mapping
        Envelope headers that must be present and equal (``round_index``,
        ``model_version``, ``base_version``…): how stale and relabelled updates are refused.
    """

    round_index: int
    weight_shapes: tuple[tuple[int, ...], ...]
    weights: Weights | None = None
    client_id: int | None = None
    max_examples: int | None = None
    expect_headers: Mapping[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    """One step of the client or server side of the pipeline."""

    @property
    def name(self) -> str:
        """Short name shown in logs and reports."""
        ...

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Transform ``envelope``; server stages raise ``UpdateRejected`` to refuse it."""
        ...


@runtime_checkable
class StatefulStage(Protocol):
    """A client stage that carries per-client state from one update to the next (error
    feedback's residual, a codec's randomness counter).

    The stage object stays frozen: its state lives in the client's
    :class:`ClientStateStore` (the simulated dispatcher keeps one per client, a device its
    own, on disk between rounds). The pipeline calls :meth:`apply_stateful` with the state
    the store holds and puts the returned state back only once every client stage has
    succeeded.
    """

    @property
    def name(self) -> str:
        """Short name; also the key of this stage's state in the store (unique per pipeline)."""
        ...

    @property
    def requires_state(self) -> bool:
        """True if running without a store would silently lose information (error
        feedback's residual): the pipeline then refuses to run the stage without one."""
        ...

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Stateless use (no store): as :meth:`apply_stateful` from a fresh state."""
        ...

    def initial_state(self, client_id: int) -> Any:
        """The state of a client that has not sent anything yet."""
        ...

    def apply_stateful(
        self, envelope: Envelope, context: StageContext, state: Any
    ) -> tuple[Envelope, Any]:
        """Transform ``envelope`` with this client's ``state``; return the next state
        (``state`` itself is never modified)."""
        ...

    def state_to_bytes(self, state: Any) -> bytes:
        """The state as bytes (checkpoints, a device's disk)."""
        ...

    def state_from_bytes(self, data: bytes) -> Any:
        """Inverse of :meth:`state_to_bytes`; a damaged blob is a ``ValueError``."""
        ...


class ClientStateStore:
    """One client's state for every stateful stage of its pipeline, by stage name.

    Owned by the client side: the :class:`~fedlab.federated.dispatch.SimulatedDispatcher`
    keeps one per simulated client; a device agent keeps one and persists it between
    rounds with :meth:`to_bytes` / :meth:`from_bytes`. Pass it to
    :meth:`Pipeline.send_measured`; it is updated only when all client stages succeed.
    """

    __slots__ = ("_states", "client_id")

    def __init__(self, client_id: int) -> None:
        if not is_int(client_id) or client_id < 0:
            raise ValueError(f"client_id must be an int >= 0, got {client_id!r}")
        self.client_id = int(client_id)
        self._states: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"ClientStateStore(client_id={self.client_id}, stages={sorted(self._states)})"

    def __contains__(self, stage_name: object) -> bool:
        return stage_name in self._states

    def get(self, stage: StatefulStage) -> Any:
        """The client's state for ``stage`` (its initial state if it has none yet)."""
        if stage.name in self._states:
            return self._states[stage.name]
        return stage.initial_state(self.client_id)

    def commit(self, states: Mapping[str, Any]) -> None:
        """Replace the states of the named stages (after a successful send)."""
        self._states.update(states)

    def state_dict(self, stages: Sequence[Stage]) -> dict[str, bytes]:
        """``{stage name: bytes}`` for every stateful stage in ``stages`` that has state."""
        return {
            s.name: s.state_to_bytes(self._states[s.name])
            for s in stages
            if isinstance(s, StatefulStage) and s.name in self._states
        }

    def load_state_dict(self, blobs: Mapping[str, bytes], stages: Sequence[Stage]) -> None:
        """Restore :meth:`state_dict` output; validates everything before changing
        anything (a ``ValueError`` names the stage whose blob is bad or unknown)."""
        by_name = {s.name: s for s in stages if isinstance(s, StatefulStage)}
        loaded: dict[str, Any] = {}
        for name, blob in blobs.items():
            if name not in by_name:
                raise ValueError(
                    f"client {self.client_id}: saved state for stage {name!r}, which is not "
                    f"a stateful stage of this pipeline ({sorted(by_name)})"
                )
            try:
                loaded[name] = by_name[name].state_from_bytes(bytes(blob))
            except ValueError as exc:
                raise ValueError(f"client {self.client_id}, stage {name!r}: {exc}") from None
        self._states = loaded

    def to_bytes(self, stages: Sequence[Stage]) -> bytes:
        """The whole store as one blob (what a device writes to disk between rounds)."""
        parts = self.state_dict(stages)
        header = json.dumps(
            {"client_id": self.client_id, "stages": {k: len(v) for k, v in parts.items()}},
            sort_keys=True,
        ).encode()
        return _STORE_MAGIC + len(header).to_bytes(4, "big") + header + b"".join(parts.values())

    @classmethod
    def from_bytes(cls, data: bytes, stages: Sequence[Stage]) -> ClientStateStore:
        """Read :meth:`to_bytes` back (``ValueError`` for a damaged or foreign blob)."""
        try:
            if not data.startswith(_STORE_MAGIC):
                raise ValueError("not a fedlab client-state blob")
            at = len(_STORE_MAGIC)
            size = int.from_bytes(data[at : at + 4], "big")
            header = json.loads(data[at + 4 : at + 4 + size])
            at += 4 + size
            lengths = header["stages"]
            if not isinstance(lengths, dict) or sum(lengths.values()) != len(data) - at:
                raise ValueError("client-state blob is truncated or has trailing bytes")
            blobs = {}
            for name, n in lengths.items():
                blobs[name] = data[at : at + n]
                at += n
            store = cls(header["client_id"])
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a valid client-state blob: {exc!r}") from None
        store.load_state_dict(blobs, stages)
        return store


_STORE_MAGIC = b"FLSTATE1"


def l2_norm(arrays: Sequence[np.ndarray]) -> float:
    """Euclidean norm of all tensors together, computed so that it cannot overflow.

    Each tensor is divided by the largest magnitude and summed in float64, so float32
    values up to 3.4e38 (or float64 ones up to 1.8e308) give a finite norm. Returns
    ``inf`` or ``nan`` only if an element is itself infinite or NaN.
    """
    scale = 0.0
    for a in arrays:
        if a.size:
            peak = float(np.max(np.abs(a)))
            if not math.isfinite(peak):
                return peak
            scale = max(scale, peak)
    if scale == 0.0:
        return 0.0
    total = math.fsum(
        float(np.sum(np.square(np.asarray(a, dtype=np.float64) / scale))) for a in arrays
    )
    return scale * math.sqrt(total)


@dataclass(frozen=True, slots=True)
class UpdatePolicy:
    """What the server accepts from one client in one round.

    Attributes
    ----------
    max_examples : int
        Hard cap on ``num_examples`` for any client; a client's own cap (its enrolled data
        size, :attr:`StageContext.max_examples`) is applied as well when known.
    max_norm_ratio : float
        An update whose L2 norm exceeds ``max_norm_ratio * max(‖global model‖,
        norm_floor)`` is **rejected** (not clipped: clipping would still let a hostile
        client push the model by the full bound every round; clipping for differential
        privacy is the privacy layer's stage).
    norm_floor : float
        Lower bound of the model norm used above (a model initialised at zero).
    """

    max_examples: int = 1_000_000
    max_norm_ratio: float = 10.0
    norm_floor: float = 1.0

    def __post_init__(self) -> None:
        if not is_int(self.max_examples) or self.max_examples < 1:
            raise ValueError(f"max_examples must be an int >= 1, got {self.max_examples!r}")
        for name in ("max_norm_ratio", "norm_floor"):
            value = getattr(self, name)
            if not (is_real(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    def example_cap(self, context: StageContext) -> int:
        """The cap on ``num_examples`` for the update ``context`` describes."""
        own = context.max_examples
        return self.max_examples if own is None else min(self.max_examples, int(own))

    def norm_bound(self, weights: Weights) -> float:
        """The largest accepted update norm for a global model ``weights``."""
        return self.max_norm_ratio * max(l2_norm(weights), self.norm_floor)


def _describe(value: Any) -> str:
    text = repr(value)
    return (text[:60] + "…") if len(text) > 61 else text


@dataclass(frozen=True, slots=True)
class ValidateUpdate:
    """Final server stage: who sent it, what it claims, and what it carries.

    Refuses (``UpdateRejected`` with the reason): an update for another client, round or
    model version (``context.client_id`` and ``context.expect_headers``); a
    ``num_examples`` that is not an integer in ``[1, cap]``; a non-integer ``num_steps``;
    a metric that is not a finite number; a body that is not float arrays of the model's
    shapes; NaN or Inf; a norm above the :class:`UpdatePolicy` bound.
    """

    name: str = "validate"
    policy: UpdatePolicy = field(default_factory=UpdatePolicy)

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Return ``envelope`` unchanged or raise ``UpdateRejected`` naming the problem."""
        body = envelope.body
        if isinstance(body, bytes | bytearray):
            raise UpdateRejected("body is still encoded bytes; no server stage decoded it")
        self.check_metadata(envelope, context)
        self.check_body(envelope, context)
        return envelope

    def check_metadata(self, envelope: Envelope, context: StageContext) -> None:
        """Everything but the body: sender, echoed headers, ``num_examples``, steps,
        metrics (all a server can check of an update a device holds for secure
        aggregation)."""
        if context.client_id is not None and (
            not is_int(envelope.client_id) or envelope.client_id != context.client_id
        ):
            raise UpdateRejected(
                f"update claims client {_describe(envelope.client_id)}, "
                f"it was asked of client {context.client_id} (relabelled)"
            )
        headers = envelope.headers if isinstance(envelope.headers, Mapping) else {}
        for key, expected in context.expect_headers.items():
            got = headers.get(key)
            if got != expected or type(got) is not type(expected):
                raise UpdateRejected(
                    f"header {key!r} is {_describe(got)}, this round expects "
                    f"{_describe(expected)} (a stale, relabelled or foreign update)"
                )
        n = envelope.num_examples
        if not is_int(n):
            raise UpdateRejected(f"num_examples must be an integer, got {_describe(n)}")
        cap = self.policy.example_cap(context)
        if not 1 <= n <= cap:
            raise UpdateRejected(f"num_examples must be in [1, {cap}], got {n}")
        if not is_int(envelope.num_steps) or envelope.num_steps < 0:
            raise UpdateRejected(
                f"num_steps must be an integer >= 0, got {_describe(envelope.num_steps)}"
            )
        metrics = envelope.metrics
        if not isinstance(metrics, Mapping):
            raise UpdateRejected(f"metrics must be a mapping, got {_describe(metrics)}")
        for key, value in metrics.items():
            if not isinstance(key, str) or not (is_real(value) and math.isfinite(value)):
                raise UpdateRejected(
                    f"metric {_describe(key)} must be a finite number, got {_describe(value)}"
                )

    def check_body(self, envelope: Envelope, context: StageContext) -> None:
        """The body: float arrays of the model's shapes, finite, within the norm bound."""
        body = envelope.body
        if not isinstance(body, tuple | list) or len(body) != len(context.weight_shapes):
            count = len(body) if isinstance(body, tuple | list) else type(body).__name__
            raise UpdateRejected(
                f"update has {count} tensors, the model has {len(context.weight_shapes)}"
            )
        for i, (array, shape) in enumerate(zip(body, context.weight_shapes, strict=True)):
            if not isinstance(array, np.ndarray):
                raise UpdateRejected(f"tensor {i} is a {type(array).__name__}, not an ndarray")
            if array.shape != tuple(shape):
                raise UpdateRejected(f"tensor {i} has shape {array.shape}, expected {shape}")
            if not np.issubdtype(array.dtype, np.floating):
                raise UpdateRejected(f"tensor {i} has dtype {array.dtype}, expected floating point")
            finite = np.isfinite(array)
            if not finite.all():
                bad = int(array.size - np.count_nonzero(finite))
                kind = "NaN" if np.isnan(array).any() else "Inf"
                raise UpdateRejected(f"tensor {i} has {bad} non-finite values ({kind})")
        if context.weights is not None:
            norm = l2_norm(body)
            bound = self.policy.norm_bound(context.weights)
            if not norm <= bound:
                raise UpdateRejected(
                    f"update norm {norm:.4g} exceeds the bound {bound:.4g} "
                    f"({self.policy.max_norm_ratio:g} × the global model's norm); rejected"
                )
            # float32 is what the strategy sums: a tensor that overflows there is refused too.
            if any(np.abs(a).max(initial=0.0) > np.finfo(np.float32).max / 4 for a in body):
                raise UpdateRejected("update values overflow float32")


def roster_rejections(
    senders: Sequence[Hashable], expected: Collection[Hashable]
) -> list[str | None]:
    """Who may report this round: one reason (or None) per sender, in order.

    A sender not among ``expected`` (not in the round's task list) is refused; a sender
    that reports more than once is refused every time (which copy is genuine cannot be
    told). Duplicates are found case-insensitively: ``Pi-3`` and ``pi-3`` are one file on
    a FAT-formatted stick.
    """

    def key(s: Hashable) -> Hashable:
        return s.casefold() if isinstance(s, str) else s

    known = set(expected)
    counts: dict[Hashable, int] = {}
    for s in senders:
        counts[key(s)] = counts.get(key(s), 0) + 1
    reasons: list[str | None] = []
    for s in senders:
        if s not in known:
            reasons.append(f"{s!r} was not asked for an update this round (unknown sender)")
        elif counts[key(s)] > 1:
            reasons.append(
                f"{s!r} sent {counts[key(s)]} updates this round; all are refused (duplicate)"
            )
        else:
            reasons.append(None)
    return reasons


@dataclass(frozen=True, slots=True)
class ClipUpdate:
    """Client stage: scale the update to L2 norm at most ``clip_norm`` (all tensors together).

    The client-side clipping of DP-FedAvg and of secure aggregation, where the server never
    sees an individual update to clip. The norm is computed without overflow
    (:func:`l2_norm`); an update with a NaN or Inf entry is passed on unchanged for the
    server's validation to refuse. The header ``clip_norm_before`` records the norm.
    """

    clip_norm: float
    name: str = "clip"

    def __post_init__(self) -> None:
        value = self.clip_norm
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"clip_norm must be a number, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"clip_norm must be finite and > 0, got {value!r}")

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """The envelope with its body scaled down to ``clip_norm`` when it is longer."""
        body = envelope.body
        if isinstance(body, bytes | bytearray):
            raise TypeError("ClipUpdate must run before any stage that encodes the body")
        clipped, norm = clip_arrays(body, self.clip_norm)
        headers = {**envelope.headers, "clip_norm_before": norm}
        if clipped is None:
            return replace(envelope, headers=headers)
        return replace(envelope, body=clipped, headers=headers)


def clip_arrays(
    arrays: Sequence[np.ndarray], clip_norm: float
) -> tuple[tuple[np.ndarray, ...] | None, float]:
    """``arrays`` scaled (in float64, returned as float32) to an L2 norm just below
    ``clip_norm`` (by 1e-6 relative, so float32 rounding cannot push it over) when longer,
    and their norm before; ``None`` instead of arrays when nothing changes (the
    norm is within the bound, or not finite: validation refuses those). The one clipping
    kernel of :class:`ClipUpdate` and of a device told to clip (``TrainPlan.clip_norm``).
    """
    values = [np.asarray(a) for a in arrays]
    norm = l2_norm(values)
    if not math.isfinite(norm) or norm <= clip_norm:
        return None, norm
    # 1e-6 below C: rounding to float32 moves the norm by up to ~1e-7 relative, and the
    # sensitivity the accounting assumes must hold exactly.
    scale = clip_norm / norm * (1 - 1e-6)
    return tuple((a.astype(np.float64) * scale).astype(np.float32) for a in values), norm


def _body_bytes(body: Any) -> int:
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    if isinstance(body, tuple | list):
        return int(sum(getattr(a, "nbytes", 0) for a in body))
    return 0


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Client-side and server-side stages applied to every update, in order."""

    client: tuple[Stage, ...] = ()
    server: tuple[Stage, ...] = ()
    validate: Stage = field(default_factory=ValidateUpdate)

    def with_stages(
        self, *, client: Sequence[Stage] = (), server: Sequence[Stage] = ()
    ) -> Pipeline:
        """A new pipeline with extra client stages appended and server stages prepended
        (what the client applies last, the server undoes first)."""
        return replace(self, client=(*self.client, *client), server=(*server, *self.server))

    def __post_init__(self) -> None:
        names = [s.name for s in self.client if isinstance(s, StatefulStage)]
        if len(set(names)) != len(names):
            raise ValueError(
                f"stateful client stages need distinct names (their state is kept by name), "
                f"got {names}"
            )

    @property
    def stateful(self) -> bool:
        """True if a client stage keeps per-client state."""
        return any(isinstance(s, StatefulStage) for s in self.client)

    def send(
        self,
        update: ClientUpdate,
        context: StageContext,
        state: ClientStateStore | None = None,
    ) -> Envelope:
        """Client side: wrap an update and run it through the client stages."""
        return self.send_measured(update, context, state)[0]

    def send_measured(
        self,
        update: ClientUpdate,
        context: StageContext,
        state: ClientStateStore | None = None,
    ) -> tuple[Envelope, tuple[tuple[str, int], ...]]:
        """:meth:`send`, and the envelope's body size after each step: ``("update", n)``
        for the raw tensors, then one ``(stage name, bytes)`` per client stage.

        ``state`` is the sending client's store: stateful stages read their state from it
        and, once every client stage has succeeded, their next state is committed to it
        (a stage that raises leaves the store as it was). Without a store a stateful stage
        runs stateless (its :meth:`~StatefulStage.apply`), unless it
        ``requires_state`` — then this is a ``ValueError``.
        """
        envelope = Envelope(
            client_id=update.client_id,
            num_examples=update.num_examples,
            body=update.delta,
            num_steps=update.num_steps,
            # as sent: the server's validation judges what arrives, malformed or not
            metrics=dict(update.metrics) if isinstance(update.metrics, Mapping) else update.metrics,
        )
        if state is not None and state.client_id != update.client_id:
            raise ValueError(
                f"state store of client {state.client_id} passed with an update of client "
                f"{update.client_id!r}"
            )
        sizes = [("update", _body_bytes(envelope.body))]
        pending: dict[str, Any] = {}
        for stage in self.client:
            if isinstance(stage, StatefulStage) and state is not None:
                envelope, pending[stage.name] = stage.apply_stateful(
                    envelope, context, state.get(stage)
                )
            elif isinstance(stage, StatefulStage) and stage.requires_state:
                raise ValueError(
                    f"client stage {stage.name!r} keeps per-client state (error feedback) "
                    "and would lose it here: pass the client's ClientStateStore"
                )
            else:
                envelope = stage.apply(envelope, context)
            sizes.append((stage.name, _body_bytes(envelope.body)))
        if state is not None:
            state.commit(pending)
        return envelope, tuple(sizes)

    def receive(self, envelope: Envelope, context: StageContext) -> ClientUpdate:
        """Server side: run the server stages and validation; raises ``UpdateRejected``."""
        for stage in (*self.server, self.validate):
            try:
                envelope = stage.apply(envelope, context)
            except UpdateRejected as exc:
                if not exc.stage:
                    exc.stage = stage.name
                raise
        body = envelope.body
        assert not isinstance(body, bytes | bytearray)  # ValidateUpdate guarantees arrays
        delta: Weights = tuple(np.asarray(a, dtype=np.float32) for a in body)
        return _update(envelope, delta)

    def unfit_for_held(self) -> tuple[str, ...]:
        """Names of the server stages that need an update's body, so cannot judge one a
        device holds for secure aggregation (only stages with ``metadata_only = True``,
        such as signature verification, can)."""
        return tuple(s.name for s in self.server if not getattr(s, "metadata_only", False))

    def receive_held(self, envelope: Envelope, context: StageContext) -> ClientUpdate:
        """Server side for an update the device keeps for secure aggregation (an empty
        body): the metadata-only server stages and the validation of everything but the
        body. The returned update has no tensors (``delta == ()``)."""
        unfit = self.unfit_for_held()
        if unfit:
            raise ValueError(f"server stages {list(unfit)} need the update's body")
        if envelope.body not in (b"", ()):
            raise UpdateRejected(
                "a held update must carry no body (this round is securely aggregated)",
                stage=self.validate.name,
            )
        for stage in self.server:
            try:
                envelope = stage.apply(envelope, context)
            except UpdateRejected as exc:
                if not exc.stage:
                    exc.stage = stage.name
                raise
        check = getattr(self.validate, "check_metadata", None)
        if not callable(check):
            raise ValueError(
                f"the validation stage {self.validate.name!r} cannot judge an update's "
                "metadata alone (ValidateUpdate can)"
            )
        try:
            check(envelope, context)
        except UpdateRejected as exc:
            exc.stage = exc.stage or self.validate.name
            raise
        return _update(envelope, ())


def _update(envelope: Envelope, delta: Weights) -> ClientUpdate:
    return ClientUpdate(
        client_id=int(envelope.client_id),
        delta=delta,
        num_examples=int(envelope.num_examples),
        num_steps=int(envelope.num_steps),
        metrics={k: float(v) for k, v in envelope.metrics.items()},
    )
