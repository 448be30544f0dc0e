"""Privacy targets of issue 7, measured in one run; writes ``build/bench/privacy.json``.

1. Utility: a synthetic sensor fleet of 2,000 devices, Poisson sampling of 100 per round,
   DP-FedAvg calibrated to ε = 4 (δ = 1/2000^1.1, PLD accountant) against the non-private
   run with the same rounds and the same server optimizer.
2. Speed: ε for 1,000 rounds with the RDP accountant.
3. Calibration: noise multipliers for ε = 1, 3, 8 and the ε they achieve.
4. Membership inference (loss threshold) on both models: held-out windows of the same
   devices are the non-members; AUC with a bootstrap 95 % interval.

Usage: ``python benchmarks/privacy.py [--rounds 100] [--population 2000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--population", type=int, default=2000)
    parser.add_argument("--cohort", type=int, default=100)
    parser.add_argument("--epsilon", type=float, default=4.0)
    args = parser.parse_args()

    from fedlab.data import federated_sensors
    from fedlab.federated import FedAvgM, Federation, FederationConfig, PoissonSampler, make_runtime
    from fedlab.models import build_model
    from fedlab.privacy import (
        DPFedAvg,
        PrivacyTracker,
        epsilon_for,
        loss_threshold_attack,
        member_holdout_split,
        noise_multiplier_for,
    )

    n, k, rounds = args.population, args.cohort, args.rounds
    delta = n**-1.1
    out: dict[str, object] = {"population": n, "cohort": k, "rounds": rounds, "delta": delta}

    start = time.perf_counter()
    eps_1000 = epsilon_for(
        noise_multiplier=1.0, population=n, cohort=k, rounds=1000, delta=delta, accountant="rdp"
    )
    rdp_seconds = time.perf_counter() - start
    out["rdp_1000_rounds"] = {"seconds": rdp_seconds, "epsilon_at_z1": eps_1000}

    calibration = []
    for target in (1.0, 3.0, 8.0):
        start = time.perf_counter()
        z = noise_multiplier_for(
            target_epsilon=target, delta=delta, rounds=rounds, population=n, cohort=k
        )
        achieved = epsilon_for(
            noise_multiplier=z, population=n, cohort=k, rounds=rounds, delta=delta
        )
        calibration.append(
            {
                "target": target,
                "noise_multiplier": z,
                "achieved": achieved,
                "relative_error": (target - achieved) / target,
                "seconds": time.perf_counter() - start,
            }
        )
    out["calibration"] = calibration

    fleet = federated_sensors(num_devices=n, test_devices=200, seed=0)
    members, nonmembers = member_holdout_split(fleet, holdout=0.2, seed=0)
    z = noise_multiplier_for(
        target_epsilon=args.epsilon, delta=delta, rounds=rounds, population=n, cohort=k
    )
    runs = {}
    for label, strategy in (
        ("non_private", FedAvgM(momentum=0.9)),
        (
            "dp_fedavg",
            DPFedAvg(
                noise_multiplier=z, clip_norm=0.5, expected_clients=k, inner=FedAvgM(momentum=0.9)
            ),
        ),
    ):
        runtime = make_runtime(lambda: build_model("sensor_cnn1d", (100, 3), 6, seed=0))
        fed = Federation(
            data=members,
            runtime=runtime,
            strategy=strategy,
            sampler=PoissonSampler(k / n),
            config=FederationConfig(
                clients_per_round=k,
                local_epochs=2,
                batch_size=16,
                client_lr=0.05,
                eval_every=10,
                seed=0,
            ),
        )
        tracker = None
        if label == "dp_fedavg":
            tracker = PrivacyTracker(population=n, delta=delta, sampling="poisson").attach(fed)
        start = time.perf_counter()
        history = fed.run(rounds)
        seconds = time.perf_counter() - start
        union = members.union()
        member_loss = runtime.per_example_loss(fed.weights, union.x, union.y)  # type: ignore[attr-defined]
        nonmember_loss = runtime.per_example_loss(fed.weights, nonmembers.x, nonmembers.y)  # type: ignore[attr-defined]
        attack = loss_threshold_attack(member_loss, nonmember_loss, bootstrap=500)
        runs[label] = {
            "accuracy": history.last_accuracy(),
            "seconds": seconds,
            "epsilon_pld": tracker.ledger.epsilon("pld") if tracker else None,
            "epsilon_rdp": tracker.ledger.epsilon("rdp") if tracker else None,
            "noise_multiplier": z if tracker else 0.0,
            "mia_auc": attack.auc,
            "mia_ci": [attack.ci_low, attack.ci_high],
            "mia_advantage": attack.advantage,
            "statement": tracker.privacy_statement() if tracker else "no DP: no guarantee",
        }
    out["runs"] = runs
    gap = runs["non_private"]["accuracy"] - runs["dp_fedavg"]["accuracy"]  # type: ignore[operator]
    out["accuracy_gap_points"] = 100 * gap

    print(f"fleet {n} devices, Poisson q = {k}/{n}, {rounds} rounds, δ = {delta:.3g}")
    print(
        f"ε for 1,000 rounds (RDP, z = 1): {eps_1000:.3f} in {rdp_seconds:.3f} s   (target ≤ 0.5 s)"
    )
    print("calibration (PLD):")
    for c in calibration:
        print(
            f"  target ε {c['target']:g}: z = {c['noise_multiplier']:.4f}, achieved ε = "
            f"{c['achieved']:.4f} ({100 * c['relative_error']:.2f} % under; target within 1 %), "
            f"{c['seconds']:.1f} s"
        )
    print(f"{'run':<12} {'accuracy':>9} {'ε (PLD)':>8} {'MIA AUC':>8} {'95% CI':>15} {'s':>6}")
    for label, r in runs.items():
        eps = "∞" if r["epsilon_pld"] is None else f"{r['epsilon_pld']:.3f}"
        print(
            f"{label:<12} {r['accuracy']:9.4f} {eps:>8} {r['mia_auc']:8.3f} "
            f"{r['mia_ci'][0]:7.3f}–{r['mia_ci'][1]:.3f} {r['seconds']:6.1f}"
        )
    print(f"accuracy gap: {100 * gap:.2f} points   (target ≤ 5)")
    print(f"MIA AUC with DP: {runs['dp_fedavg']['mia_auc']:.3f}   (target ≤ 0.55)")
    print()
    print(runs["dp_fedavg"]["statement"])
    path = ROOT / "build" / "bench" / "privacy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
