"""Can this board run a fedlab kit? Python, architecture, LiteRT, Edge TPU, RAM, disk.

Usage::

    python -m fedlab.edge.doctor [--config /etc/fedlab/device.json] [--json]

Prints one line per check (ok / warn / FAIL) and exits 1 when a required check fails.
With ``--config`` it also checks, as the user it runs as (setup.sh runs it as the service
user), that the kit verifies and is readable, the state and exchange folders are
writable, and the local data is there (missing data is a warning: the agent waits).
The facts are gathered by :func:`probe` and judged by the pure :func:`diagnose`, so the
judgement is tested with made-up boards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fedlab.edge.config import DeviceConfig

__all__ = ["Check", "Probe", "Report", "config_checks", "diagnose", "main", "probe"]

EDGETPU_USB_IDS = {
    "1a6e:089a": "Coral USB Accelerator (before first use)",
    "18d1:9302": "Coral USB Accelerator (initialized)",
}
MIN_RAM_MB = 200.0
MIN_DISK_MB = 300.0
Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Probe:
    """Facts about a board."""

    python: tuple[int, int, int]
    machine: str
    litert_version: str | None
    litert_error: str
    numpy_version: str | None
    cryptography_version: str | None
    apex_device: bool
    usb_ids: tuple[str, ...]
    edgetpu_library: bool
    mem_available_mb: float | None
    disk_free_mb: float
    board: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict."""

    name: str
    status: Status
    detail: str


def _version(module: str) -> tuple[str | None, str]:
    try:
        from importlib.metadata import version

        mod = __import__(module)
        dist = {"ai_edge_litert": "ai-edge-litert"}.get(module, module)
        return getattr(mod, "__version__", None) or version(dist), ""
    except Exception as exc:  # report any import failure as a finding
        return None, f"{type(exc).__name__}: {exc}"


def _usb_ids(root: Path = Path("/sys/bus/usb/devices")) -> tuple[str, ...]:
    ids = []
    for dev in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            vendor = (dev / "idVendor").read_text().strip()
            product = (dev / "idProduct").read_text().strip()
        except OSError:
            continue
        ids.append(f"{vendor}:{product}")
    return tuple(ids)


def _mem_available_mb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def probe(disk_path: str | Path = ".") -> Probe:
    """Read the facts of this machine."""
    from fedlab.edge.coral import edgetpu_library_present

    litert, litert_error = _version("ai_edge_litert")
    board_file = Path("/proc/device-tree/model")
    board = board_file.read_text().strip("\x00\n ") if board_file.is_file() else ""
    return Probe(
        python=tuple(sys.version_info[:3]),  # type: ignore[arg-type]
        machine=platform.machine(),
        litert_version=litert,
        litert_error=litert_error,
        numpy_version=_version("numpy")[0],
        cryptography_version=_version("cryptography")[0],
        apex_device=Path("/dev/apex_0").exists(),
        usb_ids=_usb_ids(),
        edgetpu_library=edgetpu_library_present(),
        mem_available_mb=_mem_available_mb(),
        disk_free_mb=shutil.disk_usage(disk_path).free / 2**20,
        board=board,
    )


def diagnose(p: Probe, *, mode: str = "litert", coral_fallback: str = "refuse") -> list[Check]:
    """Judge a board for a kit in ``mode`` (pure: no I/O)."""
    checks: list[Check] = []
    py = ".".join(map(str, p.python))
    if p.python[:2] == (3, 11):
        checks.append(
            Check("python", "ok", f"Python {py} (the kit's pinned requirements target 3.11)")
        )
    elif (3, 9) <= p.python[:2] <= (3, 12):
        checks.append(Check("python", "warn", f"Python {py}: kits are pinned for 3.11"))
    else:
        checks.append(Check("python", "fail", f"Python {py}: need 3.9–3.12 (3.11 recommended)"))
    arch_ok = {"aarch64": "ok", "arm64": "ok", "x86_64": "ok", "armv7l": "warn"}
    status: Status = arch_ok.get(p.machine, "fail")  # type: ignore[assignment]
    detail = {
        "ok": f"{p.machine}",
        "warn": f"{p.machine}: 32-bit ARM has no ai-edge-litert wheel; use 64-bit Raspberry Pi OS",
    }.get(status, f"{p.machine}: no ai-edge-litert wheels")
    checks.append(Check("architecture", status, detail + (f" ({p.board})" if p.board else "")))
    if p.litert_version:
        checks.append(Check("litert", "ok", f"ai-edge-litert {p.litert_version}"))
    else:
        checks.append(Check("litert", "fail", f"ai-edge-litert does not import: {p.litert_error}"))
    for name, version in (("numpy", p.numpy_version), ("cryptography", p.cryptography_version)):
        checks.append(Check(name, "ok" if version else "fail", version or "not installed"))
    usb = [f"{i} {EDGETPU_USB_IDS[i]}" for i in p.usb_ids if i in EDGETPU_USB_IDS]
    present = p.apex_device or bool(usb)
    where = "PCIe /dev/apex_0" if p.apex_device else (usb[0] if usb else "")
    if present and p.edgetpu_library:
        checks.append(Check("edgetpu", "ok", f"{where}; libedgetpu.so.1 found"))
    else:
        missing = []
        if not present:
            missing.append("no Edge TPU (/dev/apex_0 absent, no USB 1a6e:089a or 18d1:9302)")
        if not p.edgetpu_library:
            missing.append("libedgetpu.so.1 not found")
        text = "; ".join(missing)
        if mode != "coral":
            checks.append(Check("edgetpu", "ok", f"{text} (not needed in mode {mode!r})"))
        elif coral_fallback == "cpu":
            checks.append(Check("edgetpu", "warn", f"{text}: the backbone will run on the CPU"))
        else:
            checks.append(
                Check("edgetpu", "fail", f"{text}; mode 'coral' with coral_fallback 'refuse'")
            )
    if p.mem_available_mb is None:
        checks.append(Check("memory", "warn", "MemAvailable unknown"))
    else:
        ok = p.mem_available_mb >= MIN_RAM_MB
        checks.append(
            Check(
                "memory",
                "ok" if ok else "fail",
                f"{p.mem_available_mb:.0f} MB available (need {MIN_RAM_MB:.0f})",
            )
        )
    ok = p.disk_free_mb >= MIN_DISK_MB
    checks.append(
        Check(
            "disk", "ok" if ok else "fail", f"{p.disk_free_mb:.0f} MB free (need {MIN_DISK_MB:.0f})"
        )
    )
    return checks


@dataclass(frozen=True, slots=True)
class Report:
    """The checks, and whether the kit can run."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No failed check."""
        return all(c.status != "fail" for c in self.checks)

    def text(self) -> str:
        """One line per check."""
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
        lines = [f"[{mark[c.status]}] {c.name:<13} {c.detail}" for c in self.checks]
        lines.append("ready" if self.ok else "NOT READY: fix the FAIL lines above")
        return "\n".join(lines)


def _user() -> str:
    import pwd

    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _writable(folder: Path) -> tuple[bool, str]:
    """Can this user create files in ``folder`` (or create it, when it does not exist)?"""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{probe} is not a folder"
    ok = os.access(probe, os.W_OK | os.X_OK)
    where = "" if probe == folder else f" (missing; would be created in {probe})"
    return ok, where


def config_checks(config: DeviceConfig) -> list[Check]:
    """What the agent will need, checked as the user running the doctor (setup.sh runs it
    as the service user): the kit verified and readable, not a rollback, state and
    exchange folders writable, the local data present and readable, the device id.

    Reads only (a generated device id is not created here).
    """
    from fedlab.edge.config import DEVICE_ID_FILE
    from fedlab.edge.manifest import (
        INSTALLED_VERSION_FILE,
        KitVerificationError,
        kit_version,
        verify_kit,
    )

    who = _user()
    checks: list[Check] = []
    kit = Path(config.kit_dir)
    unreadable = sorted(
        str(q.relative_to(kit))
        for q in ([kit, *kit.rglob("*")] if kit.is_dir() else [])
        if not os.access(q, os.R_OK | (os.X_OK if q.is_dir() else 0))
    )
    if unreadable:
        checks.append(
            Check(
                "permissions",
                "fail",
                f"{len(unreadable)} kit path(s) not readable by {who}: {unreadable[:3]} "
                "(kit files must be 0644, folders 0755)",
            )
        )
    else:
        checks.append(Check("permissions", "ok", f"every kit file readable by {who}"))
    try:
        manifest = verify_kit(kit, config.trusted_key)
        version = kit_version(manifest)
        checks.append(
            Check("kit", "ok", f"{kit}: signature and hashes verified (kit_version {version})")
        )
        record = Path(config.state_dir) / INSTALLED_VERSION_FILE if config.state_dir else None
        if record is not None and record.is_file():
            try:
                installed = int(json.loads(record.read_text())["kit_version"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                checks.append(Check("rollback", "fail", f"{record}: unreadable or damaged ({exc})"))
            else:
                if version < installed:
                    checks.append(
                        Check(
                            "rollback",
                            "fail",
                            f"kit_version {version} is older than {installed} already run here",
                        )
                    )
    except KitVerificationError as exc:
        checks.append(Check("kit", "fail", str(exc)))
    folders = [("state", config.state_dir)] if config.state_dir else []
    if config.transport.get("kind") == "files":
        folders.append(("exchange", str(config.transport["folder"])))
    for name, folder in folders:
        ok, where = _writable(Path(folder))
        checks.append(
            Check(
                name,
                "ok" if ok else "fail",
                f"{folder}{where}: {'writable' if ok else 'NOT writable'} by {who}",
            )
        )
    data = Path(config.data_path)
    if not data.exists():
        checks.append(
            Check(
                "data",
                "warn",
                f"data missing: copy it to {data} (readable by the service user); "
                "the agent waits for it",
            )
        )
    elif not os.access(data, os.R_OK):
        checks.append(Check("data", "fail", f"{data}: not readable by {who}"))
    else:
        checks.append(Check("data", "ok", f"{data}"))
    if config.device_id:
        checks.append(Check("device id", "ok", f"{config.device_id} (from the config)"))
    else:
        kept = Path(config.state_dir) / DEVICE_ID_FILE
        text = kept.read_text().strip() if kept.is_file() else ""
        checks.append(
            Check(
                "device id",
                "ok",
                f"{text} (generated, kept in {kept})"
                if text
                else f"generated by the agent at its first start, kept in {kept}",
            )
        )
    return checks


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m fedlab.edge.doctor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="device.json: judge for its mode, verify its kit")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    from fedlab.log import add_log_level_argument, configure_logging

    add_log_level_argument(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    mode, fallback, extra = "litert", "refuse", []
    disk = "."
    if args.config:
        from fedlab.edge.config import ConfigError, DeviceConfig

        try:
            config = DeviceConfig.load(args.config)
            mode, fallback, disk = config.mode, config.coral_fallback, config.kit_dir
            extra.extend(config_checks(config))
        except ConfigError as exc:
            extra.append(Check("config", "fail", str(exc)))
            disk = "."
    report = Report(
        diagnose(probe(disk if Path(disk).exists() else "."), mode=mode, coral_fallback=fallback)
        + extra
    )
    if args.json:
        print(json.dumps({"ok": report.ok, "checks": [asdict(c) for c in report.checks]}, indent=1))
    else:
        print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
