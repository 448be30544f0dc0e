"""Client runtimes: how a client trains locally. ``KerasRuntime`` is the reference one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedlab._tf import keras, tf
from fedlab.data.federated_dataset import ClientData
from fedlab.federated.batching import batch_schedule
from fedlab.federated.client_optimizer import ADAM
from fedlab.federated.runtime_base import ClientFailure, ClientRuntime, RunNote
from fedlab.federated.types import ClientPlan, ClientUpdate, Weights

__all__ = ["ClientFailure", "ClientRuntime", "KerasRuntime"]


class KerasRuntime:
    """Reference runtime: one Keras model, a compiled train step, clients one after another.

    Local training follows :func:`~fedlab.federated.batching.batch_schedule` exactly,
    minimises the mean sparse cross-entropy of the logits (plus ``μ/2·‖w − w_global‖²``
    for FedProx), and uses a client optimizer written out here (SGD, SGD with momentum,
    Adam) whose state is reset for every client — so a faster runtime can be checked
    against it step for step.

    Parameters
    ----------
    model_fn : callable
        Builds the Keras model (called once).
    deterministic : bool
        Enable TensorFlow's op determinism, so the same seed gives the same weights.
    """

    def __init__(self, model_fn: Callable[[], keras.Model], *, deterministic: bool = True) -> None:
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        self.model = model_fn()
        if not isinstance(self.model, keras.Model):
            raise TypeError(f"model_fn must return a keras.Model, got {type(self.model).__name__}")
        self._initial = tuple(w.astype(np.float32) for w in self.model.get_weights())
        self.input_shape = tuple(int(d) for d in self.model.input_shape[1:])
        train_vars = self.model.trainable_variables
        self._anchor = [tf.Variable(v, trainable=False) for v in train_vars]
        self._m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in train_vars]
        self._v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in train_vars]
        self._t = tf.Variable(0.0, trainable=False)
        self._lr = tf.Variable(0.01, trainable=False)
        self._mu = tf.Variable(0.0, trainable=False)
        self._beta = tf.Variable(0.9, trainable=False)
        spec = (
            tf.TensorSpec([None, *self.input_shape], tf.float32),
            tf.TensorSpec([None], tf.int64),
        )
        self._steps = {
            kind: tf.function(self._make_step(kind), input_signature=spec)
            for kind in ("sgd", "momentum", "adam")
        }
        self._eval = tf.function(self._eval_batch, input_signature=spec)
        self.last_run = RunNote("reference")

    # -- compiled pieces ---------------------------------------------------------------
    def _make_step(self, kind: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
        model = self.model

        def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            train_vars = model.trainable_variables
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                )
                objective = loss + tf.add_n([tf.constant(0.0), *model.losses])
                prox = tf.add_n(
                    [
                        tf.reduce_sum(tf.square(w - a))
                        for w, a in zip(train_vars, self._anchor, strict=True)
                    ]
                )
                objective = objective + 0.5 * self._mu * prox
            grads = tape.gradient(objective, train_vars)
            if kind == "sgd":
                for w, g in zip(train_vars, grads, strict=True):
                    w.assign_sub(self._lr * g)
            elif kind == "momentum":
                for w, g, m in zip(train_vars, grads, self._m, strict=True):
                    m.assign(self._beta * m + g)
                    w.assign_sub(self._lr * m)
            else:  # Adam, bias-corrected, with the constants of client_optimizer.ADAM
                self._t.assign_add(1.0)
                c1 = 1.0 - tf.pow(ADAM.beta_1, self._t)
                c2 = 1.0 - tf.pow(ADAM.beta_2, self._t)
                for w, g, m, v in zip(train_vars, grads, self._m, self._v, strict=True):
                    m.assign(ADAM.beta_1 * m + ADAM.one_minus_beta_1 * g)
                    v.assign(ADAM.beta_2 * v + ADAM.one_minus_beta_2 * tf.square(g))
                    w.assign_sub(self._lr * (m / c1) / (tf.sqrt(v / c2) + ADAM.epsilon))
            return loss

        return step

    def _eval_batch(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = self.model(x, training=False)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        )
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1), y), tf.float32))
        return loss, correct

    # -- protocol ----------------------------------------------------------------------
    def initial_weights(self) -> Weights:
        """The freshly built model's weights."""
        return tuple(w.copy() for w in self._initial)

    def _check_weights(self, weights: Weights) -> None:
        shapes = [w.shape for w in self._initial]
        if len(weights) != len(shapes) or any(
            w.shape != s for w, s in zip(weights, shapes, strict=True)
        ):
            raise ValueError(
                f"weights do not fit model {self.model.name!r}: expected shapes {shapes}, "
                f"got {[np.shape(w) for w in weights]}"
            )

    def train_one(
        self, global_weights: Weights, data: ClientData, plan: ClientPlan
    ) -> ClientUpdate:
        """Train one client and return its update (raises on failure)."""
        if data.x.shape[1:] != self.input_shape:
            raise ValueError(
                f"client {data.client_id}: examples of shape {data.x.shape[1:]}, "
                f"model expects {self.input_shape}"
            )
        step = self._begin_client(global_weights, plan)
        x = np.asarray(data.x, dtype=np.float32)
        y = np.asarray(data.y, dtype=np.int64)
        schedule = batch_schedule(len(y), plan.batch_size, plan.epochs, plan.seed)
        total, seen = 0.0, 0
        for idx in schedule:
            loss = float(step(x[idx], y[idx]))
            total += loss * len(idx)
            seen += len(idx)
        local = self.model.get_weights()
        delta = tuple(
            (lw - gw).astype(np.float32) for lw, gw in zip(local, global_weights, strict=True)
        )
        return ClientUpdate(
            client_id=data.client_id,
            delta=delta,
            num_examples=len(y),
            num_steps=len(schedule),
            metrics={"train_loss": total / seen},
        )

    def _begin_client(self, global_weights: Weights, plan: ClientPlan) -> Callable[..., Any]:
        """Load the global model, reset the optimizer; the compiled step for this plan."""
        self.model.set_weights(global_weights)
        for a, w in zip(self._anchor, self.model.trainable_variables, strict=True):
            a.assign(w)
        for slot in (*self._m, *self._v):
            slot.assign(tf.zeros_like(slot))
        self._t.assign(0.0)
        self._lr.assign(plan.learning_rate)
        self._mu.assign(plan.proximal_mu)
        self._beta.assign(plan.momentum)
        return self._steps[plan.optimizer]

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """Train the jobs one after another; an exception becomes a :class:`ClientFailure`."""
        self._check_weights(global_weights)
        results: list[ClientUpdate | ClientFailure] = []
        for data, plan in jobs:
            try:
                results.append(self.train_one(global_weights, data, plan))
            except Exception as exc:
                results.append(ClientFailure(data.client_id, f"{type(exc).__name__}: {exc}"))
        return results

    def per_example_loss(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> np.ndarray:
        """Cross-entropy of every example under ``weights`` (for membership inference)."""
        self._check_weights(weights)
        self.model.set_weights(weights)
        out = []
        for i in range(0, len(y), batch_size):
            logits = self.model(np.asarray(x[i : i + batch_size], np.float32), training=False)
            out.append(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=np.asarray(y[i : i + batch_size], np.int64), logits=logits
                ).numpy()
            )
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def evaluate(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> dict[str, float]:
        """Mean cross-entropy and accuracy of ``weights`` on ``(x, y)``."""
        self._check_weights(weights)
        if len(y) == 0:
            raise ValueError("cannot evaluate on an empty set")
        self.model.set_weights(weights)
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        loss_sum, correct = 0.0, 0.0
        for i in range(0, len(y), batch_size):
            loss, hits = self._eval(x[i : i + batch_size], y[i : i + batch_size])
            loss_sum += float(loss)
            correct += float(hits)
        return {"loss": loss_sum / len(y), "accuracy": correct / len(y)}
