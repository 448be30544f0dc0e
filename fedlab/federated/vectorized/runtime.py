"""``VectorizedRuntime``: every client of a round trained in one compiled TensorFlow graph.

Per-client weights are stacked (see :mod:`fedlab.federated.vectorized.program`), each
client's batches follow :func:`~fedlab.federated.batching.batch_schedule` exactly and are
padded to the chunk's step count with masks. A padded example contributes nothing; a
client with no batch at a step does not move (its optimizer state neither). The updates
therefore equal :class:`~fedlab.federated.runtime.KerasRuntime`'s to float tolerance.

Clients are sorted by step count and cut into chunks (at most ``chunk_size`` clients and
``max_chunk_bytes`` of input), so padding stays small and memory is bounded by the
chunk, not by the number of clients in the round.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from fedlab._tf import keras, tf
from fedlab.data.federated_dataset import ClientData
from fedlab.federated.batching import batch_schedule
from fedlab.federated.client_optimizer import ADAM
from fedlab.federated.runtime import KerasRuntime
from fedlab.federated.runtime_base import ClientFailure, ClientRuntime, RunNote
from fedlab.federated.types import ClientPlan, ClientUpdate, Weights
from fedlab.federated.vectorized.program import Ctx, Program, UnsupportedModel, compile_program

__all__ = ["FallbackWarning", "VectorizedRuntime", "make_runtime"]

_Job = tuple[ClientData, ClientPlan, list[np.ndarray]]


class FallbackWarning(UserWarning):
    """The vectorised trainer cannot run a model; the reference runtime is used instead."""


class VectorizedRuntime:
    """Train many clients at once, exactly as the reference runtime would, one after another.

    Parameters
    ----------
    model_fn : callable
        Builds the Keras model (called once).
    chunk_size : int
        Most clients per compiled call.
    max_chunk_bytes : int
        Most bytes of padded input per call (bounds memory for clients with many steps).
    min_bucket : int
        Clients with different step counts share a call only while the call has fewer than
        this many clients (one call per distinct step count would cost more in overhead).
    deterministic : bool
        Enable TensorFlow op determinism.
    reference : KerasRuntime, optional
        An existing reference runtime of the same model to reuse for evaluation.

    Raises
    ------
    UnsupportedModel
        When a layer has no vectorised kernel (use :func:`make_runtime` to fall back).
    """

    def __init__(
        self,
        model_fn: Callable[[], keras.Model] | None = None,
        *,
        chunk_size: int = 512,
        max_chunk_bytes: int = 256 * 2**20,
        min_bucket: int = 32,
        deterministic: bool = True,
        reference: KerasRuntime | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
        if max_chunk_bytes < 1:
            raise ValueError(f"max_chunk_bytes must be >= 1, got {max_chunk_bytes!r}")
        if reference is None:
            if model_fn is None:
                raise TypeError("give model_fn or reference")
            reference = KerasRuntime(model_fn, deterministic=deterministic)
        self.reference = reference
        model = reference.model
        if model.losses:
            raise UnsupportedModel(f"model {model.name!r} has regularization losses")
        self.program: Program = compile_program(model)
        self.chunk_size = chunk_size
        self.min_bucket = min_bucket
        self.max_chunk_bytes = max_chunk_bytes
        self.input_shape = self.program.input_shape
        self.calls = 0  # compiled calls so far (for benchmarks and tests)
        self.last_run = RunNote("vectorized")
        weight_specs = [tf.TensorSpec(p.shape, tf.float32) for p in self.program.packings]
        signature = (
            weight_specs,
            tf.TensorSpec([None, None, None, *self.input_shape], tf.float32),
            tf.TensorSpec([None, None, None], tf.int64),
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([None], tf.float32),
        )
        self._compiled = {
            kind: tf.function(self._make_chunk_fn(kind), input_signature=signature)
            for kind in ("sgd", "momentum", "adam")
        }

    # -- the compiled chunk ------------------------------------------------------------
    def _make_chunk_fn(
        self, kind: str
    ) -> Callable[..., tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]]:
        program = self.program
        packings = program.packings
        trainable = program.trainable

        def chunk(global_ws, x, y, mask, lr, mu, beta):
            k = tf.shape(x)[1]
            steps = tf.shape(x)[0]
            ws = [p.pack(w, k) for p, w in zip(packings, global_ws, strict=True)]
            anchor = [ws[i] for i in trainable]
            slots_m = [tf.zeros_like(ws[i]) for i in trainable]
            slots_v = [tf.zeros_like(ws[i]) for i in trainable]
            zeros = tf.zeros([k], tf.float32)
            # Everything per client that does not depend on the weights is computed once,
            # for all steps, outside the loop, already shaped for each weight: the loop body
            # then holds the model and the update, not hundreds of small reshapes.
            count_all = tf.reduce_sum(mask, axis=2)  # (steps, K)
            active_all = tf.cast(count_all > 0, tf.float32)
            t_all = tf.maximum(tf.cumsum(active_all, axis=0), 1.0)  # Adam's step per client
            per_weight = []
            for i in trainable:
                p = packings[i]
                extra = {}
                if kind == "momentum":
                    extra["beta"] = p.per_client(beta)
                if kind == "adam":
                    extra["c1"] = p.per_client(1.0 - tf.pow(ADAM.beta_1, t_all))
                    extra["c2"] = p.per_client(1.0 - tf.pow(ADAM.beta_2, t_all))
                per_weight.append(
                    dict(
                        active=p.per_client(active_all),
                        rate=p.per_client(active_all * lr[None]),
                        mu=p.per_client(mu),
                        **extra,
                    )
                )

            def body(s, ws, slots_m, slots_v, loss_sum, seen):
                xb, yb, mb = x[s], y[s], mask[s]
                count = count_all[s]
                train_ws = [ws[i] for i in trainable]
                with tf.GradientTape() as tape:
                    tape.watch(train_ws)
                    full = list(ws)
                    for j, i in enumerate(trainable):
                        full[i] = train_ws[j]
                    logits, updates = program.forward(full, xb, Ctx(mb, training=True))
                    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
                    per_client = tf.reduce_sum(ce * mb, axis=1) / tf.maximum(count, 1.0)
                    objective = tf.reduce_sum(per_client)
                grads = tape.gradient(objective, train_ws)
                new_ws = list(ws)
                new_m, new_v = list(slots_m), list(slots_v)
                for j, i in enumerate(trainable):
                    c, w = per_weight[j], train_ws[j]
                    # FedProx's μ/2·‖w − w_global‖² has the gradient μ·(w − w_global): added
                    # in closed form, one multiply-add instead of a taped square.
                    g = grads[j] + c["mu"] * (w - anchor[j])
                    a, rate = c["active"][s], c["rate"][s]
                    if kind == "sgd":
                        new_ws[i] = w - rate * g
                    elif kind == "momentum":
                        m = slots_m[j] + a * (c["beta"] * slots_m[j] + g - slots_m[j])
                        new_m[j] = m
                        new_ws[i] = w - rate * m
                    else:
                        b1, b2 = ADAM.one_minus_beta_1, ADAM.one_minus_beta_2
                        m = slots_m[j] + a * (b1 * g - b1 * slots_m[j])
                        v = slots_v[j] + a * (b2 * tf.square(g) - b2 * slots_v[j])
                        new_m[j], new_v[j] = m, v
                        step = (m / c["c1"][s]) / (tf.sqrt(v / c["c2"][s]) + ADAM.epsilon)
                        new_ws[i] = w - rate * step
                for i, value in updates.items():
                    new_ws[i] = value
                return (s + 1, new_ws, new_m, new_v, loss_sum + per_client * count, seen + count)

            _, ws, _, _, loss_sum, seen = tf.while_loop(
                lambda s, *_: s < steps,
                body,
                (tf.constant(0), ws, slots_m, slots_v, zeros, zeros),
            )
            deltas = [
                p.unpack(w) - g[None] for p, w, g in zip(packings, ws, global_ws, strict=True)
            ]
            return deltas, loss_sum, seen

        return chunk

    # -- protocol ----------------------------------------------------------------------
    def initial_weights(self) -> Weights:
        """The model's initial weights."""
        return self.reference.initial_weights()

    def evaluate(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> dict[str, float]:
        """Central evaluation (one model, so the reference runtime does it)."""
        return self.reference.evaluate(weights, x, y, batch_size=batch_size)

    def per_example_loss(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> np.ndarray:
        """Cross-entropy of every example (delegated to the reference model)."""
        return self.reference.per_example_loss(weights, x, y, batch_size=batch_size)

    def _chunks(self, jobs: list[_Job], batch_size: int) -> list[list[_Job]]:
        example_bytes = 4 * int(np.prod(self.input_shape))
        ordered = sorted(jobs, key=lambda job: (len(job[2]), job[0].client_id))
        chunks: list[list[_Job]] = []
        current: list[_Job] = []
        for job in ordered:
            steps = len(job[2])
            size = steps * (len(current) + 1) * batch_size * example_bytes
            # A new step count starts a new chunk once the current one is big enough to be
            # worth a call: padding short clients to long ones wastes compute.
            new_bucket = len(current) >= self.min_bucket and steps != len(current[-1][2])
            if current and (
                len(current) >= self.chunk_size or size > self.max_chunk_bytes or new_bucket
            ):
                chunks.append(current)
                current = []
            current.append(job)
        if current:
            chunks.append(current)
        return chunks

    def _run_chunk(
        self, global_ws: list[tf.Tensor], chunk: list[_Job], kind: str, batch: int
    ) -> list[ClientUpdate]:
        steps = max(len(job[2]) for job in chunk)
        k = len(chunk)
        x = np.zeros((steps, k, batch, *self.input_shape), np.float32)
        y = np.zeros((steps, k, batch), np.int64)
        mask = np.zeros((steps, k, batch), np.float32)
        for c, (data, _, schedule) in enumerate(chunk):
            for s, idx in enumerate(schedule):
                n = len(idx)
                x[s, c, :n] = data.x[idx]
                y[s, c, :n] = data.y[idx]
                mask[s, c, :n] = 1.0
        lr = np.array([plan.learning_rate for _, plan, _ in chunk], np.float32)
        mu = np.array([plan.proximal_mu for _, plan, _ in chunk], np.float32)
        beta = np.array([plan.momentum for _, plan, _ in chunk], np.float32)
        deltas, loss_sum, seen = self._compiled[kind](global_ws, x, y, mask, lr, mu, beta)
        self.calls += 1
        deltas_np = [d.numpy() for d in deltas]
        loss_np, seen_np = loss_sum.numpy(), seen.numpy()
        return [
            ClientUpdate(
                client_id=data.client_id,
                delta=tuple(d[c] for d in deltas_np),
                num_examples=data.num_examples,
                num_steps=len(schedule),
                metrics={"train_loss": float(loss_np[c] / seen_np[c])},
            )
            for c, (data, _, schedule) in enumerate(chunk)
        ]

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """Train all jobs in as few compiled calls as the chunk limits allow."""
        self.reference._check_weights(global_weights)
        results: dict[int, ClientUpdate | ClientFailure] = {}
        groups: dict[tuple[str, int], list[_Job]] = {}
        for position, (data, plan) in enumerate(jobs):
            if data.x.shape[1:] != self.input_shape:
                results[position] = ClientFailure(
                    data.client_id,
                    f"ValueError: client {data.client_id}: examples of shape {data.x.shape[1:]}, "
                    f"model expects {self.input_shape}",
                )
                continue
            schedule = batch_schedule(data.num_examples, plan.batch_size, plan.epochs, plan.seed)
            groups.setdefault((plan.optimizer, plan.batch_size), []).append((data, plan, schedule))
        position_of = {id(data): i for i, (data, _) in enumerate(jobs)}
        global_ws = [tf.constant(w, tf.float32) for w in global_weights]
        retried, reason, retry_seconds = 0, "", 0.0
        for (kind, batch), group in groups.items():
            for chunk in self._chunks(group, batch):
                try:
                    updates: Sequence[ClientUpdate | ClientFailure] = self._run_chunk(
                        global_ws, chunk, kind, batch
                    )
                except (tf.errors.OpError, ValueError, MemoryError) as exc:
                    # Attribute the failure: rerun this chunk client by client on the reference.
                    start = time.perf_counter()
                    updates = self.reference.train_clients(
                        global_weights, [(data, plan) for data, plan, _ in chunk]
                    )
                    retry_seconds += time.perf_counter() - start
                    retried += len(chunk)
                    reason = reason or f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                for (data, _, _), update in zip(chunk, updates, strict=True):
                    results[position_of[id(data)]] = update
        self.last_run = RunNote("vectorized", retried, reason, retry_seconds)
        if retried:
            warnings.warn(
                f"fedlab: the vectorised runtime failed for {retried} of {len(jobs)} clients "
                f"and retried them on the reference runtime, +{retry_seconds:.1f} s ({reason})",
                FallbackWarning,
                stacklevel=2,
            )
        return [results[i] for i in range(len(jobs))]


def make_runtime(
    model_fn: Callable[[], keras.Model],
    *,
    kind: Literal["auto", "vectorized", "reference"] = "auto",
    chunk_size: int = 512,
    max_chunk_bytes: int = 256 * 2**20,
    min_bucket: int = 32,
) -> ClientRuntime:
    """The fastest runtime that can train ``model_fn``'s model.

    ``"auto"`` uses :class:`VectorizedRuntime` when every layer has a vectorised kernel and
    otherwise the reference :class:`KerasRuntime`, with a one-line :class:`FallbackWarning`
    naming the layer. ``"vectorized"`` raises instead of falling back. The chunk options
    are those of :class:`VectorizedRuntime`.
    """
    if kind not in ("auto", "vectorized", "reference"):
        raise ValueError(f"kind must be 'auto', 'vectorized' or 'reference', got {kind!r}")
    reference = KerasRuntime(model_fn)
    if kind == "reference":
        return reference
    try:
        return VectorizedRuntime(
            reference=reference,
            chunk_size=chunk_size,
            max_chunk_bytes=max_chunk_bytes,
            min_bucket=min_bucket,
        )
    except UnsupportedModel as exc:
        if kind == "vectorized":
            raise
        warnings.warn(f"fedlab: reference runtime in use — {exc}", FallbackWarning, stacklevel=2)
        return reference
