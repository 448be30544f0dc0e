"""`make` on a fresh machine says what is wrong: the wrong Python is one clear line, and a
.venv made by another Python is rebuilt rather than reused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def fake_python(path: Path, version: str) -> Path:
    """An executable that answers --version like CPython ``version`` and fails otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python {version}"; exit 0; fi\nexit 1\n'
    )
    path.chmod(0o755)
    return path


def make(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_python_other_than_311_stops_with_one_clear_line(tmp_path: Path) -> None:
    python = fake_python(tmp_path / "bin" / "python3.12", "3.12.4")
    done = make(ROOT, "setup", f"PYTHON={python}")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "fedlab needs" in line]
    assert len(lines) == 1, done.stderr
    assert "Python 3.12.4" in lines[0] and "PYTHON=/path/to/python3.11" in lines[0]
    assert "make PYTHON=/path/to/python3.11 setup" in lines[0]
    assert "pip" not in done.stdout + done.stderr  # it stopped before any install


def test_a_venv_made_by_another_python_is_rebuilt(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    stale = fake_python(tmp_path / ".venv" / "bin" / "python", "3.12.4")
    (tmp_path / ".venv" / ".fedlab-installed").touch()
    done = make(tmp_path, "python-check", f"PYTHON={sys.executable}")
    assert done.returncode == 0, done.stderr
    assert ".venv was made by Python 3.12.4; rebuilding it" in done.stdout
    assert not stale.exists() and not (tmp_path / ".venv").exists()
    again = make(tmp_path, "python-check", f"PYTHON={sys.executable}")
    assert again.returncode == 0 and "rebuilding" not in again.stdout
