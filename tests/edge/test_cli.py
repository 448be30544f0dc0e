"""The device command lines: bench and the emulation guard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fedlab.edge.emulate import DeviceImportGuard


def device_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedlab.edge.emulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bench_times_inference_and_a_train_step_without_tensorflow(kits) -> None:
    model = kits["pi"].folder / "model" / "model.tflite"
    proc = device_python("fedlab.edge.bench", str(model), "--runs", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["batch"] == 16 and result["bytes"] == model.stat().st_size
    for key in ("infer", "train_step"):
        assert 0 < result[key]["median_ms"] <= result[key]["p90_ms"]
    backbone = kits["coral"].folder / kits["coral"].manifest.info["model"]["backbone"]
    plain = device_python("fedlab.edge.bench", str(backbone), "--runs", "5")
    assert plain.returncode == 0 and "infer" in plain.stdout and "train_step" not in plain.stdout
    missing = device_python("fedlab.edge.bench", "/nonexistent/model.tflite")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_the_emulated_device_cannot_import_tensorflow() -> None:
    guard = DeviceImportGuard()
    for allowed in (
        "numpy",
        "cryptography.hazmat",
        "ai_edge_litert.interpreter",
        "fedlab.edge",
        "json",
        "_openssl",
    ):
        assert guard.find_spec(allowed) is None
    for refused in ("tensorflow", "tf_keras", "keras", "torch", "ipywidgets"):
        with pytest.raises(ModuleNotFoundError, match="not installed on the device"):
            guard.find_spec(refused)
    assert guard.refused == ["tensorflow", "tf_keras", "keras", "torch", "ipywidgets"]
    proc = device_python("tensorflow")
    assert proc.returncode != 0 and "'tensorflow' is not installed on the device" in proc.stderr
