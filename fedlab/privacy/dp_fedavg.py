"""DP-FedAvg at the aggregator (McMahan et al. 2018), on tensorflow-privacy's DP queries.

A wrapper around any strategy: every client's delta is clipped to L2 norm C and summed,
Gaussian noise of standard deviation z·C is added to the sum, and the sum is divided by
the *expected* number of clients (a fixed denominator, so the sensitivity of the average
is C / expected). The noised average is then handed to the wrapped strategy as a single
update, so the server optimizer (FedAvg, FedAvgM, FedAdam…) is unchanged. Clients count
equally (not by example count): weighting by examples would void the sensitivity bound.

With ``target_quantile`` set, the clipping norm adapts to that quantile of update norms
(Andrew et al. 2021) through tensorflow-privacy's ``QuantileAdaptiveClipSumQuery``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tensorflow_privacy.privacy.dp_query import (
    gaussian_query,
    normalized_query,
    quantile_adaptive_clip_sum_query,
)

from fedlab._tf import tf
from fedlab.federated.strategies import StrategyState
from fedlab.federated.strategies.fedavg import FedAvg
from fedlab.federated.types import ClientUpdate, Weights

__all__ = ["DPFedAvg", "clip_by_global_norm"]


def clip_by_global_norm(delta: Weights, clip: float) -> tuple[Weights, float]:
    """``delta`` scaled so that its global L2 norm is at most ``clip``; also the original norm."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip!r}")
    norm = math.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64))) for d in delta))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return tuple((d * scale).astype(np.float32) for d in delta), norm


def _noised_in_private_graph(query: Any, sample_state: Any, global_state: Any, seed: int) -> Any:
    """``query.get_noised_result`` in a graph of its own with a graph-level seed.

    tensorflow-privacy's queries draw noise from TF's seed-less random ops. A graph-level
    seed makes each round's noise reproducible (and resumable) without touching the eager
    global seed, which tf.function keys its traces on (setting it would retrace every
    compiled function of the process).
    """
    to_np = lambda t: np.asarray(t)  # noqa: E731
    samples = tf.nest.map_structure(to_np, sample_state)
    states = tf.nest.map_structure(to_np, global_state)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        result, new_state, _ = query.get_noised_result(
            tf.nest.map_structure(tf.constant, samples), tf.nest.map_structure(tf.constant, states)
        )
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run((result, new_state))


def _concrete_event(event: Any, session: Any) -> Any:
    """A DP event whose graph-tensor parameters are evaluated to Python floats."""
    import dp_accounting

    if isinstance(event, dp_accounting.GaussianDpEvent):
        z = event.noise_multiplier
        return dp_accounting.GaussianDpEvent(float(session.run(z) if tf.is_tensor(z) else z))
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return dp_accounting.ComposedDpEvent([_concrete_event(e, session) for e in event.events])
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return dp_accounting.SelfComposedDpEvent(_concrete_event(event.event, session), event.count)
    raise TypeError(f"unexpected DP event from the query: {event!r}")


@dataclass(frozen=True, slots=True)
class DPFedAvg:
    """Differentially private aggregation wrapped around ``inner`` (FedAvg by default).

    Parameters
    ----------
    noise_multiplier : float
        z >= 0: noise standard deviation over the clipping norm.
    clip_norm : float
        C > 0: (initial) L2 clipping norm of a client's delta.
    expected_clients : int
        The fixed denominator: clients per round the server expects.
    inner : Strategy
        The server optimizer applied to the noised average delta.
    target_quantile : float, optional
        Adapt C towards this quantile of update norms (e.g. 0.5).
    clip_learning_rate : float
        Geometric step of the adaptive clip.
    clipped_count_stddev : float, optional
        Noise on the count of unclipped updates (adaptive only); default ``expected/20``
        as recommended by Andrew et al.
    seed : int
        Seed of the noise (each round derives its own), so runs are reproducible.
    """

    noise_multiplier: float
    clip_norm: float
    expected_clients: int
    inner: Any = field(default_factory=FedAvg)
    target_quantile: float | None = None
    clip_learning_rate: float = 0.2
    clipped_count_stddev: float | None = None
    seed: int = 0
    name: str = "dp-fedavg"
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier z must be >= 0, got {self.noise_multiplier!r}")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm!r}")
        if not isinstance(self.expected_clients, int) or self.expected_clients < 1:
            raise ValueError(f"expected_clients must be an int >= 1, got {self.expected_clients!r}")
        if self.target_quantile is not None and not 0 < self.target_quantile < 1:
            raise ValueError(f"target_quantile must be in (0, 1), got {self.target_quantile!r}")
        if not self.clip_learning_rate > 0:
            raise ValueError(f"clip_learning_rate must be > 0, got {self.clip_learning_rate!r}")

    @property
    def client_proximal_mu(self) -> float:
        """The wrapped strategy's μ."""
        return float(self.inner.client_proximal_mu)

    @property
    def adaptive(self) -> bool:
        """Whether the clipping norm adapts."""
        return self.target_quantile is not None

    def _query(self) -> Any:
        if self.adaptive:
            stddev = self.clipped_count_stddev
            if stddev is None:
                stddev = self.expected_clients / 20
            sum_query = quantile_adaptive_clip_sum_query.QuantileAdaptiveClipSumQuery(
                initial_l2_norm_clip=self.clip_norm,
                noise_multiplier=self.noise_multiplier,
                target_unclipped_quantile=self.target_quantile,
                learning_rate=self.clip_learning_rate,
                clipped_count_stddev=stddev,
                expected_num_records=self.expected_clients,
                geometric_update=True,
            )
        else:
            sum_query = gaussian_query.GaussianSumQuery(
                l2_norm_clip=self.clip_norm, stddev=self.noise_multiplier * self.clip_norm
            )
        return normalized_query.NormalizedQuery(sum_query, denominator=float(self.expected_clients))

    def init_state(self, weights: Weights) -> StrategyState:
        """The inner strategy's state plus the query's (flattened) and a round counter."""
        state = dict(self.inner.init_state(weights))
        query_state = tf.nest.flatten(self._query().initial_global_state())
        state["dp.query"] = tuple(np.asarray(t, dtype=np.float32) for t in query_state)
        state["dp.round"] = (np.zeros((), np.int64),)
        return state

    def current_clip(self, state: StrategyState) -> float:
        """The clipping norm the next round will use."""
        query = self._query()
        template = query.initial_global_state()
        restored = tf.nest.pack_sequence_as(template, [tf.constant(v) for v in state["dp.query"]])
        if self.adaptive:
            return float(restored.numerator_state.sum_state.l2_norm_clip)
        return float(restored.numerator_state.l2_norm_clip)

    def mechanism_event(self) -> Any:
        """The unsampled DP event of one round, as tensorflow-privacy's query reports it
        (for adaptive clipping it includes the noised clipped-count query)."""
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.set_random_seed(0)  # noise is built, never run: only the event is kept
            query = self._query()
            state = query.initial_global_state()
            sample = query.initial_sample_state([tf.zeros([1])])
            _, _, event = query.get_noised_result(sample, state)
            with tf.compat.v1.Session(graph=graph) as session:
                return _concrete_event(event, session)

    def _compiled(self, weights: Weights) -> tuple[Any, Any]:
        """The query and a compiled clip-and-sum over a stack of records (built once)."""
        shapes = tuple(w.shape for w in weights)
        if self._cache.get("shapes") != shapes:
            query = self._query()
            template = query.initial_global_state()
            signature = (
                [tf.TensorSpec([], tf.float32) for _ in tf.nest.flatten(template)],
                [tf.TensorSpec([None, *shape], tf.float32) for shape in shapes],
            )

            @tf.function(input_signature=signature)
            def clip_and_sum(flat_state: list[tf.Tensor], stacked: list[tf.Tensor]) -> Any:
                global_state = tf.nest.pack_sequence_as(template, flat_state)
                params = query.derive_sample_params(global_state)
                sample = query.initial_sample_state([s[0] for s in stacked])
                count = tf.shape(stacked[0])[0]

                def body(i: tf.Tensor, sample: Any) -> tuple[tf.Tensor, Any]:
                    return i + 1, query.accumulate_record(params, sample, [s[i] for s in stacked])

                _, sample = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), sample))
                return sample

            self._cache.update(shapes=shapes, query=query, clip_and_sum=clip_and_sum)
        return self._cache["query"], self._cache["clip_and_sum"]

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Clip, sum, noise, divide by ``expected_clients``; then the inner strategy's step."""
        query, clip_and_sum = self._compiled(weights)
        template = query.initial_global_state()
        flat = [tf.constant(v) for v in state["dp.query"]]
        global_state = tf.nest.pack_sequence_as(template, flat)
        round_index = int(state["dp.round"][0])
        stacked = [
            tf.constant(np.stack([u.delta[i] for u in updates]), dtype=tf.float32)
            for i in range(len(weights))
        ]
        sample_state = clip_and_sum(flat, stacked)
        digest = hashlib.sha256(f"{self.seed}:{round_index}".encode()).digest()
        result, new_global = _noised_in_private_graph(
            query, sample_state, global_state, int.from_bytes(digest[:4], "little")
        )
        noised = tuple(np.asarray(r, dtype=np.float32) for r in result)
        inner_state = {k: v for k, v in state.items() if not k.startswith("dp.")}
        new_weights, new_inner = self.inner.aggregate(
            weights, [ClientUpdate(client_id=-1, delta=noised, num_examples=1)], inner_state
        )
        out = dict(new_inner)
        out["dp.query"] = tuple(
            np.asarray(t, dtype=np.float32) for t in tf.nest.flatten(new_global)
        )
        out["dp.round"] = (np.asarray(round_index + 1, dtype=np.int64),)
        return new_weights, out
