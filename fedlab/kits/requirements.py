"""The device's pinned requirements: the ``device`` extra's closure, at the lock's versions,
for the board's Python and platform (not this workbench's)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

__all__ = ["AARCH64_PY311", "device_requirements", "read_lock", "target_environment"]

#: A 64-bit Raspberry Pi OS Bookworm board (Pi 4, Pi 5, Zero 2 W) or a Coral Dev Board.
AARCH64_PY311 = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "platform_machine": "aarch64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
}


def target_environment(platform: str) -> dict[str, str]:
    """Marker environment of a kit platform (``linux_aarch64``, ``linux_x86_64``), Python 3.11.

    Raises
    ------
    ValueError
        Not a Linux platform name.
    """
    system, _, machine = platform.partition("_")
    if system != "linux" or not machine:
        raise ValueError(f"platform must look like linux_<machine>, got {platform!r}")
    return {**AARCH64_PY311, "platform_machine": machine}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str | Path) -> dict[str, str]:
    """``{canonical name: version}`` from a ``name==version`` lock file."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_canonical(name)] = version.strip()
    return pins


def device_requirements(
    lock: dict[str, str],
    *,
    root: str = "fedlab",
    extra: str = "device",
    environment: dict[str, str] | None = None,
) -> list[str]:
    """``name==version`` lines for everything ``root[extra]`` needs on the target.

    Dependencies are read from the installed packages' metadata and their markers evaluated
    for ``environment`` (default: Python 3.11 on Linux aarch64).

    Raises
    ------
    ValueError
        A needed package is not pinned in the lock.
    """
    env = {**default_environment(), **(environment or AARCH64_PY311)}
    pending = [
        req
        for req in map(Requirement, requires(root) or [])
        if req.marker is None or req.marker.evaluate({**env, "extra": extra})
    ]
    seen: dict[str, str] = {}
    while pending:
        req = pending.pop()
        name = _canonical(req.name)
        if name in seen or name == root:
            continue
        if name not in lock:
            raise ValueError(f"{req.name} is needed on the device but not pinned in the lock")
        seen[name] = lock[name]
        try:
            deps = requires(req.name) or []
        except PackageNotFoundError as exc:
            raise ValueError(f"{req.name} is pinned but not installed here: {exc}") from exc
        for dep in map(Requirement, deps):
            extras = req.extras or {""}
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in extras):
                pending.append(dep)
    return [f"{name}=={version}" for name, version in sorted(seen.items())]
