"""A real fleet on loopback: SuperLink and SuperNodes as processes, TLS and SuperNode
authentication on, fedlab's round loop in the ServerApp, DeviceAgents in the ClientApps.

The tests share one fleet (module fixture) and run in file order: the federation that
must equal the in-process reference, a rogue key refused, a node stopped mid-round, the
SuperLink restarted from its database and a run resumed from its checkpoint, and last a
node that loses power mid-round.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from fedlab.fleet.devices import write_devices
from fedlab.fleet.dispatcher import AgentDispatcher
from fedlab.fleet.run import build_federation, fleet_data, read_run_output

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

RUN_TIMEOUT = 300.0


def _run(fleet, spec):
    run_id = fleet.fleet.submit(spec)
    status = fleet.fleet.wait_run(run_id, RUN_TIMEOUT)
    out = read_run_output(spec.out_dir)
    assert status == "finished:completed", (status, fleet.fleet.superlink.tail(60))
    return run_id, out


def _wait_log(proc, text: str, timeout: float) -> None:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if text in proc.log.read_text(errors="replace"):
            return
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited:\n{proc.tail()}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {proc.name}'s log after {timeout} s:\n{proc.tail()}")


def test_three_rounds_over_flower_equal_the_in_process_run(fleet, tmp_path):
    spec = fleet.spec("equal", rounds=3)
    _, out = _run(fleet, spec)
    history = out["history"]
    assert [r["round_index"] for r in history] == [0, 1, 2]
    assert all(tuple(r["completed"]) == (0, 1, 2) for r in history), history
    assert out["done"]["rounds_done"] == 3 and out["done"]["notes"] == []
    nodes = out["nodes"]["nodes"]
    assert {n["client_id"]: n["node_id"] for n in nodes} == fleet.node_ids
    assert not any(n["tensorflow_imported"] for n in nodes), nodes
    assert all(n["last_round"] == 2 for n in nodes)

    # The reference: the same DeviceAgents (same kit, data, LiteRT trainer) in this process.
    ref_spec = fleet.spec("reference", out_dir=str(tmp_path / "ref"), rounds=3)
    data = fleet_data(ref_spec)
    configs = write_devices(
        tmp_path / "devices",
        kit_dir=fleet.kit_dir,
        trusted_key=fleet.trusted_key,
        data=data,
        state=False,
    )
    dispatcher = AgentDispatcher.from_devices(
        configs, enrolled=[c.num_examples for c in data.clients]
    )
    federation = build_federation(ref_spec, dispatcher, data=data)
    federation.run(3)
    reference = federation.history.to_records()
    for got, want in zip(history, reference, strict=True):
        for key in ("selected", "completed", "num_examples", "bytes_up"):
            assert got[key] == want[key], key
        # Identical float32 arithmetic on both sides: the same LiteRT kernels, inputs and
        # summation order; only the transport differs.
        for key in ("train_loss", "test_loss", "test_accuracy"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-7), key
    assert len(out["weights"]) == len(federation.weights)
    for got_w, want_w in zip(out["weights"], federation.weights, strict=True):
        # atol 1e-6: float32 LiteRT training is deterministic at one thread, so the runs
        # should agree bit for bit; the tolerance only allows for a different summation
        # order in numpy's reduce (it is not expected to be used: the max gap is printed).
        np.testing.assert_allclose(got_w, want_w, rtol=0, atol=1e-6)
    gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(out["weights"], federation.weights, strict=True)
    )
    print(f"max |flower - in-process| weight gap after 3 rounds: {gap:g}")
    # Training moved the model: the equality is not the initial weights twice.
    initial = federation.runtime.initial_weights()
    assert (
        max(float(np.max(np.abs(a - b))) for a, b in zip(out["weights"], initial, strict=True))
        > 1e-3
    )


def test_an_unregistered_supernode_key_is_refused(fleet):
    private, _ = fleet.fleet.node_key("rogue")  # never registered
    proc = fleet.fleet.start_supernode(
        "rogue",
        device_config=fleet.devices[0],
        client_id=0,
        key=private,
        max_retries=0,
        wait=False,
    )
    try:
        code = proc.popen.wait(timeout=90)
    finally:
        fleet.fleet.stop(proc)
    assert code != 0
    assert "No SuperNode found with the given public key" in proc.log.read_text(errors="replace")
    assert fleet.node_ids.keys() == {0, 1, 2}
    online = {n["node-id"] for n in fleet.fleet.nodes() if n["status"] == "online"}
    assert online == set(fleet.node_ids.values())


def test_a_supernode_stopped_mid_round_is_a_dropout_and_the_round_completes(fleet):
    # Client 2's board is slow this time (30 s before training), so it is surely mid-round
    # when it goes down.
    fleet.fleet.stop(fleet.nodes[2])
    slow = fleet.start_node(2, node_config={"emulate-delay-s": 30.0})
    spec = fleet.spec("dropout", rounds=1, round_timeout=90.0)
    run_id = fleet.fleet.submit(spec)
    _wait_log(slow, "client 2 training round 0", 120)
    started = time.monotonic()
    fleet.fleet.stop(slow)  # SIGTERM to its process group: the service stops mid-round
    status = fleet.fleet.wait_run(run_id, RUN_TIMEOUT)
    waited = time.monotonic() - started
    assert status == "finished:completed"
    (round0,) = read_run_output(spec.out_dir)["history"]
    assert tuple(round0["completed"]) == (0, 1)
    assert tuple(round0["dropped"]) == (2,)
    assert round0["num_examples"] > 0
    # Not waited out: the round closed when the node left, before its 90 s deadline.
    assert waited < spec.round_timeout, waited

    # The board comes back (same key, so the same node id) and is enrolled again.
    fleet.start_node(2)
    _, out = _run(fleet, fleet.spec("rejoin", rounds=1))
    assert tuple(out["history"][0]["completed"]) == (0, 1, 2)
    assert {n["client_id"]: n["node_id"] for n in out["nodes"]["nodes"]} == fleet.node_ids


def test_a_clientapp_that_raises_is_a_failed_client_and_the_round_completes(fleet):
    # A misconfigured board: its ClientApp raises on every train message (a negative
    # emulated delay is refused by the ClientApp's own config check). Flower answers with
    # an error reply, which the dispatcher reports as "failed" with Flower's reason.
    fleet.fleet.stop(fleet.nodes[1])
    fleet.start_node(1, node_config={"emulate-delay-s": -1.0})
    try:
        _, out = _run(fleet, fleet.spec("failed", rounds=1))
        (round0,) = out["history"]
        assert tuple(round0["completed"]) == (0, 2)
        ((cid, why),) = round0["failed"]
        assert cid == 1 and "Flower error" in why, why
        assert round0["num_examples"] > 0 and round0["aggregation_failure"] == ""
    finally:
        fleet.fleet.stop(fleet.nodes[1])
        fleet.start_node(1)


def test_a_superlink_restart_with_its_database_resumes(fleet):
    ckpt = fleet.work / "checkpoints"
    first = fleet.spec("resume", rounds=1, checkpoint_dir=str(ckpt))
    first_id, out = _run(fleet, first)
    assert out["done"]["rounds_done"] == 1

    fleet.fleet.stop(fleet.fleet.superlink)
    fleet.fleet.start_superlink()
    # The runs survived in the database; the SuperNodes reconnect by themselves.
    assert first_id in {int(r["run-id"]) for r in fleet.fleet.runs()}
    second = fleet.spec("resume", rounds=2, checkpoint_dir=str(ckpt), resume=True)
    _, out = _run(fleet, second)
    assert out["done"]["resumed_at"] == 1 and out["done"]["rounds_done"] == 2
    assert [r["round_index"] for r in out["history"]] == [0, 1]
    assert tuple(out["history"][1]["completed"]) == (0, 1, 2)


def test_a_supernode_that_loses_power_mid_round_is_a_straggler_at_the_deadline(fleet):
    # SIGKILL: the SuperNode cannot deregister, so the SuperLink keeps it "online" until
    # its heartbeat expires (about 2 x 30 s in Flower 1.23). The server cannot tell a dead
    # board from a slow one before that: at the 15 s deadline it is a straggler, and the
    # round is applied with the other two updates.
    fleet.fleet.stop(fleet.nodes[2])
    slow = fleet.start_node(2, node_config={"emulate-delay-s": 60.0})
    spec = fleet.spec("power-loss", rounds=1, round_timeout=15.0)
    run_id = fleet.fleet.submit(spec)
    _wait_log(slow, "client 2 training round 0", 120)
    fleet.fleet.stop(slow, kill=True)
    assert fleet.fleet.wait_run(run_id, RUN_TIMEOUT) == "finished:completed"
    (round0,) = read_run_output(spec.out_dir)["history"]
    assert tuple(round0["completed"]) == (0, 1)
    assert tuple(round0["stragglers"]) == (2,)
    # Last test of the module on purpose: restarted at once with the same key, this node
    # is refused ("could not be activated") until the SuperLink times its old session out,
    # about 60 s; the service manager's restart delay has to cover that (see the report).
