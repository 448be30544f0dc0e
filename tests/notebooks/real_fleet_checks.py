"""Checks of notebook 05_real_fleet's recorded results (a real loopback fleet)."""

from __future__ import annotations

from typing import Any


def check_real_fleet(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True
    fleet = results["fleet"]
    assert sorted(fleet["node_ids"].values()) == fleet["online"], "every registered node online"
    assert fleet["rogue_exit_code"] != 0 and fleet["rogue_refused"], "rogue key must be refused"
    run = results["run"]
    assert run["status"] == "finished:completed"
    assert [r["round"] for r in run["rounds"]] == list(range(cfg["rounds"]))
    everyone = list(range(cfg["num_devices"]))
    assert all(r["completed"] == everyone for r in run["rounds"]), run["rounds"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in run["rounds"])
    devices = run["devices"]
    assert sorted(d["client_id"] for d in devices) == everyone
    assert not any(d["tensorflow_imported"] for d in devices), "the ClientApp must not import TF"
    assert all(d["last_round"] == cfg["rounds"] - 1 for d in devices)
    assert {str(d["client_id"]): d["node_id"] for d in devices} == fleet["node_ids"]
    drop = results["dropout"]
    assert drop["status"] == "finished:completed"
    assert drop["round"]["dropped"] == [cfg["num_devices"] - 1]
    assert drop["round"]["completed"] == everyone[:-1]
    assert drop["closed_after_s"] < drop["deadline_s"], "closed when the node left, not waited out"
    rejoin = results["rejoin"]
    assert rejoin["status"] == "finished:completed" and rejoin["completed"] == everyone
    assert rejoin["node_ids"] == fleet["node_ids"], "a registered key keeps its node id"
    secure = results["secure"]
    assert secure["status"] == "finished:completed"
    plain0, secure0 = secure["plain"], secure["secure"]
    assert secure0["completed"] == plain0["completed"] == everyone
    assert secure0["aggregation_failure"] == ""
    # the same round-0 model up to the fixed-point resolution (same seed and plans)
    assert abs(secure0["test_accuracy"] - plain0["test_accuracy"]) <= 1e-3
    assert secure0["num_examples"] == plain0["num_examples"]  # the sum's count, not reports'
    assert secure0["train_loss"] is None or secure0["train_loss"] != secure0["train_loss"]
    assert plain0["bytes_up"] < secure0["bytes_up"] < 1.2 * plain0["bytes_up"]
    assert secure["leftovers"] == [], "no secret left on a device"
    binds = results["commands"]["superlink_binds"]
    assert binds["--serverappio-api-address"].startswith("127.0.0.1:")
    assert not any(v.startswith("0.0.0.0") for v in binds.values())
    assert results["cleanup"]["still_running"] == []
    assert results["headline"]["value"] > 0


def check_exercises_real_fleet(ex: dict[str, Any]) -> None:
    assert 0.0 < ex["compute_share"] < 1.0
    assert ex["device_seconds"] > 0 and all(w > ex["device_seconds"] for w in ex["round_wall_s"])
    assert "--serverappio-api-address" not in ex["exposed_apis"]
    assert "--fleet-api-address" in ex["exposed_apis"]
