"""Item 8: a kit is verified before anything is installed — signature with the device's
pinned key, every hash, no unlisted file, no rollback to an older kit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedlab.edge import KitVerificationError, verify_kit
from fedlab.edge.manifest import public_key_b64, write_manifest

ROOT = Path(__file__).resolve().parents[2]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def make_kit(folder: Path, key=KEY, created: str = "2026-02-01T00:00:00Z") -> Path:
    """A small signed Raspberry Pi kit: the real scripts, a stand-in wheel and model."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "wheels").mkdir(parents=True)
    (folder / "model").mkdir()
    kits = ROOT / "device_kits"
    shutil.copy2(kits / "common.sh", folder / "common.sh")
    for name in ("setup.sh", "fedlab-agent.service", "README.md"):
        shutil.copy2(kits / "raspberry_pi" / name, folder / name)
    (folder / "wheels" / "fedlab-0.1.0-py3-none-any.whl").write_bytes(b"a wheel")
    (folder / "model" / "model.tflite").write_bytes(b"a model")
    (folder / "requirements-device.txt").write_text("numpy==1.26.4\n")
    template = json.loads((kits / "raspberry_pi" / "device.example.json").read_text())
    template["trusted_key"] = public_key_b64(key)
    (folder / "device.json.template").write_text(json.dumps(template, indent=1))
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    write_manifest(
        folder, files, key, {"created": created, "target": "raspberry_pi", "mode": "litert"}
    )
    return folder


def setup(kit: Path, prefix: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(kit / "setup.sh"), "--dry-run", "--prefix", str(prefix), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FEDLAB_BOARD_MODEL": "Raspberry Pi 5"},
    )


def assert_refused(
    proc: subprocess.CompletedProcess, message: str, prefix: Path, before: dict
) -> None:
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr, proc.stderr
    assert "[dry-run]" not in proc.stdout  # nothing was even planned
    assert snapshot(prefix) == before  # nothing was installed


def snapshot(prefix: Path) -> dict[str, bytes]:
    if not prefix.exists():
        return {}
    return {
        str(p.relative_to(prefix)): p.read_bytes() for p in sorted(prefix.rglob("*")) if p.is_file()
    }


def test_verify_kit_refuses_files_not_in_the_manifest(tmp_path) -> None:
    kit = make_kit(tmp_path / "kit")
    verify_kit(kit, public_key_b64(KEY))
    (kit / "wheels" / "fedlab-0.0.9-py3-none-any.whl").write_bytes(b"old and vulnerable")
    with pytest.raises(
        KitVerificationError, match=r"files not in the signed manifest: \['wheels/fedlab-0.0.9"
    ):
        verify_kit(kit, public_key_b64(KEY))


def test_a_clean_kit_installs_after_it_is_verified(tmp_path) -> None:
    proc = setup(make_kit(tmp_path / "kit"), tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    assert "kit verified: signature, every file's SHA-256, nothing unlisted" in proc.stdout
    assert "first install: trusting the kit's own key" in proc.stderr
    assert "[dry-run]" in proc.stdout and (tmp_path / "root/opt/fedlab/kit/manifest.json").is_file()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda k: (k / "wheels" / "fedlab-0.0.9-py3-none-any.whl").write_bytes(b"x"),
            "files not in the signed manifest",
        ),
        (
            lambda k: (k / "requirements-device.txt").write_text("evil==6.6.6\n"),
            "requirements-device.txt: SHA-256 does not match",
        ),
        (
            lambda k: (k / "model" / "model.tflite").unlink(),
            "model/model.tflite: listed in the manifest but missing",
        ),
        (
            lambda k: (k / "manifest.sig").write_text("AAAA\n"),
            "does not verify with the trusted key",
        ),
        (
            lambda k: (k / "manifest.json").write_text(
                (k / "manifest.json").read_text().replace("2026-02-01", "2099-02-01")
            ),
            "does not verify",
        ),
    ],
    ids=[
        "unlisted wheel",
        "tampered requirements",
        "missing model",
        "bad signature",
        "edited manifest",
    ],
)
def test_a_tampered_kit_is_refused_before_anything_is_installed(tmp_path, tamper, message) -> None:
    kit = make_kit(tmp_path / "kit")
    tamper(kit)
    prefix = tmp_path / "root"
    assert_refused(setup(kit, prefix), message, prefix, {})
    # the same on an installed device (its pinned key, its installed kit untouched)
    good = make_kit(tmp_path / "good")
    assert setup(good, prefix).returncode == 0
    before = snapshot(prefix)
    assert_refused(setup(kit, prefix), message, prefix, before)


def test_the_devices_pinned_key_is_used_not_the_kits(tmp_path) -> None:
    prefix = tmp_path / "root"
    assert setup(make_kit(tmp_path / "a"), prefix).returncode == 0
    before = snapshot(prefix)
    forged = make_kit(tmp_path / "forged", key=OTHER, created="2027-01-01T00:00:00Z")
    assert_refused(setup(forged, prefix), "does not verify with the trusted key", prefix, before)
    # on a first install, --trusted-key is checked against the kit
    fresh = tmp_path / "fresh"
    proc = setup(forged, fresh, "--trusted-key", public_key_b64(KEY))
    assert_refused(proc, "does not verify with the trusted key", fresh, {})
    proc = setup(make_kit(tmp_path / "b"), prefix, "--trusted-key", public_key_b64(OTHER))
    assert_refused(proc, "--trusted-key differs from the key pinned", prefix, before)


def test_an_older_signed_kit_is_a_refused_rollback(tmp_path) -> None:
    prefix = tmp_path / "root"
    assert setup(make_kit(tmp_path / "new", created="2026-03-01T00:00:00Z"), prefix).returncode == 0
    before = snapshot(prefix)
    old = make_kit(tmp_path / "old", created="2026-01-01T00:00:00Z")
    assert_refused(setup(old, prefix), "older than the installed one", prefix, before)
    assert (
        setup(make_kit(tmp_path / "newer", created="2026-04-01T00:00:00Z"), prefix).returncode == 0
    )
    forced = setup(old, prefix, "--allow-rollback")
    assert forced.returncode == 0, forced.stderr
