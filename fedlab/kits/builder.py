"""``build_kit``: everything a Raspberry Pi or a Coral board needs, signed.

A kit folder holds the model(s), ``manifest.json`` + ``manifest.sig`` (SHA-256 of every file,
Ed25519-signed by the workbench key), a ``device.json`` template that pins the workbench's
public key, a wheel of fedlab (installed with only the ``device`` extra), the device's
requirements (Python 3.11, aarch64) — with a wheelhouse, their wheels vendored in
``wheels/`` and hash-pinned, so the board installs offline — the setup script(s) and the
systemd unit from ``device_kits/``; and a ``.tar.gz`` of it.

Every file is 0644 (scripts 0755), every folder 0755: the service user must read the kit
root installed. Each kit carries a signed ``kit_version``, one more than the last kit
signed with the same workbench key (kept beside the key), so a device refuses an older
kit (a rollback).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

import fedlab
from fedlab._tf import keras
from fedlab.edge.config import DeviceConfig
from fedlab.edge.manifest import (
    Manifest,
    generate_signing_key,
    load_signing_key,
    public_key_b64,
    write_manifest,
)
from fedlab.edge.model import atomic_write_bytes
from fedlab.kits.requirements import device_requirements, read_lock, target_environment
from fedlab.kits.wheelhouse import Wheelhouse, pinned_requirements

__all__ = ["KIT_TARGETS", "Kit", "build_kit"]

ROOT = Path(__file__).resolve().parents[2]
KIT_TARGETS = ("raspberry_pi", "coral")
Target = Literal["raspberry_pi", "coral"]


@dataclass(frozen=True, slots=True)
class Kit:
    """A built kit.

    Attributes
    ----------
    folder, tarball : Path
        The kit and its archive.
    manifest : Manifest
        Hashes and info as signed.
    trusted_key : str
        The workbench public key (base64) the device must be configured with.
    notes : tuple of str
        What the builder could not do here and why (e.g. no Edge TPU compiler, no
        vendored wheels).
    """

    folder: Path
    tarball: Path
    manifest: Manifest
    trusted_key: str
    notes: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        """The signed ``kit_version``."""
        return int(self.manifest.info["kit_version"])

    @property
    def size_mb(self) -> tuple[float, float]:
        """``(folder, tarball)`` sizes in MB."""
        folder = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        return folder / 2**20, self.tarball.stat().st_size / 2**20


def _next_kit_version(key_path: Path, requested: int | None) -> int:
    """One more than the last kit version signed with this key (or ``requested``, which
    must be higher), recorded in ``<key>.kit_version`` under a lock."""
    counter = key_path.with_name(key_path.name + ".kit_version")
    with counter.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        last = int(text) if text else 0
        if requested is None:
            version = last + 1
        elif requested <= last:
            raise ValueError(
                f"kit_version must be higher than {last}, the last one signed with "
                f"{key_path}, got {requested} (devices refuse an older kit)"
            )
        else:
            version = requested
        f.seek(0)
        f.truncate()
        f.write(f"{version}\n")
    return version


def _normalize_modes(folder: Path) -> None:
    # mkdtemp makes the folder 0700 and copies keep whatever the repository had.
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.suffix == ".sh" else 0o644)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _wheel(out: Path) -> Path:
    """A wheel of fedlab, built from a private copy of the sources.

    Building in the repository would share setuptools' ``build/`` and ``*.egg-info`` folders
    with any other build running at the same time (two test workers, a notebook).
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, dist = Path(tmp) / "src", Path(tmp) / "dist"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(
            ROOT / "fedlab", src / "fedlab", ignore=shutil.ignore_patterns("__pycache__")
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                "--disable-pip-version-check",
                "-w",
                str(dist),
                str(src),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building the fedlab wheel failed:\n{proc.stderr}")
        (wheel,) = dist.glob("fedlab-*.whl")
        return Path(shutil.copy2(wheel, out / wheel.name))


def _export_litert(model: keras.Model, folder: Path, batch_size: int) -> dict[str, Any]:
    from fedlab.optimize.trainable import UnsupportedLayer, export_trainable_tflite

    try:
        export = export_trainable_tflite(model, batch_size=batch_size, trainable="all")
    except UnsupportedLayer:
        export = export_trainable_tflite(model, batch_size=batch_size, trainable="head")
    path = export.save(folder / "model" / "model.tflite")
    return {
        "file": "model/model.tflite",
        "spec": export.metadata(),
        "version": hashlib.sha256(export.model).hexdigest(),
        "bytes": path.stat().st_size,
    }


def _export_coral(
    model: keras.Model, folder: Path, representative: np.ndarray, notes: list[str]
) -> dict[str, Any]:
    from fedlab.optimize.convert import to_tflite

    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ValueError(f"model {model.name!r}: the Coral path needs a Dense head as last layer")
    if len(head.input.shape) != 2:
        raise ValueError(f"model {model.name!r}: the head must take a flat embedding")
    backbone = keras.Model(model.inputs, head.input)
    data = to_tflite(backbone, mode="int8", representative=representative, int8_io=True)
    (folder / "model").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "model" / "backbone_int8.tflite", data)
    compiler = shutil.which("edgetpu_compiler")
    file = "model/backbone_int8.tflite"
    if compiler:
        subprocess.run(
            [compiler, "-s", "-o", str(folder / "model"), str(folder / file)],
            check=True,
            capture_output=True,
        )
        file = "model/backbone_int8_edgetpu.tflite"
    else:
        notes.append(
            "the Edge TPU compiler is not installed on this machine (it runs on x86-64 Linux "
            "only): the kit carries the uncompiled int8 backbone, which the Edge TPU delegate "
            "would run on the CPU. Compile it with device_kits/coral/compile_edgetpu.sh on an "
            "x86-64 host and rebuild the kit with edgetpu_model=…"
        )
    weights = model.weights
    index = {id(w): i for i, w in enumerate(weights)}
    return {
        "backbone": file,
        "head_indices": [index[id(head.kernel)], index[id(head.bias)]],
        "weight_shapes": [list(map(int, w.shape)) for w in weights],
        "num_classes": int(head.units),
        "version": hashlib.sha256((folder / file).read_bytes()).hexdigest(),
        "compiled_for_edgetpu": bool(compiler),
    }


def build_kit(
    model: keras.Model,
    *,
    target: Target = "raspberry_pi",
    out: str | Path,
    signing_key: str | Path,
    representative: np.ndarray | None = None,
    batch_size: int = 16,
    device_id: str = "",
    edgetpu_model: str | Path | None = None,
    wheelhouse: str | Path | None = None,
    kit_version: int | None = None,
    registry_version: str = "",
) -> Kit:
    """Build and sign a device kit for ``model``.

    Parameters
    ----------
    model : keras.Model
        A zoo-style chain ending in a Dense head (logits).
    target : {"raspberry_pi", "coral"}
        ``raspberry_pi``: a trainable builtin-only ``.tflite`` (full model when every layer
        has a builtin backward, else head-only). ``coral``: an int8 backbone for the Edge
        TPU; the head is trained in numpy on the board's CPU.
    out : path
        Parent folder; the kit goes to ``out/<model>-<target>/`` and ``…tar.gz``.
    signing_key : path
        The workbench's Ed25519 key (PEM); created on first use.
    representative : array, optional
        Training examples for int8 calibration (required for ``coral``).
    batch_size : int
        Static batch of the trainable model.
    device_id : str
        Put into the ``device.json`` template; empty (default): each device generates a
        random id at its first start and keeps it.
    edgetpu_model : path, optional
        A backbone already compiled with ``edgetpu_compiler`` (Coral; replaces the
        uncompiled one).
    wheelhouse : path, optional
        A wheelhouse folder (``build/wheelhouse/linux_aarch64``, filled by ``make
        wheelhouse``): its wheels of the device requirements are vendored and hash-pinned,
        and the kit is for its platform. Without one the kit has no vendored wheels, says
        so (``notes``, manifest ``wheels: "none"``), and setup.sh refuses it unless told
        ``--online-install``.
    kit_version : int, optional
        The signed version (default: one more than the last kit of this signing key).
    registry_version : str
        The model registry version (``fedlab.ops.Registry``) the kit's model was exported
        from, recorded in the signed manifest; devices report it as the version they run.

    Raises
    ------
    ValueError
        Unknown target, missing calibration data, a wheelhouse lacking a requirement,
        a ``kit_version`` not above the last one.
    """
    if target not in KIT_TARGETS:
        raise ValueError(f"target must be one of {KIT_TARGETS}, got {target!r}")
    if not isinstance(registry_version, str) or (
        registry_version and not all(c in "0123456789abcdef" for c in registry_version)
    ):
        raise ValueError(f"registry_version must be a hex version id, got {registry_version!r}")
    if target == "coral" and representative is None:
        raise ValueError("target 'coral' needs representative data for int8 calibration")
    key_path = Path(signing_key)
    key = load_signing_key(key_path) if key_path.exists() else generate_signing_key(key_path)
    house = Wheelhouse.load(wheelhouse) if wheelhouse is not None else None
    kit_platform = house.platform if house is not None else "linux_aarch64"
    lock = read_lock(ROOT / "requirements.lock")
    reqs = device_requirements(lock, environment=target_environment(kit_platform))
    vendored = house.wheels_for(reqs) if house is not None else []
    name = f"{model.name}-{target}"
    folder = Path(out) / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    notes: list[str] = []
    try:
        if target == "raspberry_pi":
            mode, info = "litert", _export_litert(model, staging, batch_size)
        else:
            assert representative is not None
            mode, info = "coral", _export_coral(model, staging, representative, notes)
            if edgetpu_model is not None:
                compiled = Path(edgetpu_model)
                shutil.copy2(compiled, staging / "model" / compiled.name)
                info["backbone"] = f"model/{compiled.name}"
                info["version"] = hashlib.sha256(compiled.read_bytes()).hexdigest()
                info["compiled_for_edgetpu"] = True
                notes.clear()
        wheel = _wheel(staging / "wheels")
        if house is not None:
            for path in vendored:
                shutil.copyfile(path, staging / "wheels" / path.name)
            body = pinned_requirements(reqs, [staging / "wheels" / p.name for p in vendored])
            head = (
                f"# Python 3.11 on {kit_platform}: vendored in wheels/, hash-pinned. Install "
                "offline: pip install --no-index --find-links wheels --require-hashes -r this\n"
            )
        else:
            body = "\n".join(reqs) + "\n"
            head = (
                "# Python 3.11 on Linux aarch64 (64-bit Raspberry Pi OS Bookworm). NOT vendored "
                "and NOT hash-pinned: this kit was built without a wheelhouse\n"
            )
            notes.append(
                "no vendored wheels (built without a wheelhouse): the board would download "
                "its requirements from PyPI unpinned, outside the signature, and setup.sh "
                "refuses that unless run with --online-install. Run `make wheelhouse` once "
                "(network) and build with wheelhouse='build/wheelhouse/linux_aarch64'"
            )
        (staging / "requirements-device.txt").write_text(head + body)
        kits = ROOT / "device_kits"
        shutil.copy2(kits / "common.sh", staging / "common.sh")
        for item in sorted((kits / target).iterdir()):
            if item.is_file() and item.name != "device.example.json":
                shutil.copy2(item, staging / item.name)
        pub = public_key_b64(key)
        # The kit's config template is device_kits/<target>/device.example.json with this
        # workbench's key pinned; the loader checks it as the agent will.
        template = json.loads((kits / target / "device.example.json").read_text())
        template.update(device_id=device_id, trusted_key=pub, mode=mode)
        DeviceConfig.from_dict(template)
        (staging / "device.json.template").write_text(json.dumps(template, indent=1) + "\n")
        _normalize_modes(staging)
        files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        version = _next_kit_version(key_path, kit_version)
        manifest = write_manifest(
            staging,
            files,
            key,
            {
                "kit_format": 2,
                "kit_version": version,
                "target": target,
                "mode": mode,
                "model_name": model.name,
                "model": info,
                "registry_version": registry_version,
                "fedlab": fedlab.__version__,
                "wheel": wheel.name,
                "python": "3.11",
                "platform": kit_platform,
                "wheels": "vendored" if house is not None else "none",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tarball = folder.with_name(f"{name}.tar.gz")
    tmp = tarball.with_name(f".{tarball.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=name, filter=_root_owned)
    tmp.replace(tarball)
    return Kit(folder, tarball, manifest, pub, tuple(notes))
