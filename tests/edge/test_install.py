"""A kit installed as a new user would: the kit's own setup.sh (dry run, then a real staged
install under a prefix with the vendored wheels, offline), then the doctor and agent rounds
run as an unprivileged service user (``nobody``)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from fedlab.edge import FileTransport
from fedlab.federated import ClientPlan
from fedlab.protocol import RoundTask, decode_envelope
from tests.edge.conftest import write_device

ROOT = Path(__file__).resolve().parents[2]
USER, GROUP = "nobody", "nogroup"
# What a board has: the system Python first, nothing of this checkout on the path.
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("installing as a service user needs root (setpriv/chown); CI runs as root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")


def as_user(*command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``command`` as nobody:nogroup with no supplementary groups."""
    return subprocess.run(
        ["setpriv", f"--reuid={USER}", f"--regid={GROUP}", "--clear-groups", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd="/",
    )


def setup(kit: Path, prefix: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(kit / "setup.sh"), "--prefix", str(prefix), "--user", USER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, "FEDLAB_BOARD_MODEL": "Raspberry Pi 5"},
    )


def task_for(kits, kit, round_index: int) -> RoundTask:
    plan = ClientPlan(
        client_id=3, round_index=round_index, epochs=1, batch_size=16, learning_rate=0.05, seed=5
    )
    weights = [w.numpy() for w in kits["model"].weights]
    return RoundTask.from_client_plan(
        plan, model_version=kit.manifest.info["model"]["version"], weights=weights
    )


@pytest.fixture(scope="module")
def installed(kits, host_kit):
    """The host kit installed for real under a prefix ``nobody`` can traverse (pytest's
    own temporary folders are 0700)."""
    needs_root()
    prefix = Path(tempfile.mkdtemp(prefix="fedlab-install-", dir="/tmp"))
    prefix.chmod(0o755)
    try:
        dry = setup(host_kit.folder, prefix / "dry", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "--no-index" in dry.stdout and "--require-hashes" in dry.stdout
        assert f"[dry-run] runuser -u {USER} --" in dry.stdout  # the doctor as the user
        assert not (prefix / "dry/opt/fedlab/venv").exists()
        real = setup(host_kit.folder, prefix / "root")
        yield prefix / "root", real
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def test_a_first_install_exits_0_and_the_service_user_can_read_and_write(installed) -> None:
    root, proc = installed
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # the doctor ran as the service user, at the end, and only warned about the data
    assert "every kit file readable by user nobody" in out, out
    assert "data missing: copy it to" in out and out.rstrip().endswith("[fedlab-setup] done")
    assert "\nready\n" in out
    assert "[prefix: not run] systemctl enable --now fedlab-agent.service" in out
    kit = root / "opt/fedlab/kit"
    for path in [kit, *kit.rglob("*")]:
        st = path.stat()
        assert st.st_uid == 0, path
        want = 0o755 if path.is_dir() or path.suffix == ".sh" else 0o644
        assert stat.S_IMODE(st.st_mode) == want, (path, oct(st.st_mode))
    state = (root / "var/lib/fedlab/state").stat()
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (65534, 0o750)
    assert json.loads((root / "var/lib/fedlab/state/kit_version.json").read_text()) == {
        "kit_version": json.loads((kit / "manifest.json").read_text())["info"]["kit_version"]
    }
    # offline from the kit's own wheels: no TensorFlow in the device's venv
    venv = root / "opt/fedlab/venv"
    assert not list(venv.glob("lib/python3*/site-packages/tensorflow"))
    assert list(venv.glob("lib/python3*/site-packages/ai_edge_litert"))


def test_the_service_user_runs_rounds_and_a_restart_redoes_nothing(kits, host_kit, installed):
    root, proc = installed
    assert proc.returncode == 0, proc.stderr
    python = str(root / "opt/fedlab/venv/bin/python")
    config = str(root / "etc/fedlab/device.json")
    data = Path(json.loads(Path(config).read_text())["data_path"])
    from fedlab.data import federated_digits

    client = federated_digits(num_clients=20, seed=1).clients[3]
    np.savez(data, x=client.x, y=client.y)
    os.chown(data, 65534, 65534)
    data.chmod(0o640)
    doctor = as_user(python, "-m", "fedlab.edge.doctor", "--config", config)
    assert doctor.returncode == 0 and "[ok  ] data" in doctor.stdout, doctor.stdout
    exchange = FileTransport(root / "var/lib/fedlab/exchange")
    exchange.publish(task_for(kits, host_kit, 7))
    first = as_user(python, "-m", "fedlab.edge.agent", "--config", config)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["round_index"] == 7 and report["accelerator"] == "cpu"
    assert report["tensorflow_imported"] is False
    device_id = (root / "var/lib/fedlab/state/device_id").read_text().strip()
    assert report["device_id"] == device_id and device_id.startswith("pi-")
    assert len(device_id) == len("pi-") + 8
    update = root / f"var/lib/fedlab/exchange/updates/{device_id}-r7.flab"
    assert decode_envelope(update.read_bytes()).device_id == device_id
    before = update.stat().st_mtime_ns
    # a second process (a restarted service) reads last_round.json: nothing trained again
    second = as_user(python, "-m", "fedlab.edge.agent", "--config", config)
    assert second.returncode == 0 and "no task" in second.stderr, second.stderr
    assert second.stdout.strip() == "" and update.stat().st_mtime_ns == before
    last = json.loads((root / "var/lib/fedlab/state/last_round.json").read_text())
    assert last["round_index"] == 7
    # the next round is trained, under the same generated id
    exchange.publish(task_for(kits, host_kit, 8))
    third = as_user(python, "-m", "fedlab.edge.agent", "--config", config)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout.strip().splitlines()[-1])["device_id"] == device_id


def test_a_tampered_wheel_or_an_older_kit_is_refused(kits, host_kit, installed, tmp_path):
    root, proc = installed
    assert proc.returncode == 0, proc.stderr
    before = sorted(str(p) for p in root.rglob("*"))
    kit = Path(shutil.copytree(host_kit.folder, tmp_path / "kit"))
    wheel = next((kit / "wheels").glob("numpy-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    bad = setup(kit, root)
    assert bad.returncode != 0 and f"wheels/{wheel.name}: SHA-256 does not match" in bad.stderr
    # kits["pi"] was signed before host_kit by the same key: a lower kit_version
    assert kits["pi"].version < host_kit.version
    old = setup(kits["pi"].folder, root)
    assert old.returncode != 0
    assert f"(kit_version {kits['pi'].version}) is older than the installed one" in old.stderr
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing changed


def test_a_kit_without_vendored_wheels_needs_an_explicit_flag(kits, tmp_path) -> None:
    needs_root()
    kit = kits["pi"]
    assert kit.manifest.info["wheels"] == "none"
    assert any("no vendored wheels" in note for note in kit.notes)
    assert "NOT hash-pinned" in (kit.folder / "requirements-device.txt").read_text()
    proc = setup(kit.folder, tmp_path / "root")
    assert proc.returncode != 0 and "no vendored wheels" in proc.stderr
    assert "--online-install" in proc.stderr and not (tmp_path / "root/opt").exists()
    dry = setup(kit.folder, tmp_path / "dry", "--dry-run")
    assert dry.returncode == 0 and "a real install refuses it" in dry.stderr


def test_the_doctor_and_agent_as_the_user_catch_an_unreadable_kit(kits, tmp_path) -> None:
    """The bug of issue 14: a kit left 0600/0700, as root's doctor said "ready"."""
    needs_root()
    base = Path(tempfile.mkdtemp(prefix="fedlab-perm-", dir="/tmp"))
    try:
        base.chmod(0o755)
        kit = Path(shutil.copytree(kits["pi"].folder, base / "kit"))
        (kit / "model" / "model.tflite").chmod(0o600)
        device = base / "device"
        config = write_device(device, kits["pi"], kit_dir=str(kit), state_dir=str(base / "state"))
        for path in (device, *device.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (base / "state").mkdir(mode=0o755)
        os.chown(base / "state", 65534, 65534)
        python = str(ROOT / ".venv/bin/python")
        doctor = as_user(python, "-m", "fedlab.edge.doctor", "--config", str(config))
        assert doctor.returncode == 1, doctor.stdout
        assert "[FAIL] permissions" in doctor.stdout and "model/model.tflite" in doctor.stdout
        assert "[FAIL] exchange" in doctor.stdout  # device/exchange is root's 0755 folder
        agent = as_user(python, "-m", "fedlab.edge.agent", "--config", str(config))
        assert agent.returncode == 3, agent.stderr
        assert "model/model.tflite: cannot be read by user id 65534" in agent.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_looping_agent_waits_for_its_data(kits, tmp_path) -> None:
    config = write_device(tmp_path, kits["pi"])
    data = tmp_path / "data.npz"
    kept = tmp_path / "kept.npz"
    data.rename(kept)
    log = tmp_path / "agent.log"
    with log.open("w") as err:
        agent = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/python"),
                "-m",
                "fedlab.edge.agent",
                "--config",
                str(config),
                "--loop",
                "--interval",
                "0.2",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "waiting for local data" not in log.read_text():
            assert agent.poll() is None, log.read_text()  # still up: not a crash loop
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        FileTransport(tmp_path / "exchange").publish(task_for(kits, kits["pi"], 2))
        kept.rename(data)
        update = tmp_path / "exchange/updates/pi-3-r2.flab"
        while not update.is_file():
            assert agent.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert log.read_text().count("waiting for local data") == 1  # said once
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_setup_copies_data_and_refuses_the_dev_board(kits, tmp_path) -> None:
    data = tmp_path / "mine.npz"
    np.savez(data, x=np.zeros((2, 8, 8, 1)), y=np.zeros(2))
    proc = setup(kits["pi"].folder, tmp_path / "root", "--dry-run", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "root/etc/fedlab/device.json").read_text())
    assert config["data_path"] == str(tmp_path / "root/var/lib/fedlab/data.npz")
    assert Path(config["data_path"]).read_bytes() == data.read_bytes()
    assert config["device_id"] == ""  # generated by the agent, not the hostname
    csv = tmp_path / "mine.csv"
    csv.write_text("1,2\n")
    wrong = setup(kits["pi"].folder, tmp_path / "r2", "--dry-run", "--data", str(csv))
    assert wrong.returncode != 0 and "device.json expects a .npz file" in wrong.stderr
    coral = setup(kits["coral"].folder, tmp_path / "r3", "--dry-run", "--board", "devboard")
    assert coral.returncode != 0 and "Mendel Linux (Debian 10, Python 3.7)" in coral.stderr
    assert not (tmp_path / "r3").exists()  # refused before anything
