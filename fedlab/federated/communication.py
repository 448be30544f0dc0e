"""Experiments on bytes on the air: one federation per codec, accuracy against uplink bytes.

The building blocks notebook 07 and ``benchmarks/communication.py`` share:

* :func:`codec_pipeline` — a pipeline whose clients encode with a codec and whose server
  decodes it (:mod:`fedlab.federated.codec_stage`);
* :func:`rebuild_federation` — the same federation (data, runtime, config, strategy, device
  profiles) with another pipeline, downlink, upload schedule or sampler, from round 0;
* :func:`run_codecs` — one federation per codec, same seed and rounds, one row each;
* :func:`pareto_front` — which rows no other row beats on both bytes and accuracy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedlab.codec import Codec, ModelDelta
from fedlab.federated.codec_stage import DecodeUpdate, EncodeUpdate
from fedlab.federated.config import FederationConfig
from fedlab.federated.dispatch import SimulatedDispatcher
from fedlab.federated.federation import Federation
from fedlab.federated.observers import Observer
from fedlab.federated.selection import ClientProfile, Sampler
from fedlab.federated.stages import Pipeline

__all__ = ["codec_pipeline", "pareto_front", "rebuild_federation", "run_codecs"]


def codec_pipeline(codec: Codec, *, base: Pipeline | None = None) -> Pipeline:
    """``base`` (identity + validation by default) with ``EncodeUpdate(codec)`` as the last
    client stage and ``DecodeUpdate(codec)`` as the first server stage."""
    if not isinstance(codec, Codec):
        raise TypeError(f"codec must be a fedlab.codec Codec, got {codec!r}")
    return (base or Pipeline()).with_stages(
        client=(EncodeUpdate(codec),), server=(DecodeUpdate(codec),)
    )


def rebuild_federation(
    template: Federation,
    *,
    pipeline: Pipeline | None = None,
    downlink: ModelDelta | None = None,
    schedule: Any = None,
    sampler: Sampler | None = None,
    profiles: Sequence[ClientProfile] | None = None,
    config: FederationConfig | None = None,
    observers: Iterable[Observer] = (),
) -> Federation:
    """A fresh federation (round 0, initial model) like ``template`` — same data, client
    runtime, config, strategy, profiles and epoch policy — with the given pipeline
    (``template``'s by default), downlink delta, upload schedule
    (:class:`~fedlab.federated.scheduling.UploadSchedule`), sampler, device profiles
    (e.g. with availability traces) and config.

    A sampler that needs the new federation's dispatcher (``EligibleFirstSampler``) is
    set afterwards: ``fed.sampler = EligibleFirstSampler(fed.dispatcher)``.

    The runtime object is shared (client runtimes keep no state between rounds); the
    strategy is copied so that server-optimizer state is never shared.
    """
    if not isinstance(template, Federation):
        raise TypeError(f"template must be a Federation, got {type(template).__name__}")
    if template.data is None:
        raise ValueError("rebuild_federation needs a federation that holds its clients' data")
    pipe = pipeline if pipeline is not None else template.pipeline
    devices = tuple(profiles) if profiles is not None else template.profiles
    cfg = config if config is not None else template.config
    dispatcher = None
    if downlink is not None or schedule is not None:
        dispatcher = SimulatedDispatcher(
            data=template.data,
            runtime=template.runtime,
            pipeline=pipe,
            profiles=devices,
            dropout_rate=cfg.dropout_rate,
            seconds_per_example=cfg.seconds_per_example,
            downlink=downlink,
            schedule=schedule,
        )
    return Federation(
        data=template.data,
        runtime=template.runtime,
        config=cfg,
        strategy=copy.deepcopy(template.strategy),
        sampler=sampler if sampler is not None else template.sampler,
        pipeline=pipe,
        profiles=devices,
        epoch_policy=template.epoch_policy,
        observers=observers,
        dispatcher=dispatcher,
    )


def run_codecs(
    template: Federation,
    codecs: Mapping[str, Codec | None],
    rounds: int,
    *,
    target_accuracy: float | None = None,
) -> list[dict[str, Any]]:
    """Train one federation per codec (``None``: no codec stage, dense float32 tensors)
    for ``rounds`` rounds from ``template``'s initial model; one row per codec.

    Each row: ``codec`` (name), ``final_accuracy``, ``mean_accuracy_last_5``,
    ``uplink_bytes`` (all rounds, exact payload bytes that arrived), ``float32_bytes``
    (the same updates as dense float32), ``ratio`` (float32 / uplink), ``bytes_per_update``,
    ``rounds_to_target`` and ``uplink_bytes_to_target`` (None if never reached),
    ``accuracy`` (per round) and ``cumulative_uplink_bytes`` (per round).
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    rows = []
    for name, codec in codecs.items():
        pipeline = codec_pipeline(codec, base=template.pipeline) if codec else template.pipeline
        history = rebuild_federation(template, pipeline=pipeline).run(rounds)
        acc = history.series("test_accuracy")
        up = history.series("bytes_up")
        cumulative = np.cumsum(up)
        updates = int(sum(len(r.completed) + len(r.rejected) for r in history))
        raw = int(history.stage_bytes("update").sum())
        reached = history.rounds_to_accuracy(target_accuracy) if target_accuracy else None
        rows.append(
            {
                "codec": name,
                "final_accuracy": float(acc[-1]),
                "mean_accuracy_last_5": float(np.nanmean(acc[-5:])),
                "uplink_bytes": int(cumulative[-1]),
                "float32_bytes": raw,
                "ratio": raw / cumulative[-1] if cumulative[-1] else math.nan,
                "bytes_per_update": float(cumulative[-1] / updates) if updates else math.nan,
                "rounds_to_target": reached,
                "uplink_bytes_to_target": int(cumulative[reached - 1]) if reached else None,
                "accuracy": [float(a) for a in acc],
                "cumulative_uplink_bytes": [int(b) for b in cumulative],
            }
        )
    return rows


def pareto_front(
    rows: Sequence[Mapping[str, Any]],
    *,
    cost: str = "uplink_bytes",
    value: str = "final_accuracy",
) -> list[bool]:
    """For each row, whether no other row has ``cost`` ≤ and ``value`` ≥ with one strictly
    better (the accuracy-against-bytes Pareto front)."""
    points = [(float(r[cost]), float(r[value])) for r in rows]
    out = []
    for i, (c, v) in enumerate(points):
        dominated = any(
            (c2 <= c and v2 >= v) and (c2 < c or v2 > v)
            for j, (c2, v2) in enumerate(points)
            if j != i
        )
        out.append(not dominated)
    return out
