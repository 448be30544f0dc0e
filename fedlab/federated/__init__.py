"""The round engine: client runtime, update pipeline, strategies, selection, history.

Importing :mod:`fedlab.federated` does not import TensorFlow; the Keras runtime and the
builders load it when first used.
"""

from __future__ import annotations

from typing import Any

from fedlab.federated.aggregate import add_weights, weighted_mean
from fedlab.federated.authenticate import SignUpdate, VerifySignature
from fedlab.federated.batching import batch_schedule, client_seed
from fedlab.federated.checkpoint import CheckpointError, latest_checkpoint, save_checkpoint
from fedlab.federated.codec_stage import DecodeUpdate, EncodeUpdate
from fedlab.federated.config import FederationConfig
from fedlab.federated.dispatch import (
    Dispatched,
    Dispatcher,
    Report,
    RoundTasks,
    SimulatedDispatcher,
)
from fedlab.federated.federation import ClientOutcome, Federation
from fedlab.federated.gateway import GatewayRuntime, gateway_dataset, group_devices
from fedlab.federated.history import History
from fedlab.federated.observers import Observer, RecordingObserver
from fedlab.federated.reduce import CohortSum, UniformSum, WeightedSum
from fedlab.federated.runtime_base import ClientFailure, ClientRuntime, RunNote
from fedlab.federated.scheduling import (
    Availability,
    DailyWindows,
    EligibleFirstSampler,
    EnergyModel,
    UploadSchedule,
    sample_availability,
)
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.selection import (
    AdaptiveEpochs,
    ClientProfile,
    FixedEpochs,
    PoissonSampler,
    UniformSampler,
    WeightedSampler,
    sample_profiles,
    simulated_duration,
)
from fedlab.federated.stages import (
    ClientStateStore,
    ClipUpdate,
    Pipeline,
    StageContext,
    StatefulStage,
    UpdatePolicy,
    ValidateUpdate,
    l2_norm,
)
from fedlab.federated.strategies import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    RobustAggregation,
    make_strategy,
)
from fedlab.federated.types import ClientPlan, ClientUpdate, Envelope, RoundResult, UpdateRejected

_LAZY = {
    "VectorizedRuntime": "fedlab.federated.vectorized",
    "FallbackWarning": "fedlab.federated.vectorized",
    "UnsupportedModel": "fedlab.federated.vectorized",
    "make_runtime": "fedlab.federated.vectorized",
    "KerasRuntime": "fedlab.federated.runtime",
    "build_federation": "fedlab.federated.builder",
    "centralized_baseline": "fedlab.federated.builder",
}

__all__ = [
    "AdaptiveEpochs",
    "Availability",
    "CheckpointError",
    "ClientFailure",
    "ClientOutcome",
    "ClientPlan",
    "ClientProfile",
    "ClientRuntime",
    "ClientStateStore",
    "ClientUpdate",
    "ClipUpdate",
    "CohortSum",
    "DailyWindows",
    "DecodeUpdate",
    "Dispatched",
    "Dispatcher",
    "EligibleFirstSampler",
    "EncodeUpdate",
    "EnergyModel",
    "Envelope",
    "FallbackWarning",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Federation",
    "FederationConfig",
    "FixedEpochs",
    "GatewayRuntime",
    "History",
    "KerasRuntime",
    "Observer",
    "Pipeline",
    "PoissonSampler",
    "RecordingObserver",
    "Report",
    "RobustAggregation",
    "RoundResult",
    "RoundTasks",
    "RunNote",
    "SecureAggregation",
    "SignUpdate",
    "SimulatedDispatcher",
    "StageContext",
    "StatefulStage",
    "UniformSampler",
    "UniformSum",
    "UnsupportedModel",
    "UpdatePolicy",
    "UpdateRejected",
    "UploadSchedule",
    "ValidateUpdate",
    "VectorizedRuntime",
    "VerifySignature",
    "WeightedSampler",
    "WeightedSum",
    "add_weights",
    "batch_schedule",
    "build_federation",
    "centralized_baseline",
    "client_seed",
    "gateway_dataset",
    "group_devices",
    "l2_norm",
    "latest_checkpoint",
    "make_runtime",
    "make_strategy",
    "sample_availability",
    "sample_profiles",
    "save_checkpoint",
    "simulated_duration",
    "weighted_mean",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedlab.federated' has no attribute {name!r}")
