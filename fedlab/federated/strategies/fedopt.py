"""Adaptive server optimizers of Reddi et al. 2021 ("Adaptive Federated Optimization"):
FedAdagrad, FedAdam and FedYogi. They differ only in the second-moment update.

Algorithm 2 of the paper, with Δ̄ the example-weighted mean delta::

    m ← β1·m + (1 − β1)·Δ̄
    v ← v + Δ̄²                                  (FedAdagrad)
    v ← β2·v + (1 − β2)·Δ̄²                      (FedAdam)
    v ← v − (1 − β2)·Δ̄²·sign(v − Δ̄²)            (FedYogi)
    w ← w + η·m / (√v + τ)

with ``v`` initialised to τ² and no bias correction, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlab.federated.strategies.base import ServerStep, StrategyState, check_server_lr
from fedlab.federated.types import Weights

__all__ = ["FedAdagrad", "FedAdam", "FedYogi", "adaptive_step"]


def adaptive_step(
    weights: Weights,
    delta: Weights,
    m: Weights,
    v: Weights,
    *,
    kind: str,
    server_lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[Weights, Weights, Weights]:
    """One server step of FedAdagrad/FedAdam/FedYogi; returns ``(weights, m, v)``."""
    new_w, new_m, new_v = [], [], []
    for w, d, m_i, v_i in zip(weights, delta, m, v, strict=True):
        d64 = d.astype(np.float64)
        m_next = beta1 * m_i + (1 - beta1) * d64
        sq = d64 * d64
        if kind == "adagrad":
            v_next = v_i + sq
        elif kind == "adam":
            v_next = beta2 * v_i + (1 - beta2) * sq
        elif kind == "yogi":
            v_next = v_i - (1 - beta2) * sq * np.sign(v_i - sq)
        else:
            raise ValueError(f"unknown adaptive kind {kind!r}")
        new_w.append((w + server_lr * m_next / (np.sqrt(v_next) + tau)).astype(np.float32))
        new_m.append(m_next.astype(np.float32))
        new_v.append(v_next.astype(np.float32))
    return tuple(new_w), tuple(new_m), tuple(new_v)


@dataclass(frozen=True, slots=True)
class _FedOpt(ServerStep):
    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    name: str = "fedopt"

    def __post_init__(self) -> None:
        check_server_lr(self.server_lr)
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"beta1 must be in [0, 1), got {self.beta1!r}")
        if not 0 < self.beta2 < 1:
            raise ValueError(f"beta2 must be in (0, 1), got {self.beta2!r}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau!r}")

    @property
    def client_proximal_mu(self) -> float:
        """No proximal term."""
        return 0.0

    @property
    def _kind(self) -> str:
        raise NotImplementedError

    def init_state(self, weights: Weights) -> StrategyState:
        """``m = 0`` and ``v = τ²``."""
        return {
            "m": tuple(np.zeros_like(w, dtype=np.float32) for w in weights),
            "v": tuple(np.full_like(w, self.tau**2, dtype=np.float32) for w in weights),
        }

    def server_step(
        self, weights: Weights, delta: Weights, state: StrategyState
    ) -> tuple[Weights, StrategyState]:
        """One adaptive server step on the mean delta."""
        w, m, v = adaptive_step(
            weights,
            delta,
            state["m"],
            state["v"],
            kind=self._kind,
            server_lr=self.server_lr,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
        )
        return w, {"m": m, "v": v}


@dataclass(frozen=True, slots=True)
class FedAdagrad(_FedOpt):
    """FedAdagrad: ``v`` accumulates squared mean deltas."""

    name: str = "fedadagrad"

    @property
    def _kind(self) -> str:
        return "adagrad"


@dataclass(frozen=True, slots=True)
class FedAdam(_FedOpt):
    """FedAdam: exponential moving second moment."""

    name: str = "fedadam"

    @property
    def _kind(self) -> str:
        return "adam"


@dataclass(frozen=True, slots=True)
class FedYogi(_FedOpt):
    """FedYogi: additive, sign-controlled second moment (Zaheer et al. 2018)."""

    name: str = "fedyogi"

    @property
    def _kind(self) -> str:
        return "yogi"
