"""Gateways that pre-aggregate the updates of microcontroller-class devices.

An MCU (a Cortex-M sensor node on BLE, LoRa or 802.15.4) trains a tiny model but cannot
hold a TLS session to the server or afford its uplink; a **gateway** near it (a Raspberry
Pi on mains power) collects the updates of the MCUs behind it, pre-aggregates them and
forwards *one* update: the example-weighted mean of its group, with ``num_examples`` the
group's total. The server then treats every gateway as one client, and FedAvg over
gateways equals FedAvg over all MCUs (the weights compose exactly).

In the simulator a :class:`GatewayRuntime` is the client runtime of a federation whose
clients are the gateways (:func:`gateway_dataset` builds their data: each gateway holds its
MCUs' data for the example counts; it trains nothing itself). All MCUs of a round train in
one call of the inner runtime (vectorised when it is).

**With secure aggregation** (``secure=SecAggConfig(...)``) the gateway never sees an
individual MCU update in the clear: each group runs SecAgg+ (:mod:`fedlab.secure`) with
the MCUs as clients and the *gateway as the aggregator* — the MCUs mask their fixed-point
updates (pairwise masks agreed with each other, Shamir shares of their secrets relayed by
the gateway), the gateway receives only masked vectors and learns only the group's sum.
For the server not to see the gateways' sums either, run the federation with
``secure_aggregation=`` over the gateways as well (two levels of SecAgg). The MCUs' cost
is the protocol's: X25519 key agreement, Shamir shares for their group's neighbours and a
masked vector as long as the model — fine for a few-thousand-parameter model on a
Cortex-M4, where one masked vector is a few kB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedlab.data.federated_dataset import ClientData, FederatedDataset
from fedlab.federated.batching import client_seed
from fedlab.federated.runtime_base import ClientFailure, ClientRuntime
from fedlab.federated.types import ClientPlan, ClientUpdate, Weights
from fedlab.secure import RoundSetup, SecAggConfig
from fedlab.secure.simulate import run_round

__all__ = ["GatewayRuntime", "gateway_dataset", "group_devices"]


def group_devices(num_devices: int, per_gateway: int) -> tuple[tuple[int, ...], ...]:
    """Consecutive device ids in groups of ``per_gateway`` (the last group may be smaller)."""
    if not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"num_devices must be an int >= 1, got {num_devices!r}")
    if not isinstance(per_gateway, int) or per_gateway < 1:
        raise ValueError(f"per_gateway must be an int >= 1, got {per_gateway!r}")
    return tuple(
        tuple(range(start, min(start + per_gateway, num_devices)))
        for start in range(0, num_devices, per_gateway)
    )


def _check_groups(groups: Sequence[Sequence[int]], num_devices: int) -> None:
    seen: set[int] = set()
    for g, members in enumerate(groups):
        if not members:
            raise ValueError(f"gateway {g} has no devices")
        for m in members:
            if not isinstance(m, int | np.integer) or not 0 <= int(m) < num_devices:
                raise ValueError(f"gateway {g}: device {m!r} is not in the fleet of {num_devices}")
            if int(m) in seen:
                raise ValueError(f"device {m} is behind more than one gateway")
            seen.add(int(m))


def gateway_dataset(devices: FederatedDataset, groups: Sequence[Sequence[int]]) -> FederatedDataset:
    """The federation's view of a gateway fleet: client ``g`` is gateway ``g`` holding the
    data of the devices ``groups[g]`` (for example counts and simulated timing; the
    gateway's :class:`GatewayRuntime` trains each device on its own data)."""
    _check_groups(groups, devices.num_clients)
    clients = []
    for g, members in enumerate(groups):
        parts = [devices.clients[int(m)] for m in members]
        clients.append(
            ClientData(
                g,
                np.concatenate([p.x for p in parts]),
                np.concatenate([p.y for p in parts]),
            )
        )
    return FederatedDataset(
        clients=tuple(clients),
        test=devices.test,
        num_classes=devices.num_classes,
        name=f"{devices.name} behind {len(groups)} gateways",
    )


@dataclass(frozen=True, slots=True)
class _Group:
    gateway: int
    results: list[tuple[int, ClientUpdate]]
    failures: list[str]


class GatewayRuntime:
    """Client runtime of a federation whose clients are gateways.

    Parameters
    ----------
    inner : ClientRuntime
        Trains the MCUs (any runtime; all MCUs of a round go in one call).
    devices : FederatedDataset
        The MCUs' data (device ``m`` is ``devices.clients[m]``).
    groups : sequence of sequences of int
        ``groups[g]``: the MCUs behind gateway ``g``.
    secure : SecAggConfig, optional
        Run SecAgg+ in every group with the gateway as aggregator (see the module
        docstring); ``None`` pre-aggregates in the clear.
    seed : int
        Seeds the per-group SecAgg round setups (masks themselves use OS entropy).

    Each MCU trains with the gateway's plan (epochs, batch, learning rate) and its own seed
    (``client_seed(plan.seed, round, device)``). An MCU whose training fails is left out of
    its group; a group with no usable update (or whose secure round aborts) is the
    gateway's failure, with the reason.
    """

    def __init__(
        self,
        inner: ClientRuntime,
        devices: FederatedDataset,
        groups: Sequence[Sequence[int]],
        *,
        secure: SecAggConfig | None = None,
        seed: int = 0,
    ) -> None:
        _check_groups(groups, devices.num_clients)
        if secure is not None and not isinstance(secure, SecAggConfig):
            raise TypeError(f"secure must be a SecAggConfig or None, got {secure!r}")
        if secure is not None and any(len(g) < 2 for g in groups):
            raise ValueError("secure aggregation needs at least 2 devices behind every gateway")
        self.inner = inner
        self.devices = devices
        self.groups = tuple(tuple(int(m) for m in g) for g in groups)
        self.secure = secure
        self.seed = seed
        self.last_run = getattr(inner, "last_run", None)

    def initial_weights(self) -> Weights:
        """The MCU model's initial weights."""
        return self.inner.initial_weights()

    def evaluate(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> dict[str, float]:
        """The inner runtime's evaluation."""
        return self.inner.evaluate(weights, x, y, batch_size=batch_size)

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """One pre-aggregated update (or failure) per gateway job."""
        mcu_jobs: list[tuple[ClientData, ClientPlan]] = []
        owner: list[int] = []
        for gateway, plan in jobs:
            g = gateway.client_id
            for m in self.groups[g]:
                seed = client_seed(plan.seed, plan.round_index, m)
                mcu_jobs.append((self.devices.clients[m], replace(plan, client_id=m, seed=seed)))
                owner.append(g)
        results = self.inner.train_clients(global_weights, mcu_jobs) if mcu_jobs else []
        self.last_run = getattr(self.inner, "last_run", None)
        if len(results) != len(mcu_jobs):
            raise RuntimeError(f"runtime returned {len(results)} results for {len(mcu_jobs)}")
        groups = {g.client_id: _Group(g.client_id, [], []) for g, _ in jobs}
        for g, result in zip(owner, results, strict=True):
            if isinstance(result, ClientFailure):
                groups[g].failures.append(f"device {result.client_id}: {result.error}")
            else:
                groups[g].results.append((result.client_id, result))
        return [self._forward(groups[g.client_id], plan) for g, plan in jobs]

    def _forward(self, group: _Group, plan: ClientPlan) -> ClientUpdate | ClientFailure:
        if not group.results:
            return ClientFailure(group.gateway, "no device update: " + "; ".join(group.failures))
        updates = [u for _, u in group.results]
        counts = {u.client_id: int(u.num_examples) for u in updates}
        total = sum(counts.values())
        shapes = [d.shape for d in updates[0].delta]
        if self.secure is None:
            summed = [
                sum(
                    np.float64(u.num_examples) * np.asarray(t, np.float64)
                    for u, t in zip(updates, tensors, strict=True)
                )
                for tensors in zip(*(u.delta for u in updates), strict=True)
            ]
            weight = float(total)
            mean: list[np.ndarray] = [np.asarray(s / weight, np.float32) for s in summed]
            note = {}
        else:
            if len(updates) < 2:
                return ClientFailure(group.gateway, "secure aggregation needs 2 device updates")
            flat = {u.client_id: np.concatenate([np.ravel(d) for d in u.delta]) for u in updates}
            setup = RoundSetup.create(
                self.secure,
                round_index=plan.round_index,
                cohort=tuple(sorted(flat)),
                dimension=int(next(iter(flat.values())).size),
                seed=_group_seed(self.seed, plan.round_index, group.gateway),
            )
            outcome = run_round(setup, flat, counts)
            if outcome.result is None:
                why = outcome.failure.reason if outcome.failure else "aborted"
                return ClientFailure(group.gateway, f"secure aggregation in the group: {why}")
            result = outcome.result
            vec = np.asarray(result.total, np.float64)
            weight = (
                float(result.num_examples) if result.weighted else float(len(result.contributors))
            )
            mean, at = [], 0
            for shape in shapes:
                size = math.prod(shape)
                mean.append((vec[at : at + size] / weight).reshape(shape).astype(np.float32))
                at += size
            total = int(result.num_examples) if result.weighted else total
            note = {"mcu_upload_bytes": float(sum(outcome.upload_bytes.values()))}
        losses = [float(u.metrics.get("train_loss", math.nan)) for u in updates]
        metrics = {"devices": float(len(updates)), **note}
        if all(math.isfinite(v) for v in losses):
            metrics["train_loss"] = float(np.average(losses, weights=list(counts.values())))
        return ClientUpdate(
            client_id=group.gateway,
            delta=tuple(mean),
            num_examples=int(total),
            num_steps=max(u.num_steps for u in updates),
            metrics=metrics,
        )


def _group_seed(seed: int, round_index: int, gateway: int) -> bytes:
    rng = np.random.default_rng([seed, round_index, gateway, 0x6A7E])
    return rng.bytes(32)
