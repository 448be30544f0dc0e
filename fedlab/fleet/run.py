"""One fleet experiment, described once and built the same way on both sides: inside the
Flower ``ServerApp`` (over :class:`~fedlab.fleet.dispatcher.FlowerDispatcher`) and in this
process (over :class:`~fedlab.fleet.dispatcher.AgentDispatcher`, the reference).

No Flower and no TensorFlow here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.data.federated_dataset import FederatedDataset, federated_digits
from fedlab.edge.model import atomic_write_bytes
from fedlab.federated.config import FederationConfig
from fedlab.federated.dispatch import Dispatcher
from fedlab.federated.federation import Federation
from fedlab.federated.observers import Observer
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.types import RoundResult
from fedlab.fleet.runtime import KitRuntime
from fedlab.secure.secagg import SecAggConfig

__all__ = ["FleetRunSpec", "RunRecorder", "build_federation", "fleet_data", "read_run_output"]


@dataclass(frozen=True, slots=True)
class FleetRunSpec:
    """What a fleet run does (the ``[tool.flwr.app.config]`` of the fedlab Flower app,
    keys in kebab-case there: ``kit-dir``, ``num-clients`` …).

    Attributes
    ----------
    kit_dir : str
        The LiteRT kit the devices run (the server reads its model from it).
    trusted_key : str
        Base64 Ed25519 key the kit must be signed with.
    out_dir : str
        Where the server writes ``history.json``, ``weights.npz`` and ``nodes.json`` after
        every round.
    num_clients : int
        Enrolled clients (digits split among them with ``data_seed``).
    rounds : int
        Total rounds (a resumed run does only the missing ones).
    clients_per_round, local_epochs, batch_size : int
        Round parameters (:class:`~fedlab.federated.config.FederationConfig`).
    client_lr : float
        Device learning rate.
    seed, data_seed : int
        Seeds of the federation (selection, client batches) and of the digits split.
    round_timeout : float
        Seconds the server waits for replies in a round.
    min_nodes : int
        Clients that must be enrolled before round one.
    enroll_timeout : float
        Bound on that wait.
    checkpoint_dir : str
        Per-round checkpoints (empty: none).
    resume : bool
        Continue from the newest checkpoint in ``checkpoint_dir``.
    secure_threshold : int
        Secure aggregation (SecAgg+, complete graph) with this Shamir threshold: the devices
        keep their updates and the server learns only their sum. 0: plain FedAvg.
    secure_clip : float
        Per-coordinate bound of the secure-aggregation fixed-point encoding.
    secure_min_clients : int
        Fewest devices that may remain at any secure-aggregation stage (0: threshold + 1).
    """

    kit_dir: str
    trusted_key: str
    out_dir: str
    num_clients: int = 3
    rounds: int = 3
    clients_per_round: int = 3
    local_epochs: int = 1
    batch_size: int = 16
    client_lr: float = 0.05
    seed: int = 0
    data_seed: int = 0
    round_timeout: float = 120.0
    min_nodes: int = 0
    enroll_timeout: float = 120.0
    checkpoint_dir: str = ""
    resume: bool = False
    secure_threshold: int = 0
    secure_clip: float = 1.0
    secure_min_clients: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kinds: dict[str, type | tuple[type, ...]] = {
                "str": str,
                "int": int,
                "float": (int, float),
                "bool": bool,
            }
            kind = kinds[str(f.type)]
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
                raise TypeError(f"{f.name} must be {f.type}, got {value!r}")
        for name in ("kit_dir", "trusted_key", "out_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.secure_min_clients < 0:
            raise ValueError(f"secure_min_clients must be >= 0, got {self.secure_min_clients!r}")
        for name in ("num_clients", "rounds", "clients_per_round", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.secure_threshold < 0 or self.secure_threshold == 1:
            raise ValueError(
                f"secure_threshold must be 0 (off) or >= 2, got {self.secure_threshold!r}"
            )
        for name in ("client_lr", "round_timeout", "enroll_timeout", "secure_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.min_nodes <= self.num_clients:
            raise ValueError(f"min_nodes must be in 0…num_clients, got {self.min_nodes!r}")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume needs a checkpoint_dir")

    @classmethod
    def from_run_config(cls, config: Any) -> FleetRunSpec:
        """From Flower's ``context.run_config`` (kebab-case keys; unknown keys are an
        error, so a typo is not silently a default)."""
        data = {str(k).replace("-", "_"): v for k, v in dict(config).items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown run config keys {unknown}; known: {sorted(known)}")
        for name in ("round_timeout", "secure_clip", "client_lr", "enroll_timeout"):
            if isinstance(data.get(name), int) and not isinstance(data.get(name), bool):
                data[name] = float(data[name])
        return cls(**data)

    def run_config(self) -> dict[str, Any]:
        """The kebab-case mapping (``flwr run --run-config`` / the app's pyproject)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    def federation_config(self) -> FederationConfig:
        """The round parameters."""
        return FederationConfig(
            clients_per_round=self.clients_per_round,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            client_lr=self.client_lr,
            seed=self.seed,
            deadline_s=self.round_timeout,
        )


def fleet_data(spec: FleetRunSpec) -> FederatedDataset:
    """The digits split of this run (client ``i``'s shard is device ``i``'s data)."""
    return federated_digits(num_clients=spec.num_clients, seed=spec.data_seed)


class RunRecorder(Observer):
    """Writes the run's state to ``out_dir`` after every round (atomically):
    ``history.json``, ``weights.npz`` and ``nodes.json`` (the dispatcher's per-device view,
    when it has one)."""

    def __init__(self, out_dir: str | Path, dispatcher: Dispatcher) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dispatcher = dispatcher

    def on_round_end(self, federation: Federation, result: RoundResult) -> None:
        """Write the three files."""
        history = federation.history.to_records()
        atomic_write_bytes(self.out / "history.json", json.dumps(history, default=str).encode())
        buf = self.out / "weights.npz.tmp"
        with open(buf, "wb") as f:
            np.savez(f, *federation.weights)
        buf.replace(self.out / "weights.npz")
        state = getattr(self.dispatcher, "state", None)
        nodes = {
            "rounds_done": federation.rounds_done,
            "nodes": state() if callable(state) else [],
            "notes": list(getattr(self.dispatcher, "notes", [])),
        }
        atomic_write_bytes(self.out / "nodes.json", json.dumps(nodes, default=str).encode())


def build_federation(
    spec: FleetRunSpec,
    dispatcher: Dispatcher,
    *,
    runtime: KitRuntime | None = None,
    data: FederatedDataset | None = None,
) -> Federation:
    """The run's :class:`~fedlab.federated.federation.Federation` over ``dispatcher``
    (FedAvg, uniform selection, the kit's model and central evaluation; secure
    aggregation when ``spec.secure_threshold``: over a fleet dispatcher the devices keep
    their updates, over a simulated one the protocol is played in process)."""
    runtime = runtime or KitRuntime(spec.kit_dir, spec.trusted_key)
    data = data if data is not None else fleet_data(spec)
    secure = None
    if spec.secure_threshold:
        config = SecAggConfig(
            threshold=spec.secure_threshold,
            clip=spec.secure_clip,
            max_examples=max(c.num_examples for c in data.clients),
            min_clients=spec.secure_min_clients or None,
        )
        secure = SecureAggregation(config)
    return Federation(
        data=data,
        secure_aggregation=secure,
        runtime=runtime,
        config=spec.federation_config(),
        dispatcher=dispatcher,
        observers=[RunRecorder(spec.out_dir, dispatcher)],
        checkpoint_dir=spec.checkpoint_dir or None,
        resume=spec.resume,
    )


def read_run_output(out_dir: str | Path) -> dict[str, Any]:
    """What a run wrote: ``{"history": [...], "weights": [arrays], "nodes": {...}}``
    (missing files are absent keys)."""
    out = Path(out_dir)
    result: dict[str, Any] = {}
    if (out / "history.json").is_file():
        result["history"] = json.loads((out / "history.json").read_text())
    if (out / "weights.npz").is_file():
        with np.load(out / "weights.npz") as z:
            result["weights"] = [z[f"arr_{i}"] for i in range(len(z.files))]
    if (out / "nodes.json").is_file():
        result["nodes"] = json.loads((out / "nodes.json").read_text())
    if (out / "done.json").is_file():
        result["done"] = json.loads((out / "done.json").read_text())
    return result
