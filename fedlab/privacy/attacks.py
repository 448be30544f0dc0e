"""Empirical privacy: a loss-threshold membership-inference attack (Yeom et al. 2018).

The attacker sees the final model and one example and guesses whether it was in some
client's training data; its score is the negative loss (members tend to have lower loss).
We report the ROC AUC (0.5 = guessing) with a bootstrap confidence interval so that a
difference between two models can be told from noise. tensorflow-privacy 0.9.0 no longer
ships its ``privacy_tests`` package, so the attack is written here with scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedlab.data.arrays import LabeledArrays
from fedlab.data.federated_dataset import ClientData, FederatedDataset

__all__ = ["AttackResult", "loss_threshold_attack", "member_holdout_split"]


@dataclass(frozen=True, slots=True)
class AttackResult:
    """Outcome of a membership-inference attack."""

    auc: float
    ci_low: float
    ci_high: float
    advantage: float  # max over thresholds of TPR − FPR
    members: int
    nonmembers: int

    def describe(self) -> str:
        """One line with the interval."""
        return (
            f"AUC {self.auc:.3f} (95% CI {self.ci_low:.3f}–{self.ci_high:.3f}), "
            f"advantage {self.advantage:.3f}, {self.members} members vs "
            f"{self.nonmembers} non-members"
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
    from sklearn.metrics import roc_auc_score, roc_curve

    members = np.asarray(member_losses, dtype=np.float64)
    nonmembers = np.asarray(nonmember_losses, dtype=np.float64)
    for name, values in (("member", members), ("non-member", nonmembers)):
        if values.ndim != 1 or len(values) < 2:
            raise ValueError(
                f"need a 1-D array of at least 2 {name} losses, got shape {values.shape}"
            )
        if not np.isfinite(values).all():
            raise ValueError(f"{name} losses contain NaN or Inf")
    if bootstrap < 1:
        raise ValueError(f"bootstrap must be >= 1, got {bootstrap!r}")
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    scores = -np.concatenate([members, nonmembers])
    auc = float(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores)
    rng = np.random.default_rng(seed)
    samples = np.empty(bootstrap)
    for b in range(bootstrap):
        m = rng.choice(members, size=len(members))
        n = rng.choice(nonmembers, size=len(nonmembers))
        samples[b] = roc_auc_score(labels, -np.concatenate([m, n]))
    low, high = np.percentile(samples, [2.5, 97.5])
    return AttackResult(
        auc, float(low), float(high), float(np.max(tpr - fpr)), len(members), len(nonmembers)
    )


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
