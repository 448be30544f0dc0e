"""Every notebook runs under papermill (SMOKE) and its recorded results are checked.

Adding a notebook without adding a checker to ``CHECKS`` fails the suite: a notebook that
runs but asserts nothing is not tested.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedlab.runbook import NotebookRun, discover_notebooks, execute_notebook
from tests.notebooks.communication_checks import (
    check_communication,
    check_exercises_communication,
)
from tests.notebooks.fleet_operations_checks import (
    check_exercises_fleet_operations,
    check_fleet_operations,
)
from tests.notebooks.real_fleet_checks import check_exercises_real_fleet, check_real_fleet
from tests.notebooks.secure_aggregation_checks import (
    check_exercises_secure_aggregation,
    check_secure_aggregation,
)

NOTEBOOKS = discover_notebooks()
IDS = [nb.stem for nb in NOTEBOOKS]


def check_quickstart(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True
    assert results["partition"]["non-IID (Dirichlet)"]["num_clients"] == cfg["num_clients"]
    non_iid = results["partition"]["non-IID (Dirichlet)"]["dominant_class_share_mean"]
    assert non_iid > results["partition"]["IID"]["dominant_class_share_mean"]
    runs = results["runs"]
    assert set(runs) == {"FedAvg IID", "FedAvg non-IID", "FedAvgM non-IID", "FedAdam non-IID"}
    for name, run in runs.items():
        acc = run["test_accuracy"]
        assert len(acc) == cfg["rounds"], name
        assert all(a is not None and 0.0 <= a <= 1.0 for a in acc), name
        assert run["final_accuracy"] == acc[-1]
        assert run["completed"] == [cfg["clients_per_round"]] * cfg["rounds"], name
        assert all(b > 0 for b in run["bytes_up"]), name
        # Even a smoke run learns: chance is 0.1.
        assert max(acc) > 0.4, f"{name} did not learn: {acc}"
    central = results["centralized"]["test_accuracy"]
    assert max(central) > 0.7, central
    head = results["headline"]
    assert head["value"] == runs["FedAvg non-IID"]["final_accuracy"]


def check_privacy(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True and 0 < cfg["delta"] < 1 / cfg["population"]
    curves = results["epsilon_curves"]["curves"]
    for name, values in curves.items():
        assert values == sorted(values), f"ε must grow with rounds: {name}"
    for fleet in {name.rsplit(" · ", 1)[0] for name in curves}:
        pld, rdp = curves[f"{fleet} · PLD"], curves[f"{fleet} · RDP"]
        assert all(p <= r + 1e-9 for p, r in zip(pld, rdp, strict=True)), "PLD is the tighter bound"
    calibration = results["calibration"]
    assert [row["target ε"] for row in calibration] == cfg["targets"]
    zs = [row["z"] for row in calibration]
    assert zs == sorted(zs, reverse=True), "more privacy needs more noise"
    for row in calibration:
        assert 0.99 * row["target ε"] <= row["achieved ε"] <= row["target ε"] * (1 + 1e-9)
    runs = results["runs"]
    assert runs["non-private"]["epsilon_pld"] is None  # ∞ is recorded as null
    for name, run in runs.items():
        assert run["rounds"] == cfg["rounds"] and 0 <= run["accuracy"] <= 1, name
        if name != "non-private":
            target = float(name.split("=")[1])
            assert run["epsilon_pld"] <= target * (1 + 1e-9), name
    for name, attack in results["attacks"].items():
        low, high = attack["ci"]
        assert 0 <= low <= attack["auc"] <= high <= 1, name
        assert attack["members"] > attack["nonmembers"] > 0
    budget = results["budget"]
    assert "refused" in budget["refusal"] and budget["spent"] <= budget["epsilon"]
    for bound in results["bounds"]:  # every printed ε sits above a hypothesis-test lower bound
        assert 0 < bound["lower"] <= bound["upper"], bound
    for name, run in results["strong_attack"].items():
        for attack in ("threshold", "ratio"):
            low, high = run[attack]["ci"]
            assert 0 <= low <= run[attack]["auc"] <= high <= 1, (name, attack)


def check_compression(results: dict[str, Any]) -> None:
    for model, rows in results["recipes"].items():
        by = {row["recipe"]: row for row in rows}
        f32, i8 = by["float32"], by["int8 (post-training)"]
        assert abs(f32["accuracy"] - results["baselines"][model]) <= 0.01, model  # TFLite = Keras
        assert i8["size_kb"] < f32["size_kb"] / 2 and i8["edge_tpu_ready"] is True, model
        assert f32["edge_tpu_ready"] is False, model
        pruned = by["prune 75% + int8"]
        assert abs(pruned["sparsity"] - 0.75) <= 0.02 and pruned["gzip_kb"] < i8["gzip_kb"], model
        blocks = by["prune 75% (4x1 blocks) + int8"]
        assert abs(blocks["sparsity"] - 0.75) <= 0.02, model
        assert by["int8 (per-tensor, stripped)"]["size_kb"] < i8["size_kb"], model
        for row in rows:
            assert 0 <= row["accuracy"] <= 1 and 0 < row["latency_ms"] <= row["latency_p90_ms"], row
    for model, ratio in results["ratios"].items():
        assert ratio["int8 file ratio"] > 2.0, model
        assert (
            ratio["int8 per-tensor+stripped ratio (vs stripped float32)"] > ratio["int8 file ratio"]
        )
    # The anatomy adds up, and the ceiling (weights only) bounds the file ratio.
    for part in results["anatomy"]:
        total = sum(part[k] for k in part if k.endswith(" KB") and k != "file KB")
        assert abs(total - part["file KB"]) < 1e-6, part
    for row in results["size_sweep"]:
        assert row["int8 file ratio"] < row["weights-only ratio"] <= 4.2, row
    widths = [r for r in results["size_sweep"] if r["model"].startswith("digits CNN")]
    assert widths[-1]["int8 file ratio"] > widths[0]["int8 file ratio"]
    d = results["distillation"]
    assert d["student params"] < d["teacher params"] / 4
    mobile = results["mobilenet_v3_small"]["rows"]
    assert mobile[0]["mode"] == "float32" and mobile[0]["params"] > 1_000_000
    decision = {row["training"]: row for row in results["head_vs_full"]}
    head, full = decision["head only"], decision["full model"]
    assert head["bytes per update"] == 4 * head["trainable params"] < full["bytes per update"] / 10


def check_live_rounds(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True and cfg["autoplay"] is True
    play = results["autoplay"]
    rounds = cfg["rounds"]
    assert play["state"] == "finished" and play["rounds_done"] == rounds and play["errors"] == 0
    # Pause stops at a round boundary and nothing runs while paused.
    assert play["paused_state"] in ("pausing", "paused")
    assert rounds // 2 <= play["rounds_at_pause"] == play["rounds_after_wait"] < rounds
    assert play["grid_matches"] == [True, True, True]
    # The cohort change applied from round 2 (30 % over-selection is invited).
    invited = play["invited"]
    assert invited[0] < invited[1] and len(set(invited[1:])) == 1
    assert invited[1] == math.ceil(play["bigger_cohort"] * 1.3)
    assert play["dropout_rate_after"] == 0.3
    assert play["plot_points"] == rounds == len(play["test_accuracy"])
    assert all(0 <= a <= 1 for a in play["test_accuracy"])
    assert max(play["test_accuracy"]) > 0.2, "six activities: chance is 1/6"
    assert play["exports"] == ["history.csv", "history.json"]
    dp = results["dp"]
    assert dp["state"] == "finished" and dp["rounds_done"] == cfg["dp_rounds"]
    eps = dp["epsilon"]
    assert len(eps) == dp["plot_points"] == cfg["dp_rounds"]
    assert all(0 < a < b for a, b in itertools.pairwise(eps)), eps
    assert "ε" in dp["statement"] or "epsilon" in dp["statement"].lower()
    assert results["headline"]["value"] == play["test_accuracy"][-1]


def check_device_kits(results: dict[str, Any]) -> None:
    cfg = results["config"]
    assert cfg["smoke"] is True
    zoo = {row["model"]: row for row in results["zoo"]}
    assert zoo["digits_cnn"]["trains"] == zoo["sensor_cnn1d"]["trains"] == "all"
    assert zoo["mobilenet_tiny"]["trains"] == "head"
    assert all(row["Flex ops"] == "none" for row in zoo.values())
    kits = results["kits"]
    assert kits["raspberry_pi"]["mode"] == "litert" and kits["coral"]["mode"] == "coral"
    assert "model/model.tflite" in kits["raspberry_pi"]["files"]
    assert results["doctor"] == {"raspberry_pi": 0, "coral": 1}  # no Edge TPU here
    rounds = results["rounds"]
    assert len(rounds) == cfg["rounds"]
    for row in rounds:
        assert row["devices"] == cfg["devices"] and row["TensorFlow imported"] is False
        assert 0 < row["max peak RSS MB"] <= 150
    assert rounds[-1]["test accuracy"] > 0.2, "chance is 0.1"
    assert results["update_rel_diff"] < 1e-4
    # the emulated Pis ran through the round engine, not a loop of its own
    assert results["coordinator"]["dispatcher"] == "DeviceDispatcher"
    assert results["coordinator"]["rounds_done"] == cfg["rounds"]
    assert all(row["MB up"] > 0 and row["MB down"] > row["MB up"] for row in rounds)
    lat = {row["model"]: row for row in results["latency"]}
    assert lat["trainable digits CNN"]["train step median ms"] > 0
    tampered = results["tampered"]
    assert tampered["exit_code"] == 3 and "setup.sh: SHA-256" in tampered["message"]
    assert results["headline"]["value"] == rounds[-1]["test accuracy"]


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "02_device_kits": check_device_kits,
    "03_live_federated_rounds": check_live_rounds,
    "01_model_compression": check_compression,
    "00_quickstart": check_quickstart,
    "04_privacy_accounting": check_privacy,
    "05_real_fleet": check_real_fleet,
    "06_secure_aggregation": check_secure_aggregation,
    "07_communication": check_communication,
    "08_fleet_operations": check_fleet_operations,
}


def load(nb: Path) -> dict[str, Any]:
    return json.loads(nb.read_text())


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_notebook_is_clean_and_parameterized(nb: Path) -> None:
    book = load(nb)
    code = [c for c in book["cells"] if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters'"
    source = "".join(params[0]["source"])
    assert "SMOKE: bool = False" in source, f"{nb.name}: parameters need 'SMOKE: bool = False'"
    assert 'RESULTS_PATH: str = ""' in source, f"{nb.name}: parameters need RESULTS_PATH"
    for cell in code:
        assert not cell.get("outputs"), f"{nb.name}: committed outputs (run nbstripout)"
        assert cell.get("execution_count") is None, f"{nb.name}: committed execution counts"
        text = "".join(cell["source"])
        assert "pip install" not in text and "!wget" not in text, f"{nb.name}: installs/downloads"
    assert nb.stem in CHECKS, f"{nb.name}: add a results checker to CHECKS"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], NotebookRun]:
    out = tmp_path_factory.mktemp("notebooks")
    cache: dict[Path, NotebookRun] = {}

    def run(nb: Path) -> NotebookRun:
        if nb not in cache:
            cache[nb] = execute_notebook(nb, out, smoke=True, timeout_s=600)
        return cache[nb]

    return run


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_notebook_runs_in_smoke_mode_and_records_sane_results(nb: Path, executed) -> None:
    run = executed(nb)
    assert run.ok, f"{nb.name} failed: {run.error} (executed copy: {run.output})"
    assert run.results, f"{nb.name} recorded no results"
    assert "headline" in run.results and math.isfinite(run.results["headline"]["value"])
    CHECKS[nb.stem](run.results)
    assert "exercises" in run.results, f"{nb.name}: the solution cell recorded nothing"
    EXERCISES[nb.stem](run.results["exercises"])


def _parameters_source(nb: Path) -> str:
    cell = next(
        c for c in load(nb)["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    return "".join(cell["source"])


def test_live_rounds_wait_for_a_learner_unless_run_headless() -> None:
    """Run All in JupyterLab must not press the dashboard's buttons; papermill runs do."""
    from fedlab.runbook import HEADLESS_PARAMETERS

    nb = next(n for n in NOTEBOOKS if n.stem == "03_live_federated_rounds")
    assert "AUTOPLAY: bool = False" in _parameters_source(nb)
    assert HEADLESS_PARAMETERS[nb.stem]["AUTOPLAY"] is True


# -- the teaching path: learning goals at the top, exercises with hidden solutions at the end


def check_exercises_quickstart(ex: dict[str, Any]) -> None:
    skew = ex["skew"]
    assert skew["dominant_share"] > skew["dominant_share_at_alpha"], "α = 0.15 is more skewed"
    assert 0 <= skew["final_accuracy"] <= 1
    cohort = ex["cohort"]
    # Upload bytes scale with the reporting clients: 2 per round against the default cohort.
    assert 0 < cohort["bytes_up_per_round"] < cohort["bytes_up_per_round_default"] / 2
    assert 0 <= cohort["final_accuracy"] <= 1


def check_exercises_compression(ex: dict[str, Any]) -> None:
    best = ex["smallest_within_1_point"]
    assert best["accuracy"] >= best["float32_accuracy"] - 0.01
    assert best["recipe"] != "float32"  # some compressed recipe keeps the accuracy
    assert 0 < ex["int8_non_weight_share"] < 1
    assert ex["sensor_int8_speedup"] > 0


def check_exercises_device_kits(ex: dict[str, Any]) -> None:
    tampered = ex["tampered_model"]
    assert tampered["exit_code"] == 3 and "model/model.tflite" in tampered["message"]
    doctor = ex["doctor_coral"]
    assert doctor["exit_code"] == 1 and doctor["not_ok"].get("edgetpu") == "fail"
    largest = ex["largest_file"]
    assert 0 < largest["model_bytes"] <= largest["bytes"] and 0 < largest["share"] < 1


def check_exercises_live_rounds(ex: dict[str, Any]) -> None:
    default, tight = ex["deadline"]["default"], ex["deadline"]["half a round"]
    assert default["invited"] == tight["invited"]  # same seed, same invitations
    assert sum(tight["stragglers"]) > sum(default["stragglers"]), "the deadline cuts devices off"
    assert sum(tight["completed"]) < sum(default["completed"])
    none, some = ex["over_selection"]["0"], ex["over_selection"]["0.3"]
    assert all(n < s for n, s in zip(none["invited"], some["invited"], strict=True))


def check_exercises_privacy(ex: dict[str, Any]) -> None:
    rounds = ex["rounds_at_eps3"]
    assert rounds["10,000 devices"] > rounds["this fleet"] > 0, "a smaller q costs less ε"
    z = ex["z_for_eps1"]
    assert z["10x rounds"] > z["rounds"] > 0, "more rounds need more noise"


EXERCISES: dict[str, Callable[[dict[str, Any]], None]] = {
    "00_quickstart": check_exercises_quickstart,
    "01_model_compression": check_exercises_compression,
    "02_device_kits": check_exercises_device_kits,
    "03_live_federated_rounds": check_exercises_live_rounds,
    "04_privacy_accounting": check_exercises_privacy,
    "05_real_fleet": check_exercises_real_fleet,
    "06_secure_aggregation": check_exercises_secure_aggregation,
    "07_communication": check_exercises_communication,
    "08_fleet_operations": check_exercises_fleet_operations,
}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=IDS)
def test_notebook_opens_with_goals_and_closes_with_hidden_solutions(nb: Path) -> None:
    cells = load(nb)["cells"]
    opening = "".join(cells[1]["source"]) if len(cells) > 1 else ""
    assert cells[1]["cell_type"] == "markdown" and "**Learning goals.**" in opening, nb.name
    assert "**Prerequisites:**" in opening and "**Time:**" in opening, nb.name
    exercises_md, solutions = cells[-2], cells[-1]
    text = "".join(exercises_md["source"])
    assert exercises_md["cell_type"] == "markdown" and text.startswith("## Exercises"), nb.name
    assert 2 <= len(re.findall(r"^\d\. \*\*", text, flags=re.M)) <= 3, "2–3 exercises"
    assert solutions["cell_type"] == "code", nb.name
    assert solutions["metadata"].get("jupyter", {}).get("source_hidden") is True, nb.name
    assert 'rec.record("exercises"' in "".join(solutions["source"]), nb.name
    assert nb.stem in EXERCISES, f"{nb.name}: add a checker of its exercises to EXERCISES"


def test_notebook_index_links_every_notebook_with_measured_times() -> None:
    """notebooks/README.md, the index a newcomer starts from: one row per notebook, with the
    full and SMOKE times measured on 2 cores."""
    text = (NOTEBOOKS[0].parent / "README.md").read_text()
    assert "TIME_" not in text and "MEASURED_WHEN" not in text, "unfilled placeholders"
    for nb in NOTEBOOKS:
        rows = [line for line in text.splitlines() if f"]({nb.name})" in line]
        assert len(rows) == 1, f"{nb.name}: needs one row in notebooks/README.md"
        full, smoke = [cell.strip() for cell in rows[0].strip(" |").split("|")][-2:]
        assert re.fullmatch(r"\d+ s", full) and re.fullmatch(r"\d+ s", smoke), (full, smoke)
        assert int(smoke.split()[0]) < int(full.split()[0]), rows[0]
