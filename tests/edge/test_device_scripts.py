"""device_kits/: shellcheck-clean, and a dry run into a temporary prefix does the right thing."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from tests.system_tools import missing_tool

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "device_kits").rglob("*.sh"))


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        missing_tool("shellcheck", "`make test` installs it (apt-get install shellcheck)")
    assert len(SCRIPTS) >= 4
    proc = subprocess.run(
        ["shellcheck", "-x", "--severity=style", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def setup(kit: Path, prefix: Path, *args: str, env: dict | None = None):
    return subprocess.run(
        ["bash", str(kit / "setup.sh"), "--dry-run", "--prefix", str(prefix), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_raspberry_pi_dry_run_installs_into_the_prefix_idempotently(kits, tmp_path) -> None:
    kit, prefix = kits["pi"].folder, tmp_path / "root"
    first = setup(kit, prefix)
    assert first.returncode == 0, first.stderr
    for path in (
        "opt/fedlab/kit/manifest.json",
        "opt/fedlab/kit/model/model.tflite",
        "etc/fedlab/device.json",
        "etc/systemd/system/fedlab-agent.service",
        "var/lib/fedlab/state",
    ):
        assert (prefix / path).exists(), path
    out = first.stdout
    assert "[dry-run] systemctl enable --now fedlab-agent.service" in out
    assert "-m fedlab.edge.doctor --config" in out and "requirements-device.txt" in out
    assert not (prefix / "opt/fedlab/venv").exists()  # system changes are only printed
    from fedlab.edge import verify_kit

    verify_kit(prefix / "opt/fedlab/kit", kits["pi"].trusted_key)  # copied intact
    config = prefix / "etc/fedlab/device.json"
    config.write_text(config.read_text().replace('"threads": 1', '"threads": 2'))
    second = setup(kit, prefix)
    assert second.returncode == 0 and "kept existing" in second.stdout
    assert '"threads": 2' in config.read_text()  # the board's own edits survive an update
    zero = setup(kit, prefix, env={"FEDLAB_BOARD_MODEL": "Raspberry Pi Zero 2 W Rev 1.0"})
    assert "swap set to 1024 MB" in zero.stdout
    assert "CONF_SWAPSIZE=1024" in (prefix / "etc/dphys-swapfile").read_text()
    again = setup(kit, prefix, env={"FEDLAB_BOARD_MODEL": "Raspberry Pi Zero 2 W Rev 1.0"})
    assert "swap already 1024 MB" in again.stdout


def test_coral_dry_run_adds_the_repository_and_udev_rules(kits, tmp_path) -> None:
    kit, prefix = kits["coral"].folder, tmp_path / "root"
    proc = setup(kit, prefix, "--board", "usb")
    assert proc.returncode == 0, proc.stderr
    assert "libedgetpu1-std" in proc.stdout
    rules = (prefix / "etc/udev/rules.d/99-fedlab-edgetpu.rules").read_text()
    assert '"1a6e"' in rules and '"18d1"' in rules and "plugdev" in rules
    assert (
        "coral-edgetpu-stable" in (prefix / "etc/apt/sources.list.d/coral-edgetpu.list").read_text()
    )
    again = setup(kit, prefix, "--board", "usb")
    assert "Coral apt repository present" in again.stdout and "udev rules present" in again.stdout
    bad = setup(kit, prefix, "--board", "pcie")
    assert bad.returncode != 0 and "--board must be usb" in bad.stderr


def test_setup_refuses_a_folder_that_is_not_a_kit(tmp_path) -> None:
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "device_kits/raspberry_pi/setup.sh"),
            "--dry-run",
            "--kit",
            str(tmp_path),
            "--prefix",
            str(tmp_path / "root"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "is not a fedlab kit" in proc.stderr


def test_compile_script_explains_what_is_missing(tmp_path) -> None:
    script = ROOT / "device_kits/coral/compile_edgetpu.sh"
    proc = subprocess.run(
        ["bash", str(script), str(tmp_path / "none.tflite")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        ["bash", str(script), str(model)], capture_output=True, text=True, env=env
    )
    if platform.machine() == "x86_64":
        assert proc.returncode == 4 and "apt-get install -y edgetpu-compiler" in proc.stderr
    else:
        assert proc.returncode == 3 and "only on x86-64" in proc.stderr
