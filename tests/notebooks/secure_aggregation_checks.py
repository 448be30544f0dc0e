"""Checks of what notebook 06_secure_aggregation records (registered in test_notebooks.py)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

MASK_GAP = "max |secure − plain|"


def check_secure_aggregation(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True
    stages = results["stages"]
    names = ["advertise_keys", "share_keys", "masked_input", "unmask"]
    assert [s["stage"] for s in stages] == names
    assert stages[2]["bytes up per device"] >= 4 * (cfg["dimension"] + 1)  # ring = float32 size
    masked = results["masked"]
    assert all(abs(z) < 6 for z in masked["z"]), "masked vectors look uniform"
    assert all(z > 20 for z in masked["plain_z"]), "plain encodings do not"
    assert masked["max_error"] <= masked["error_bound"]
    assert masked["num_examples"] == masked["expected_examples"]
    drops = {row["scenario"]: row for row in results["dropouts"]}
    failed = drops.pop("too many after masking")
    assert not failed["ok"] and "aborted at masked_input" in failed["failure"]
    assert all(row["ok"] and row["max error / bound"] <= 1 for row in drops.values()), drops
    assert drops["one at each stage"]["contributors"] == cfg["cohort"] - 3
    sweep = results["sweep"]
    assert len(sweep) == len(cfg["sweep_cohorts"]) * len(cfg["sweep_dropouts"])
    assert all(row["ok"] and 1 < row["upload expansion"] < 2 for row in sweep), sweep
    auth = results["auth"]
    assert [row["accepted"] for row in auth] == [True] + [False] * 6 + [True]
    prefixes = ["replayed", "forged", "forged", "cross-round", "unknown client", "unsigned"]
    assert all(r["reason"].startswith(p) for r, p in zip(auth[1:7], prefixes, strict=True)), auth
    assert results["seal"] == {"opened": True, "overhead_bytes": 48}
    largest = max(cfg["sweep_cohorts"])
    head = [r for r in sweep if r["cohort"] == largest and r["dropout"] == cfg["sweep_dropouts"][0]]
    assert results["headline"]["value"] == head[0]["upload expansion"]
    _check_engine(results, cfg)


def _check_engine(results: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Section 6: secure aggregation, signatures and DP-FedAvg inside federated rounds."""
    rounds, cohort = cfg["fl_rounds"], cfg["fl_cohort"]

    # No noise, no dropouts: secure aggregation makes plain FedAvg's model, to the bound.
    exact = results["engine_exact"]
    rows = exact["rows"]
    assert exact["rounds"] == rounds == len(rows)
    assert exact["completed"] == [cohort] * rounds and not any(exact["failures"])
    assert 0 < exact["error_bound"] < 1e-4
    assert all(0 <= r[MASK_GAP] <= r["bound so far"] for r in rows), rows
    assert exact["final_gap"] == rows[-1][MASK_GAP] <= exact["allowed"] == rows[-1]["bound so far"]
    assert exact["allowed"] < 1e-5, "the fixed-point resolution, not a loose tolerance"
    # Even a smoke run learns (chance is 0.1), and both runs learn the same.
    assert exact["accuracy_secure"] > 0.3, exact["accuracy_secure"]
    assert abs(exact["accuracy_secure"] - exact["accuracy_plain"]) <= 0.01
    for r in rows:
        assert r["bytes up plain"] == 4 * exact["params"] * cohort, "float32 updates"
        # the protocol's messages: at least the masked vectors, plus keys and shares
        assert r["bytes up secure"] > max(r["bytes up plain"], 4 * (exact["params"] + 1) * cohort)

    # DP-FedAvg on the secure sum, devices lost at masked_input, the ledger and its statement.
    dp = results["engine_dp"]
    eps = dp["epsilon"]
    assert math.isfinite(eps) and eps > 0
    assert eps == pytest.approx(dp["epsilon_plain"]), "secure aggregation changes no ε"
    statement = dp["statement"]
    assert "ε = " in statement and "trust model" in statement
    assert "each client clips its own update before secure aggregation" in statement
    assert "trust model" in dp["trust_model_plain"] and "central DP" in dp["trust_model_plain"]
    dp_rows = dp["rounds"]
    assert [r["round"] for r in dp_rows] == list(range(1, rounds + 1))
    assert all(r["aggregation failure"] == "–" for r in dp_rows), dp_rows
    epsilons = [r["ε after"] for r in dp_rows]
    assert all(0 < a < b for a, b in itertools.pairwise(epsilons)) and epsilons[-1] == eps
    where = [why for by_device in dp["lost"].values() for why in by_device.values()]
    assert where, "some device was lost mid-protocol"
    assert all("lost at masked_input" in why for why in where), where
    assert sum(r["aggregated"] for r in dp_rows) == rounds * cohort - len(where)
    assert all((r["lost"] == "–") == (str(r["round"]) not in dp["lost"]) for r in dp_rows)
    assert all(0 <= r["accuracy"] <= 1 for r in dp_rows)

    # The round that aborted applied nothing and spent no ε.
    abort = results["engine_abort"]
    assert "secure aggregation aborted" in abort["failure"], abort
    assert "nothing applied" in abort["failure"]
    assert abort["weights_unchanged"] is True
    assert abort["completed"] == 0 and abort["dropped"] == abort["selected"] == cohort
    assert abort["epsilon_after"] == abort["epsilon_before"] == eps
    assert abort["ledger_rounds"] == rounds
    assert abort["accuracy_after"] == abort["accuracy_before"]

    compare = results["engine_compare"]
    assert len(compare) == 4
    assert all(0 <= row["final accuracy"] <= 1 for row in compare.values())
    assert compare["FedAvg, secure aggregation"]["final accuracy"] == exact["accuracy_secure"]
    plain_up, secure_up = (
        compare[f"FedAvg, {k}"]["bytes up / round"] for k in ("plain", "secure aggregation")
    )
    assert plain_up < secure_up
    dp_eps = [row["ε"] for name, row in compare.items() if name.startswith("DP-FedAvg")]
    assert dp_eps == pytest.approx([dp["epsilon_plain"], eps])

    # A forged update: refused by the signature check with its reason; the rest summed.
    forged = results["engine_forged"]
    ((victim, reason),) = forged["rejected"]
    assert victim == forged["victim"]
    assert "signature" in reason and "forged" in reason, reason
    assert forged["stage_rejections"] == {"verify": 1}
    assert forged["completed"] == forged["selected"] - 1 == cohort - 1
    assert forged["aggregation_failure"] == ""
    assert 0 <= forged["accuracy"] <= 1

    # Distributed discrete Gaussian noise: the devices noise, the ledger counts contributors.
    ddg = results["engine_ddg"]
    assert math.isfinite(ddg["epsilon"]) and ddg["epsilon"] > 0
    assert ddg["sigma"] >= 0.5 and ddg["bound"] > ddg["sigma"]
    assert ddg["rounds_accounted"] == len(ddg["contributors"]) == rounds
    assert all(1 <= n <= cohort for n in ddg["contributors"])
    flat = " ".join(ddg["statement"].split())
    assert "no single party sees an un-noised sum" in flat
    assert "Dropouts reduce the noise" in flat
    assert 0 <= ddg["accuracy"] <= 1


def check_exercises_secure_aggregation(ex: dict[str, Any]) -> None:
    assert all(cost["ok"] for cost in ex["drop_cost"].values())
    degrees = ex["degree_1000"]
    assert degrees["10%"] < degrees["30%"] < 999, "sparser than complete, denser for more dropout"
    assert ex["replay_round_2"]["accepted"] is False
    assert ex["replay_round_2"]["reason"].startswith("replayed")
