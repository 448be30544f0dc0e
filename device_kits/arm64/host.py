"""Host side of ``make test-arm64``: prepare the VM's share, then judge what the VM did.

Usage (the workbench's .venv)::

    python device_kits/arm64/host.py prepare SHARE WHEELS   # kit, device, task, wheels
    python device_kits/arm64/host.py collect SHARE          # read back; print the summary

``prepare`` builds a Raspberry Pi kit of the digits CNN as notebook 02 does
(``build_kit(model, target="raspberry_pi", …)``) into ``SHARE/kit``, a device folder
(``SHARE/device``: ``device.json`` with the VM's paths, local data), publishes one round task
on ``SHARE/exchange`` with ``FileTransport.publish``, saves the Keras reference update of the
same plan, and downloads the kit's requirements as aarch64/cp311 wheels into ``WHEELS``
(cached; the VM installs offline from it). ``collect`` reads the update the VM's agent
submitted back through ``FileTransport.collect``, compares it with the reference, and prints
which steps passed (exit 1 when any failed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

GUEST_SHARE = "/mnt/fedlab"
DEVICE_ID = "pi-arm64-vm"
PLAN = {
    "client_id": 3,
    "round_index": 1,
    "epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.05,
    "seed": 11,
}
PLATFORM = [
    "--platform",
    "manylinux2014_aarch64",
    "--platform",
    "manylinux_2_17_aarch64",
    # ai-edge-litert 2.3 ships manylinux_2_27 only; Debian bookworm has glibc 2.36.
    "--platform",
    "manylinux_2_27_aarch64",
    "--platform",
    "manylinux_2_28_aarch64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
]


def _wheels(requirements: Path, wheels: Path) -> None:
    """The requirements as aarch64 cp311 wheels (pip download, only binaries; cached)."""
    wheels.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            *PLATFORM,
            "-d",
            str(wheels),
            "-r",
            str(requirements),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pip download of the aarch64 wheels failed:\n{proc.stderr}")


def prepare(share: Path, wheels: Path) -> None:
    from fedlab.data import federated_digits
    from fedlab.data.federated_dataset import ClientData
    from fedlab.edge import FileTransport
    from fedlab.federated import ClientPlan, KerasRuntime
    from fedlab.kits import build_kit
    from fedlab.models import build_model
    from fedlab.protocol import RoundTask

    for name in ("kit", "device", "exchange", "host", "results"):
        shutil.rmtree(share / name, ignore_errors=True)
    model = build_model("digits_cnn", (8, 8, 1), 10)
    built = build_kit(
        model, target="raspberry_pi", out=share / "host", signing_key=share / "host" / "wb.pem"
    )
    kit = Path(shutil.copytree(built.folder, share / "kit"))
    device = share / "device"
    device.mkdir()
    client = federated_digits(num_clients=20, seed=1).clients[PLAN["client_id"]]
    np.savez(device / "data.npz", x=client.x, y=client.y)
    config = json.loads((kit / "device.json.template").read_text())
    config.update(
        device_id=DEVICE_ID,
        kit_dir=f"{GUEST_SHARE}/kit",
        data_path=f"{GUEST_SHARE}/device/data.npz",
        transport={"kind": "files", "folder": f"{GUEST_SHARE}/exchange"},
        state_dir=f"{GUEST_SHARE}/device/state",
    )
    (device / "device.json").write_text(json.dumps(config, indent=1))
    plan = ClientPlan(**PLAN)
    runtime = KerasRuntime(lambda: build_model("digits_cnn", (8, 8, 1), 10))
    weights = runtime.initial_weights()
    expected = runtime.train_one(weights, ClientData(client.client_id, client.x, client.y), plan)
    version = built.manifest.info["model"]["version"]
    task = RoundTask.from_client_plan(plan, model_version=version, weights=weights)
    FileTransport(share / "exchange").publish(task)
    np.savez(share / "host" / "expected.npz", *expected.delta)
    (share / "host" / "task.json").write_text(
        json.dumps({"num_examples": client.num_examples, "num_steps": expected.num_steps})
    )
    _wheels(kit / "requirements-device.txt", wheels)
    print(
        f"prepared {share}: kit {kit.name} ({len(built.manifest.files)} files), task round "
        f"{PLAN['round_index']}, {len(list(wheels.glob('*.whl')))} aarch64 wheels in {wheels}"
    )


def collect(share: Path) -> int:
    from fedlab.edge import FileTransport
    from fedlab.protocol import RoundTask

    results = share / "results"
    steps = {}
    for path in sorted(results.glob("step-*.json"), key=lambda p: p.stat().st_mtime):
        step = json.loads(path.read_text())
        steps[step["name"]] = step
    # litert-rank0 checks a known ai-edge-litert bug (README "The train crash"): reported, and
    # not a failure of the kit, whose device code must feed scalars as shape (1,) around it.
    informational = {"litert-rank0"}
    lines = ["", "== make test-arm64: results (full-system aarch64 VM, qemu TCG)"]
    for name, step in steps.items():
        status = "PASS" if step["rc"] == 0 else f"FAIL (exit {step['rc']})"
        if name in informational:
            status = "fixed" if step["rc"] == 0 else f"bug (exit {step['rc']})"
        lines.append(f"  {name:<14} {status:<16} {step.get('seconds', '?'):>7} s")
    if "litert-rank0" in steps:
        fixed = steps["litert-rank0"]["rc"] == 0
        lines.append(
            "  ai-edge-litert resize of an input to [] (a rank-0 value): "
            + ("works: the LiteRT bug is fixed" if fixed else "crashes (the known LiteRT bug)")
        )
    ok = bool(steps) and all(s["rc"] == 0 for n, s in steps.items() if n not in informational)
    expected_steps = ("python", "install", "doctor", "bench", "train-check", "agent")
    params = share / "params.env"
    chosen = re.search(r"ARM64_STEPS='([^']*)'", params.read_text()) if params.is_file() else None
    if chosen:  # run_test.sh ARM64_STEPS: only those were asked for
        expected_steps = tuple(n for n in expected_steps if n in chosen.group(1).split())
    missing = [n for n in expected_steps if n not in steps]
    if missing:
        ok = False
        lines.append(f"  missing steps (the VM did not get there): {', '.join(missing)}")
    check = results / "train_check.json"
    if check.is_file():
        lines.append("  LiteRT train signature on aarch64, per op resolver:")
        for r in json.loads(check.read_text()):
            if r["ok"]:
                what = f"loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}"
            else:
                what = f"CRASH {r.get('error')} after stage {r.get('last_stage')}"
            lines.append(f"    {r['resolver']:<34} {what}")
    task_file = share / "exchange" / "task.flab"
    if task_file.is_file():
        from fedlab.protocol import decode_task

        task: RoundTask = decode_task(task_file.read_bytes())
        info = json.loads((share / "host" / "task.json").read_text())
        accepted, rejected = FileTransport(share / "exchange").collect(
            task, devices={DEVICE_ID: info["num_examples"]}
        )
        if rejected:
            ok = False
            lines.append(f"  agent update REJECTED by the host: {rejected}")
        elif not accepted:
            ok = False
            lines.append("  agent update: none submitted")
        else:
            got = accepted[0][1]
            with np.load(share / "host" / "expected.npz") as f:
                want = [f[f"arr_{i}"] for i in range(len(f.files))]
            num = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(got.delta, want, strict=True)))
            den = np.sqrt(sum(np.sum(b**2) for b in want))
            rel = float(num / den)
            close = rel < 1e-3
            ok = ok and close
            loss = got.metrics.get("train_loss")
            lines.append(
                f"  agent update accepted: {got.num_examples} examples, {got.num_steps} steps, "
                f"train_loss {loss}, relative distance to the host's Keras update {rel:.2e} "
                f"({'matches' if close else 'DIFFERS'})"
            )
    lines.append(f"== test-arm64: {'PASSED' if ok else 'FAILED'}")
    print("\n".join(lines))
    (results / "summary.txt").write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "prepare":
        prepare(Path(argv[1]).resolve(), Path(argv[2]).resolve())
        return 0
    if len(argv) == 2 and argv[0] == "collect":
        return collect(Path(argv[1]).resolve())
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
