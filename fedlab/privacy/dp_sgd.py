"""Client DP-SGD: example-level privacy on the device, with tensorflow-privacy's optimizers.

Each client trains with ``DPKerasSGDOptimizer`` (per-example clipping to ``l2_norm_clip``,
Gaussian noise ``z·clip`` on the summed batch gradient). This protects every *example* in a
client's local training; it is a different — weaker, but device-local — guarantee than the
client-level DP of :class:`~fedlab.privacy.DPFedAvg`, and the two compose.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Literal

from fedlab._tf import keras, tf  # first: tensorflow_privacy must see fedlab's Keras choice

# isort: split
import dp_accounting
from dp_accounting import rdp
from tensorflow_privacy.privacy.dp_query import gaussian_query

from fedlab.data.federated_dataset import ClientData
from fedlab.federated.runtime import KerasRuntime
from fedlab.federated.runtime_base import ClientFailure
from fedlab.federated.types import ClientPlan, ClientUpdate, Weights

__all__ = ["DPSGDRuntime", "dp_sgd_epsilon", "dp_sgd_statement"]


def _check_dp_sgd(
    num_examples: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float,
    rounds: int,
) -> None:
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
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")


def dp_sgd_epsilon(
    *,
    num_examples: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float,
    rounds: int = 1,
    sampling: Literal["poisson", "shuffled"] = "poisson",
) -> float:
    """Example-level ε of a client's DP-SGD, composed over the rounds it trains in (RDP).

    Parameters
    ----------
    num_examples, batch_size, epochs, noise_multiplier, delta
        One round of local training: N examples, batches of B, ``epochs`` passes, z, δ.
    rounds : int
        Rounds this client takes part in (its training composes over all of them).
    sampling : {"poisson", "shuffled"}
        ``"poisson"``: batches Poisson-sampled with q = B/N (amplified; what most papers
        report); ``"shuffled"``: every example once per epoch in any order, no amplification
        — what fedlab's shuffled batches actually guarantee.
    """
    _check_dp_sgd(num_examples, batch_size, epochs, noise_multiplier, delta, rounds)
    if sampling not in ("poisson", "shuffled"):
        raise ValueError(f"sampling must be 'poisson' or 'shuffled', got {sampling!r}")
    if noise_multiplier == 0:
        return math.inf
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    accountant = rdp.RdpAccountant()
    if sampling == "poisson":
        q = batch_size / num_examples
        steps = rounds * math.ceil(epochs * num_examples / batch_size)
        accountant.compose(dp_accounting.PoissonSampledDpEvent(q, gaussian), steps)
    else:
        accountant.compose(gaussian, rounds * math.ceil(epochs))
    return float(accountant.get_epsilon(delta))


def dp_sgd_statement(
    *,
    num_examples: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float,
    rounds: int = 1,
) -> str:
    """tensorflow-privacy's DP-SGD privacy statement (example-level), over ``rounds`` rounds.

    The statement covers ``epochs × rounds`` passes: a client's guarantee composes over every
    round it trains in. It gives both the ε without amplification (each example once per
    epoch, any order: what fedlab's shuffled batches guarantee) and the Poisson one.
    """
    import tensorflow_privacy

    _check_dp_sgd(num_examples, batch_size, epochs, noise_multiplier, delta, rounds)
    shuffled = dp_sgd_epsilon(
        num_examples=num_examples,
        batch_size=batch_size,
        epochs=epochs,
        noise_multiplier=noise_multiplier,
        delta=delta,
        rounds=rounds,
        sampling="shuffled",
    )
    poisson = dp_sgd_epsilon(
        num_examples=num_examples,
        batch_size=batch_size,
        epochs=epochs,
        noise_multiplier=noise_multiplier,
        delta=delta,
        rounds=rounds,
    )
    head = (
        f"Client DP-SGD over {rounds} round(s) of {epochs:g} local epoch(s) each "
        f"({rounds * epochs:g} epochs composed), example-level, δ = {delta:.3g}:\n"
        f"    ε = {shuffled:.4g} without amplification (fedlab's batches are shuffled, not "
        "Poisson-sampled: this is the one that holds)\n"
        f"    ε = {poisson:.4g} if batches were Poisson-sampled (q = "
        f"{batch_size}/{num_examples})\n"
        "The noise of every client is keyed by fresh OS entropy per client and round.\n\n"
    )
    return head + str(
        tensorflow_privacy.compute_dp_sgd_privacy_statement(
            number_of_examples=num_examples,
            batch_size=batch_size,
            num_epochs=epochs * rounds,
            noise_multiplier=noise_multiplier,
            delta=delta,
            used_microbatching=False,
        )
    )


class _KeyedGaussianSumQuery(gaussian_query.GaussianSumQuery):
    """tensorflow-privacy's ``GaussianSumQuery`` drawing its noise from a ``tf.random.Generator``.

    The stock query draws with a seed-less stateful op; inside a ``tf.function`` traced once
    its stream is fixed at trace time, so every client replayed the same noise. A generator
    is a variable: the runtime re-keys it from OS entropy before every client, and each
    call advances it, so noise is fresh per step, per client and per round.
    """

    def __init__(self, l2_norm_clip: float, stddev: float, generator: Any) -> None:
        super().__init__(l2_norm_clip, stddev)
        self._generator = generator

    def get_noised_result(self, sample_state: Any, global_state: Any) -> Any:
        """The sum plus N(0, stddev²) noise per coordinate from the keyed generator."""

        def add_noise(v: tf.Tensor) -> tf.Tensor:
            noise = self._generator.normal(tf.shape(v), stddev=global_state.stddev)
            return v + tf.cast(noise, v.dtype)

        result = tf.nest.map_structure(add_noise, sample_state)
        event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
        return result, global_state, event


class DPSGDRuntime(KerasRuntime):
    """A client runtime whose local training is DP-SGD (tensorflow-privacy's DP Keras SGD).

    Batches follow :func:`~fedlab.federated.batching.batch_schedule`; every example is its
    own microbatch (per-example clipping). Each client's noise is keyed by 63 fresh bits of
    OS entropy when its training starts: independent across clients and rounds, and not
    derivable from the plan (the server knows the plan's seed).

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
        self._noise = tf.random.Generator.from_seed(secrets.randbits(63))
        query = _KeyedGaussianSumQuery(
            self.l2_norm_clip, self.l2_norm_clip * self.noise_multiplier, self._noise
        )
        self.optimizer = tensorflow_privacy.GenericDPSGDOptimizer(
            dp_sum_query=query, num_microbatches=None, learning_rate=0.01
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
        """DP-SGD at the plan's learning rate; the noise is re-keyed from OS entropy."""
        if plan.optimizer != "sgd" or plan.proximal_mu:
            raise ValueError("DPSGDRuntime supports plain SGD clients without a proximal term")
        self.model.set_weights(global_weights)
        self.optimizer.learning_rate.assign(plan.learning_rate)
        tf.random.set_seed(plan.seed % 2**31)  # batch order and dropout stay plan-seeded
        self._noise.reset_from_seed(secrets.randbits(63))
        return self._dp_step

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """Train the jobs one after another with DP-SGD."""
        return super().train_clients(global_weights, jobs)
