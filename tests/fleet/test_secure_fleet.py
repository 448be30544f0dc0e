"""Secure aggregation over a real fleet: a SuperLink (TLS, SuperNode authentication) and
four SuperNodes whose devices keep their updates; the server learns only their sum.

Four, not three: SecAgg+ needs a strict majority of each device's neighbours to rebuild a
lost device's masks, which three devices (two neighbours each, threshold 2) cannot give
once one is lost.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fedlab.fleet.devices import write_devices
from fedlab.fleet.dispatcher import AgentDispatcher
from fedlab.fleet.run import build_federation, fleet_data, read_run_output
from tests.fleet.conftest import Fleet, start_fleet
from tests.fleet.test_flower_fleet import RUN_TIMEOUT, _run, _wait_log

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


@pytest.fixture(scope="module")
def fleet(fleet_kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """SuperLink + four registered SuperNodes on 127.0.0.1."""
    yield from start_fleet(tmp_path_factory.mktemp("secure-fleet"), fleet_kit, 4)


def _reference(fleet, spec, folder, *, hold: bool, silent_at=None):
    """The run of ``spec`` with the same DeviceAgents in this process: holding their
    updates (secure aggregation through the device code, no Flower) or sending them in
    the clear to the simulated protocol."""
    data = fleet_data(spec)
    configs = write_devices(folder, kit_dir=fleet.kit_dir, trusted_key=fleet.trusted_key, data=data)
    dispatcher = AgentDispatcher.from_devices(
        configs, enrolled=[c.num_examples for c in data.clients]
    )
    if not hold:
        dispatcher.secure_clients = None  # type: ignore[assignment,method-assign]
    dispatcher.silent_at = dict(silent_at or {})
    federation = build_federation(spec, dispatcher, data=data)
    federation.run(spec.rounds)
    return federation


def test_secure_aggregation_over_flower_equals_both_in_process_worlds(fleet, tmp_path):
    spec = fleet.spec("secure", rounds=2, secure_threshold=2)
    _, out = _run(fleet, spec)
    history = out["history"]
    assert all(tuple(r["completed"]) == (0, 1, 2, 3) for r in history), history
    assert all(r["aggregation_failure"] == "" for r in history), history
    dim = sum(w.size for w in out["weights"])
    # The updates went up only masked: ~4 bytes per parameter and device, plus keys.
    assert all(4 * 4 * dim < r["bytes_up"] < 1.2 * 4 * 4 * dim for r in history), history
    ref_spec = fleet.spec("secure-ref", out_dir=str(tmp_path / "ref"), rounds=2, secure_threshold=2)
    held = _reference(fleet, ref_spec, tmp_path / "held", hold=True)
    simulated = _reference(fleet, ref_spec, tmp_path / "sim", hold=False)
    for other in (held, simulated):
        for got, want in zip(out["weights"], other.weights, strict=True):
            # Exactly equal: the same updates, the same fixed-point sum; masks cancel.
            np.testing.assert_array_equal(got, want)
        for got, want in zip(history, other.history.to_records(), strict=True):
            assert got["num_examples"] == want["num_examples"]
            assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=1e-7)
    initial = held.runtime.initial_weights()
    assert (
        max(float(np.max(np.abs(a - b))) for a, b in zip(out["weights"], initial, strict=True))
        > 1e-3
    )
    # Nothing secret is left on the boards once the rounds are over.
    for device in fleet.devices.values():
        leftovers = sorted(p.name for p in device.parent.rglob("secagg-*"))
        assert leftovers == [], leftovers


def test_a_supernode_lost_in_the_middle_of_secure_aggregation_is_recovered(fleet, tmp_path):
    # Client 3's board takes 60 s before sending its masked input; it goes down then, after
    # it shared its keys: the others must reveal its mask key so its pairwise masks can be
    # removed from their vectors, and the sum is that of clients 0, 1 and 2.
    fleet.fleet.stop(fleet.nodes[3])
    slow = fleet.start_node(3, node_config={"emulate-secagg-delay-s": 60.0})
    spec = fleet.spec("secure-dropout", rounds=1, secure_threshold=2, round_timeout=90.0)
    run_id = fleet.fleet.submit(spec)
    _wait_log(slow, "client 3 secure aggregation: masked_input", 180)
    fleet.fleet.stop(slow)
    try:
        assert fleet.fleet.wait_run(run_id, RUN_TIMEOUT) == "finished:completed"
        out = read_run_output(spec.out_dir)
        (round0,) = out["history"]
        assert round0["aggregation_failure"] == "", round0
        assert tuple(round0["completed"]) == (0, 1, 2) and tuple(round0["dropped"]) == (3,)
        # Bit for bit the in-process run in which client 3 goes silent at the same stage.
        ref_spec = fleet.spec(
            "secure-dropout-ref", out_dir=str(tmp_path / "ref"), rounds=1, secure_threshold=2
        )
        ref = _reference(
            fleet, ref_spec, tmp_path / "held", hold=True, silent_at={"masked_input": {3}}
        )
        assert ref.history[0].completed == (0, 1, 2)
        for got, want in zip(out["weights"], ref.weights, strict=True):
            np.testing.assert_array_equal(got, want)
    finally:
        fleet.fleet.stop(slow)
