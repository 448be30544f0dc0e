"""The values that cross the wire: the round task a client receives and the update envelope
it sends back. numpy only: a device imports this without the round engine or TensorFlow.

Every constructor is strict and keyword-only: a wrong type is a ``TypeError``, a value out
of range a ``ValueError``, both naming the field and quoting the value. What the protocol
checks is *well-formedness* (types, intrinsic ranges, hashes); what a server accepts from a
client in a round (example caps, norm bounds, finiteness of the update, staleness) is the
server's update policy, applied to the decoded envelope.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "CLIENT_OPTIMIZERS",
    "WIRE_DTYPES",
    "OptimizerSpec",
    "ProtocolError",
    "RoundTask",
    "TrainPlan",
    "UpdateEnvelope",
    "weights_version",
]

#: Client optimizers a plan may name.
CLIENT_OPTIMIZERS = ("sgd", "momentum", "adam")

#: Tensor dtypes the wire carries (little-endian floats).
WIRE_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype("<f2"), np.dtype("<f4"), np.dtype("<f8"))

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Tensors = tuple[np.ndarray, ...]
Scalar = str | int | float | bool


class ProtocolError(ValueError):
    """Bytes that are not a valid frame, or a frame whose values are not a valid task or
    envelope. The only exception :func:`fedlab.protocol.decode` raises."""


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool | np.bool_)


def _int(owner: object, name: str, low: int) -> None:
    value = getattr(owner, name)
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    object.__setattr__(owner, name, int(value))


def _real(owner: object, name: str, wanted: str, ok: Any) -> None:
    value = getattr(owner, name)
    if not _is_real(value):
        raise TypeError(f"{name} must be {wanted}, got {value!r}")
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    object.__setattr__(owner, name, float(value))


def _text(owner: object, name: str, wanted: str = "a non-empty string") -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or not value:
        raise (TypeError if not isinstance(value, str) else ValueError)(
            f"{name} must be {wanted}, got {value!r}"
        )


def _tensors(name: str, values: Any, *, finite: bool) -> Tensors:
    """Read-only copies of float arrays the wire can carry."""
    if isinstance(values, np.ndarray) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of arrays, got {type(values).__name__}")
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name}[{i}] must be an ndarray, got {type(value).__name__}")
        if value.dtype.newbyteorder("<") not in WIRE_DTYPES:
            raise TypeError(f"{name}[{i}] has dtype {value.dtype}, expected float16/32/64")
        if finite and not np.isfinite(value).all():
            raise ValueError(f"{name}[{i}] contains NaN or Inf")
        array = np.array(value, dtype=value.dtype.newbyteorder("<"), order="C", copy=True)
        array.flags.writeable = False
        out.append(array)
    return tuple(out)


def _same_tensors(a: Tensors | bytes | None, b: Tensors | bytes | None) -> bool:
    if isinstance(a, bytes) or isinstance(b, bytes) or a is None or b is None:
        return a == b
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        for x, y in zip(a, b, strict=True)
    )


def weights_version(weights: Sequence[np.ndarray]) -> str:
    """Content hash of a global model as it travels (float32): names the model a task
    carries and every update must echo, so last round's update cannot pass for this one.

    Parameters
    ----------
    weights : sequence of arrays
        The global model's tensors, in order.

    Returns
    -------
    str
        32 hex digits (the first half of a SHA-256 over shapes and float32 bytes).
    """
    h = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(w, dtype=np.float32)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class OptimizerSpec:
    """The client optimizer, with every constant a trainer needs.

    Attributes
    ----------
    name : {"sgd", "momentum", "adam"}
        The update rule.
    momentum : float
        Heavy-ball coefficient ``β`` of ``"momentum"`` (``m ← βm + g; w ← w − ηm``);
        carried but unused by the other rules, so any engine plan round-trips.
    beta_1, beta_2, epsilon : float
        Adam's constants (Kingma & Ba 2015, bias-corrected); the defaults are the engine's
        ``fedlab.federated.client_optimizer.ADAM``.
    """

    name: str = "sgd"
    momentum: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def __post_init__(self) -> None:
        if self.name not in CLIENT_OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {CLIENT_OPTIMIZERS}, got {self.name!r}")
        for name in ("momentum", "beta_1", "beta_2"):
            _real(self, name, "a number in [0, 1)", lambda v: 0 <= v < 1)
        _real(self, "epsilon", "a finite number > 0", lambda v: v > 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-ready)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimizerSpec:
        """Rebuild from :meth:`to_dict` output (unknown keys are a ``ValueError``)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"optimizer must be an object, got {data!r}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown optimizer fields {unknown}")
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainPlan:
    """What a client trains in one round.

    Attributes
    ----------
    epochs : int
        Local epochs (>= 1).
    batch_size : int
        Examples per step (>= 1).
    learning_rate : float
        Client learning rate (finite, > 0).
    optimizer : OptimizerSpec
        The client optimizer and its constants.
    proximal_mu : float
        FedProx's μ: the local objective adds ``μ/2 ‖w − w_global‖²`` (0 is FedAvg).
    seed : int
        Seed of the batch order (>= 0).
    codec : str
        How to encode the update (a ``fedlab.codec`` config as compact JSON, e.g.
        error feedback over top-k + 4-bit QSGD); empty: send float32 tensors. The device
        keeps the codec's state (residual, random stream) between rounds.
    clip_norm : float
        Scale the update to at most this L2 norm (all tensors together) before anything
        else happens to it: the client-side clipping DP-FedAvg under secure aggregation
        needs, where the server never sees an update to clip. 0: no clipping.
    hold_update : bool
        Secure aggregation: keep the update on the device and send only its metadata
        (an envelope with an empty body); the update leaves the device only masked, in the
        secure-aggregation stages that follow.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    proximal_mu: float = 0.0
    seed: int = 0
    codec: str = ""
    clip_norm: float = 0.0
    hold_update: bool = False

    def __post_init__(self) -> None:
        _int(self, "epochs", 1)
        _int(self, "batch_size", 1)
        _int(self, "seed", 0)
        _real(self, "learning_rate", "a finite number > 0", lambda v: v > 0)
        _real(self, "proximal_mu", "a finite number >= 0", lambda v: v >= 0)
        if not isinstance(self.optimizer, OptimizerSpec):
            raise TypeError(f"optimizer must be an OptimizerSpec, got {self.optimizer!r}")
        if not isinstance(self.codec, str):
            raise TypeError(f"codec must be a JSON string, got {self.codec!r}")
        _real(self, "clip_norm", "a finite number >= 0", lambda v: v >= 0)
        if not isinstance(self.hold_update, bool):
            raise TypeError(f"hold_update must be a bool, got {self.hold_update!r}")
        if self.hold_update and self.codec:
            raise ValueError("a held update is masked, not encoded: give no codec with it")
        if self.codec:
            try:
                config = json.loads(self.codec)
            except ValueError:
                config = None
            if not isinstance(config, dict) or not isinstance(config.get("name"), str):
                raise ValueError(
                    f"codec must be a codec config as a JSON object, got {self.codec!r:.80}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-ready); the optimizer is a nested dict (``codec`` only
        when there is one, ``hold_update`` and ``clip_norm`` only when set, so older plans encode as
        before)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["optimizer"] = self.optimizer.to_dict()
        if not self.codec:
            del out["codec"]
        if not self.hold_update:
            del out["hold_update"]
        if not self.clip_norm:
            del out["clip_norm"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainPlan:
        """Rebuild from :meth:`to_dict` output (unknown keys are a ``ValueError``)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"plan must be an object, got {data!r}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown plan fields {unknown}")
        for name in ("epochs", "batch_size", "learning_rate"):
            if name not in data:
                raise ValueError(f"plan field {name!r} is missing")
        values = dict(data)
        if "optimizer" in values:
            values["optimizer"] = OptimizerSpec.from_dict(values["optimizer"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RoundTask:
    """One round's work for one client (or, with ``client_id=0``, for every device that
    reads a shared exchange).

    Attributes
    ----------
    round_index : int
        The round (>= 0).
    model_version : str
        The model the task is for (a kit's model version: its architecture and export);
        a device refuses a task for another model.
    plan : TrainPlan
        What to train.
    weights : tuple of arrays, optional
        The global model, inline (finite float arrays; stored as read-only copies).
    weights_ref : str
        Where to get the global model instead (a URL, a path, a registry key): exactly
        one of ``weights`` and ``weights_ref`` is given.
    base_version : str
        Content hash of the global weights (:func:`weights_version`): computed when the
        weights are inline and empty, and a given one must match them; required with
        ``weights_ref``. Updates echo it, so a stale update is refused.
    client_id : int
        The client asked (>= 0); its update must carry this id.
    deadline : float
        When the update is due, in seconds since the Unix epoch (0: no deadline). The
        server enforces it when collecting; a device without a reliable clock is not
        asked to.
    run_id : str
        The server's run (letters, digits, ``_.-``; empty: none). Updates echo it, so an
        answer to another run's task — same round, same weights, another plan — is refused,
        and a device answers each run's tasks once.
    """

    round_index: int
    model_version: str
    plan: TrainPlan
    weights: Tensors | None = None
    weights_ref: str = ""
    base_version: str = ""
    client_id: int = 0
    deadline: float = 0.0
    run_id: str = ""

    def __post_init__(self) -> None:
        _int(self, "round_index", 0)
        _int(self, "client_id", 0)
        if not isinstance(self.run_id, str) or (self.run_id and not _DEVICE_ID.match(self.run_id)):
            raise ValueError(
                "run_id must be empty or 1-64 letters, digits, '_', '.' or '-', "
                f"got {self.run_id!r}"
            )
        if not isinstance(self.model_version, str) or not self.model_version:
            raise ValueError(
                "model_version must be the kit's model version (a non-empty string), "
                f"got {self.model_version!r}"
            )
        if not isinstance(self.plan, TrainPlan):
            raise TypeError(f"plan must be a TrainPlan, got {type(self.plan).__name__}")
        if not isinstance(self.weights_ref, str):
            raise TypeError(f"weights_ref must be a string, got {self.weights_ref!r}")
        if not isinstance(self.base_version, str):
            raise TypeError(f"base_version must be a string, got {self.base_version!r}")
        _real(self, "deadline", "a finite number >= 0", lambda v: v >= 0)
        if (self.weights is None) == (not self.weights_ref):
            raise ValueError(
                "give exactly one of weights and weights_ref, got "
                f"{'neither' if self.weights is None else 'both'}"
            )
        if self.weights is None:
            if not self.base_version:
                raise ValueError("base_version is required with weights_ref, got ''")
            return
        weights = _tensors("weights", self.weights, finite=True)
        object.__setattr__(self, "weights", weights)
        digest = weights_version(weights)
        if not self.base_version:
            object.__setattr__(self, "base_version", digest)
        elif self.base_version != digest:
            raise ValueError(
                f"base_version {self.base_version!r} does not match the weights ({digest!r})"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoundTask):
            return NotImplemented
        return all(
            getattr(self, k) == getattr(other, k)
            for k in self.__dataclass_fields__
            if k != "weights"
        ) and _same_tensors(self.weights, other.weights)

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    def expect_headers(self) -> dict[str, Any]:
        """What every update for this task must echo: ``round_index``, ``model_version``,
        ``base_version`` and the ``run_id`` when there is one (the server policy's
        ``expect_headers``)."""
        expected: dict[str, Any] = {
            "round_index": self.round_index,
            "model_version": self.model_version,
            "base_version": self.base_version,
        }
        if self.run_id:
            expected["run_id"] = self.run_id
        return expected

    def client_plan_fields(self) -> dict[str, Any]:
        """The keyword arguments of the round engine's ``ClientPlan`` for this task:
        ``ClientPlan(**task.client_plan_fields())``."""
        p = self.plan
        return {
            "client_id": self.client_id,
            "round_index": self.round_index,
            "epochs": p.epochs,
            "batch_size": p.batch_size,
            "learning_rate": p.learning_rate,
            "optimizer": p.optimizer.name,
            "momentum": p.optimizer.momentum,
            "proximal_mu": p.proximal_mu,
            "seed": p.seed,
        }

    @classmethod
    def from_client_plan(
        cls,
        plan: Any,
        *,
        model_version: str,
        weights: Sequence[np.ndarray] | None = None,
        weights_ref: str = "",
        base_version: str = "",
        deadline: float = 0.0,
    ) -> RoundTask:
        """The task for an engine ``ClientPlan`` (read by attribute: ``client_id``,
        ``round_index``, ``epochs``, ``batch_size``, ``learning_rate``, ``optimizer``,
        ``momentum``, ``proximal_mu``, ``seed``)."""
        return cls(
            round_index=plan.round_index,
            client_id=plan.client_id,
            model_version=model_version,
            plan=TrainPlan(
                epochs=plan.epochs,
                batch_size=plan.batch_size,
                learning_rate=plan.learning_rate,
                optimizer=OptimizerSpec(name=plan.optimizer, momentum=plan.momentum),
                proximal_mu=plan.proximal_mu,
                seed=plan.seed,
            ),
            weights=None if weights is None else tuple(np.asarray(w) for w in weights),
            weights_ref=weights_ref,
            base_version=base_version,
            deadline=deadline,
        )


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class UpdateEnvelope:
    """A client's update on the wire.

    Attributes
    ----------
    client_id : int
        The client (>= 0).
    round_index : int
        The round it answers.
    model_version, base_version : str
        Echoed from the task (which model, and which global weights it started from).
    num_examples : int
        Examples trained on (>= 0; the server's policy caps it).
    body : tuple of arrays, or bytes
        The update tensors (``local − global``; float16/32/64, stored as read-only
        copies), or an opaque payload that a server stage decodes (a codec's output, a
        secure-aggregation share) — ``headers`` then names what it is.
    num_steps : int
        Optimizer steps taken (>= 0).
    metrics : mapping of str to float
        Finite numbers the client reports (``train_loss``…).
    headers : mapping of str to str, int, float or bool
        Stage metadata (codec name, signature…).
    device_id : str
        The sending device's name (letters, digits, ``_.-``; empty in simulation).
    """

    client_id: int
    round_index: int
    model_version: str
    base_version: str
    num_examples: int
    body: Tensors | bytes
    num_steps: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    headers: Mapping[str, Scalar] = field(default_factory=dict)
    device_id: str = ""

    def __post_init__(self) -> None:
        _int(self, "client_id", 0)
        _int(self, "round_index", 0)
        _int(self, "num_examples", 0)
        _int(self, "num_steps", 0)
        _text(self, "model_version")
        _text(self, "base_version")
        if not isinstance(self.device_id, str):
            raise TypeError(f"device_id must be a string, got {self.device_id!r}")
        if self.device_id and not _DEVICE_ID.match(self.device_id):
            raise ValueError(
                f"device_id must be 1-64 letters, digits, '_', '.' or '-', got {self.device_id!r}"
            )
        if isinstance(self.body, bytes | bytearray | memoryview):
            object.__setattr__(self, "body", bytes(self.body))
        else:
            object.__setattr__(self, "body", _tensors("body", self.body, finite=False))
        if not isinstance(self.metrics, Mapping):
            raise TypeError(f"metrics must be a mapping, got {self.metrics!r}")
        metrics: dict[str, float] = {}
        for key, value in self.metrics.items():
            if not isinstance(key, str):
                raise TypeError(f"metric names must be strings, got {key!r}")
            if not (_is_real(value) and math.isfinite(value)):
                raise ValueError(f"metric {key!r} must be a finite number, got {value!r}")
            metrics[key] = float(value)
        object.__setattr__(self, "metrics", metrics)
        if not isinstance(self.headers, Mapping):
            raise TypeError(f"headers must be a mapping, got {self.headers!r}")
        for key, item in self.headers.items():
            ok = isinstance(item, str | bool | int) or (
                isinstance(item, float) and math.isfinite(item)
            )
            if not isinstance(key, str) or not ok:
                raise ValueError(
                    f"header {key!r} must be a string, bool, int or finite float, got {item!r}"
                )
        object.__setattr__(self, "headers", dict(self.headers))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpdateEnvelope):
            return NotImplemented
        return all(
            getattr(self, k) == getattr(other, k) for k in self.__dataclass_fields__ if k != "body"
        ) and _same_tensors(self.body, other.body)

    __hash__ = None  # type: ignore[assignment]  # holds arrays

    @property
    def nbytes(self) -> int:
        """Size of the body (an opaque payload's length, or the tensors' buffers)."""
        if isinstance(self.body, bytes):
            return len(self.body)
        return int(sum(a.nbytes for a in self.body))

    @classmethod
    def from_client_update(
        cls, update: Any, task: RoundTask, *, device_id: str = ""
    ) -> UpdateEnvelope:
        """The envelope answering ``task`` for an engine ``ClientUpdate`` (read by
        attribute: ``client_id``, ``delta``, ``num_examples``, ``num_steps``,
        ``metrics``); round and versions are echoed from ``task`` (its ``run_id`` as the
        ``run_id`` header)."""
        return cls(
            client_id=update.client_id,
            round_index=task.round_index,
            model_version=task.model_version,
            base_version=task.base_version,
            num_examples=update.num_examples,
            body=update.delta,
            num_steps=update.num_steps,
            metrics=update.metrics,
            headers={"run_id": task.run_id} if task.run_id else {},
            device_id=device_id,
        )

    def engine_fields(self) -> dict[str, Any]:
        """The keyword arguments of the round engine's ``Envelope`` for this update:
        ``Envelope(**envelope.engine_fields())``. Its ``headers`` hold the stage headers
        plus ``round_index``, ``model_version`` and ``base_version`` (what the server's
        ``expect_headers`` compares, see :meth:`RoundTask.expect_headers`) and
        ``device_id`` when there is one."""
        headers: dict[str, Any] = {
            **self.headers,
            "round_index": self.round_index,
            "model_version": self.model_version,
            "base_version": self.base_version,
        }
        if self.device_id:
            headers["device_id"] = self.device_id
        return {
            "client_id": self.client_id,
            "num_examples": self.num_examples,
            "body": self.body,
            "num_steps": self.num_steps,
            "metrics": dict(self.metrics),
            "headers": headers,
        }
