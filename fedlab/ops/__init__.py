"""Fleet operations: a model registry, canary rollout, drift detection, cost and retention.

One module per concern: :mod:`~fedlab.ops.registry` (content-addressed versions, channels,
audit log), :mod:`~fedlab.ops.canary` (canary cohorts and the promotion test),
:mod:`~fedlab.ops.drift` (Page-Hinkley on aggregated streams), :mod:`~fedlab.ops.cost` (cost
per round and per month), :mod:`~fedlab.ops.retention` (what is kept, what per-client data
is held), :mod:`~fedlab.ops.simulation` (a TensorFlow-free sensor fleet for all of it).
"""

from __future__ import annotations

from fedlab.ops.canary import CanaryDecision, CanaryPolicy, noninferiority_bound, run_canary
from fedlab.ops.drift import DriftAlert, DriftMonitor, DriftObserver, PageHinkley
from fedlab.ops.registry import ModelVersion, Provenance, Registry, RegistryError, code_version

__all__ = [
    "CanaryDecision",
    "CanaryPolicy",
    "DriftAlert",
    "DriftMonitor",
    "DriftObserver",
    "ModelVersion",
    "PageHinkley",
    "Provenance",
    "Registry",
    "RegistryError",
    "code_version",
    "noninferiority_bound",
    "run_canary",
]
