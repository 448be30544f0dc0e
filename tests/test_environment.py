"""The lock, pyproject.toml and environment.yml agree, and the installed stack is the lock."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"requirements.lock: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for group in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in group]
    return reqs


def test_every_pyproject_requirement_is_pinned_in_the_lock_and_satisfied() -> None:
    pins = lock()
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"lock pins {req.name}=={pins[name]}, pyproject wants {req.specifier}"
        )


def test_the_verified_stack_pins() -> None:
    pins = lock()
    expected = {
        "tensorflow": "2.15.1",
        "tensorflow-privacy": "0.9.0",
        "tensorflow-model-optimization": "0.8.1",
        "jupyterlab": "4.5.6",
        "flwr": "1.23.0",
        "packaging": "22.0",
        "papermill": "2.7.0",
    }
    for name, version in expected.items():
        assert pins[name] == version, (
            f"{name}: lock has {pins[name]}, the verified stack needs {version}"
        )
    assert pins["numpy"].startswith("1.26") and pins["protobuf"].startswith("4.25")


def test_environment_yml_installs_through_the_same_lock() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-c requirements.lock" in pip_section
    assert any(line.startswith("-e .[") and "workbench" in line for line in pip_section)


def test_installed_packages_match_the_lock() -> None:
    mismatches = []
    for name, version in lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatches.append(f"{name} not installed")
            continue
        if installed != version:
            mismatches.append(f"{name} {installed} != {version}")
    assert not mismatches, "run `make setup` (the stamp may be stale): " + ", ".join(mismatches)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


BLOCK_TF = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith(("tensorflow.", "keras", "tf_keras")):
            raise ImportError(f"{name} is blocked: the device layer must not import it")
sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize(
    "code",
    [
        "import fedlab; fedlab.__version__",
        "import fedlab.data, fedlab.federated\nfrom fedlab.federated import Federation, Pipeline",
        "from fedlab.data import federated_sensors as fs\nfs(num_devices=3, test_devices=1)",
        "import fedlab.edge\nfrom fedlab.edge import agent, bench, doctor, emulate, trainer",
        # the rest of the device layer: the wire, update codecs, secure aggregation
        "import fedlab.protocol, fedlab.codec, fedlab.secure",
        "from fedlab.federated.secure_stage import SecureAggregation",
    ],
)
def test_engine_and_data_import_without_tensorflow(code: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_TF + code + "\nassert 'tensorflow' not in sys.modules"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
