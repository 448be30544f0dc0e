"""Value objects that cross the boundaries of the round engine."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "CLIENT_OPTIMIZERS",
    "ClientPlan",
    "ClientUpdate",
    "Envelope",
    "RoundResult",
    "UpdateRejected",
    "Weights",
    "is_int",
    "is_real",
]

Weights = tuple[np.ndarray, ...]

CLIENT_OPTIMIZERS = ("sgd", "momentum", "adam")


def is_int(value: Any) -> bool:
    """True for a Python or numpy integer, False for ``bool`` and everything else."""
    return isinstance(value, Integral) and not isinstance(value, bool | np.bool_)


def is_real(value: Any) -> bool:
    """True for a finite-or-not real number (int, float, numpy scalar), False for ``bool``,
    strings and everything else."""
    return isinstance(value, Real) and not isinstance(value, bool | np.bool_)


class UpdateRejected(Exception):
    """Raised by a server stage to reject one client's update; the round goes on.

    ``stage`` names the pipeline stage that refused it (set by the pipeline when the
    stage itself did not).
    """

    def __init__(self, reason: str = "", *, stage: str = "") -> None:
        super().__init__(reason)
        self.stage = stage


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """What one client is asked to do in one round (derived from the config, per client)."""

    client_id: int
    round_index: int
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "sgd"
    momentum: float = 0.0
    proximal_mu: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        # Plans also arrive from task files on a device: every field is checked for its
        # type as well as its range, so a hostile or damaged task is a ValueError naming
        # the field, never a TypeError deep inside a trainer.
        def fail(name: str, wanted: str) -> None:
            raise ValueError(f"{name} must be {wanted}, got {getattr(self, name)!r}")

        for name, low in (
            ("client_id", 0),
            ("round_index", 0),
            ("epochs", 1),
            ("batch_size", 1),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if not is_int(value):
                fail(name, "an int")
            if value < low:
                fail(name, f">= {low}")
            object.__setattr__(self, name, int(value))
        if not (is_real(self.learning_rate) and math.isfinite(self.learning_rate)):
            fail("learning_rate", "a finite number > 0")
        if not self.learning_rate > 0:
            fail("learning_rate", "a finite number > 0")
        if self.optimizer not in CLIENT_OPTIMIZERS:
            fail("optimizer", f"one of {CLIENT_OPTIMIZERS}")
        if not (is_real(self.momentum) and 0 <= self.momentum < 1):
            fail("momentum", "a number in [0, 1)")
        if not (is_real(self.proximal_mu) and math.isfinite(self.proximal_mu)):
            fail("proximal_mu", "a finite number >= 0")
        if self.proximal_mu < 0:
            fail("proximal_mu", "a finite number >= 0")
        for name in ("learning_rate", "momentum", "proximal_mu"):
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """A client's contribution: ``delta = local − global`` and what it was computed from."""

    client_id: int
    delta: Weights
    num_examples: int
    num_steps: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Envelope:
    """An update on the wire: what client stages produce and server stages consume.

    ``body`` is a tuple of arrays (plain) or bytes (after a compressing/sealing stage);
    ``headers`` carries stage metadata (codec name, signature, …).
    """

    client_id: int
    num_examples: int
    body: Weights | bytes
    num_steps: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Size of the body on the wire (raw arrays count their buffer size)."""
        if isinstance(self.body, bytes | bytearray):
            return len(self.body)
        # A malformed body (not arrays) is refused by validation; it counts as 0 bytes here
        # so that measuring it cannot fail first.
        try:
            return int(sum(a.nbytes for a in self.body if isinstance(a, np.ndarray)))
        except TypeError:
            return 0


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


@dataclass(frozen=True, slots=True)
class RoundResult:
    """Everything that happened in one round.

    ``completed`` clients' updates were aggregated; ``dropped`` never reported;
    ``stragglers`` reported after the deadline (or after enough faster clients);
    ``failed`` raised during training and ``rejected`` were refused by the server —
    both with their reason. Accuracy and loss are on the central test set (NaN when the
    round was not evaluated). ``wall_time_s`` is the real time taken here; ``sim_time_s``
    the simulated duration of the round on the devices; ``runtime`` which client runtime
    trained the round (and any fallback, with its reason and cost); ``aggregation_failure``
    why nothing was applied although updates were accepted (secure aggregation aborted);
    ``stage_bytes`` the upload bytes of the round's arrived updates after each client
    stage (``("update", n)`` first: the raw float tensors), ``stage_rejections`` how many
    updates each server stage refused; ``server_cpu_s`` the CPU seconds the server spent
    on the round's updates (pipeline, secure aggregation, reduce and server step: what a
    cost model charges per round); ``energy_j`` each invited device's simulated energy
    in joules, when the dispatcher models it.
    """

    round_index: int
    selected: tuple[int, ...]
    completed: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    stragglers: tuple[int, ...] = ()
    failed: tuple[tuple[int, str], ...] = ()
    rejected: tuple[tuple[int, str], ...] = ()
    num_examples: int = 0
    train_loss: float = float("nan")
    test_accuracy: float = float("nan")
    test_loss: float = float("nan")
    bytes_up: int = 0
    bytes_down: int = 0
    sim_time_s: float = 0.0
    wall_time_s: float = 0.0
    runtime: str = ""
    aggregation_failure: str = ""
    stage_bytes: tuple[tuple[str, int], ...] = ()
    stage_rejections: tuple[tuple[str, int], ...] = ()
    server_cpu_s: float = 0.0
    energy_j: tuple[tuple[int, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-ready)."""
        return {k: _plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundResult:
        """Rebuild from :meth:`to_dict` output."""

        def ids(key: str) -> tuple[int, ...]:
            return tuple(int(v) for v in data.get(key, ()))

        def reasons(key: str) -> tuple[tuple[int, str], ...]:
            return tuple((int(c), str(r)) for c, r in data.get(key, ()))

        scalars = {
            k: data[k]
            for k in (
                "num_examples",
                "train_loss",
                "test_accuracy",
                "test_loss",
                "bytes_up",
                "bytes_down",
                "sim_time_s",
                "wall_time_s",
                "server_cpu_s",
            )
            if k in data
        }
        return cls(
            round_index=int(data["round_index"]),
            selected=ids("selected"),
            completed=ids("completed"),
            dropped=ids("dropped"),
            stragglers=ids("stragglers"),
            failed=reasons("failed"),
            rejected=reasons("rejected"),
            runtime=str(data.get("runtime", "")),
            aggregation_failure=str(data.get("aggregation_failure", "")),
            stage_bytes=tuple((str(k), int(v)) for k, v in data.get("stage_bytes", ())),
            stage_rejections=tuple((str(k), int(v)) for k, v in data.get("stage_rejections", ())),
            energy_j=tuple((int(c), float(j)) for c, j in data.get("energy_j", ())),
            **scalars,
        )

    def deterministic_view(self) -> dict[str, Any]:
        """``to_dict()`` without the fields that depend on the host (its speed, and which
        runtime its TensorFlow could use)."""
        out = self.to_dict()
        out.pop("wall_time_s")
        out.pop("server_cpu_s")
        out.pop("runtime")
        return out


def summarize_reasons(items: Sequence[tuple[int, str]]) -> str:
    """One line: ``"3: NaN in tensor 0; 7: shape …"``."""
    return "; ".join(f"{c}: {r}" for c, r in items)
