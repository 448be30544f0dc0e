"""Fleet operations: a model registry, canary rollout, drift detection, cost and retention.

One module per concern: :mod:`~fedlab.ops.registry` (content-addressed versions, channels,
audit log), :mod:`~fedlab.ops.canary` (canary cohorts and the promotion test),
:mod:`~fedlab.ops.drift` (Page-Hinkley on aggregated streams), :mod:`~fedlab.ops.cost` (cost
per round and per month), :mod:`~fedlab.ops.retention` (what is kept, what per-client data
is held), :mod:`~fedlab.ops.simulation` (a TensorFlow-free sensor fleet for all of it).
"""

from __future__ import annotations

from fedlab.ops.canary import CanaryDecision, CanaryPolicy, noninferiority_bound, run_canary
from fedlab.ops.cost import (
    CostEstimate,
    Prices,
    estimate_cost,
    measure_aggregation_cpu,
    measure_traffic,
    measured_server_cpu,
)
from fedlab.ops.drift import DriftAlert, DriftMonitor, DriftObserver, PageHinkley
from fedlab.ops.registry import (
    ModelVersion,
    Provenance,
    Registry,
    RegistryError,
    RegistryObserver,
    code_version,
)
from fedlab.ops.retention import RetentionPolicy
from fedlab.ops.simulation import SensorFleet, SoftmaxRuntime, sensor_features

__all__ = [
    "CanaryDecision",
    "CanaryPolicy",
    "CostEstimate",
    "DriftAlert",
    "DriftMonitor",
    "DriftObserver",
    "ModelVersion",
    "PageHinkley",
    "Prices",
    "Provenance",
    "Registry",
    "RegistryError",
    "RegistryObserver",
    "RetentionPolicy",
    "SensorFleet",
    "SoftmaxRuntime",
    "code_version",
    "estimate_cost",
    "measure_aggregation_cpu",
    "measure_traffic",
    "measured_server_cpu",
    "noninferiority_bound",
    "run_canary",
    "sensor_features",
]
