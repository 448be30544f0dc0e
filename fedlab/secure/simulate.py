"""Run one secure-aggregation round in process: the reference driver for tests, benchmarks
and notebook 06 (a cohort-level server stage does the same with real transport).

:func:`run_round` plays every client and the server through the four stages, dropping the
clients named for each stage, and returns the server's result or its failure together with
the bytes each side sent and the time each stage took.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedlab.secure.fixedpoint import FixedPoint, IntegerNoise
from fedlab.secure.graph import plan_neighbours
from fedlab.secure.identity import DeviceIdentity, IdentityRegistry
from fedlab.secure.secagg import (
    ADVERTISE,
    MASKED_INPUT,
    SHARE,
    STAGES,
    UNMASK,
    MaskedInput,
    RoundSetup,
    SecAggAborted,
    SecAggClient,
    SecAggConfig,
    SecAggResult,
    SecAggServer,
)

__all__ = ["RoundOutcome", "cost_sweep", "plain_sum", "run_round", "uniformity"]


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """What one in-process round produced.

    Attributes
    ----------
    result : SecAggResult or None
        The unmasked sum, or ``None`` if the round aborted.
    failure : SecAggAborted or None
        Why it aborted (stage and reason).
    upload_bytes, download_bytes : dict
        Client id -> payload bytes it sent / received over the whole round.
    server_seconds : dict
        Stage -> wall time of the server step.
    client_seconds : dict
        Stage -> median wall time of one client's step.
    server_cpu_seconds, client_cpu_seconds : dict
        The same in process CPU time (what a loaded, shared machine does not inflate).
    masked : dict
        Client id -> the masked vector the server received (only with ``keep_masked``).
    client_refusals : list of (client id, stage, reason)
        Clients that stopped on their own (a check failed on the client side).
    server : SecAggServer
        The server object (its ``dropped`` and ``refused`` say who was lost where).
    """

    result: SecAggResult | None
    failure: SecAggAborted | None
    upload_bytes: dict[int, int]
    download_bytes: dict[int, int]
    server_seconds: dict[str, float]
    client_seconds: dict[str, float]
    server_cpu_seconds: dict[str, float] = field(default_factory=dict)
    client_cpu_seconds: dict[str, float] = field(default_factory=dict)
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    client_refusals: list[tuple[int, str, str]] = field(default_factory=list)
    server: Any = None

    @property
    def ok(self) -> bool:
        """True if the round produced a sum."""
        return self.result is not None


def plain_sum(
    updates: Mapping[int, np.ndarray], num_examples: Mapping[int, int], codec: FixedPoint
) -> tuple[np.ndarray, int]:
    """The float64 sum secure aggregation must reproduce (same clipping and example cap)."""
    total = np.zeros(next(iter(updates.values())).size, dtype=np.float64)
    examples = 0
    for c, x in updates.items():
        n = min(int(num_examples[c]), codec.max_examples)
        w = n if codec.weighted else 1
        total += w * np.clip(np.asarray(x, dtype=np.float64).ravel(), -codec.clip, codec.clip)
        examples += n
    return total, examples


def run_round(
    setup: RoundSetup,
    updates: Mapping[int, np.ndarray],
    num_examples: Mapping[int, int],
    *,
    drop: Mapping[str, Collection[int]] | None = None,
    identities: Mapping[int, DeviceIdentity] | None = None,
    registry: IdentityRegistry | None = None,
    noise: IntegerNoise | None = None,
    keep_masked: bool = False,
) -> RoundOutcome:
    """Play one round with every client of ``setup.cohort`` in this process.

    Parameters
    ----------
    setup : RoundSetup
        The round.
    updates, num_examples : mapping
        Each cohort client's update and example count.
    drop : mapping, optional
        Stage name (:data:`fedlab.secure.secagg.STAGES`) -> clients that send nothing from
        that stage on (e.g. ``{"masked_input": {3, 7}}``).
    identities, registry : optional
        Device keys that sign the advertised keys, and the server's registry that checks them.
    noise : callable, optional
        Client-side integer noise hook.
    keep_masked : bool
        Keep the masked vectors (to show what the server sees).
    """
    drop = {k: set(v) for k, v in (drop or {}).items()}
    unknown = set(drop) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; stages are {STAGES}")
    missing = set(setup.cohort) - set(updates)
    if missing:
        raise ValueError(f"no update for cohort clients {sorted(missing)}")
    gone: set[int] = set()
    up = {c: 0 for c in setup.cohort}
    down = {c: 0 for c in setup.cohort}
    server_s: dict[str, float] = {}
    client_s: dict[str, float] = {}
    server_cpu: dict[str, float] = {}
    client_cpu: dict[str, float] = {}
    refusals: list[tuple[int, str, str]] = []
    server = SecAggServer(setup, registry=registry)
    ids = identities or {}
    clients = {c: SecAggClient(setup, c, identity=ids.get(c)) for c in setup.cohort}
    masked: dict[int, np.ndarray] = {}

    def play(stage: str, inbox: Mapping[int, Any], act: Any) -> list[Any]:
        gone.update(drop.get(stage, ()))
        out, spent, cpu = [], [], []
        for c in sorted(inbox):
            down[c] += inbox[c].nbytes if inbox[c] is not None else 0
            if c in gone:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                msg = act(clients[c], inbox[c])
            except SecAggAborted as exc:
                refusals.append((c, stage, exc.reason))
                gone.add(c)
                continue
            spent.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            up[c] += msg.nbytes
            out.append(msg)
        client_s[stage] = float(np.median(spent)) if spent else 0.0
        client_cpu[stage] = float(np.median(cpu)) if cpu else 0.0
        return out

    def serve(stage: str, fn: Any, msgs: list[Any]) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(msgs)
        finally:
            server_s[stage] = time.perf_counter() - t0
            server_cpu[stage] = time.process_time() - c0

    def masked_input(client: SecAggClient, delivery: Any) -> MaskedInput:
        msg = client.masked_input(
            delivery, updates[client.client_id], num_examples[client.client_id], noise=noise
        )
        if keep_masked:
            masked[client.client_id] = msg.vector.copy()
        return msg

    result = failure = None
    try:
        msgs = play(ADVERTISE, dict.fromkeys(setup.cohort), lambda cl, _: cl.advertise_keys())
        broadcasts = serve(ADVERTISE, server.receive_advertisements, msgs)
        msgs = play(SHARE, broadcasts, lambda cl, b: cl.share_keys(b))
        deliveries = serve(SHARE, server.receive_shares, msgs)
        msgs = play(MASKED_INPUT, deliveries, masked_input)
        requests = serve(MASKED_INPUT, server.receive_masked_inputs, msgs)
        msgs = play(UNMASK, requests, lambda cl, r: cl.unmask(r))
        result = serve(UNMASK, server.receive_unmask_responses, msgs)
    except SecAggAborted as exc:
        failure = exc
    return RoundOutcome(
        result=result,
        failure=failure,
        upload_bytes=up,
        download_bytes=down,
        server_seconds=server_s,
        client_seconds=client_s,
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        masked=masked,
        client_refusals=refusals,
        server=server,
    )


def uniformity(vector: np.ndarray, *, bins: int = 64) -> dict[str, float]:
    """How uniform a ring vector looks: a chi-square test on its top bits.

    Returns the statistic, its degrees of freedom and the Wilson-Hilferty z-score (about
    N(0, 1) for uniform data; a plain encoding of an update scores in the hundreds).
    """
    v = np.asarray(vector)
    if v.dtype not in (np.uint32, np.uint64) or v.size < 5 * bins:
        raise ValueError(
            f"need a uint32/uint64 vector of >= {5 * bins} entries, got {v.dtype} {v.shape}"
        )
    if bins < 2 or bins & (bins - 1):
        raise ValueError(f"bins must be a power of two >= 2, got {bins!r}")
    shift = 8 * v.dtype.itemsize - int(np.log2(bins))
    counts = np.bincount((v >> v.dtype.type(shift)).astype(np.int64), minlength=bins)
    expected = v.size / bins
    chi2 = float(np.sum((counts - expected) ** 2) / expected)
    k = bins - 1
    z = ((chi2 / k) ** (1 / 3) - (1 - 2 / (9 * k))) / np.sqrt(2 / (9 * k))
    return {"chi2": chi2, "dof": float(k), "z": float(z)}


def cost_sweep(
    cohorts: Collection[int],
    dropouts: Collection[float],
    *,
    dimension: int,
    graph: str = "complete",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Protocol cost against cohort size and dropout rate (clients lost after sharing keys).

    Parameters
    ----------
    cohorts, dropouts : collections
        Cohort sizes and dropout fractions to try (every pair).
    dimension : int
        Update parameters.
    graph : {"complete", "planned"}
        Bonawitz's complete graph, or the SecAgg+ degree :func:`plan_neighbours` picks for
        each dropout rate.
    seed : int
        Seeds updates, example counts, who drops and the graph.

    Returns
    -------
    list of dict
        One row per pair: upload expansion over float32, median client masking CPU ms,
        server unmasking CPU ms, plain weighted-sum CPU ms, and whether the round succeeded.
    """
    if graph not in ("complete", "planned"):
        raise ValueError(f"graph must be 'complete' or 'planned', got {graph!r}")
    rows = []
    for n in cohorts:
        rng = np.random.default_rng(seed)
        updates = {c: rng.normal(0, 0.05, dimension).astype(np.float32) for c in range(n)}
        counts = {c: int(rng.integers(1, 100)) for c in range(n)}
        for p in dropouts:
            if graph == "planned":
                k, t = plan_neighbours(n, min(p, 0.49))
            else:
                k, t = n - 1, (n - 1) // 2 + 1
            config = SecAggConfig(threshold=t, clip=1.0, num_neighbours=k, max_examples=100)
            setup = RoundSetup.create(
                config,
                round_index=0,
                cohort=range(n),
                dimension=dimension,
                seed=f"sweep {seed} {n} {p}".encode().ljust(32, b"."),
            )
            lost = set(rng.choice(n, size=round(p * n), replace=False).tolist())
            out = run_round(setup, updates, counts, drop={MASKED_INPUT: lost})
            survivors = sorted(set(range(n)) - lost)
            c0 = time.process_time()
            total = np.zeros(dimension)
            for c in survivors:
                total += counts[c] * updates[c]
            plain_ms = 1e3 * (time.process_time() - c0)
            full = [out.upload_bytes[c] for c in survivors]
            rows.append(
                {
                    "cohort": n,
                    "dropout": p,
                    "degree": setup.degree,
                    "threshold": t,
                    "ok": out.ok,
                    "upload expansion": float(np.mean(full)) / (4 * dimension),
                    "client masking ms": 1e3 * out.client_cpu_seconds.get(MASKED_INPUT, 0.0),
                    "server unmask ms": 1e3 * out.server_cpu_seconds.get(UNMASK, float("nan")),
                    "plain aggregate ms": plain_ms,
                }
            )
    return rows
