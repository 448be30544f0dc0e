"""The fedlab ``ServerApp``: fedlab's round loop with its clients on Flower SuperNodes.

Selection, plans, strategy, validation, checkpoints and observers are fedlab's
(:class:`~fedlab.federated.federation.Federation`); Flower only carries the tasks and the
updates (:class:`~fedlab.fleet.dispatcher.FlowerDispatcher`). The run is described by the
app's run config (:class:`~fedlab.fleet.run.FleetRunSpec`), e.g.::

    flwr run APP fleet --run-config 'kit-dir="/kits/digits_cnn-raspberry_pi" rounds=5 …'

The results land in ``out-dir`` after every round (``history.json``, ``weights.npz``,
``nodes.json``) and ``done.json`` at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedlab.edge.model import atomic_write_bytes
from fedlab.fleet.dispatcher import FlowerDispatcher
from fedlab.fleet.run import FleetRunSpec, build_federation, fleet_data
from fedlab.fleet.runtime import KitRuntime

__all__ = ["app", "run_on_grid"]

app = ServerApp()


def run_on_grid(grid: Grid, spec: FleetRunSpec) -> None:
    """Enrol the nodes, run the missing rounds of ``spec``, write ``done.json``."""
    start = time.monotonic()
    runtime = KitRuntime(spec.kit_dir, spec.trusted_key)
    data = fleet_data(spec)
    dispatcher = FlowerDispatcher(
        grid,
        model_version=runtime.model_version,
        enrolled=[c.num_examples for c in data.clients],
        timeout_s=spec.round_timeout,
        hello_timeout_s=spec.enroll_timeout,
        secure_timeout_s=spec.round_timeout,
    )
    dispatcher.enroll(wait_for=spec.min_nodes, timeout_s=spec.enroll_timeout)
    enrolled_s = time.monotonic() - start
    federation = build_federation(spec, dispatcher, runtime=runtime, data=data)
    resumed_at = federation.rounds_done
    rounds = []
    for _ in range(max(0, spec.rounds - federation.rounds_done)):
        t0 = time.monotonic()
        result = federation.run_round()
        rounds.append({"round": result.round_index, "wall_s": time.monotonic() - t0})
    done = {
        "rounds_done": federation.rounds_done,
        "resumed_at": resumed_at,
        "enroll_s": enrolled_s,
        "rounds": rounds,
        "total_s": time.monotonic() - start,
        "notes": dispatcher.notes,
    }
    atomic_write_bytes(Path(spec.out_dir) / "done.json", json.dumps(done).encode())


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point."""
    run_on_grid(grid, FleetRunSpec.from_run_config(context.run_config))
