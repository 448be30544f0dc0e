"""Secure aggregation on devices that keep their updates (in process, no Flower).

The devices are real :class:`DeviceAgent` s (kit, LiteRT trainer, local data, state folder)
behind :class:`AgentDispatcher`; with ``secure_aggregation`` the federation tells them to
hold their updates and runs SecAgg+ through ``AgentDispatcher.secure_clients`` — the same
device code (``fedlab.edge.secure_client``) a SuperNode's ClientApp runs, over the same
wire. Reference: the same agents sending plaintext, summed by the simulated protocol.
"""

from __future__ import annotations

import json
import math
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedlab.data.federated_dataset import federated_digits
from fedlab.edge.agent import DeviceAgent
from fedlab.edge.config import DeviceConfig
from fedlab.edge.secure_client import HELD_FILE, STATE_FILE, DeviceSecAgg, device_secagg
from fedlab.edge.transport import InProcessTransport
from fedlab.federated.authenticate import VerifySignature
from fedlab.federated.config import FederationConfig
from fedlab.federated.federation import Federation
from fedlab.federated.observers import Observer
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.stages import Pipeline
from fedlab.fleet.devices import write_devices
from fedlab.fleet.dispatcher import AgentDispatcher
from fedlab.fleet.runtime import KitRuntime
from fedlab.protocol import ProtocolError, RoundTask, TrainPlan
from fedlab.protocol.secagg import SecAggRequest, encode_request
from fedlab.secure import ADVERTISE, MASKED_INPUT, SHARE, UNMASK, RoundSetup, SecAggConfig
from fedlab.secure.secagg import SecAggAborted

NUM_CLIENTS = 4


@pytest.fixture(scope="module")
def fleet(kits, tmp_path_factory):
    data = federated_digits(num_clients=NUM_CLIENTS, seed=0)
    kit = kits["pi"]
    return data, kit


def _federation(fleet, folder, *, secure: bool, hold: bool, threshold: int = 2):
    data, kit = fleet
    configs = write_devices(folder, kit_dir=kit.folder, trusted_key=kit.trusted_key, data=data)
    dispatcher = AgentDispatcher.from_devices(
        configs, enrolled=[c.num_examples for c in data.clients]
    )
    if not hold:  # plaintext envelopes: the protocol is simulated in process
        dispatcher.secure_clients = None  # type: ignore[assignment,method-assign]
    config = SecAggConfig(
        threshold=threshold, clip=1.0, max_examples=max(c.num_examples for c in data.clients)
    )
    return Federation(
        data=data,
        runtime=KitRuntime(kit.folder, kit.trusted_key),
        config=FederationConfig(clients_per_round=NUM_CLIENTS, batch_size=16, seed=3),
        dispatcher=dispatcher,
        secure_aggregation=SecureAggregation(config) if secure else None,
    ), dispatcher


def _gap(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def test_held_updates_sum_to_exactly_the_simulated_secure_sum(fleet, tmp_path):
    held, dispatcher = _federation(fleet, tmp_path / "held", secure=True, hold=True)
    simulated, _ = _federation(fleet, tmp_path / "sim", secure=True, hold=False)
    plain, _ = _federation(fleet, tmp_path / "plain", secure=False, hold=False)
    for fed in (held, simulated, plain):
        fed.run(2)
    # Identical: same updates, same fixed-point encoding, masks cancel exactly.
    assert _gap(held.weights, simulated.weights) == 0.0
    # And FedAvg to the fixed-point resolution.
    assert _gap(held.weights, plain.weights) < 1e-5
    assert _gap(held.weights, held.runtime.initial_weights()) > 1e-3
    for got, want in zip(held.history, simulated.history, strict=True):
        assert got.completed == want.completed == tuple(range(NUM_CLIENTS))
        assert got.num_examples == want.num_examples
        assert got.aggregation_failure == ""
        # No loss left the devices (held reports carry no metrics); the count is the sum's.
        assert math.isnan(got.train_loss) and not math.isnan(want.train_loss)
    # The devices never sent their update in the clear; the protocol's frames are ~the
    # masked vectors (4 bytes per parameter) plus keys and shares.
    dim = sum(w.size for w in held.weights)
    assert 4 * dim * NUM_CLIENTS < held.history[0].bytes_up < 1.2 * 4 * dim * NUM_CLIENTS
    # Round over: nothing secret is left on the devices.
    for agent in dispatcher.agents.values():
        state = Path(agent.config.state_dir)
        assert not (state / HELD_FILE).exists() and not (state / STATE_FILE).exists()


@pytest.mark.parametrize("stage", [ADVERTISE, SHARE, MASKED_INPUT, UNMASK])
def test_a_device_lost_at_any_stage_is_recovered_or_left_out(fleet, tmp_path, stage):
    held, dispatcher = _federation(fleet, tmp_path / "held", secure=True, hold=True)
    outcomes = _Outcomes()
    held.observers.append(outcomes)
    dispatcher.silent_at = {stage: {3}}
    (result,) = held.run(1)
    assert result.aggregation_failure == ""
    if stage == UNMASK:  # its masked input is in; it just does not help unmask
        assert result.completed == (0, 1, 2, 3)
    else:
        assert result.completed == (0, 1, 2) and result.dropped == (3,)
        (why,) = (o.detail for o in outcomes.seen if o.client_id == 3)
        assert f"lost at {stage}" in why and "no answer" in why
    # The sum is that of the survivors: equal to a federation whose client 3 never reported.
    assert _gap(held.weights, held.runtime.initial_weights()) > 1e-4


class _Outcomes(Observer):
    def __init__(self) -> None:
        self.seen: list = []

    def on_client_done(self, federation, round_index, outcome) -> None:
        self.seen.append(outcome)


def test_too_many_lost_aborts_and_applies_nothing(fleet, tmp_path):
    held, dispatcher = _federation(fleet, tmp_path / "held", secure=True, hold=True, threshold=3)
    dispatcher.silent_at = {MASKED_INPUT: {1, 2}}
    before = held.weights
    (result,) = held.run(1)
    assert "secure aggregation aborted" in result.aggregation_failure
    assert result.completed == ()
    assert _gap(held.weights, before) == 0.0


def test_server_stages_that_need_the_body_are_refused_before_the_round(fleet, tmp_path):
    from fedlab.federated.stages import ClipUpdate, Pipeline

    held, _ = _federation(fleet, tmp_path / "held", secure=True, hold=True)
    held.pipeline = Pipeline(server=(ClipUpdate(clip_norm=1.0),))
    with pytest.raises(ValueError, match="never holds an update"):
        held.run_round()
    assert held.rounds_done == 0


# -- the device side on its own -----------------------------------------------------------
def _setup(cohort=(0, 1, 2), dimension=6) -> RoundSetup:
    return RoundSetup.create(
        SecAggConfig(threshold=2, clip=1.0, max_examples=50),
        round_index=4,
        cohort=cohort,
        dimension=dimension,
    )


def _held_device(tmp_path, cid=1, dimension=6, round_index=4) -> DeviceSecAgg:
    from fedlab.edge.secure_client import hold_update
    from fedlab.protocol import UpdateEnvelope

    task = RoundTask(
        round_index=round_index,
        client_id=cid,
        model_version="m" * 64,
        plan=TrainPlan(epochs=1, batch_size=4, learning_rate=0.1, hold_update=True),
        weights=(np.zeros(dimension, np.float32),),
    )
    env = UpdateEnvelope(
        client_id=cid,
        round_index=round_index,
        model_version=task.model_version,
        base_version=task.base_version,
        num_examples=10,
        body=(np.full(dimension, 0.25, np.float32),),
    )
    hold_update(tmp_path, task, env)
    return DeviceSecAgg(tmp_path, cid)


def test_device_files_are_owner_only_and_refusals_say_why(tmp_path):
    dev = _held_device(tmp_path)
    setup = _setup()
    dev.answer(encode_request(SecAggRequest(ADVERTISE, setup, 1)))
    for name in (HELD_FILE, STATE_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    saved = json.loads((tmp_path / STATE_FILE).read_text())
    assert saved["stage"] == SHARE
    # Another client's request, another round's, a stage out of order, garbage.
    with pytest.raises(SecAggAborted, match="this is client 1"):
        dev.answer(encode_request(SecAggRequest(ADVERTISE, setup, 2)))
    other = _setup()
    with pytest.raises(SecAggAborted, match="another round"):
        dev.answer(encode_request(SecAggRequest(UNMASK, other, 1, _unmask_request(other))))
    with pytest.raises(SecAggAborted, match="stage"):
        dev.answer(encode_request(SecAggRequest(UNMASK, setup, 1, _unmask_request(setup))))
    with pytest.raises(ProtocolError):
        dev.answer(b"FLAB" + bytes(40))
    # Wrong size for the round: refused before any key is advertised.
    with pytest.raises(SecAggAborted, match="has 6 values"):
        dev.answer(encode_request(SecAggRequest(ADVERTISE, _setup(dimension=7), 1)))


def _unmask_request(setup):
    from fedlab.secure import UnmaskRequest

    return UnmaskRequest(setup.round_index, frozenset({0}), frozenset())


def test_a_device_with_no_held_update_refuses_to_advertise(tmp_path):
    with pytest.raises(SecAggAborted, match="no update held"):
        DeviceSecAgg(tmp_path, 1).answer(encode_request(SecAggRequest(ADVERTISE, _setup(), 1)))
    dev = _held_device(tmp_path, round_index=3)
    with pytest.raises(SecAggAborted, match="for round 3, not 4"):
        dev.answer(encode_request(SecAggRequest(ADVERTISE, _setup(), 1)))


def test_device_secagg_needs_a_state_dir(fleet, tmp_path):
    data, kit = fleet
    (path,) = write_devices(
        tmp_path, kit_dir=kit.folder, trusted_key=kit.trusted_key, data=data, clients=[0]
    ).values()
    config = replace(DeviceConfig.load(path), state_dir="")
    with pytest.raises(ValueError, match="state_dir"):
        device_secagg(config, 0)


# -- DP-FedAvg on devices that clip and hold ---------------------------------------------
def _dp_federation(fleet, folder, *, hold: bool, clip_norm: float | None):
    from fedlab.privacy import DPFedAvg

    fed, dispatcher = _federation(fleet, folder, secure=True, hold=hold, threshold=2)
    dispatcher.client_clip_norm = clip_norm
    config = replace(fed.secure_aggregation.config, weighted=False)  # DP counts clients once
    fed.secure_aggregation = SecureAggregation(config)
    fed.set_strategy(
        DPFedAvg(
            noise_multiplier=1.0,
            clip_norm=0.05,
            expected_clients=NUM_CLIENTS,
            reproducible_noise=True,
            seed=11,
        )
    )
    return fed, dispatcher


def test_dp_with_devices_that_clip_and_hold_their_updates(fleet, tmp_path):
    pytest.importorskip("tensorflow_privacy")
    from fedlab.privacy import PrivacyTracker

    held, _ = _dp_federation(fleet, tmp_path / "held", hold=True, clip_norm=0.05)
    simulated, _ = _dp_federation(fleet, tmp_path / "sim", hold=False, clip_norm=0.05)
    # The devices clip to C: the ledger's sensitivity holds, so it attaches.
    tracker = PrivacyTracker(population=NUM_CLIENTS, delta=1e-5).attach(held)
    held.run(2)
    simulated.run(2)
    # The same device clipping, the same noise key: the same model, bit for bit.
    assert _gap(held.weights, simulated.weights) == 0.0
    assert len(tracker.epsilons) == 2 and 0 < tracker.epsilons[-1][1] < float("inf")
    assert any("each device clips its own update and keeps it" in n for n in tracker.notes)


@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_the_ledger_refuses_a_fleet_whose_devices_do_not_clip_to_c(fleet, tmp_path, clip_norm):
    pytest.importorskip("tensorflow_privacy")
    from fedlab.privacy import PrivacyTracker

    held, _ = _dp_federation(fleet, tmp_path / "held", hold=True, clip_norm=clip_norm)
    with pytest.raises(ValueError, match="devices must clip"):
        PrivacyTracker(population=NUM_CLIENTS, delta=1e-5).check(held)


def test_a_held_report_carries_no_loss_count_or_norm(fleet, tmp_path):
    data, kit = fleet
    (path,) = write_devices(
        tmp_path, kit_dir=kit.folder, trusted_key=kit.trusted_key, data=data, clients=[0]
    ).values()
    agent = DeviceAgent(DeviceConfig.load(path), InProcessTransport())
    weights = KitRuntime(kit.folder, kit.trusted_key).initial_weights()
    plan = TrainPlan(epochs=1, batch_size=16, learning_rate=0.05, clip_norm=0.01, hold_update=True)
    task = RoundTask(
        round_index=0,
        client_id=0,
        model_version=agent.model_version,
        plan=plan,
        weights=tuple(weights),
    )
    agent.transport.task = task
    _, envelope = agent.run_once()
    assert envelope.body == b"" and envelope.headers.get("held") is True
    assert envelope.num_examples == 1 and envelope.num_steps == 0 and envelope.metrics == {}
    assert "clip_norm_before" not in envelope.headers
    with np.load(Path(agent.config.state_dir) / HELD_FILE) as held:
        # the device clipped before it held: the update it will mask has norm <= C
        assert float(np.linalg.norm(held["update"])) <= 0.01 * (1 + 1e-6)
        assert int(held["num_examples"]) == data.clients[0].num_examples


def test_a_device_masks_its_update_once(tmp_path):
    from fedlab.protocol.secagg import decode_reply
    from fedlab.secure import SecAggClient, SecAggServer

    setup = _setup()
    device = _held_device(tmp_path)  # client 1
    others = {c: SecAggClient(setup, c) for c in (0, 2)}
    server = SecAggServer(setup)

    def ask(stage, body=None):
        frame = device.answer(encode_request(SecAggRequest(stage, setup, 1, body)))
        return decode_reply(frame, setup, stage=stage)

    adverts = [ask(ADVERTISE), *(c.advertise_keys() for c in others.values())]
    broadcasts = server.receive_advertisements(adverts)
    shares = [ask(SHARE, broadcasts[1]), *(others[c].share_keys(broadcasts[c]) for c in others)]
    deliveries = server.receive_shares(shares)
    ask(MASKED_INPUT, deliveries[1])
    assert (tmp_path / "secagg-sent.json").is_file()
    # The server starts the round's protocol again under a new setup: the device refuses
    # to mask the same update a second time (two maskings, or two noise draws, of one update).
    again = RoundSetup.create(setup.config, round_index=4, cohort=(0, 1, 2), dimension=6)
    with pytest.raises(SecAggAborted, match="already sent"):
        device.answer(encode_request(SecAggRequest(ADVERTISE, again, 1)))


def test_saved_state_is_bound_to_the_whole_setup():
    from fedlab.secure import SecAggClient

    setup = _setup()
    client = SecAggClient(setup, 1)
    client.advertise_keys()
    state = client.to_state()
    other = RoundSetup(
        replace(setup.config, clip=2.0), setup.round_index, setup.cohort, 6, setup.seed
    )
    with pytest.raises(ValueError, match="another setup"):
        SecAggClient.from_state(other, state)
    assert SecAggClient.from_state(setup, state).stage == SHARE


def test_secrets_of_other_runs_are_forgotten(tmp_path):
    from fedlab.edge.secure_client import forget_other_runs

    for run in ("run-1", "run-2"):
        _held_device(tmp_path / run).answer(encode_request(SecAggRequest(ADVERTISE, _setup(), 1)))
    assert forget_other_runs(tmp_path, "run-2") == [tmp_path / "run-1"]
    assert not list((tmp_path / "run-1").glob("secagg-*"))
    assert sorted(p.name for p in (tmp_path / "run-2").glob("secagg-*")) == [HELD_FILE, STATE_FILE]


def _signing_federation(fleet, folder, registry_for, *, verify=False):
    """A held federation whose devices sign (their key adverts too), and the server's
    registry built by ``registry_for(configs)``."""
    data, kit = fleet
    configs = write_devices(folder, kit_dir=kit.folder, trusted_key=kit.trusted_key, data=data)
    for path in configs.values():
        raw = json.loads(path.read_text())
        path.write_text(json.dumps({**raw, "sign_updates": True}))
    dispatcher = AgentDispatcher.from_devices(
        configs, enrolled=[c.num_examples for c in data.clients]
    )
    config = SecAggConfig(
        threshold=2, clip=1.0, max_examples=max(c.num_examples for c in data.clients)
    )
    registry = registry_for(configs)
    fed = Federation(
        data=data,
        runtime=KitRuntime(kit.folder, kit.trusted_key),
        config=FederationConfig(clients_per_round=NUM_CLIENTS, batch_size=16, seed=3),
        dispatcher=dispatcher,
        secure_aggregation=SecureAggregation(config, registry=registry),
        # VerifySignature judges only a held report's header: it runs on a holding fleet
        pipeline=Pipeline(server=(VerifySignature(registry),) if verify else ()),
    )
    outcomes = _Outcomes()
    fed.observers.append(outcomes)
    return fed, outcomes


def test_key_adverts_signed_by_enrolled_devices_are_verified(fleet, tmp_path):
    from fedlab.edge.agent import enrolment
    from fedlab.secure import DeviceIdentity, IdentityRegistry

    def enrolled(configs, *, impostor=None):
        registry = IdentityRegistry()
        for cid, path in configs.items():
            key = bytes.fromhex(enrolment(DeviceConfig.load(path))["public_key"])
            if cid == impostor:  # the server enrolled another key for this client
                key = DeviceIdentity.generate(cid).public_bytes
            registry.enrol(cid, key)
        return registry

    honest, _ = _signing_federation(fleet, tmp_path / "honest", enrolled, verify=True)
    (result,) = honest.run(1)
    assert result.completed == tuple(range(NUM_CLIENTS)) and result.aggregation_failure == ""
    assert result.rejected == () and result.stage_rejections == ()

    fed, outcomes = _signing_federation(
        fleet, tmp_path / "impostor", lambda c: enrolled(c, impostor=3)
    )
    (result,) = fed.run(1)
    assert result.completed == (0, 1, 2) and result.dropped == (3,)
    (why,) = (o.detail for o in outcomes.seen if o.client_id == 3)
    assert "lost at advertise_keys" in why and "forged" in why, why


def test_a_registry_is_refused_in_simulation():
    from fedlab.federated.types import ClientUpdate
    from fedlab.secure import IdentityRegistry

    stage = SecureAggregation(SecAggConfig(threshold=2, clip=1.0), registry=IdentityRegistry())
    ups = [
        ClientUpdate(client_id=i, delta=(np.zeros(3, np.float32),), num_examples=1)
        for i in range(3)
    ]
    with pytest.raises(ValueError, match="hold no device keys"):
        stage.aggregate(0, ups)
