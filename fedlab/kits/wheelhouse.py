"""Device wheelhouses: the wheels a kit vendors for one platform, so a board installs
offline and hash-pinned (``pip install --no-index --require-hashes``).

A wheelhouse is a folder ``<root>/<platform>/`` of ``.whl`` files and a ``wheelhouse.json``
saying which platform and Python they are for. It is filled once, with network, by
``make wheelhouse`` (:func:`download`: ``pip download`` for 64-bit ARM, CPython 3.11);
kits are then built from it without network. :func:`from_installed` fills one for this
machine's own platform from the installed packages (no network), which is how the tests
install a kit into a real venv on an x86-64 host.

Usage::

    python -m fedlab.kits.wheelhouse [--platform linux_aarch64] [--out build/wheelhouse]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import platform as _platform
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

__all__ = [
    "PLATFORMS",
    "Wheelhouse",
    "download",
    "from_installed",
    "host_platform",
    "pinned_requirements",
]

#: ``pip download --platform`` tags per kit platform: manylinux up to glibc 2.36, what
#: 64-bit Raspberry Pi OS Bookworm has (ai-edge-litert 2.3 ships manylinux_2_27 only).
_GLIBC = ("2_17", "2_24", "2_26", "2_27", "2_28", "2_31", "2_34", "2_35", "2_36")
PLATFORMS: dict[str, tuple[str, ...]] = {
    machine: (
        f"manylinux2014_{machine.split('_', 1)[1]}",
        *(f"manylinux_{g}_{machine.split('_', 1)[1]}" for g in _GLIBC),
    )
    for machine in ("linux_aarch64", "linux_x86_64")
}
INFO = "wheelhouse.json"
ROOT = Path(__file__).resolve().parents[2]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pin(requirement: str) -> tuple[str, str]:
    name, sep, version = requirement.partition("==")
    if not sep or not version:
        raise ValueError(f"requirement {requirement!r} is not pinned as name==version")
    return _canonical(name), version.strip()


def host_platform() -> str:
    """This machine's kit platform name (``linux_x86_64``, ``linux_aarch64``)."""
    return f"{sys.platform}_{_platform.machine()}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class Wheelhouse:
    """A filled wheelhouse folder.

    Attributes
    ----------
    folder : Path
        Holds the wheels and ``wheelhouse.json``.
    platform : str
        A key of :data:`PLATFORMS` (or the host's, for :func:`from_installed`).
    python : str
        ``"3.11"``.
    """

    folder: Path
    platform: str
    python: str

    @classmethod
    def load(cls, folder: str | Path) -> Wheelhouse:
        """Read ``folder/wheelhouse.json``.

        Raises
        ------
        ValueError
            No wheelhouse there (say how to make one).
        """
        root = Path(folder)
        info = root / INFO
        if not info.is_file():
            raise ValueError(
                f"{root} is not a wheelhouse (no {INFO}): fill it with `make wheelhouse` "
                "(network needed once)"
            )
        data = json.loads(info.read_text())
        return cls(root, str(data["platform"]), str(data["python"]))

    def wheels_for(self, requirements: list[str]) -> list[Path]:
        """The wheel file(s) of every ``name==version`` requirement.

        Raises
        ------
        ValueError
            Naming the requirements that have no wheel here.
        """
        by_pin: dict[tuple[str, str], list[Path]] = {}
        for wheel in sorted(self.folder.glob("*.whl")):
            name, version = wheel.name.split("-")[:2]
            by_pin.setdefault((_canonical(name), version), []).append(wheel)
        out, missing = [], []
        for req in requirements:
            found = by_pin.get(_pin(req))
            if found:
                out.extend(found)
            else:
                missing.append(req)
        if missing:
            raise ValueError(
                f"wheelhouse {self.folder} ({self.platform}) has no wheel for {missing}: "
                "refill it with `make wheelhouse`"
            )
        return out


def pinned_requirements(requirements: list[str], wheels: list[Path]) -> str:
    """A ``--require-hashes`` requirements file: each ``name==version`` with the SHA-256 of
    its wheel(s)."""
    hashes: dict[tuple[str, str], list[str]] = {}
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        hashes.setdefault((_canonical(name), version), []).append(_sha256(wheel))
    lines = []
    for req in requirements:
        digests = hashes.get(_pin(req))
        if not digests:
            raise ValueError(f"no wheel given for {req}")
        lines.append(" \\\n    ".join([req, *(f"--hash=sha256:{h}" for h in sorted(digests))]))
    return "\n".join(lines) + "\n"


def _write_info(folder: Path, platform: str, source: str, requirements: list[str]) -> Wheelhouse:
    info = {"platform": platform, "python": "3.11", "source": source, "requirements": requirements}
    (folder / INFO).write_text(json.dumps(info, indent=1) + "\n")
    return Wheelhouse(folder, platform, "3.11")


def download(
    requirements: list[str], out: str | Path, *, platform: str = "linux_aarch64"
) -> Wheelhouse:
    """``pip download`` the binary wheels of ``requirements`` for ``platform``, CPython 3.11
    (network needed; run by ``make wheelhouse``, never by tests or notebooks).

    Raises
    ------
    ValueError
        An unknown platform.
    RuntimeError
        pip failed (its output is in the message).
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {sorted(PLATFORMS)}, got {platform!r}")
    folder = Path(out) / platform
    folder.mkdir(parents=True, exist_ok=True)
    tags = [arg for tag in PLATFORMS[platform] for arg in ("--platform", tag)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        *tags,
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "-d",
        str(folder),
        *requirements,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download failed:\n{proc.stdout}\n{proc.stderr}")
    house = _write_info(folder, platform, "pip download", requirements)
    house.wheels_for(requirements)  # every pin has its wheel
    return house


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _repack(name: str, version: str, folder: Path) -> Path:
    """A wheel of the installed distribution ``name`` (exactly ``version``), from the files
    its RECORD lists; scripts are left out (pip regenerates entry points)."""
    try:
        dist = distribution(name)
    except PackageNotFoundError as exc:
        raise ValueError(f"{name} is not installed here: cannot repack it") from exc
    if dist.version != version:
        raise ValueError(f"{name} {dist.version} is installed here, the lock pins {version}")
    files = [f for f in dist.files or [] if ".." not in f.parts and "__pycache__" not in f.parts]
    info_dir = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info_dir is None:
        raise ValueError(f"{name}: no .dist-info in its RECORD")
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")
    ]
    if not tags:
        raise ValueError(f"{name}: its WHEEL metadata names no tag")
    stem = f"{dist.metadata['Name'].replace('-', '_')}-{version}"
    # The compressed tag set of every Tag line (``py2.py3-none-any``), as wheel names it.
    parts = [list(dict.fromkeys(t.split("-")[i] for t in tags)) for i in range(3)]
    target = folder / f"{stem}-{'-'.join('.'.join(p) for p in parts)}.whl"
    skip = {f"{info_dir}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as whl:
        for f in sorted(files, key=str):
            arc = f.as_posix()
            if arc in skip:
                continue
            path = Path(str(dist.locate_file(f)))
            if not path.is_file():
                raise ValueError(f"{name}: {arc} is in its RECORD but not installed")
            data = path.read_bytes()
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(info, data)
            writer.writerow([arc, _record_hash(data), len(data)])
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        whl.writestr(f"{info_dir}/RECORD", record.getvalue())
    return target


def from_installed(requirements: list[str], out: str | Path) -> Wheelhouse:
    """A wheelhouse for this machine's platform, repacked from the installed packages at
    exactly the pinned versions (no network: how tests install a kit on an x86-64 host).

    Raises
    ------
    ValueError
        A requirement is not installed here, or at another version.
    """
    folder = Path(out) / host_platform()
    folder.mkdir(parents=True, exist_ok=True)
    for req in requirements:
        name, version = _pin(req)
        _repack(name, version, folder)
    return _write_info(folder, host_platform(), "repacked from installed packages", requirements)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    from fedlab.kits.requirements import device_requirements, read_lock, target_environment

    parser = argparse.ArgumentParser(prog="python -m fedlab.kits.wheelhouse", description=__doc__)
    parser.add_argument("--platform", default="linux_aarch64", choices=sorted(PLATFORMS))
    parser.add_argument("--out", default=str(ROOT / "build" / "wheelhouse"))
    args = parser.parse_args(argv)
    reqs = device_requirements(
        read_lock(ROOT / "requirements.lock"), environment=target_environment(args.platform)
    )
    house = download(reqs, args.out, platform=args.platform)
    wheels = house.wheels_for(reqs)
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{house.folder}: {len(wheels)} wheels for {len(reqs)} requirements, {size:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
