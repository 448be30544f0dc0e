"""Device kits (workbench side): a signed folder and tarball a board installs with one script."""

from __future__ import annotations

from fedlab.kits.builder import KIT_TARGETS, Kit, build_kit
from fedlab.kits.fleet import (
    AgentRun,
    DeviceDispatcher,
    EmulatedDevice,
    EmulatedRound,
    enrol_devices,
    make_emulated_devices,
    run_agents,
    run_emulated_round,
)
from fedlab.kits.requirements import device_requirements, read_lock

__all__ = [
    "KIT_TARGETS",
    "AgentRun",
    "DeviceDispatcher",
    "EmulatedDevice",
    "EmulatedRound",
    "Kit",
    "build_kit",
    "device_requirements",
    "enrol_devices",
    "make_emulated_devices",
    "read_lock",
    "run_agents",
    "run_emulated_round",
]
