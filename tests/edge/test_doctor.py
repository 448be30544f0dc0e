"""The doctor's judgement on made-up boards, and its exit code on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

from fedlab.edge.doctor import Probe, Report, diagnose
from tests.edge.conftest import write_device

PI5 = Probe(
    python=(3, 11, 2),
    machine="aarch64",
    litert_version="2.3.0",
    litert_error="",
    numpy_version="1.26.4",
    cryptography_version="44.0.3",
    apex_device=False,
    usb_ids=("1d6b:0002",),
    edgetpu_library=False,
    mem_available_mb=3500.0,
    disk_free_mb=20000.0,
    board="Raspberry Pi 5 Model B Rev 1.0",
)


def status(checks, name):
    return next(c for c in checks if c.name == name).status


def test_a_healthy_pi_is_ready() -> None:
    report = Report(diagnose(PI5))
    assert report.ok and "ready" in report.text()
    assert status(report.checks, "edgetpu") == "ok"  # not needed in litert mode


def test_coral_needs_an_edge_tpu_unless_it_may_fall_back() -> None:
    assert status(diagnose(PI5, mode="coral"), "edgetpu") == "fail"
    assert status(diagnose(PI5, mode="coral", coral_fallback="cpu"), "edgetpu") == "warn"
    usb = replace(PI5, usb_ids=("18d1:9302",), edgetpu_library=True)
    checks = diagnose(usb, mode="coral")
    assert status(checks, "edgetpu") == "ok"
    assert "initialized" in next(c for c in checks if c.name == "edgetpu").detail
    assert (
        status(
            diagnose(replace(PI5, apex_device=True, edgetpu_library=True), mode="coral"), "edgetpu"
        )
        == "ok"
    )
    no_lib = replace(PI5, usb_ids=("1a6e:089a",))
    assert "libedgetpu.so.1 not found" in Report(diagnose(no_lib, mode="coral")).text()


def test_each_problem_fails_its_check() -> None:
    assert status(diagnose(replace(PI5, python=(3, 8, 10))), "python") == "fail"
    assert status(diagnose(replace(PI5, python=(3, 12, 1))), "python") == "warn"
    assert status(diagnose(replace(PI5, machine="armv7l")), "architecture") == "warn"
    assert status(diagnose(replace(PI5, machine="riscv64")), "architecture") == "fail"
    broken = replace(PI5, litert_version=None, litert_error="ImportError: libm")
    assert status(diagnose(broken), "litert") == "fail"
    assert status(diagnose(replace(PI5, mem_available_mb=120.0)), "memory") == "fail"
    assert status(diagnose(replace(PI5, disk_free_mb=50.0)), "disk") == "fail"
    report = Report(diagnose(replace(PI5, disk_free_mb=50.0)))
    assert not report.ok and "NOT READY" in report.text()


def test_the_doctor_exits_non_zero_when_the_kit_cannot_run_here(kits, tmp_path) -> None:
    config = write_device(tmp_path / "pi", kits["pi"])
    ok = subprocess.run(
        [sys.executable, "-m", "fedlab.edge.doctor", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout
    checks = {c["name"]: c["status"] for c in json.loads(ok.stdout)["checks"]}
    assert checks["kit"] == "ok" and checks["litert"] == "ok"
    coral = write_device(tmp_path / "coral", kits["coral"], coral_fallback="refuse")
    refused = subprocess.run(
        [sys.executable, "-m", "fedlab.edge.doctor", "--config", str(coral)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "[FAIL] edgetpu" in refused.stdout and "NOT READY" in refused.stdout
