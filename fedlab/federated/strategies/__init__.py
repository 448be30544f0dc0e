"""Server strategies, one module per algorithm, and a name → class registry."""

from __future__ import annotations

from typing import Any

from fedlab.federated.strategies.base import Strategy, StrategyState, mean_delta, strategy_to_dict
from fedlab.federated.strategies.fedavg import FedAvg
from fedlab.federated.strategies.fedavgm import FedAvgM
from fedlab.federated.strategies.fedopt import FedAdagrad, FedAdam, FedYogi
from fedlab.federated.strategies.fedprox import FedProx
from fedlab.federated.strategies.robust import RobustAggregation

__all__ = [
    "STRATEGIES",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "RobustAggregation",
    "Strategy",
    "StrategyState",
    "make_strategy",
    "mean_delta",
    "strategy_to_dict",
]

STRATEGIES: dict[str, type] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}


def make_strategy(name: str | dict[str, Any], **params: Any) -> Strategy:
    """Build a strategy from its name (``"fedavg"``, ``"fedadam"``…) or from
    :func:`strategy_to_dict` output, with keyword parameters."""
    if isinstance(name, dict):
        params = {**{k: v for k, v in name.items() if k != "name"}, **params}
        name = name["name"]
    key = str(name).lower()
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    strategy: Strategy = STRATEGIES[key](**params)
    return strategy
