"""The update pipeline: client stages (clip → compress → sign → seal) and server stages
(verify → open → decode), then validation. Identity by default; later modules add stages.

A stage is any object with a ``name`` and ``apply(envelope, context) -> envelope``. A
server stage that refuses an update raises :class:`~fedlab.federated.types.UpdateRejected`
with the reason, which the round records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from fedlab.federated.types import ClientUpdate, Envelope, UpdateRejected, Weights

__all__ = ["Pipeline", "Stage", "StageContext", "ValidateUpdate"]


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a stage may know: the round and the shapes of the global model."""

    round_index: int
    weight_shapes: tuple[tuple[int, ...], ...]


class Stage(Protocol):
    """One step of the client or server side of the pipeline."""

    @property
    def name(self) -> str:
        """Short name shown in logs and reports."""
        ...

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Transform ``envelope``; server stages raise ``UpdateRejected`` to refuse it."""
        ...


@dataclass(frozen=True, slots=True)
class ValidateUpdate:
    """Final server stage: the body must be float arrays of the model's shapes, all finite."""

    name: str = "validate"

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Return ``envelope`` unchanged or raise ``UpdateRejected`` naming the problem."""
        body = envelope.body
        if isinstance(body, bytes | bytearray):
            raise UpdateRejected("body is still encoded bytes; no server stage decoded it")
        if envelope.num_examples < 1:
            raise UpdateRejected(f"num_examples must be >= 1, got {envelope.num_examples}")
        if len(body) != len(context.weight_shapes):
            raise UpdateRejected(
                f"update has {len(body)} tensors, the model has {len(context.weight_shapes)}"
            )
        for i, (array, shape) in enumerate(zip(body, context.weight_shapes, strict=True)):
            if not isinstance(array, np.ndarray):
                raise UpdateRejected(f"tensor {i} is a {type(array).__name__}, not an ndarray")
            if array.shape != shape:
                raise UpdateRejected(f"tensor {i} has shape {array.shape}, expected {shape}")
            if not np.issubdtype(array.dtype, np.floating):
                raise UpdateRejected(f"tensor {i} has dtype {array.dtype}, expected floating point")
            finite = np.isfinite(array)
            if not finite.all():
                bad = int(array.size - np.count_nonzero(finite))
                kind = "NaN" if np.isnan(array).any() else "Inf"
                raise UpdateRejected(f"tensor {i} has {bad} non-finite values ({kind})")
        return envelope


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

    def send(self, update: ClientUpdate, context: StageContext) -> Envelope:
        """Client side: wrap an update and run it through the client stages."""
        envelope = Envelope(
            client_id=update.client_id,
            num_examples=update.num_examples,
            body=update.delta,
            num_steps=update.num_steps,
            metrics=dict(update.metrics),
        )
        for stage in self.client:
            envelope = stage.apply(envelope, context)
        return envelope

    def receive(self, envelope: Envelope, context: StageContext) -> ClientUpdate:
        """Server side: run the server stages and validation; raises ``UpdateRejected``."""
        for stage in (*self.server, self.validate):
            envelope = stage.apply(envelope, context)
        body = envelope.body
        assert not isinstance(body, bytes | bytearray)  # ValidateUpdate guarantees arrays
        delta: Weights = tuple(np.asarray(a, dtype=np.float32) for a in body)
        return ClientUpdate(
            client_id=envelope.client_id,
            delta=delta,
            num_examples=envelope.num_examples,
            num_steps=envelope.num_steps,
            metrics=dict(envelope.metrics),
        )
