"""Run a device module with only what a board has: the standard library, numpy,
cryptography, ai-edge-litert and fedlab. Any other import (TensorFlow above all) fails.

Usage::

    python -m fedlab.edge.emulate fedlab.edge.agent --config device.json

This is how the workbench emulates a Raspberry Pi: the same interpreter, but an import
allow-list instead of a second environment.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder

__all__ = ["DEVICE_PACKAGES", "DeviceImportGuard", "main"]

#: Top-level packages a device installs (with their own binary helpers).
DEVICE_PACKAGES = frozenset(
    {"numpy", "cryptography", "ai_edge_litert", "fedlab", "cffi", "_cffi_backend", "pycparser"}
)


class DeviceImportGuard(MetaPathFinder):
    """Refuses every import outside the standard library and :data:`DEVICE_PACKAGES`."""

    def __init__(self, allowed: frozenset[str] = DEVICE_PACKAGES) -> None:
        self.allowed = allowed
        self.refused: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: object = None
    ) -> None:
        """Let the normal finders handle allowed modules; raise for the rest."""
        top = name.partition(".")[0]
        # Private top-level names are the compiled helpers of allowed packages
        # (cryptography's _openssl, numpy's _cython_* and cython_runtime).
        if (
            top in self.allowed
            or top in sys.stdlib_module_names
            or top in sys.builtin_module_names
            or top.startswith("_")
            or top == "cython_runtime"
        ):
            return None
        self.refused.append(name)
        raise ModuleNotFoundError(f"{name!r} is not installed on the device", name=name)


def _allowed(guard: DeviceImportGuard, name: str) -> bool:
    try:
        guard.find_spec(name)
    except ModuleNotFoundError:
        guard.refused.clear()
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run ``MODULE [ARGS...]`` as ``python -m MODULE ARGS`` under the import guard."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    guard = DeviceImportGuard()
    loaded = sorted(m for m in sys.modules if not _allowed(guard, m))
    if loaded:
        print(f"fedlab-emulate: already imported before the guard: {loaded[:5]}", file=sys.stderr)
        return 2
    sys.meta_path.insert(0, guard)
    module, sys.argv = args[0], args
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
