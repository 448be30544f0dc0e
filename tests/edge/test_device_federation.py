"""One round, two worlds: emulated devices run through the same ``Federation`` loop as
simulated clients, and an answer that does not fit the round is refused on the way in."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedlab.data.federated_dataset import FederatedDataset
from fedlab.edge.transport import FileTransport, update_file_name
from fedlab.federated import Federation, FederationConfig
from fedlab.federated.aggregate import relative_difference
from fedlab.federated.federation import Federation as FederationClass
from fedlab.kits import DeviceDispatcher, make_emulated_devices
from fedlab.protocol import UpdateEnvelope, encode

DEVICES = 3


def _lines_of_the_loop(call: Callable[[], object]) -> tuple[object, set[int]]:
    """Run ``call``; the lines of ``fedlab/federated/federation.py`` it executed (the
    round loop and its phases)."""
    loop_file = FederationClass.run_round.__code__.co_filename
    seen: set[int] = set()

    def local(frame, event, arg):
        if event == "line":
            seen.add(frame.f_lineno)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == loop_file else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = call()
    finally:
        sys.settrace(previous)
    return result, seen


@pytest.fixture
def fleet(kits, tmp_path: Path):
    """Three emulated Pis holding digits clients 0-2 (fresh device state: a device does
    not train a task it already answered), and the same clients as simulated data."""
    from fedlab.data import federated_digits

    digits = federated_digits(num_clients=20, scheme="iid", seed=0)
    clients = digits.clients[:DEVICES]
    data = FederatedDataset(clients, digits.test, digits.num_classes, "digits, 3 clients")
    root = tmp_path / "fleet"
    devices = make_emulated_devices(kits["pi"], clients, root)
    return {"data": data, "devices": devices, "root": root, "kit": kits["pi"]}


def _runtime():
    from fedlab.federated import KerasRuntime
    from fedlab.models import build_model

    return KerasRuntime(lambda: build_model("digits_cnn", (8, 8, 1), 10))


CONFIG = FederationConfig(
    clients_per_round=DEVICES, local_epochs=2, batch_size=16, client_lr=0.1, seed=3
)


def _dispatcher(fleet, **kwargs) -> DeviceDispatcher:
    version = fleet["kit"].manifest.info["model"]["version"]
    return DeviceDispatcher(
        fleet["devices"], fleet["root"] / "exchange", model_version=version, **kwargs
    )


def test_devices_and_simulation_share_one_coordinator_path(fleet) -> None:
    simulated = Federation(data=fleet["data"], runtime=_runtime(), config=CONFIG)
    devices = Federation(
        runtime=_runtime(), dispatcher=_dispatcher(fleet), test=fleet["data"].test, config=CONFIG
    )
    assert [w.tobytes() for w in simulated.weights] == [w.tobytes() for w in devices.weights]
    sim_round, sim_lines = _lines_of_the_loop(simulated.run_round)
    dev_round, dev_lines = _lines_of_the_loop(devices.run_round)

    # the same server code ran, line for line: select, plan, dispatch, pipeline, reduce + step
    assert sim_lines == dev_lines
    assert len(dev_lines) > 100
    assert sim_round.completed == dev_round.completed == (0, 1, 2)
    assert dev_round.rejected == dev_round.failed == ()
    assert dev_round.runtime.startswith("3 devices (emulated")
    # the devices' own tasks went down as frames; their bodies came up
    assert dev_round.bytes_down > sum(w.nbytes for w in devices.weights) * DEVICES
    assert dev_round.bytes_up == sum(w.nbytes for w in devices.weights) * DEVICES
    assert dict(dev_round.stage_bytes) == {"update": dev_round.bytes_up}
    # LiteRT on the devices and Keras in simulation: the same plans, the same model
    assert relative_difference(devices.weights, simulated.weights) < 1e-4
    assert abs(dev_round.test_accuracy - sim_round.test_accuracy) <= 0.01
    dispatcher = devices.dispatcher
    assert isinstance(dispatcher, DeviceDispatcher)
    assert not any(run.report["tensorflow_imported"] for run in dispatcher.last_runs.values())
    # each device got its own plan: its client id and its seed
    seeds = {cid: task.plan.seed for cid, task in dispatcher.last_tasks.items()}
    assert sorted(seeds) == [0, 1, 2] and len(set(seeds.values())) == 3


def test_a_failing_device_costs_only_itself(fleet, tmp_path: Path) -> None:
    import json

    devices = list(fleet["devices"])
    broken = json.loads(devices[1].config.read_text())
    broken["data_path"] = str(tmp_path / "missing.npz")
    config = tmp_path / "broken.json"
    config.write_text(json.dumps(broken))
    devices[1] = type(devices[1])(
        devices[1].device_id, devices[1].folder, config, devices[1].num_examples
    )
    version = fleet["kit"].manifest.info["model"]["version"]
    dispatcher = DeviceDispatcher(devices, fleet["root"] / "exchange", model_version=version)
    fed = Federation(
        runtime=_runtime(), dispatcher=dispatcher, test=fleet["data"].test, config=CONFIG
    )
    before = fed.weights
    result = fed.run_round()
    assert result.completed == (0, 2)
    ((cid, reason),) = result.failed
    assert cid == 1 and "agent exit" in reason and "missing.npz" in reason
    assert relative_difference(fed.weights, before) > 0


def test_answers_that_do_not_fit_the_round_are_refused(fleet) -> None:
    """Real boards poll the exchange (``launch=False``). Played here by a thread: device 0
    answers for another global model (a stale or replayed update), device 1 writes bytes
    that are not a frame, device 2 never answers. Nothing is applied; each has its reason."""
    dispatcher = _dispatcher(fleet, launch=False, poll_s=0.05)
    config = FederationConfig(clients_per_round=DEVICES, seed=3, deadline_s=4.0)
    fed = Federation(
        runtime=_runtime(), dispatcher=dispatcher, test=fleet["data"].test, config=config
    )
    transport = FileTransport(fleet["root"] / "exchange")
    ids = [d.device_id for d in fleet["devices"]]

    def boards() -> None:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            task = transport.fetch(ids[0])
            if task is not None and task.round_index == 0 and task.client_id == 0:
                break
            time.sleep(0.02)
        else:
            return
        stale = UpdateEnvelope(
            client_id=0,
            round_index=0,
            model_version=task.model_version,
            base_version="0" * 16,
            num_examples=10,
            body=tuple(np.zeros_like(w) for w in task.weights or ()),
            device_id=ids[0],
        )
        transport.submit(ids[0], stale)
        (transport.updates / update_file_name(ids[1], 0)).write_bytes(b"FLAB garbage")

    thread = threading.Thread(target=boards)
    thread.start()
    before = fed.weights
    result = fed.run_round()
    thread.join()
    assert result.completed == ()
    ((c0, stale_reason),) = result.rejected
    assert c0 == 0 and "base_version" in stale_reason
    assert dict(result.stage_rejections) == {"validate": 1}
    ((c1, garbage_reason),) = result.failed
    assert c1 == 1 and "refused on arrival" in garbage_reason
    assert result.stragglers == (2,)
    assert [w.tobytes() for w in fed.weights] == [w.tobytes() for w in before]
    assert fed.rounds_done == 1


def test_dispatcher_constructor_is_strict(fleet) -> None:
    devices = fleet["devices"]
    with pytest.raises(ValueError, match="at least one device"):
        DeviceDispatcher([], "x", model_version="v")
    with pytest.raises(ValueError, match="model_version"):
        DeviceDispatcher(devices, "x", model_version="")
    no_cap = type(devices[0])(devices[0].device_id, devices[0].folder, devices[0].config, None)
    with pytest.raises(ValueError, match="num_examples"):
        DeviceDispatcher([no_cap], "x", model_version="v")
    with pytest.raises(ValueError, match="unique"):
        DeviceDispatcher([devices[0], devices[0]], "x", model_version="v")
    with pytest.raises(ValueError, match="timeout_s"):
        DeviceDispatcher(devices, "x", model_version="v", timeout_s=0)
    with pytest.raises(TypeError, match="test=LabeledArrays"):
        Federation(runtime=_runtime(), dispatcher=_dispatcher(fleet))
    with pytest.raises(ValueError, match="dispatcher"):
        Federation(runtime=_runtime())


def test_per_device_tasks_take_precedence_and_are_withdrawn(tmp_path: Path) -> None:
    from fedlab.protocol import OptimizerSpec, RoundTask, TrainPlan

    def task(round_index: int, client_id: int) -> RoundTask:
        return RoundTask(
            round_index=round_index,
            model_version="m",
            client_id=client_id,
            plan=TrainPlan(
                epochs=1,
                batch_size=8,
                learning_rate=0.1,
                optimizer=OptimizerSpec(name="sgd"),
                seed=client_id,
            ),
            weights=(np.ones(3, np.float32),),
        )

    exchange = FileTransport(tmp_path)
    exchange.publish(task(0, 0))
    exchange.publish(task(1, 7), device_id="pi-7")
    fetched = exchange.fetch("pi-7")
    assert fetched is not None and fetched.client_id == 7
    shared = exchange.fetch("pi-8")
    assert shared is not None and shared.client_id == 0
    exchange.task_path("pi-7").unlink()
    fetched = exchange.fetch("pi-7")
    assert fetched is not None and fetched.client_id == 0
    with pytest.raises(ValueError, match="device_id"):
        exchange.publish(task(0, 0), device_id="../escape")
    assert encode(task(0, 0))  # the frame is the protocol's


def test_devices_sign_their_updates_and_a_swapped_key_is_refused(kits, tmp_path: Path) -> None:
    """Each device generates its key on first use (0600, in its state folder) and the
    server enrols what ``--enrol`` prints; a device whose key changed after enrolment (a
    cloned SD card, a replaced board) is refused as forged, the others are aggregated."""
    import os
    import stat

    from fedlab.data import federated_digits
    from fedlab.edge.identity import DEVICE_KEY_FILE
    from fedlab.federated import Pipeline
    from fedlab.federated.authenticate import VerifySignature
    from fedlab.kits import enrol_devices

    digits = federated_digits(num_clients=20, scheme="iid", seed=0)
    devices = make_emulated_devices(
        kits["pi"], digits.clients[:DEVICES], tmp_path, sign_updates=True
    )
    registry = enrol_devices(devices)
    assert len(registry) == DEVICES
    key_file = devices[0].folder / "state" / DEVICE_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert enrol_devices(devices).to_dict() == registry.to_dict()  # the key is kept
    os.unlink(devices[2].folder / "state" / DEVICE_KEY_FILE)  # device 2 now makes a new key

    version = kits["pi"].manifest.info["model"]["version"]
    fed = Federation(
        runtime=_runtime(),
        dispatcher=DeviceDispatcher(devices, tmp_path / "exchange", model_version=version),
        test=digits.test,
        config=CONFIG,
        pipeline=Pipeline(server=(VerifySignature(registry),)),
    )
    result = fed.run_round()
    assert result.completed == (0, 1)
    ((cid, reason),) = result.rejected
    assert cid == 2 and "forged" in reason
    assert dict(result.stage_rejections) == {"verify": 1}


def test_devices_encode_with_the_tasks_codec_and_keep_its_residual(fleet) -> None:
    """Error feedback on the devices: the task names the codec, each device keeps its
    residual in its state folder, the server decodes — and the model equals the simulation
    running the same codec with the residuals in the simulated dispatcher."""
    from fedlab.codec import QSGD, ErrorFeedback, TopK, chain
    from fedlab.federated import DecodeUpdate, EncodeUpdate, Pipeline

    codec = ErrorFeedback(chain(TopK(0.25), QSGD(bits=8)))
    version = fleet["kit"].manifest.info["model"]["version"]
    devices = Federation(
        runtime=_runtime(),
        dispatcher=DeviceDispatcher(
            fleet["devices"], fleet["root"] / "exchange", model_version=version, codec=codec
        ),
        test=fleet["data"].test,
        config=CONFIG,
        pipeline=Pipeline(server=(DecodeUpdate(codec),)),
    )
    simulated = Federation(
        data=fleet["data"],
        runtime=_runtime(),
        config=CONFIG,
        pipeline=Pipeline(client=(EncodeUpdate(codec),), server=(DecodeUpdate(codec),)),
    )
    for _ in range(2):
        dev_round, sim_round = devices.run_round(), simulated.run_round()
        assert dev_round.completed == sim_round.completed == (0, 1, 2)
    sizes = dict(dev_round.stage_bytes)
    assert sizes["update"] / sizes["encode"] > 4  # 25 % of the values at 8 bits, and indices
    assert dev_round.bytes_up == sizes["encode"]
    for device in fleet["devices"]:
        states = list((device.folder / "state").glob("codec-*.state"))
        assert len(states) == 1  # the residual lives on the device
    # same codec, same per-client random streams, same residuals: the same model
    assert relative_difference(devices.weights, simulated.weights) < 1e-3


def test_a_second_run_on_the_same_devices_is_answered_not_served_stale(fleet) -> None:
    """Devices answer each run's tasks once: a second run (same round 0, same initial
    weights, another plan) is trained, and the first run's update files are not taken
    for its answers."""
    from dataclasses import replace as with_

    first = Federation(
        runtime=_runtime(), dispatcher=_dispatcher(fleet), test=fleet["data"].test, config=CONFIG
    )
    first.run_round()
    other = with_(CONFIG, seed=11, local_epochs=1)
    second = Federation(
        runtime=_runtime(), dispatcher=_dispatcher(fleet), test=fleet["data"].test, config=other
    )
    result = second.run_round()
    assert result.completed == (0, 1, 2) and not result.rejected
    simulated = Federation(data=fleet["data"], runtime=_runtime(), config=other)
    simulated.run_round()
    assert relative_difference(second.weights, simulated.weights) < 1e-4
    assert relative_difference(second.weights, first.weights) > 1e-3
