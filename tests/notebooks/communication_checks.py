"""Checks of what notebook 07_communication records (registered in test_notebooks.py)."""

from __future__ import annotations

import math
from typing import Any


def _check_codec_rows(rows: list[dict[str, Any]], rounds: int) -> None:
    assert rows[0]["codec"] == "float32 (dense)" and math.isclose(
        rows[0]["ratio"], 1.0, rel_tol=1e-3
    )
    assert any(r["pareto"] for r in rows), "someone is on the Pareto front"
    for r in rows:
        assert len(r["accuracy"]) == rounds and r["final_accuracy"] == r["accuracy"][-1], r["codec"]
        assert 0 <= r["final_accuracy"] <= 1
        assert r["uplink_bytes"] == r["cumulative_uplink_bytes"][-1] > 0
        assert r["float32_bytes"] > 0
    by = {r["codec"]: r for r in rows}
    # Byte counts do not depend on how far training got: ternary (L2 scale) + zlib is far
    # below dense float32 even in a 2-round smoke run.
    assert by["ternary-l2+zlib"]["ratio"] > 30
    assert by["ef-sign"]["uplink_bytes"] == by["sign (no EF)"]["uplink_bytes"]  # same wire size


def check_communication(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True
    one = results["one_round"]
    assert one["stage_bytes"]["encode"] == one["bytes_up"] < one["stage_bytes"]["update"]
    assert one["stage_bytes"]["update"] == 4 * one["params"] * one["completed"]
    _check_codec_rows(results["quickstart"], cfg["rounds"])
    _check_codec_rows(results["sensors"], cfg["sensor_rounds"])
    check_gateways(results["gateways"], cfg["sensor_devices"])
    windows = {w["schedule"]: w for w in results["windows"]}
    plain = [w for name, w in windows.items() if "eligible first" not in name]
    # Upload windows change when updates arrive, not the model.
    assert len({w["final acc"] for w in plain}) == 1, plain
    anytime, wifi = windows["upload any time"], windows["Wi-Fi only"]
    assert wifi["hours, all rounds"] > anytime["hours, all rounds"]
    assert windows["Wi-Fi + charging"]["hours, all rounds"] >= wifi["hours, all rounds"]
    assert all(w["J per device-round"] > 0 for w in windows.values())
    down = results["downlink"]
    assert down["final_accuracy"] == down["dense_run_final_accuracy"]  # a lossless downlink
    assert 0 < down["delta_bytes"] < down["dense_bytes"]
    rows = {r["codec"]: r for r in results["quickstart"]}
    name = results["headline"]["name"]
    best = next(c for c in rows if f"({c})" in name)
    expected = rows["float32 (dense)"]["uplink_bytes"] / rows[best]["uplink_bytes"]
    assert math.isclose(results["headline"]["value"], expected)


def check_exercises_communication(ex: dict[str, Any]) -> None:
    assert set(ex["topk3"]) == {"topk3% (no EF)", "ef-topk3%"}
    assert all(0 <= a <= 1 for a in ex["topk3"].values())
    hours = ex["cap_hours"]
    assert hours["1 at once"] >= hours["no cap"] > 0
    if ex["cheapest_to_target"] is not None:
        assert ex["cheapest_to_target"]["bytes"] > 0


def check_gateways(rows: list[dict[str, Any]], num_devices: int) -> None:
    flat, clear, secure = rows
    assert flat["uploads to the server per round"] == num_devices
    assert clear["uploads to the server per round"] == secure["uploads to the server per round"]
    assert clear["uploads to the server per round"] < num_devices
    assert clear["bytes to the server per round"] < flat["bytes to the server per round"]
    # SecAgg+ inside each group sums what the gateway would have summed in the clear
    assert abs(clear["final acc"] - secure["final acc"]) <= 0.02
