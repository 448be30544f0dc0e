"""Empirical privacy: membership-inference attacks with confidence intervals.

The attacker sees the final model and one example and guesses whether it was in some
client's training data. Two attacks:

* **loss threshold** (Yeom et al. 2018): score = −loss. Weak: it confuses "hard example"
  with "non-member", so on a model that memorizes moderately it can sit near AUC 0.5.
* **loss ratio against a reference model** (the offline, single-reference form of the
  calibrated attacks of Watson et al. 2022 and LiRA, Carlini et al. 2022): the target's
  confidence in the true label against that of a model trained the same way on *other
  devices* (never the target devices), both on LiRA's logit scale
  ``log(p / (1 − p))`` with p = exp(−loss) — which spreads out the near-zero losses where
  memorization shows. The reference calibrates each example's difficulty, which is what
  the threshold misses.

We report the ROC AUC (0.5 = guessing) with a bootstrap confidence interval so that a
difference between two models can be told from noise. An attack that fails proves nothing
about privacy by itself (only the DP statement does); an attack that succeeds proves leakage.
tensorflow-privacy 0.9.0 no longer ships its ``privacy_tests`` package, so the attacks are
written here with scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlab.data.arrays import LabeledArrays
from fedlab.data.federated_dataset import ClientData, FederatedDataset

__all__ = [
    "AttackResult",
    "loss_ratio_attack",
    "loss_threshold_attack",
    "member_holdout_split",
    "split_devices",
]


@dataclass(frozen=True, slots=True)
class AttackResult:
    """Outcome of a membership-inference attack."""

    auc: float
    ci_low: float
    ci_high: float
    advantage: float  # max over thresholds of TPR − FPR
    members: int
    nonmembers: int
    attack: str = "loss threshold"

    def describe(self) -> str:
        """One line with the interval."""
        return (
            f"{self.attack}: AUC {self.auc:.3f} (95% CI {self.ci_low:.3f}–{self.ci_high:.3f}), "
            f"advantage {self.advantage:.3f}, {self.members} members vs "
            f"{self.nonmembers} non-members"
        )


def _losses(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) < 2:
        raise ValueError(f"need a 1-D array of at least 2 {name} losses, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} losses contain NaN or Inf")
    return array


def _scored_attack(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    bootstrap: int,
    seed: int,
    attack: str,
) -> AttackResult:
    """AUC of ``score`` (higher = member) with a stratified bootstrap 95 % interval."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if not isinstance(bootstrap, int) or bootstrap < 1:
        raise ValueError(f"bootstrap must be >= 1, got {bootstrap!r}")
    labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    scores = np.concatenate([member_scores, nonmember_scores])
    auc = float(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores)
    rng = np.random.default_rng(seed)
    samples = np.empty(bootstrap)
    for b in range(bootstrap):
        m = rng.choice(member_scores, size=len(member_scores))
        n = rng.choice(nonmember_scores, size=len(nonmember_scores))
        samples[b] = roc_auc_score(labels, np.concatenate([m, n]))
    low, high = np.percentile(samples, [2.5, 97.5])
    return AttackResult(
        auc,
        float(low),
        float(high),
        float(np.max(tpr - fpr)),
        len(member_scores),
        len(nonmember_scores),
        attack,
    )


def loss_threshold_attack(
    member_losses: np.ndarray,
    nonmember_losses: np.ndarray,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> AttackResult:
    """AUC of the score ``−loss`` at separating members from non-members.

    Parameters
    ----------
    member_losses, nonmember_losses : np.ndarray
        Per-example losses of training examples and of unseen examples from the same
        distribution (ideally the same devices).
    bootstrap : int
        Resamples for the 95 % percentile interval (stratified: members and non-members
        are resampled separately).
    seed : int
        Seed of the resampling.
    """
    members = _losses(member_losses, "member")
    nonmembers = _losses(nonmember_losses, "non-member")
    return _scored_attack(
        -members, -nonmembers, bootstrap=bootstrap, seed=seed, attack="loss threshold"
    )


def _logit_confidence(losses: np.ndarray) -> np.ndarray:
    """``log(p / (1 − p))`` of the true label, p = exp(−loss), stable for tiny losses."""
    loss = np.maximum(losses, 1e-12)  # a float32 loss of exactly 0 would be +inf
    return -loss - np.log(-np.expm1(-loss))


def loss_ratio_attack(
    member_losses: np.ndarray,
    nonmember_losses: np.ndarray,
    reference_member_losses: np.ndarray,
    reference_nonmember_losses: np.ndarray,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> AttackResult:
    """AUC of the target's logit-scaled confidence minus the reference's: a calibrated attack.

    Parameters
    ----------
    member_losses, nonmember_losses : np.ndarray
        The target model's per-example losses on training examples and on unseen examples
        of the same devices.
    reference_member_losses, reference_nonmember_losses : np.ndarray
        A reference model's losses on the same examples, in the same order. The reference
        must be trained the same way *without the target devices* (see
        :func:`split_devices`), so that it saw none of these examples.
    bootstrap, seed
        As in :func:`loss_threshold_attack`.
    """
    members = _losses(member_losses, "member")
    nonmembers = _losses(nonmember_losses, "non-member")
    ref_members = _losses(reference_member_losses, "reference member")
    ref_nonmembers = _losses(reference_nonmember_losses, "reference non-member")
    if ref_members.shape != members.shape or ref_nonmembers.shape != nonmembers.shape:
        raise ValueError(
            "reference losses must match the target's example by example: got "
            f"{ref_members.shape}/{ref_nonmembers.shape} for {members.shape}/{nonmembers.shape}"
        )
    return _scored_attack(
        _logit_confidence(members) - _logit_confidence(ref_members),
        _logit_confidence(nonmembers) - _logit_confidence(ref_nonmembers),
        bootstrap=bootstrap,
        seed=seed,
        attack="loss ratio vs reference",
    )


def split_devices(
    data: FederatedDataset, *, reference_share: float = 0.5, seed: int = 0
) -> tuple[FederatedDataset, FederatedDataset]:
    """Disjoint target and reference fleets (devices renumbered from 0 in each).

    The reference fleet trains the attacker's reference model: it never contains a target
    device, so the reference saw none of the target devices' examples.
    """
    if not 0 < reference_share < 1:
        raise ValueError(f"reference_share must be in (0, 1), got {reference_share!r}")
    n = data.num_clients
    cut = round(n * reference_share)
    if not 1 <= cut <= n - 1:
        raise ValueError(f"cannot split {n} device(s) with reference_share={reference_share!r}")
    order = np.random.default_rng(seed).permutation(n)

    def fleet(ids: np.ndarray, label: str) -> FederatedDataset:
        clients = tuple(
            ClientData(i, data.clients[c].x, data.clients[c].y)
            for i, c in enumerate(sorted(int(c) for c in ids))
        )
        return FederatedDataset(clients, data.test, data.num_classes, name=f"{data.name} ({label})")

    return fleet(order[cut:], "target devices"), fleet(order[:cut], "reference devices")


def member_holdout_split(
    data: FederatedDataset, *, holdout: float = 0.3, seed: int = 0
) -> tuple[FederatedDataset, LabeledArrays]:
    """Hold out a share of every client's examples as non-members from the same devices.

    Returns
    -------
    members : FederatedDataset
        The same clients with the remaining examples (what the federation trains on).
    nonmembers : LabeledArrays
        The held-out examples: same devices, never trained on.
    """
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout!r}")
    rng = np.random.default_rng(seed)
    kept, xs, ys = [], [], []
    for client in data.clients:
        order = rng.permutation(client.num_examples)
        cut = round(client.num_examples * holdout)
        cut = min(max(cut, 0), client.num_examples - 1)
        keep, out = order[cut:], order[:cut]
        kept.append(ClientData(client.client_id, client.x[keep], client.y[keep]))
        xs.append(client.x[out])
        ys.append(client.y[out])
    members = FederatedDataset(
        tuple(kept), data.test, data.num_classes, name=f"{data.name} (members)"
    )
    return members, LabeledArrays(np.concatenate(xs), np.concatenate(ys), name="non-members")
