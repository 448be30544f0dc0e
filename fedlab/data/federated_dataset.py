"""The ``FederatedDataset`` value object and the factories that build one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedlab.data.arrays import LabeledArrays
from fedlab.data.partition import (
    partition_by_group,
    partition_dirichlet,
    partition_iid,
    partition_quantity_skew,
    partition_shards,
)

__all__ = ["ClientData", "FederatedDataset", "federate", "federated_digits", "federated_sensors"]

Scheme = Literal["iid", "dirichlet", "shards", "quantity", "natural"]


@dataclass(frozen=True, slots=True)
class ClientData:
    """One client's local examples."""

    client_id: int
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(
                f"client {self.client_id}: x has {len(self.x)} rows but y has {len(self.y)}"
            )
        if len(self.y) == 0:
            raise ValueError(f"client {self.client_id} has no examples")

    @property
    def num_examples(self) -> int:
        """Number of local examples."""
        return len(self.y)


@dataclass(frozen=True, slots=True)
class FederatedDataset:
    """Per-client training arrays plus a held-out, centrally evaluated test set.

    Attributes
    ----------
    clients : tuple of ClientData
        Client ``i`` is ``clients[i]`` and has ``client_id == i``.
    test : LabeledArrays
        Held-out test set (never seen by any client).
    num_classes : int
        Number of label classes.
    name : str
        Human-readable description (dataset and partition).
    """

    clients: tuple[ClientData, ...]
    test: LabeledArrays
    num_classes: int
    name: str = ""

    def __post_init__(self) -> None:
        if not self.clients:
            raise ValueError("a FederatedDataset needs at least one client")
        shape = self.clients[0].x.shape[1:]
        for i, client in enumerate(self.clients):
            if client.client_id != i:
                raise ValueError(
                    f"clients[{i}] has client_id {client.client_id}; ids must be 0..n-1"
                )
            if client.x.shape[1:] != shape:
                raise ValueError(
                    f"client {i} has example shape {client.x.shape[1:]}, client 0 has {shape}"
                )
        if self.test.x.shape[1:] != shape:
            raise ValueError(f"test examples have shape {self.test.x.shape[1:]}, clients {shape}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes!r}")

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.clients)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.clients[0].x.shape[1:])

    @property
    def sizes(self) -> np.ndarray:
        """Examples per client, shape ``(num_clients,)``."""
        return np.array([c.num_examples for c in self.clients], dtype=np.int64)

    def label_counts(self) -> np.ndarray:
        """Matrix ``(num_clients, num_classes)`` of per-client label counts (for heatmaps)."""
        return np.stack([np.bincount(c.y, minlength=self.num_classes) for c in self.clients])

    def union(self) -> LabeledArrays:
        """All clients' training examples in one set (the centralized baseline's data)."""
        return LabeledArrays(
            np.concatenate([c.x for c in self.clients]),
            np.concatenate([c.y for c in self.clients]),
            name=f"{self.name} (union)",
        )

    def stats(self) -> dict[str, Any]:
        """Summary statistics: sizes and label skew, plain Python values."""
        counts = self.label_counts()
        sizes = counts.sum(axis=1)
        shares = counts / sizes[:, None]
        return {
            "num_clients": self.num_clients,
            "num_examples": int(sizes.sum()),
            "test_examples": len(self.test),
            "size_min": int(sizes.min()),
            "size_median": float(np.median(sizes)),
            "size_max": int(sizes.max()),
            "classes_per_client_mean": float((counts > 0).sum(axis=1).mean()),
            # Mean largest-class share: 1/num_classes when balanced, 1 for single-class clients.
            "dominant_class_share_mean": float(shares.max(axis=1).mean()),
        }


def federate(
    train: LabeledArrays,
    test: LabeledArrays,
    *,
    scheme: Scheme,
    num_clients: int | None = None,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    sigma: float = 1.0,
    seed: int = 0,
    num_classes: int | None = None,
) -> FederatedDataset:
    """Split ``train`` among clients with one of the partition schemes.

    Parameters
    ----------
    train, test : LabeledArrays
        Data to distribute, and the held-out test set.
    scheme : {"iid", "dirichlet", "shards", "quantity", "natural"}
        Partitioner; ``"natural"`` makes one client per ``train.groups`` id.
    num_clients : int
        Number of clients (not used by ``"natural"``).
    alpha, shards_per_client, sigma : optional
        Parameters of the Dirichlet, shard and quantity-skew schemes.
    seed : int
        Partition seed.
    num_classes : int, optional
        Number of classes; inferred from the labels when omitted.
    """
    if scheme != "natural" and num_clients is None:
        raise ValueError(f"scheme {scheme!r} needs num_clients")
    n = int(num_clients or 0)
    parts: Sequence[np.ndarray]
    if scheme == "iid":
        parts = partition_iid(len(train), n, seed=seed)
        detail = ""
    elif scheme == "dirichlet":
        parts = partition_dirichlet(train.y, n, alpha=alpha, seed=seed)
        detail = f" α={alpha:g}"
    elif scheme == "shards":
        parts = partition_shards(train.y, n, shards_per_client=shards_per_client, seed=seed)
        detail = f" {shards_per_client}/client"
    elif scheme == "quantity":
        parts = partition_quantity_skew(len(train), n, sigma=sigma, seed=seed)
        detail = f" σ={sigma:g}"
    elif scheme == "natural":
        if train.groups is None:
            raise ValueError(f"scheme 'natural' needs train.groups; {train.name!r} has none")
        parts, _ = partition_by_group(train.groups)
        detail = ""
    else:
        raise ValueError(
            f"unknown scheme {scheme!r}; use 'iid', 'dirichlet', 'shards', 'quantity' or 'natural'"
        )
    classes = num_classes or max(train.num_classes, test.num_classes)
    clients = tuple(ClientData(i, train.x[p], train.y[p]) for i, p in enumerate(parts))
    return FederatedDataset(clients, test, classes, name=f"{train.name} · {scheme}{detail}")


def federated_digits(
    *, num_clients: int = 100, scheme: Scheme = "dirichlet", alpha: float = 0.5, seed: int = 0
) -> FederatedDataset:
    """Digits split among ``num_clients`` clients (default Dirichlet α = 0.5)."""
    from fedlab.data.digits import load_digits

    train, test = load_digits(seed=seed)
    return federate(train, test, scheme=scheme, num_clients=num_clients, alpha=alpha, seed=seed)


def federated_sensors(
    *, num_devices: int = 100, test_devices: int = 50, seed: int = 0, **fleet: Any
) -> FederatedDataset:
    """A synthetic accelerometer fleet, one client per device, tested on unseen devices.

    The test set comes from ``test_devices`` further devices (ids after the training
    fleet), so accuracy measures how well the model serves devices it never trained on.
    ``**fleet`` is passed to :class:`~fedlab.data.sensors.SensorFleetConfig`.
    """
    from fedlab.data.sensors import ACTIVITIES, SensorFleetConfig, generate_sensor_fleet

    if test_devices < 1:
        raise ValueError(f"test_devices must be >= 1, got {test_devices!r}")
    cfg = SensorFleetConfig(num_devices=num_devices + test_devices, seed=seed, **fleet)
    everything = generate_sensor_fleet(cfg)
    assert everything.groups is not None
    is_train = everything.groups < num_devices
    train = everything.take(np.flatnonzero(is_train))
    test = everything.take(np.flatnonzero(~is_train))
    return federate(train, test, scheme="natural", num_classes=len(ACTIVITIES))
