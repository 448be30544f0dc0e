"""A small, TensorFlow-free fleet for operations work: features, a softmax model, drift.

Operations (canary, drift, rollback) are about many rounds and many versions, not about a
big model, so the demos and benchmarks here use:

* :func:`sensor_features` — 15 summary features of an accelerometer window (per-axis mean,
  standard deviation, mean absolute first difference, min and max), what a
  microcontroller computes in one pass;
* :class:`SoftmaxRuntime` — multinomial logistic regression on those features, trained with
  minibatch SGD in numpy; a :class:`~fedlab.federated.runtime_base.ClientRuntime`, so the
  real :class:`~fedlab.federated.Federation` runs it;
* :class:`SensorFleet` — the synthetic fleet of :mod:`fedlab.data.sensors` as features, each
  device's windows split into training data and a local held-out set (for canary
  evaluation), generated twice from the same seed: without drift and with ``drift`` (the same
  devices, same activities, with the mounting rotated and offsets shifted);
* :meth:`SensorFleet.monitoring_round` — what the server sees in one round of production
  monitoring: the cohort's mean loss and accuracy of the production model on fresh local
  windows, and the cohort's mean *input shift* — each device compares the feature means of
  its fresh windows with the reference it stored at enrolment and reports one standardised
  number; the server gets only cohort means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedlab.data.arrays import LabeledArrays
from fedlab.data.federated_dataset import ClientData, FederatedDataset
from fedlab.federated.runtime_base import ClientFailure
from fedlab.federated.stages import StageContext
from fedlab.federated.types import ClientPlan, ClientUpdate, Envelope, Weights

__all__ = ["SensorFleet", "SignFlipAttack", "SoftmaxRuntime", "sensor_features"]

NUM_FEATURES = 15


def sensor_features(x: np.ndarray) -> np.ndarray:
    """Per-window features ``(n, 15)`` of windows ``(n, T, 3)``: mean, std, mean |Δ|, min and
    max of each axis (float32)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[1] < 2:
        raise ValueError(f"windows must have shape (n, T >= 2, 3), got {x.shape}")
    diff = np.abs(np.diff(x, axis=1)).mean(axis=1)
    return np.concatenate(
        [x.mean(axis=1), x.std(axis=1), diff * 10.0, x.min(axis=1), x.max(axis=1)], axis=1
    ).astype(np.float32)


def _softmax_loss_grad(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    p[np.arange(n), y] -= 1.0
    return loss, x.T @ p / n, p.mean(axis=0), logits


@dataclass(frozen=True, slots=True)
class SoftmaxRuntime:
    """Multinomial logistic regression, client training by minibatch SGD (numpy only).

    Parameters
    ----------
    num_features, num_classes : int
        Input and output sizes.
    initial : tuple of arrays, optional
        Start from these weights (a fine-tuning run starts from the production version).
    seed : int
        Initial weights when ``initial`` is not given (small Gaussian).
    """

    num_features: int = NUM_FEATURES
    num_classes: int = 6
    initial: tuple[np.ndarray, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_features", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.initial is not None:
            shapes = [np.shape(w) for w in self.initial]
            if shapes != [(self.num_features, self.num_classes), (self.num_classes,)]:
                raise ValueError(f"initial weights have shapes {shapes}")

    def initial_weights(self) -> Weights:
        """``initial`` or small random weights."""
        if self.initial is not None:
            return tuple(np.array(w, np.float32) for w in self.initial)
        rng = np.random.default_rng([self.seed, 0x50F7])
        return (
            (0.01 * rng.standard_normal((self.num_features, self.num_classes))).astype(np.float32),
            np.zeros(self.num_classes, np.float32),
        )

    def train_one(self, weights: Weights, data: ClientData, plan: ClientPlan) -> ClientUpdate:
        """Local SGD: ``plan.epochs`` passes in minibatches, shuffled by ``plan.seed``."""
        w = np.asarray(weights[0], np.float64).copy()
        b = np.asarray(weights[1], np.float64).copy()
        w0, b0 = w.copy(), b.copy()
        rng = np.random.default_rng(plan.seed)
        x, y = np.asarray(data.x, np.float64), np.asarray(data.y)
        losses, steps = [], 0
        for _ in range(plan.epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), plan.batch_size):
                idx = order[start : start + plan.batch_size]
                loss, gw, gb, _ = _softmax_loss_grad(w, b, x[idx], y[idx])
                if plan.proximal_mu:
                    gw += plan.proximal_mu * (w - w0)
                    gb += plan.proximal_mu * (b - b0)
                w -= plan.learning_rate * gw
                b -= plan.learning_rate * gb
                losses.append(loss)
                steps += 1
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise FloatingPointError("local training diverged (non-finite weights)")
        delta = ((w - w0).astype(np.float32), (b - b0).astype(np.float32))
        return ClientUpdate(
            data.client_id, delta, data.num_examples, steps, {"train_loss": float(np.mean(losses))}
        )

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """Train every job; a client whose training raises is a ``ClientFailure``."""
        out: list[ClientUpdate | ClientFailure] = []
        for data, plan in jobs:
            try:
                out.append(self.train_one(global_weights, data, plan))
            except (FloatingPointError, ValueError) as exc:
                out.append(ClientFailure(data.client_id, f"{type(exc).__name__}: {exc}"))
        return out

    def evaluate(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> dict[str, float]:
        """Cross-entropy loss and accuracy of ``weights`` on ``(x, y)``."""
        w, b = np.asarray(weights[0], np.float64), np.asarray(weights[1], np.float64)
        y = np.asarray(y)
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            return {"loss": float("inf"), "accuracy": 0.0}
        loss, _, _, logits = _softmax_loss_grad(w, b, np.asarray(x, np.float64), y)
        return {"loss": loss, "accuracy": float((logits.argmax(axis=1) == y).mean())}

    def accuracy(self, weights: Weights, data: ClientData) -> float:
        """Accuracy on one device's data (a canary :data:`~fedlab.ops.canary.LocalEvaluator`)."""
        return self.evaluate(weights, data.x, data.y)["accuracy"]


def _split(
    arrays: LabeledArrays, feats: np.ndarray, num_devices: int, holdout: float, seed: int
) -> tuple[tuple[ClientData, ...], tuple[ClientData, ...]]:
    assert arrays.groups is not None
    train, held = [], []
    for d in range(num_devices):
        idx = np.flatnonzero(arrays.groups == d)
        rng = np.random.default_rng([seed, d, 0x40])
        idx = idx[rng.permutation(len(idx))]
        k = min(max(2, round(holdout * len(idx))), len(idx) - 1)
        held.append(ClientData(d, feats[idx[:k]], arrays.y[idx[:k]]))
        train.append(ClientData(d, feats[idx[k:]], arrays.y[idx[k:]]))
    return tuple(train), tuple(held)


@dataclass(frozen=True, slots=True)
class SensorFleet:
    """A synthetic accelerometer fleet as features, clean and drifted, with held-out sets.

    Build it with :meth:`generate`. ``clean``/``drifted`` hold every device's training
    features before/after the drift; ``holdout_clean``/``holdout_drifted`` the local held-out
    sets; ``test`` is a central test set from other devices (clean).
    """

    clean: tuple[ClientData, ...]
    drifted: tuple[ClientData, ...]
    holdout_clean: tuple[ClientData, ...]
    holdout_drifted: tuple[ClientData, ...]
    test: LabeledArrays
    reference: np.ndarray  # (devices, 2, features): each device's enrolment mean and sd
    seed: int
    drift: float

    @classmethod
    def generate(
        cls,
        *,
        num_devices: int = 60,
        windows_per_device: int = 40,
        drift: float = 1.0,
        holdout: float = 0.3,
        test_devices: int = 20,
        seed: int = 0,
    ) -> SensorFleet:
        """Generate the fleet (``drift`` as in :class:`~fedlab.data.sensors.SensorFleetConfig`:
        each window of the drifted copy is drifted by ``drift × time``, ``time`` uniform in
        [0, 1] on the device's time line)."""
        from fedlab.data.sensors import SensorFleetConfig, generate_sensor_fleet

        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {holdout!r}")
        if not drift > 0:
            raise ValueError(f"drift must be > 0, got {drift!r}")
        total = num_devices + test_devices
        cfg = SensorFleetConfig(num_devices=total, windows_per_device=windows_per_device, seed=seed)
        clean = generate_sensor_fleet(cfg)
        # Same seed, same devices, activities and noise: only the drift transform differs
        # (window i rotated and offset by drift × its time in [0, 1]). Switching from one
        # copy to the other is an abrupt change, e.g. sensors re-mounted in maintenance.
        drifted = generate_sensor_fleet(cfg, drift=drift)
        assert clean.groups is not None
        # Features are standardised with constants from the clean training fleet, shipped
        # with the model like a normalisation layer (drift then shows as a shift of them).
        raw_c, raw_d = sensor_features(clean.x), sensor_features(drifted.x)
        enrolled = clean.groups < num_devices
        mu, sd = raw_c[enrolled].mean(axis=0), raw_c[enrolled].std(axis=0) + 1e-6
        feats_c, feats_d = (raw_c - mu) / sd, (raw_d - mu) / sd
        train_c, held_c = _split(clean, feats_c, num_devices, holdout, seed)
        train_d, held_d = _split(drifted, feats_d, num_devices, holdout, seed)
        is_test = np.flatnonzero(~enrolled)
        test = LabeledArrays(feats_c[is_test], clean.y[is_test], name="test")
        reference = np.stack(
            [np.stack([c.x.mean(axis=0), c.x.std(axis=0) + 1e-3]) for c in train_c]
        )
        return cls(train_c, train_d, held_c, held_d, test, reference, seed, float(drift))

    @property
    def num_devices(self) -> int:
        """Devices in the fleet."""
        return len(self.clean)

    def dataset(self, *, drifted: bool = False) -> FederatedDataset:
        """The training fleet (clean or drifted) for a :class:`~fedlab.federated.Federation`."""
        clients = self.drifted if drifted else self.clean
        name = f"sensor features ({'drifted' if drifted else 'clean'})"
        return FederatedDataset(clients, self.test, 6, name=name)

    def holdout(self, *, drifted: bool = False) -> tuple[ClientData, ...]:
        """Every device's local held-out set."""
        return self.holdout_drifted if drifted else self.holdout_clean

    def monitoring_round(
        self,
        round_index: int,
        weights: Weights,
        runtime: SoftmaxRuntime,
        *,
        drifted: bool,
        cohort: int = 20,
        windows: int = 8,
    ) -> dict[str, float]:
        """What the server learns from one round of production monitoring (cohort means).

        ``cohort`` devices, drawn by ``(seed, round_index)``, each take ``windows`` fresh
        windows (drawn from its clean or drifted data), evaluate the production ``weights``
        on them, and compute their input shift: the mean over features of
        ``|mean_now − mean_ref| / sd_ref`` against the reference stored at enrolment.
        """
        rng = np.random.default_rng([self.seed, round_index, 0xD1])
        pool = self.drifted if drifted else self.clean
        devices = rng.choice(self.num_devices, size=min(cohort, self.num_devices), replace=False)
        losses, accs, shifts = [], [], []
        for d in devices:
            data = pool[d]
            take = rng.choice(
                data.num_examples, size=min(windows, data.num_examples), replace=False
            )
            x, y = data.x[take], data.y[take]
            m = runtime.evaluate(weights, x, y)
            losses.append(m["loss"])
            accs.append(m["accuracy"])
            ref_mean, ref_sd = self.reference[d]
            shifts.append(float(np.mean(np.abs(x.mean(axis=0) - ref_mean) / ref_sd)))
        return {
            "loss": float(np.mean(losses)),
            "accuracy": float(np.mean(accs)),
            "input_shift": float(np.mean(shifts)),
        }


@dataclass(frozen=True, slots=True)
class SignFlipAttack:
    """A client stage playing poisoned devices: the updates of ``client_ids`` are multiplied
    by ``scale`` (−10: sign-flipped and ten times longer) before they are sent."""

    client_ids: frozenset[int]
    scale: float = -10.0
    name: str = "sign_flip_attack"

    def __post_init__(self) -> None:
        object.__setattr__(self, "client_ids", frozenset(int(c) for c in self.client_ids))
        if not np.isfinite(self.scale):
            raise ValueError(f"scale must be finite, got {self.scale!r}")

    def apply(self, envelope: Envelope, context: StageContext) -> Envelope:
        """Scale a malicious client's update; others pass unchanged."""
        if envelope.client_id not in self.client_ids or isinstance(envelope.body, bytes):
            return envelope
        body = tuple((np.asarray(a) * self.scale).astype(np.float32) for a in envelope.body)
        return replace(envelope, body=body)
