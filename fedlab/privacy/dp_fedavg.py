"""DP-FedAvg at the aggregator (McMahan et al. 2018), on tensorflow-privacy's DP queries.

A wrapper around any strategy: every client's delta is clipped to L2 norm C and summed,
Gaussian noise of standard deviation z·C is added to the sum, and the sum is divided by
the *expected* number of clients (a fixed denominator, so the sensitivity of the average
is C / expected). The noised average is then handed to the wrapped strategy as a single
update, so the server optimizer (FedAvg, FedAvgM, FedAdam…) is unchanged. Clients count
equally (not by example count): weighting by examples would void the sensitivity bound.

With ``target_quantile`` set, the clipping norm adapts to that quantile of update norms
(Andrew et al. 2021) through tensorflow-privacy's ``QuantileAdaptiveClipSumQuery``.

The noise is secret by default: every round's noise is drawn by TensorFlow's generator
keyed with 63 fresh bits of OS entropy (``secrets``), never stored and never reused, so
nobody — not even whoever configured the run — can predict it and subtract it from the
released model. ``reproducible_noise=True`` derives each round's key from ``seed`` instead
(for tests and teaching); the privacy statement then says that the guarantee is void
against anyone who holds the seed.

Norms are computed in float64 after scaling by the largest entry, so no finite update
overflows; an update with a NaN or infinite entry has no norm and is left out of the sum
(its device contributes nothing that round, which the sensitivity bound allows).
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedlab._tf import tf  # first: tensorflow_privacy must see fedlab's Keras choice

# isort: split
from tensorflow_privacy.privacy.dp_query import (
    gaussian_query,
    normalized_query,
    quantile_adaptive_clip_sum_query,
)

from fedlab.federated.reduce import CohortSum
from fedlab.federated.strategies import StrategyState
from fedlab.federated.strategies.fedavg import FedAvg
from fedlab.federated.types import ClientUpdate, Weights

__all__ = ["DPFedAvg", "clip_by_global_norm", "global_norm"]

_log = logging.getLogger(__name__)


def global_norm(delta: Weights) -> float:
    """The L2 norm of all arrays together, without overflow; ``nan`` if any entry is not finite.

    Computed in float64 after dividing by the largest magnitude, so updates whose squares
    overflow (entries beyond ~1e154 in float64, ~1e19 in float32) still get their finite norm.
    """
    arrays = [np.asarray(d, dtype=np.float64) for d in delta]
    if not all(np.isfinite(a).all() for a in arrays):
        return math.nan
    largest = max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0)
    if largest == 0.0:
        return 0.0
    return largest * math.sqrt(sum(float(np.sum(np.square(a / largest))) for a in arrays))


def clip_by_global_norm(delta: Weights, clip: float) -> tuple[Weights, float]:
    """``delta`` scaled so that its global L2 norm is at most ``clip``; also the original norm.

    Raises
    ------
    ValueError
        If ``clip`` is not > 0, or ``delta`` has a NaN or infinite entry (no norm to clip to).
    """
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be > 0, got {clip!r}")
    norm = global_norm(delta)
    if math.isnan(norm):
        raise ValueError("delta has a NaN or infinite entry: it has no norm to clip")
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return tuple((np.asarray(d, np.float64) * scale).astype(np.float32) for d in delta), norm


def _noised_in_private_graph(query: Any, sample_state: Any, global_state: Any, seed: int) -> Any:
    """``query.get_noised_result`` in a graph of its own, keyed by ``seed``.

    tensorflow-privacy's queries draw noise from TF's seed-less random ops. A fresh graph
    with its own graph-level seed gives each round a noise stream of its own (from OS
    entropy, or reproducible from a seed) without touching the eager global seed, which
    tf.function keys its traces on (setting it would retrace every compiled function).
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
    reproducible_noise : bool
        False (default): every round's noise is keyed by fresh OS entropy, unpredictable
        and never reused. True: keyed by ``seed`` and the strategy's round counter, so a run
        can be repeated exactly — and the guarantee is void against anyone holding the seed.
    seed : int
        Seed of the noise when ``reproducible_noise`` is True (ignored otherwise).
    """

    noise_multiplier: float
    clip_norm: float
    expected_clients: int
    inner: Any = field(default_factory=FedAvg)
    target_quantile: float | None = None
    clip_learning_rate: float = 0.2
    clipped_count_stddev: float | None = None
    reproducible_noise: bool = False
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
        if not isinstance(self.reproducible_noise, bool):
            raise TypeError(f"reproducible_noise must be a bool, got {self.reproducible_noise!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {self.seed!r}")

    def describe(self) -> list[str]:
        """The mechanism, in the words of a privacy statement (clip, denominator, noise)."""
        clip = (
            f"clipping norm C adapted towards the {self.target_quantile:g} quantile of update "
            f"norms from C = {self.clip_norm:g} (noised count included in the accounting)"
            if self.adaptive
            else f"clipping norm C = {self.clip_norm:g}"
        )
        lines = [
            f"each client's update is clipped to L2 norm C ({clip}); clients count equally;",
            f"Gaussian noise of standard deviation z·C (z = {self.noise_multiplier:g}) is "
            "added to the sum of clipped updates;",
            f"the noised sum is divided by the fixed denominator {self.expected_clients} "
            "(expected clients), then the server step is applied.",
        ]
        if self.reproducible_noise:
            lines.append(
                f"NOISE IS REPRODUCIBLE (reproducible_noise=True, seed {self.seed}): the "
                "guarantee is VOID against anyone who holds the seed — they can regenerate the "
                "noise and subtract it."
            )
        else:
            lines.append(
                "noise: keyed each round by 63 fresh bits of OS entropy (secrets), never "
                "stored or reused; the generator is TensorFlow's Philox."
            )
        return lines

    @property
    def client_proximal_mu(self) -> float:
        """The wrapped strategy's μ."""
        return float(self.inner.client_proximal_mu)

    @property
    def needs_individual_updates(self) -> bool:
        """Adaptive clipping needs each client's clipped bit, which a secure sum hides."""
        return self.adaptive

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
                sample = query.initial_sample_state(
                    [tf.zeros(tf.shape(s)[1:], s.dtype) for s in stacked]
                )
                count = tf.shape(stacked[0])[0]

                def body(i: tf.Tensor, sample: Any) -> tuple[tf.Tensor, Any]:
                    return i + 1, query.accumulate_record(params, sample, [s[i] for s in stacked])

                _, sample = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), sample))
                return sample

            self._cache.update(shapes=shapes, query=query, clip_and_sum=clip_and_sum)
        return self._cache["query"], self._cache["clip_and_sum"]

    def _noise_seed(self, round_index: int) -> int:
        """The key of this round's noise: fresh OS entropy, or derived from ``seed``."""
        if not self.reproducible_noise:
            return secrets.randbits(63)
        digest = hashlib.sha256(f"{self.seed}:{round_index}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1

    @staticmethod
    def _bounded_records(updates: Sequence[ClientUpdate], clip: float) -> list[Weights]:
        """The updates that have a norm, each scaled to norm <= 2·clip in float64.

        tensorflow-privacy clips with ``tf.clip_by_global_norm`` in float32, whose norm
        overflows to inf for entries beyond ~1e19 and then turns the whole record into NaN.
        Scaling first to 2·clip (still above the clip, so the query clips it and counts it as
        clipped exactly as it would the original) keeps every record finite. Updates with a
        NaN or infinite entry are left out: that device contributes nothing this round.
        """
        records: list[Weights] = []
        for update in updates:
            norm = global_norm(update.delta)
            if not math.isfinite(norm):
                _log.warning(
                    "DP-FedAvg left out client %s: its update has a NaN or infinite entry",
                    update.client_id,
                )
                continue
            if norm > 2 * clip:
                records.append(clip_by_global_norm(update.delta, 2 * clip)[0])
            else:
                records.append(tuple(np.asarray(d, np.float32) for d in update.delta))
        return records

    def aggregate(
        self, weights: Weights, updates: Sequence[ClientUpdate], state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Clip, sum, noise, divide by ``expected_clients``; then the inner strategy's step."""
        query, clip_and_sum = self._compiled(weights)
        template = query.initial_global_state()
        flat = [tf.constant(v) for v in state["dp.query"]]
        global_state = tf.nest.pack_sequence_as(template, flat)
        round_index = int(state["dp.round"][0])
        records = self._bounded_records(updates, self.current_clip(state))
        stacked = [
            tf.constant(
                np.stack([r[i] for r in records])
                if records
                else np.zeros((0, *weights[i].shape), np.float32),
                dtype=tf.float32,
            )
            for i in range(len(weights))
        ]
        sample_state = clip_and_sum(flat, stacked)
        result, new_global = _noised_in_private_graph(
            query, sample_state, global_state, self._noise_seed(round_index)
        )
        return self._step_on_noised(weights, result, new_global, round_index, state)

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """Refused: DP-FedAvg adds its noise while reducing, so an already-reduced delta
        would skip it. Use :meth:`aggregate` (server-side clipping) or :meth:`aggregate_sum`
        (client-side clipping)."""
        raise TypeError(
            "DPFedAvg adds noise while reducing the cohort: call aggregate(updates) or "
            "aggregate_sum(cohort), not server_step(delta)"
        )

    def aggregate_sum(
        self, weights: Weights, cohort: CohortSum, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """The client-side clipping form: every client clipped its own update to
        :meth:`current_clip` and the server only holds their unweighted sum (secure
        aggregation gives exactly that). Gaussian noise of std ``z·C`` is added to the sum,
        which is divided by ``expected_clients``: the same mechanism, and the same ledger
        event, as :meth:`aggregate`. Clipping is then the clients' duty (the privacy
        statement says so); the sum must weigh every client once (``weight == count``)."""
        if self.adaptive:
            raise ValueError(
                "adaptive clipping needs each client's clipped/unclipped bit in the sum; "
                "use fixed clipping (target_quantile=None) with aggregate_sum"
            )
        if cohort.weight != cohort.count:
            raise ValueError(
                f"DP-FedAvg counts clients equally: the cohort sum must have weight == count, "
                f"got weight {cohort.weight!r} for {cohort.count} clients"
            )
        if len(cohort.total) != len(weights) or any(
            np.shape(t) != np.shape(w) for t, w in zip(cohort.total, weights, strict=True)
        ):
            raise ValueError(
                f"cohort sum shapes {[np.shape(t) for t in cohort.total]} do not fit the model "
                f"{[np.shape(w) for w in weights]}"
            )
        limit = cohort.count * self.current_clip(state) * (1 + 1e-5)
        norm = global_norm(cohort.total)
        if not norm <= limit:
            raise ValueError(
                f"the sum of {cohort.count} clipped updates has norm {norm:.6g} > "
                f"{cohort.count}·C = {limit:.6g}: some client did not clip"
            )
        query, _ = self._compiled(weights)
        template = query.initial_global_state()
        global_state = tf.nest.pack_sequence_as(
            template, [tf.constant(v) for v in state["dp.query"]]
        )
        round_index = int(state["dp.round"][0])
        sample_state = [np.asarray(t, np.float32) for t in cohort.total]
        result, new_global = _noised_in_private_graph(
            query, sample_state, global_state, self._noise_seed(round_index)
        )
        return self._step_on_noised(weights, result, new_global, round_index, state)

    def _step_on_noised(
        self,
        weights: Weights,
        result: Any,
        new_global: Any,
        round_index: int,
        state: StrategyState,
    ) -> tuple[Weights, StrategyState]:
        """The inner strategy's server step on the noised average; the query state and the
        round counter move on."""
        noised = tuple(np.asarray(r, dtype=np.float32) for r in result)
        inner_state = {k: v for k, v in state.items() if not k.startswith("dp.")}
        new_weights, new_inner = self.inner.server_step(weights, noised, inner_state)
        out = dict(new_inner)
        out["dp.query"] = tuple(
            np.asarray(t, dtype=np.float32) for t in tf.nest.flatten(new_global)
        )
        out["dp.round"] = (np.asarray(round_index + 1, dtype=np.int64),)
        return new_weights, out
