"""Differential privacy: DP-FedAvg at the aggregator, a privacy ledger on dp-accounting,
calibration, budgets, client DP-SGD and a membership-inference attack (needs TensorFlow)."""

# fedlab._tf first: tensorflow_privacy imports TensorFlow, and TensorFlow must come after
# tensorflow_model_optimization for fedlab's single Keras (see fedlab/_tf.py).
import fedlab._tf  # noqa: F401

# isort: split

from fedlab.privacy.accounting import (
    PrivacyLedger,
    effective_noise_multiplier,
    epsilon_for,
    max_rounds_for,
    noise_multiplier_for,
    round_event,
)
from fedlab.privacy.attacks import (
    AttackResult,
    loss_ratio_attack,
    loss_threshold_attack,
    member_holdout_split,
    split_devices,
)
from fedlab.privacy.ddg import DDGLedger, DDGPlan, encoded_sensitivity, plan_ddg, plan_ddg_run
from fedlab.privacy.ddg_tracker import DDGTracker, secagg_config
from fedlab.privacy.dp_fedavg import DPFedAvg, clip_by_global_norm, global_norm
from fedlab.privacy.dp_sgd import DPSGDRuntime, dp_sgd_epsilon, dp_sgd_statement
from fedlab.privacy.lower_bound import EpsilonLowerBound, epsilon_lower_bound
from fedlab.privacy.tracker import BudgetExceeded, PrivacyTracker

__all__ = [
    "AttackResult",
    "BudgetExceeded",
    "DDGLedger",
    "DDGPlan",
    "DDGTracker",
    "DPFedAvg",
    "DPSGDRuntime",
    "EpsilonLowerBound",
    "PrivacyLedger",
    "PrivacyTracker",
    "clip_by_global_norm",
    "dp_sgd_epsilon",
    "dp_sgd_statement",
    "effective_noise_multiplier",
    "encoded_sensitivity",
    "epsilon_for",
    "epsilon_lower_bound",
    "global_norm",
    "loss_ratio_attack",
    "loss_threshold_attack",
    "max_rounds_for",
    "member_holdout_split",
    "noise_multiplier_for",
    "plan_ddg",
    "plan_ddg_run",
    "round_event",
    "secagg_config",
    "split_devices",
]
