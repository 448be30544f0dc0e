"""Console scripts, one version source, and the files a wheel needs to ship."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import fedlab

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = {
    "fedlab-agent": "fedlab.edge.agent:main",
    "fedlab-doctor": "fedlab.edge.doctor:main",
    "fedlab-bench": "fedlab.edge.bench:main",
    "fedlab-runbook": "fedlab.runbook:main",
    "fedlab-fleet": "fedlab.fleet.cli:main",
    "fedlab-superlink": "fedlab.fleet.cli:superlink_main",
}
BIN = Path(sys.executable).parent  # .venv/bin when run as `make test` does


def test_console_scripts_are_declared() -> None:
    assert PYPROJECT["project"]["scripts"] == SCRIPTS


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_is_installed_and_answers_help(script: str) -> None:
    path = BIN / script
    assert path.is_file(), f"{path} missing: reinstall (make setup, or pip install -e .)"
    proc = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:"), proc.stdout[:200]
    assert "--log-level" in proc.stdout  # every command-line tool takes it


def test_one_version_source() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fedlab.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", fedlab.__version__), fedlab.__version__
    # The installed metadata says the same (a stale install would not).
    assert importlib.metadata.version("fedlab") == fedlab.__version__


def test_changelog_names_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, flags=re.M)
    assert releases and releases[0] == fedlab.__version__, releases


def test_license_matches_pyproject() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole licence, not a stub


def test_contributing_names_the_rooms() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for room in ("notebooks/", "federated/strategies/", "codec/", "nbstripout", "tests/notebooks"):
        assert room in text, room


def test_make_hooks_strips_outputs_on_git_add(tmp_path: Path) -> None:
    """`make hooks` in a fresh clone: a notebook staged with outputs lands without them."""
    import json
    import shutil

    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.fail("git and make are needed to test the nbstripout filter")
    repo = tmp_path / "clone"
    repo.mkdir()
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    made = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "hooks", f"GIT=git -C {repo}", f"BIN={BIN}"],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": 7, "id": "abc123", "metadata": {},
             "outputs": [{"output_type": "stream", "name": "stdout", "text": ["secret\n"]}],
             "source": ["print('secret')"]},
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    (repo / "nb.ipynb").write_text(json.dumps(notebook))
    subprocess.run([*git, "add", "nb.ipynb"], check=True)
    staged = json.loads(
        subprocess.run([*git, "show", ":nb.ipynb"], capture_output=True, text=True).stdout
    )
    cell = staged["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None
    assert cell["id"] == "abc123"  # --keep-id
    assert "secret" in (repo / "nb.ipynb").read_text()  # the working copy keeps its outputs


@pytest.mark.parametrize("module", ["fedlab.runbook", "fedlab.edge.agent", "fedlab.edge.doctor"])
def test_python_dash_m_still_works(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "--log-level" in proc.stdout, proc.stderr
