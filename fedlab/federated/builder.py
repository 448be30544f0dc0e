"""One-call construction of a federation and of its centralized baseline (for notebooks)."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.data.federated_dataset import ClientData, FederatedDataset
from fedlab.federated.batching import client_seed
from fedlab.federated.checkpoint import check_checkpoint_dir
from fedlab.federated.config import FederationConfig
from fedlab.federated.federation import Federation
from fedlab.federated.runtime import KerasRuntime
from fedlab.federated.selection import sample_profiles
from fedlab.federated.strategies import Strategy, make_strategy
from fedlab.federated.types import ClientPlan

__all__ = ["build_federation", "centralized_baseline"]


def _model_fn(
    data: FederatedDataset,
    model: str,
    model_kwargs: dict[str, Any] | None,
    *,
    initial_weights: Any = None,
    head_only: bool = False,
) -> Any:
    from fedlab.models import build_model, freeze_backbone

    def build() -> Any:
        built = build_model(model, data.input_shape, data.num_classes, **(model_kwargs or {}))
        if initial_weights is not None:
            built.set_weights(list(initial_weights))
        if head_only:
            freeze_backbone(built)
        return built

    return build


def _checked_params(params: Any) -> dict[str, Any]:
    """Strategy parameters as given, each number finite (``server_lr=inf`` would turn the
    model to NaN in one round)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValueError(f"strategy_params must be a dict, got {params!r}")
    for name, value in params.items():
        if isinstance(value, bool) or (isinstance(value, Real) and not math.isfinite(value)):
            raise ValueError(f"strategy parameter {name} must be a finite number, got {value!r}")
    return params


def _check_finite_fields(strategy: Any) -> None:
    """Every numeric field of a dataclass strategy is finite (the same rule for an object)."""
    for f in fields(strategy) if is_dataclass(strategy) else ():
        value = getattr(strategy, f.name)
        if isinstance(value, Real) and not isinstance(value, bool) and not math.isfinite(value):
            raise ValueError(
                f"{type(strategy).__name__}.{f.name} must be a finite number, got {value!r}"
            )


def build_federation(
    data: FederatedDataset,
    *,
    model: str = "digits_cnn",
    strategy: str | Strategy = "fedavg",
    strategy_params: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    heterogeneity: float = 0.0,
    runtime: str = "auto",
    initial_weights: Any = None,
    head_only: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    **config: Any,
) -> Federation:
    """A ``Federation`` on a zoo model, with the fastest runtime that supports it.

    Parameters
    ----------
    data : FederatedDataset
        Clients and test set.
    model : str
        Zoo model name (see :data:`fedlab.models.MODEL_BUILDERS`).
    strategy : str or Strategy
        ``"fedavg"``, ``"fedavgm"``, ``"fedadam"``… or a strategy object.
    strategy_params : dict, optional
        Parameters of a strategy given by name (``{"server_lr": 0.03}``).
    model_kwargs : dict, optional
        Extra arguments of the model builder (``{"width": 0.5}``).
    heterogeneity : float
        Log-normal spread of device speeds (0 = identical devices).
    runtime : {"auto", "vectorized", "reference"}
        ``"auto"`` trains all clients of a round in one compiled graph when the model allows
        it (:class:`~fedlab.federated.vectorized.VectorizedRuntime`) and otherwise falls back
        to the reference runtime with a one-line ``FallbackWarning``.
    initial_weights : sequence of arrays, optional
        Start from these weights (a pretrained model) instead of the seeded initialization.
    head_only : bool
        Freeze the backbone: clients train (and upload changes to) only the head.
    checkpoint_dir, resume
        See :class:`Federation`.
    **config
        :class:`FederationConfig` fields (``clients_per_round=10``, ``local_epochs=5``…).
    """
    cfg = FederationConfig(**config)
    if checkpoint_dir is not None:
        check_checkpoint_dir(checkpoint_dir)
    strat = (
        make_strategy(strategy, **_checked_params(strategy_params))
        if isinstance(strategy, str)
        else strategy
    )
    _check_finite_fields(strat)
    from fedlab.federated.vectorized import make_runtime

    model_fn = _model_fn(
        data, model, model_kwargs, initial_weights=initial_weights, head_only=head_only
    )
    client_runtime = make_runtime(model_fn, kind=runtime)  # type: ignore[arg-type]
    return Federation(
        data=data,
        runtime=client_runtime,
        config=cfg,
        strategy=strat,
        profiles=sample_profiles(data.num_clients, heterogeneity=heterogeneity, seed=cfg.seed),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )


def centralized_baseline(
    data: FederatedDataset,
    *,
    model: str = "digits_cnn",
    epochs: int = 20,
    batch_size: int = 32,
    learning_rate: float = 0.05,
    optimizer: str = "sgd",
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train on the union of all clients' data (what FL tries to match), same optimizer code.

    Returns
    -------
    dict
        ``{"epoch": [...], "test_accuracy": [...], "test_loss": [...]}``, one entry per epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}")
    runtime = KerasRuntime(_model_fn(data, model, model_kwargs))
    union = data.union()
    everything = ClientData(0, union.x, union.y)
    weights = runtime.initial_weights()
    out: dict[str, list[float]] = {"epoch": [], "test_accuracy": [], "test_loss": []}
    for epoch in range(epochs):
        plan = ClientPlan(
            client_id=0,
            round_index=epoch,
            epochs=1,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            seed=client_seed(seed, epoch, 0),
        )
        update = runtime.train_one(weights, everything, plan)
        weights = tuple(
            (w + d).astype(np.float32) for w, d in zip(weights, update.delta, strict=True)
        )
        metrics = runtime.evaluate(weights, data.test.x, data.test.y)
        out["epoch"].append(epoch + 1)
        out["test_accuracy"].append(metrics["accuracy"])
        out["test_loss"].append(metrics["loss"])
    return out
