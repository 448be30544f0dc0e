"""Client DP-SGD: example-level privacy on the device, with tensorflow-privacy's optimizers.

Each client trains with ``DPKerasSGDOptimizer`` (per-example clipping to ``l2_norm_clip``,
Gaussian noise ``z·clip`` on the summed batch gradient). This protects every *example* in a
client's local training; it is a different — weaker, but device-local — guarantee than the
client-level DP of :class:`~fedlab.privacy.DPFedAvg`, and the two compose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import dp_accounting
from dp_accounting import rdp

from fedlab._tf import keras, tf
from fedlab.data.federated_dataset import ClientData
from fedlab.federated.runtime import KerasRuntime
from fedlab.federated.runtime_base import ClientFailure
from fedlab.federated.types import ClientPlan, ClientUpdate, Weights

__all__ = ["DPSGDRuntime", "dp_sgd_epsilon", "dp_sgd_statement"]


def dp_sgd_epsilon(
    *, num_examples: int, batch_size: int, epochs: float, noise_multiplier: float, delta: float
) -> float:
    """ε of DP-SGD composed here with dp-accounting (Poisson sampling q = batch/N, RDP)."""
    if num_examples < 1 or not 1 <= batch_size <= num_examples:
        raise ValueError(
            f"need 1 <= batch_size <= num_examples, got batch_size={batch_size!r}, "
            f"num_examples={num_examples!r}"
        )
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs!r}")
    if not noise_multiplier >= 0:
        raise ValueError(f"noise multiplier z must be >= 0, got {noise_multiplier!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if noise_multiplier == 0:
        return math.inf
    q = batch_size / num_examples
    steps = math.ceil(epochs * num_examples / batch_size)
    accountant = rdp.RdpAccountant()
    accountant.compose(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(noise_multiplier)),
        steps,
    )
    return float(accountant.get_epsilon(delta))


def dp_sgd_statement(
    *, num_examples: int, batch_size: int, epochs: float, noise_multiplier: float, delta: float
) -> str:
    """tensorflow-privacy's own DP-SGD privacy statement (example-level)."""
    import tensorflow_privacy

    return str(
        tensorflow_privacy.compute_dp_sgd_privacy_statement(
            number_of_examples=num_examples,
            batch_size=batch_size,
            num_epochs=epochs,
            noise_multiplier=noise_multiplier,
            delta=delta,
            used_microbatching=False,
        )
    )


class DPSGDRuntime(KerasRuntime):
    """A client runtime whose local training is DP-SGD (tensorflow-privacy's DPKerasSGDOptimizer).

    Batches follow :func:`~fedlab.federated.batching.batch_schedule`; every example is its
    own microbatch (per-example clipping). The noise of each client is seeded from its plan.

    Parameters
    ----------
    model_fn : callable
        Builds the Keras model.
    l2_norm_clip : float
        Per-example gradient clipping norm.
    noise_multiplier : float
        z: noise standard deviation over ``l2_norm_clip``.
    """

    def __init__(
        self,
        model_fn: Callable[[], keras.Model],
        *,
        l2_norm_clip: float,
        noise_multiplier: float,
    ) -> None:
        if not l2_norm_clip > 0:
            raise ValueError(f"l2_norm_clip must be > 0, got {l2_norm_clip!r}")
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
        super().__init__(model_fn, deterministic=False)
        import tensorflow_privacy

        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.optimizer = tensorflow_privacy.DPKerasSGDOptimizer(
            l2_norm_clip=self.l2_norm_clip,
            noise_multiplier=self.noise_multiplier,
            num_microbatches=None,
            learning_rate=0.01,
        )
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE
        )
        self.model.compile(optimizer=self.optimizer, loss=loss)
        # A batch dimension of None: one trace for every client's (uneven) last batch.
        spec = (
            tf.TensorSpec([None, *self.input_shape], tf.float32),
            tf.TensorSpec([None], tf.int64),
        )
        self._dp_step = tf.function(self._dp_train_step, input_signature=spec)

    def _dp_train_step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        loss_fn = self.model.loss
        variables = self.model.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            per_example = loss_fn(y, self.model(x, training=True))
        grads_and_vars = self.optimizer._compute_gradients(per_example, variables, tape=tape)
        self.optimizer.apply_gradients(grads_and_vars)
        return tf.reduce_mean(per_example)

    def _begin_client(self, global_weights: Weights, plan: ClientPlan) -> Callable[..., Any]:
        """DP-SGD at the plan's learning rate; the noise is seeded from the plan."""
        if plan.optimizer != "sgd" or plan.proximal_mu:
            raise ValueError("DPSGDRuntime supports plain SGD clients without a proximal term")
        self.model.set_weights(global_weights)
        self.optimizer.learning_rate.assign(plan.learning_rate)
        tf.random.set_seed(plan.seed % 2**31)
        return self._dp_step

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """Train the jobs one after another with DP-SGD."""
        return super().train_clients(global_weights, jobs)
