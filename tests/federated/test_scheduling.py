"""Upload scheduling in the simulator: windows, a cap on concurrent uploads, selection that
prefers eligible devices, energy per device — and defaults that change nothing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fedlab.federated import Federation, Pipeline
from fedlab.federated.communication import rebuild_federation
from fedlab.federated.dispatch import SimulatedDispatcher
from fedlab.federated.scheduling import (
    Availability,
    DailyWindows,
    EligibleFirstSampler,
    EnergyModel,
    UploadSchedule,
    plan_uploads,
    sample_availability,
)
from fedlab.federated.selection import ClientProfile
from tests.federated.test_dispatch import CFG, NumpyRuntime, tiny_fleet

H = 3600.0
NIGHT_WIFI = Availability(wifi=DailyWindows(((18, 8),)), charging=DailyWindows(((22, 6),)))


def test_daily_windows_wrap_midnight_and_refuse_nonsense() -> None:
    w = DailyWindows(((22, 7),))
    assert w.contains(23 * H) and w.contains(3 * H) and not w.contains(12 * H)
    assert w.contains(24 * H + 2 * H)  # the next day too
    assert w.starts(0, 2 * 24 * H) == [22 * H, 46 * H]
    for bad in (((5, 5),), ((-1, 3),), ((1, 25),), ((1,),)):
        with pytest.raises(ValueError):
            DailyWindows(bad)


def test_an_upload_waits_for_every_required_condition() -> None:
    wifi_only = UploadSchedule(require_wifi=True)
    assert wifi_only.next_window(NIGHT_WIFI, 12 * H) == 18 * H
    assert wifi_only.next_window(NIGHT_WIFI, 19 * H) == 19 * H  # already on Wi-Fi
    both = UploadSchedule(require_wifi=True, require_charging=True)
    assert both.next_window(NIGHT_WIFI, 12 * H) == 22 * H
    late = UploadSchedule(require_wifi=True, off_peak=DailyWindows(((1, 5),)))
    assert late.next_window(NIGHT_WIFI, 12 * H) == 25 * H  # 01:00 the next day
    never = UploadSchedule(require_charging=True, max_wait_s=H)
    assert never.next_window(NIGHT_WIFI, 12 * H) is None
    assert UploadSchedule().next_window(NIGHT_WIFI, 12 * H) == 12 * H  # no requirement


def test_a_cap_on_concurrent_uploads_queues_them() -> None:
    ready = [(0, 0.0, 10.0), (1, 0.0, 10.0), (2, 5.0, 10.0)]
    assert plan_uploads(ready, None) == {0: (0, 10), 1: (0, 10), 2: (5, 15)}
    assert plan_uploads(ready, 1) == {0: (0, 10), 1: (10, 20), 2: (20, 30)}
    assert plan_uploads(ready, 2) == {0: (0, 10), 1: (0, 10), 2: (10, 20)}


def scheduled(schedule=None, availability=None, uplink_bps=1e6, **kwargs) -> Federation:
    data = tiny_fleet()
    avail = availability or [None] * data.num_clients
    profiles = [ClientProfile(uplink_bps=uplink_bps, availability=a) for a in avail]
    dispatcher = SimulatedDispatcher(
        data=data,
        runtime=NumpyRuntime(),
        pipeline=Pipeline(),
        profiles=profiles,
        seconds_per_example=0.5,
        schedule=schedule,
    )
    cfg = replace(CFG, seconds_per_example=0.5)
    return Federation(
        data=data, runtime=NumpyRuntime(), config=cfg, dispatcher=dispatcher, **kwargs
    )


def test_a_schedule_without_requirements_changes_nothing() -> None:
    plain, relaxed = scheduled(), scheduled(UploadSchedule(), [NIGHT_WIFI] * 12)
    a, b = plain.run(3), relaxed.run(3)
    # (as JSON text: train_loss is NaN on the fake runtime, and NaN != NaN)
    assert json.dumps(a.deterministic_records()) == json.dumps(b.deterministic_records())


def test_waiting_for_wifi_shows_in_simulated_time_and_the_model_is_the_same() -> None:
    plain = scheduled(UploadSchedule(start_hour=12.0), [NIGHT_WIFI] * 12)
    waiting = scheduled(UploadSchedule(require_wifi=True, start_hour=12.0), [NIGHT_WIFI] * 12)
    a, b = plain.run(2), waiting.run(2)
    for x, y in zip(plain.weights, waiting.weights, strict=True):
        assert x.tobytes() == y.tobytes()
    # round 0 opens at 12:00 and waits until 18:00 for Wi-Fi; round 1 is on Wi-Fi already
    assert b.rounds[0].sim_time_s > 6 * H - 60 > a.rounds[0].sim_time_s
    assert b.rounds[1].sim_time_s == pytest.approx(a.rounds[1].sim_time_s)
    assert waiting.dispatcher.clock_s == pytest.approx(12 * H + b.totals()["sim_time_s"])


def test_the_upload_cap_queues_uploads_and_a_deadline_cuts_the_queue() -> None:
    # slow links (60 bytes at 100 bit/s: 4.8 s each) that all get Wi-Fi at 18:00
    wait = {"require_wifi": True, "start_hour": 12.0}
    free = scheduled(UploadSchedule(**wait), [NIGHT_WIFI] * 12, uplink_bps=100.0).run_round()
    one = UploadSchedule(**wait, max_concurrent_uploads=1)
    capped = scheduled(one, [NIGHT_WIFI] * 12, uplink_bps=100.0).run_round()
    assert free.sim_time_s == pytest.approx(6 * H + 4.8)
    assert capped.sim_time_s == pytest.approx(6 * H + 6 * 4.8)  # one after another
    cut = scheduled(one, [NIGHT_WIFI] * 12, uplink_bps=100.0)
    cut.config = replace(cut.config, deadline_s=6 * H + 3 * 4.8 + 0.1)
    result = cut.run_round()
    assert len(result.completed) == 3 and len(result.stragglers) == 3


def test_no_upload_window_at_all_makes_a_straggler() -> None:
    never = Availability(charging=DailyWindows(((1, 2),)))
    fed = scheduled(
        UploadSchedule(require_charging=True, start_hour=3.0, max_wait_s=H), [never] * 12
    )
    result = fed.run_round()
    assert len(result.stragglers) == 6 and result.completed == ()


def test_selection_prefers_devices_that_may_upload_now() -> None:
    avail = [Availability() if c % 3 == 0 else NIGHT_WIFI for c in range(12)]
    fed = scheduled(UploadSchedule(require_wifi=True, start_hour=12.0), avail)
    fed.sampler = EligibleFirstSampler(fed.dispatcher)
    result = fed.run_round()
    eligible = {c for c in range(12) if c % 3 == 0}  # the 4 always-on devices
    assert eligible <= set(result.selected)
    with pytest.raises(TypeError, match="eligible_now"):
        EligibleFirstSampler(object())


def test_energy_per_device_is_reported_and_cellular_costs_more() -> None:
    model = EnergyModel(joules_per_example=0.01, joules_per_byte_wifi=1e-6,
                        joules_per_byte_cellular=1e-5)  # fmt: skip
    wifi = scheduled(UploadSchedule(energy=model, start_hour=20.0), [NIGHT_WIFI] * 12)
    cell = scheduled(UploadSchedule(energy=model, start_hour=12.0), [NIGHT_WIFI] * 12)
    a, b = wifi.run_round(), cell.run_round()
    [(r, ea)] = wifi.dispatcher.energy_log
    [(_, eb)] = cell.dispatcher.energy_log
    assert r == 0 and set(ea) == set(a.selected) and set(eb) == set(b.selected)
    assert all(ea[c] > 0 for c in a.completed)
    assert sum(eb.values()) > sum(ea.values())
    # compute share: examples × epochs × J/example
    data = tiny_fleet()
    c = a.completed[0]
    compute = 0.01 * CFG.local_epochs * data.clients[c].num_examples
    assert ea[c] > compute


def test_the_clock_is_client_state_and_resets() -> None:
    fed = scheduled(UploadSchedule(require_wifi=True, start_hour=12.0), [NIGHT_WIFI] * 12)
    fed.run(2)
    saved = fed.dispatcher.state_dict()
    other = scheduled(UploadSchedule(require_wifi=True, start_hour=12.0), [NIGHT_WIFI] * 12)
    other.dispatcher.load_state_dict(saved)
    assert other.dispatcher.clock_s == fed.dispatcher.clock_s > 18 * H
    other.dispatcher.reset()
    assert other.dispatcher.clock_s == 12 * H and other.dispatcher.energy_log == []
    with pytest.raises(ValueError, match="clock"):
        other.dispatcher.load_state_dict({"clock": np.array(-1.0)})


def test_sampled_availability_is_reproducible_and_mixed() -> None:
    a, b = sample_availability(50, seed=1), sample_availability(50, seed=1)
    assert a == b and len(a) == 50
    always = sum(x.wifi.spans == ((0.0, 24.0),) for x in a)
    assert 0 < always < 50


def test_rebuild_federation_carries_a_schedule() -> None:
    template = Federation(data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG)
    fed = rebuild_federation(template, schedule=UploadSchedule(max_concurrent_uploads=2))
    assert isinstance(fed.dispatcher, SimulatedDispatcher)
    assert fed.dispatcher.schedule.max_concurrent_uploads == 2
    fed.run_round()
    assert fed.rounds_done == 1 and template.rounds_done == 0
