"""Checks of what notebook 08_fleet_operations records (registered in test_notebooks.py)."""

from __future__ import annotations

from typing import Any


def check_fleet_operations(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True
    healthy, broken = results["healthy"], results["broken"]
    assert healthy["promoted"] is True and healthy["lower_bound"] > -cfg["tolerance"]
    assert broken["promoted"] is False and broken["lower_bound"] <= -cfg["tolerance"]
    # The broken version never left the canary cohort, and production did not move.
    assert broken["exposed_devices"] == broken["cohort_size"] < cfg["num_devices"]
    assert broken["production_unchanged"] is True
    assert broken["running"] == [healthy["candidate"]]
    assert broken["candidate_accuracy"] < broken["baseline_accuracy"] - cfg["tolerance"]
    robust = results["robust"]
    fedavg_loss = robust["FedAvg"]["clean"] - robust["FedAvg"]["attacked"]
    for name in ("median", "trimmed mean 10%", "norm-bounded FedAvg"):
        assert robust[name]["attacked"] > robust["FedAvg"]["attacked"] + 0.1, name
        assert robust[name]["clean"] - robust[name]["attacked"] < fedavg_loss / 2, name
    drift = results["drift"]
    assert drift["false_alarms"] == 0 and 0 <= drift["delay"] <= 5
    tune = results["fine_tune"]
    assert tune["promoted"] is True and tune["accuracy_after"] > tune["accuracy_before"]
    lineage = results["lineage"]
    assert lineage["production_lineage"] == ["v4 fine-tuned after drift", "v2 healthy", "v1"]
    assert "auto_rollback" in lineage["actions"] and "drift_alert" in lineage["actions"]
    cost = results["cost"]
    totals = {(r["devices"], r["aggregation"]): r["total / month"] for r in cost["rows"]}
    assert totals[(100_000, "FedAvg")] > totals[(1_000, "FedAvg")] > 0
    assert cost["cpu_s"]["FedAvg + SecAgg+"] > cost["cpu_s"]["FedAvg"]
    assert cost["purged"] >= 1  # the rejected candidate's weights went
    assert results["headline"]["value"] == drift["delay"]


def check_exercises_fleet_operations(ex: dict[str, Any]) -> None:
    small, large = ex["canary_size"]["10%"], ex["canary_size"]["50%"]
    assert small["cohort"] < large["cohort"]
    assert small["lower_bound"] < large["lower_bound"], "a bigger canary gives a tighter bound"
    assert "only their sum" in ex["secure_refusal"] and ex["rounds_done_after_refusal"] == 0
    assert ex["small_drift_delay"] is not None and ex["small_drift_delay"] >= ex["delay"]
