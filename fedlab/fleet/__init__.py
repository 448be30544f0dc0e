"""Real fleets on Flower 1.23: fedlab's round loop inside a Flower ``ServerApp``, devices
as SuperNodes running a fedlab ``ClientApp`` (``fedlab.edge``, no TensorFlow).

* :mod:`fedlab.fleet.dispatcher` — :class:`FlowerDispatcher` (a ``Dispatcher`` over a
  Flower ``Grid``) and :class:`AgentDispatcher` (the same device agents in this process:
  the reference a Flower run must equal);
* :mod:`fedlab.fleet.runtime` — :class:`KitRuntime`, the server's initial model and
  central evaluation from a signed kit (LiteRT, TF-free);
* :mod:`fedlab.fleet.clientapp`, :mod:`fedlab.fleet.serverapp` — the Flower apps;
* :mod:`fedlab.fleet.pki` — TLS certificates and SuperNode keys;
* :mod:`fedlab.fleet.processes` — a SuperLink and SuperNodes on loopback, by PID;
* :mod:`fedlab.fleet.cli` — ``fedlab-fleet`` (``certs``, ``keys``, ``app``, ``superlink``,
  ``supernode``, ``register``, ``run``, ``status``).

Names are imported lazily: importing :mod:`fedlab.fleet` does not import Flower.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AgentDispatcher", "FlowerDispatcher", "KitRuntime", "LocalFleet"]

_WHERE = {
    "AgentDispatcher": "fedlab.fleet.dispatcher",
    "FlowerDispatcher": "fedlab.fleet.dispatcher",
    "KitRuntime": "fedlab.fleet.runtime",
    "LocalFleet": "fedlab.fleet.processes",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fedlab.fleet' has no attribute {name!r}")
