"""fedlab — a workbench for on-device federated learning on edge IoT fleets.

The public API is re-exported here lazily: ``import fedlab`` is instant and does not
import TensorFlow; ``fedlab.build_federation`` loads what it needs on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data
    "ACTIVITIES": "fedlab.data",
    "FederatedDataset": "fedlab.data",
    "LabeledArrays": "fedlab.data",
    "SensorFleetConfig": "fedlab.data",
    "federate": "fedlab.data",
    "federated_digits": "fedlab.data",
    "federated_sensors": "fedlab.data",
    "generate_sensor_fleet": "fedlab.data",
    "load_digits": "fedlab.data",
    "load_leaf_femnist": "fedlab.data",
    "load_uci_har": "fedlab.data",
    # models
    "build_model": "fedlab.models",
    "count_params": "fedlab.models",
    "freeze_backbone": "fedlab.models",
    "split_backbone_head": "fedlab.models",
    # federated
    "Federation": "fedlab.federated",
    "FederationConfig": "fedlab.federated",
    "History": "fedlab.federated",
    "KerasRuntime": "fedlab.federated",
    "Observer": "fedlab.federated",
    "Pipeline": "fedlab.federated",
    "build_federation": "fedlab.federated",
    "centralized_baseline": "fedlab.federated",
    "make_strategy": "fedlab.federated",
    "make_runtime": "fedlab.federated",
    "VectorizedRuntime": "fedlab.federated",
    # live dashboard
    "FederationDashboard": "fedlab.ui",
    # notebooks
    "Recorder": "fedlab.notebook",
    "markdown_table": "fedlab.notebook",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
