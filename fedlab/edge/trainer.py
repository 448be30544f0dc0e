"""``LiteRTTrainer``: local epochs through a trainable model's signatures, on the device.

The batch order is :func:`fedlab.federated.batching.batch_schedule`, the same the workbench's
Keras reference runtime follows, so both produce the same update from the same start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlab.edge.model import TrainableModel
from fedlab.federated.batching import batch_schedule
from fedlab.federated.types import ClientPlan, ClientUpdate

__all__ = ["LiteRTTrainer", "check_examples"]

DEVICE_OPTIMIZERS = ("sgd", "momentum")


def check_examples(
    x: np.ndarray, y: np.ndarray, input_shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 examples and int32 labels, or a ``ValueError`` saying what is wrong."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 0 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"examples have shape {tuple(x.shape[1:]) if x.ndim else ()}, "
            f"the model expects {tuple(input_shape)}"
        )
    if y.shape != (len(x),):
        raise ValueError(f"labels have shape {y.shape}, expected ({len(x)},)")
    if len(x) == 0:
        raise ValueError("no examples")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integers")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"examples contain NaN or Inf ({int((~np.isfinite(x)).sum())} values)")
    return x, y.astype(np.int32)


class LiteRTTrainer:
    """Trains a :class:`TrainableModel` from global weights and returns the delta.

    Parameters
    ----------
    model : TrainableModel
        The device's trainable model.
    """

    def __init__(self, model: TrainableModel) -> None:
        self.model = model
        self.spec = model.spec

    def _trainable(self, global_weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        shapes = self.spec.weight_shapes
        if len(global_weights) != len(shapes):
            raise ValueError(
                f"expected {len(shapes)} global weight arrays, got {len(global_weights)}"
            )
        for i, (w, s) in enumerate(zip(global_weights, shapes, strict=True)):
            if tuple(np.shape(w)) != s:
                raise ValueError(f"global weight {i}: shape {np.shape(w)}, model expects {s}")
        return [np.asarray(global_weights[i], np.float32) for i in self.spec.trainable_indices]

    def train(
        self,
        global_weights: Sequence[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        plan: ClientPlan,
    ) -> ClientUpdate:
        """Run ``plan.epochs`` local epochs; the update covers every model weight (zeros for
        the weights a head-only model does not train).

        Raises
        ------
        ValueError
            Wrong weight shapes, bad examples, an optimizer the device does not run, or a
            batch larger than the model's static batch.
        """
        if plan.optimizer not in DEVICE_OPTIMIZERS:
            raise ValueError(
                f"optimizer {plan.optimizer!r} does not run on the device; use one of "
                f"{DEVICE_OPTIMIZERS}"
            )
        b = self.spec.batch_size
        if plan.batch_size > b:
            raise ValueError(
                f"plan batch size {plan.batch_size} exceeds the model's static batch {b}"
            )
        start = self._trainable(global_weights)
        x, y = check_examples(x, y, self.spec.input_shape, self.spec.num_classes)
        self.model.set_weights(start)
        beta = plan.momentum if plan.optimizer == "momentum" else 0.0
        xb = np.zeros((b, *self.spec.input_shape), np.float32)
        yb = np.zeros(b, np.int32)
        wb = np.zeros(b, np.float32)
        schedule = batch_schedule(len(y), plan.batch_size, plan.epochs, plan.seed)
        total = 0.0
        for idx in schedule:
            n = len(idx)
            xb[:n], yb[:n] = x[idx], y[idx]
            xb[n:], yb[n:], wb[:n], wb[n:] = 0.0, 0, 1.0 / n, 0.0
            loss = self.model.train_step(
                xb, yb, wb, lr=plan.learning_rate, mu=plan.proximal_mu, beta=beta
            )
            if not np.isfinite(loss):
                raise FloatingPointError(f"training diverged: loss {loss} at step {len(schedule)}")
            total += loss * n
        trained = self.model.get_weights()
        delta = [np.zeros(s, np.float32) for s in self.spec.weight_shapes]
        for k, i in enumerate(self.spec.trainable_indices):
            delta[i] = (trained[k] - start[k]).astype(np.float32)
        return ClientUpdate(
            client_id=plan.client_id,
            delta=tuple(delta),
            num_examples=len(y),
            num_steps=len(schedule),
            metrics={"train_loss": total / (len(y) * plan.epochs)},
        )

    def evaluate(
        self, weights: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> dict[str, float]:
        """Cross-entropy and accuracy of ``weights`` on local examples."""
        self.model.set_weights(self._trainable(weights))
        x, y = check_examples(x, y, self.spec.input_shape, self.spec.num_classes)
        z = self.model.logits(x).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return {
            "loss": float(-logp[np.arange(len(y)), y].mean()),
            "accuracy": float((z.argmax(axis=1) == y).mean()),
        }
