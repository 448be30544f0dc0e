"""Codecs in the round engine: encode on the client (per-client state in the client's store),
decode on the server, exact bytes in the round result, garbage rejected with a reason, the
downlink as a delta, and client state that survives checkpoint/resume exactly.

All on the numpy fake runtime (no TensorFlow)."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlab.codec import (
    QSGD,
    CodecState,
    ErrorFeedback,
    ModelDelta,
    Sign,
    Ternary,
    TopK,
    Zlib,
    chain,
)
from fedlab.federated import Federation, Pipeline
from fedlab.federated.codec_stage import DecodeUpdate, EncodeUpdate
from fedlab.federated.dispatch import Report, SimulatedDispatcher
from fedlab.federated.secure_stage import SecureAggregation
from fedlab.federated.selection import ClientProfile
from fedlab.federated.stages import ClientStateStore, ClipUpdate, StageContext
from fedlab.federated.types import ClientUpdate, Envelope, UpdateRejected
from fedlab.secure import SecAggConfig
from tests.codec.conftest import FUZZ
from tests.federated.test_dispatch import CFG, SHAPES, NumpyRuntime, ScriptedDispatcher, tiny_fleet


def codec_pipeline(codec) -> Pipeline:
    return Pipeline(client=(EncodeUpdate(codec),), server=(DecodeUpdate(codec),))


def federation(pipeline: Pipeline | None = None, **kwargs) -> Federation:
    return Federation(
        data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG, pipeline=pipeline, **kwargs
    )


def ctx(round_index: int = 0) -> StageContext:
    return StageContext(round_index=round_index, weight_shapes=tuple(SHAPES))


def an_update(cid: int = 3, scale: float = 0.1) -> ClientUpdate:
    rng = np.random.default_rng(cid)
    delta = tuple((scale * rng.normal(size=s)).astype(np.float32) for s in SHAPES)
    return ClientUpdate(cid, delta, 7, 2, {"train_loss": 0.5})


# -- the lossless codec changes nothing but the bytes ---------------------------------
def test_a_lossless_codec_trains_bit_identically_and_counts_the_payload_bytes() -> None:
    plain = federation()
    coded = federation(codec_pipeline(chain()))  # float32, no compression
    plain.run(3)
    history = coded.run(3)
    for a, b in zip(coded.weights, plain.weights, strict=True):
        assert a.tobytes() == b.tobytes()
    raw = 4 * sum(int(np.prod(s)) for s in SHAPES)
    for r in history:
        stages = dict(r.stage_bytes)
        assert stages["update"] == raw * len(r.completed)
        # the payload: the same float32 values plus a self-describing header
        assert stages["encode"] == r.bytes_up > stages["update"]
    assert [r.completed for r in history] == [r.completed for r in plain.history]


def test_a_lossy_codec_records_its_exact_payload_bytes_and_still_learns() -> None:
    codec = chain(QSGD(bits=4), Zlib())
    coded = federation(codec_pipeline(codec))
    history = coded.run(4)
    # the bytes are the payloads' lengths: re-encode round 0's updates by hand
    first = federation()
    plans = first.run_round()
    assert plans.completed == history.rounds[0].completed
    runtime, data = NumpyRuntime(), tiny_fleet()
    w0 = runtime.initial_weights()
    expected = 0
    for cid in plans.completed:
        [u] = runtime.train_clients(w0, [(data.clients[cid], _plan(cid))])
        expected += len(codec.encode(u.delta, codec.init_state(seed=cid))[0])
    assert history.rounds[0].bytes_up == expected == dict(history.rounds[0].stage_bytes)["encode"]
    assert history.rounds[-1].test_loss < history.rounds[0].test_loss
    assert all(len(r.completed) == 6 and not r.rejected for r in history)


def _plan(cid: int):
    from fedlab.federated.types import ClientPlan

    return ClientPlan(cid, 0, CFG.local_epochs, CFG.batch_size, CFG.client_lr)


# -- per-client state --------------------------------------------------------------------
def test_error_feedback_keeps_a_residual_per_client_in_the_dispatchers_stores() -> None:
    codec = ErrorFeedback(chain(TopK(0.2), Zlib()))
    fed = federation(codec_pipeline(codec))
    result = fed.run_round()
    dispatcher = fed.dispatcher
    assert isinstance(dispatcher, SimulatedDispatcher)
    stage = fed.pipeline.client[0]
    for cid in result.completed:
        state = dispatcher.client_state(cid).get(stage)
        assert state.step == 1 and state.residual_norm() > 0  # top-k left 80 % behind
    untouched = next(c for c in range(12) if c not in result.selected)
    assert "encode" not in dispatcher.client_state(untouched)


def test_error_feedback_without_a_store_is_refused_not_silently_stateless() -> None:
    pipeline = codec_pipeline(ErrorFeedback(Sign()))
    with pytest.raises(ValueError, match="ClientStateStore"):
        pipeline.send(an_update(), ctx())
    with pytest.raises(ValueError, match="ClientStateStore"):
        EncodeUpdate(ErrorFeedback(Sign())).apply(Envelope(1, 1, an_update().delta), ctx())


def test_a_failing_client_stage_leaves_the_clients_state_unchanged() -> None:
    pipeline = Pipeline(client=(EncodeUpdate(ErrorFeedback(Sign())), ClipUpdate(1.0)))
    store = ClientStateStore(3)
    with pytest.raises(TypeError, match="before any stage that encodes"):
        pipeline.send(an_update(3), ctx(), store)
    assert "encode" not in store
    ok = Pipeline(client=(EncodeUpdate(ErrorFeedback(Sign())),))
    ok.send(an_update(3), ctx(), store)
    assert store.get(ok.client[0]).step == 1
    with pytest.raises(ValueError, match="state store of client 3"):
        ok.send(an_update(4), ctx(), store)


def test_two_stateful_stages_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        Pipeline(client=(EncodeUpdate(Sign()), EncodeUpdate(QSGD(bits=4))))


def test_a_client_store_round_trips_through_bytes_and_refuses_damage() -> None:
    stages = (EncodeUpdate(ErrorFeedback(chain(TopK(0.3), QSGD(bits=8)))),)
    pipeline = Pipeline(client=stages)
    store = ClientStateStore(5)
    for _ in range(2):
        pipeline.send(an_update(5), ctx(), store)
    blob = store.to_bytes(stages)
    back = ClientStateStore.from_bytes(blob, stages)
    a, b = store.get(stages[0]), back.get(stages[0])
    assert (a.seed, a.step) == (b.seed, b.step) == (5, 2)
    for x, y in zip(a.residual, b.residual, strict=True):
        assert x.tobytes() == y.tobytes()
    for bad in (blob[:-3], blob + b"x", b"junk" + blob, blob[:20]):
        with pytest.raises(ValueError):
            ClientStateStore.from_bytes(bad, stages)
    with pytest.raises(ValueError, match="not a stateful stage"):
        back.load_state_dict({"other": b""}, stages)


def test_client_state_survives_checkpoint_and_resume_exactly(tmp_path) -> None:
    """Federation._state/_resume carry the dispatcher's state_dict: EF resumes exactly."""
    codec = ErrorFeedback(chain(TopK(0.2), QSGD(bits=4), Zlib()))
    straight = federation(codec_pipeline(codec))
    straight.run(4)

    first = federation(codec_pipeline(codec), checkpoint_dir=tmp_path)
    first.run(2)
    saved = first.dispatcher.state_dict()
    assert all(v.dtype == np.uint8 for k, v in saved.items() if k.startswith("client/"))
    resumed = federation(codec_pipeline(codec), checkpoint_dir=tmp_path, resume=True)
    assert resumed.rounds_done == 2  # the checkpoint carried the dispatcher's client state
    again = resumed.dispatcher.state_dict()
    assert again.keys() == saved.keys() and all(np.array_equal(again[k], saved[k]) for k in saved)
    resumed.run(2)
    for a, b in zip(resumed.weights, straight.weights, strict=True):
        assert a.tobytes() == b.tobytes()

    # without the client state the residuals are lost: the runs differ (the test can fail)
    forgetful = federation(codec_pipeline(codec), checkpoint_dir=tmp_path / "x")
    forgetful.run(2)
    forgetful.dispatcher.reset()
    forgetful.run(2)
    assert any(
        a.tobytes() != b.tobytes() for a, b in zip(forgetful.weights, straight.weights, strict=True)
    )


def test_a_damaged_dispatcher_state_is_refused_and_changes_nothing() -> None:
    fed = federation(codec_pipeline(ErrorFeedback(Sign())))
    fed.run_round()
    good = fed.dispatcher.state_dict()
    assert federation().dispatcher.state_dict() == {}  # a plain run keeps no client state
    before = {k: v.copy() for k, v in fed.dispatcher.state_dict().items()}
    key = next(k for k in good if k.startswith("client/"))
    for bad in ({**good, key: good[key][:-2]}, {**good, "client/99/encode": good[key]}):
        with pytest.raises(ValueError):
            fed.dispatcher.load_state_dict(bad)
        after = fed.dispatcher.state_dict()
        assert after.keys() == before.keys()
        assert all(np.array_equal(after[k], before[k]) for k in before)


# -- the server refuses garbage ----------------------------------------------------------
def garbage_fleet(bodies):
    """A fleet whose clients send the given bodies in turn."""
    data = tiny_fleet()

    def script(plan, tasks):
        body = bodies[tasks.plans.index(plan) % len(bodies)]
        env = Envelope(plan.client_id, 5, body, metrics={"train_loss": 1.0})
        return Report(plan.client_id, "reported", env, 1.0, 5)

    return ScriptedDispatcher(data, script)


def test_undecodable_updates_are_rejected_with_the_codecs_reason_and_the_round_goes_on() -> None:
    codec = chain(QSGD(bits=4), Zlib())
    good, _ = codec.encode(an_update().delta, CodecState(seed=1))
    other, _ = chain(Ternary()).encode(an_update().delta, CodecState(seed=1))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    bodies = [good, good[:-5], bytes(flipped), other, b"", an_update().delta]
    fed = Federation(
        data=tiny_fleet(),
        runtime=NumpyRuntime(),
        config=CFG,
        pipeline=codec_pipeline(codec),
        dispatcher=garbage_fleet(bodies),
    )
    result = fed.run_round()
    assert len(result.completed) == 1
    reasons = dict(result.rejected)
    assert len(reasons) == 5
    assert sum("undecodable update" in r for r in reasons.values()) == 4
    assert any("expected an encoded payload" in r for r in reasons.values())
    assert dict(result.stage_rejections) == {"decode": 5}


@FUZZ
@given(st.binary(max_size=600))
def test_the_decode_stage_never_crashes_on_garbage(data: bytes) -> None:
    stage = DecodeUpdate(chain(QSGD(bits=4), Zlib()))
    env = Envelope(1, 5, data)
    try:
        out = stage.apply(env, ctx())
    except UpdateRejected as exc:
        assert str(exc)
    else:  # only a well-formed payload decodes, to the model's shapes
        assert [a.shape for a in out.body] == list(SHAPES)


@FUZZ
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_the_decode_stage_rejects_every_corruption_of_a_real_payload(at: int, flip: int) -> None:
    codec = chain(TopK(0.3), QSGD(bits=4), Zlib())
    payload, _ = codec.encode(an_update().delta, CodecState(seed=2))
    damaged = bytearray(payload)
    damaged[at % len(payload)] ^= flip
    with pytest.raises(UpdateRejected, match="undecodable update"):
        DecodeUpdate(codec).apply(Envelope(1, 5, bytes(damaged)), ctx())
    # any-codec decoding (codec=None) refuses it too
    with pytest.raises(UpdateRejected):
        DecodeUpdate().apply(Envelope(1, 5, bytes(damaged)), ctx())
    assert zlib.crc32(payload)  # the undamaged payload is intact


# -- secure aggregation sums decoded updates -------------------------------------------
def test_secure_aggregation_sums_the_decoded_updates() -> None:
    codec = chain(QSGD(bits=8))
    secagg = SecureAggregation(SecAggConfig(threshold=3, clip=4.0, max_examples=32, ring_bits=64))
    secure = federation(codec_pipeline(codec), secure_aggregation=secagg)
    plain = federation(codec_pipeline(codec))
    secure.run(2)
    plain.run(2)
    for a, b in zip(secure.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


# -- downlink --------------------------------------------------------------------------
class WiderRuntime(NumpyRuntime):
    """The fake runtime on a model large enough for a delta to beat the dense broadcast."""

    def initial_weights(self):
        return (np.zeros((64, 32), np.float32), np.zeros(32, np.float32))


def simulated(downlink=None) -> Federation:
    data, pipe = tiny_fleet(), Pipeline()
    dispatcher = SimulatedDispatcher(
        data=data,
        runtime=WiderRuntime(),
        pipeline=pipe,
        profiles=[ClientProfile()] * data.num_clients,
        downlink=downlink,
    )
    return Federation(
        data=data, runtime=WiderRuntime(), config=CFG, pipeline=pipe, dispatcher=dispatcher
    )


def test_the_downlink_delta_reports_the_real_bytes_and_changes_no_result() -> None:
    dense, delta = simulated(), simulated(ModelDelta())
    dense.run(6)
    history = delta.run(6)
    for a, b in zip(delta.weights, dense.weights, strict=True):
        assert a.tobytes() == b.tobytes()
    model = 4 * (64 * 32 + 32)
    assert [r.bytes_down for r in dense.history] == [6 * model] * 6
    assert history.rounds[0].bytes_down == 6 * model  # first contact: the dense model
    # a device seen before gets the exact delta against the model it holds
    seen = set(history.rounds[0].selected)
    again = [c for c in history.rounds[1].selected if c in seen]
    assert again, "seed 3 re-invites someone in round 1"
    payload = ModelDelta().encode(dense_weights_after(1), dense_weights_after(0))
    new = 6 - len(again)
    assert history.rounds[1].bytes_down == new * model + len(again) * len(payload)
    assert sum(r.bytes_down for r in history) < sum(r.bytes_down for r in dense.history) / 2
    # the models devices hold are client state: checkpointed with the dispatcher
    saved = delta.dispatcher.state_dict()
    fresh = simulated(ModelDelta())
    fresh.dispatcher.load_state_dict(saved)
    again_saved = fresh.dispatcher.state_dict()
    assert again_saved.keys() == saved.keys()
    assert all(np.array_equal(again_saved[k], saved[k]) for k in saved)


def dense_weights_after(rounds: int):
    fed = simulated()
    if rounds:
        fed.run(rounds)
    return fed.weights


def test_a_lossy_downlink_is_refused_in_the_simulator() -> None:
    with pytest.raises(ValueError, match="only the exact ModelDelta"):
        simulated(ModelDelta(chain(QSGD(bits=8))))


def test_stateless_encoding_draws_fresh_randomness_each_round() -> None:
    stage = EncodeUpdate(chain(QSGD(bits=2)))
    env = Envelope(1, 5, an_update(1).delta)
    a = stage.apply(env, ctx(0)).body
    b = stage.apply(env, ctx(1)).body
    assert a != b and stage.apply(env, ctx(0)).body == a


def test_replace_keeps_headers_with_the_codec_config() -> None:
    out = EncodeUpdate(Sign()).apply(replace(Envelope(1, 5, an_update(1).delta)), ctx())
    assert out.headers["codec"] == Sign().get_config()


def test_the_device_side_of_a_codec_pipeline_runs_with_tensorflow_blocked(tmp_path) -> None:
    """What a device agent calls: the pipeline's client stages with its state store,
    persisted between rounds."""
    import os
    import subprocess
    import sys

    from tests.codec.test_device_import import BLOCK_TF

    use = f"""
import numpy as np
from pathlib import Path
from fedlab.codec import ErrorFeedback, QSGD, TopK, Zlib, chain
from fedlab.federated.codec_stage import EncodeUpdate
from fedlab.federated.stages import ClientStateStore, Pipeline, StageContext
from fedlab.federated.types import ClientUpdate
pipe = Pipeline(client=(EncodeUpdate(ErrorFeedback(chain(TopK(0.2), QSGD(bits=4), Zlib()))),))
path = Path({str(tmp_path / "state.bin")!r})
for r in range(2):
    if path.exists():
        store = ClientStateStore.from_bytes(path.read_bytes(), pipe.client)
    else:
        store = ClientStateStore(7)
    delta = (np.full((4, 3), 0.1 * (r + 1), np.float32), np.ones(3, np.float32))
    update = ClientUpdate(7, delta, 5)
    env = pipe.send(update, StageContext(round_index=r, weight_shapes=((4, 3), (3,))), store)
    path.write_bytes(store.to_bytes(pipe.client))
assert isinstance(env.body, bytes)
assert store.get(pipe.client[0]).step == 2
assert "tensorflow" not in sys.modules
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_USE_LEGACY")}
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_TF + use], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
