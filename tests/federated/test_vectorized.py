"""Equivalence contract: the vectorised trainer computes the reference runtime's updates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.portability

from fedlab._tf import keras  # noqa: E402
from fedlab.data import ClientData, federated_digits, federated_sensors  # noqa: E402
from fedlab.federated import (  # noqa: E402
    ClientFailure,
    ClientPlan,
    FallbackWarning,
    Federation,
    FederationConfig,
    KerasRuntime,
    UnsupportedModel,
    VectorizedRuntime,
    make_runtime,
)
from fedlab.federated.vectorized import compile_program  # noqa: E402
from fedlab.models import build_model, freeze_backbone  # noqa: E402

DIGITS = federated_digits(num_clients=20, alpha=0.5, seed=1)
SENSORS = federated_sensors(num_devices=12, test_devices=2, seed=0)


def runtime_for(name: str, data, **kwargs) -> VectorizedRuntime:
    return VectorizedRuntime(
        lambda: build_model(name, data.input_shape, data.num_classes, **kwargs), chunk_size=4
    )


def jobs(data, n: int, **plan) -> list[tuple[ClientData, ClientPlan]]:
    base = dict(round_index=0, epochs=2, batch_size=8, learning_rate=0.05, momentum=0.9)
    return [
        (c, ClientPlan(client_id=c.client_id, seed=100 + c.client_id, **{**base, **plan}))
        for c in data.clients[:n]
    ]


def max_abs_diff(ref, vec) -> float:
    return max(
        float(np.max(np.abs(a - b)))
        for r, v in zip(ref, vec, strict=True)
        for a, b in zip(r.delta, v.delta, strict=True)
    )


def scale(updates) -> float:
    return max(float(np.max(np.abs(a))) for u in updates for a in u.delta)


SUPPORTED = [
    ("digits_cnn", DIGITS, {}),
    ("sensor_cnn1d", SENSORS, {}),
    ("mobilenet_tiny", DIGITS, {"width": 0.5}),
]


@pytest.mark.parametrize(("name", "data", "kwargs"), SUPPORTED, ids=[s[0] for s in SUPPORTED])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_one_step_equals_reference_for_every_supported_zoo_model(
    name, data, kwargs, optimizer
) -> None:
    """One local step per client, uneven clients (the batch is the whole client, padded)."""
    vr = runtime_for(name, data, **kwargs)
    w = vr.initial_weights()
    work = jobs(data, 7, epochs=1, batch_size=128, optimizer=optimizer, proximal_mu=0.1)
    sizes = {c.num_examples for c, _ in work}
    assert len(sizes) > 1 and max(sizes) <= 128, "clients must be uneven, one step each"
    ref = vr.reference.train_clients(w, work)
    vec = vr.train_clients(w, work)
    assert vr.calls >= 2  # chunk_size=4: the work really was split into chunks
    assert max_abs_diff(ref, vec) <= 1e-5 * max(1.0, scale(ref)) * (
        100 if optimizer == "adam" else 1
    )
    for r, v in zip(ref, vec, strict=True):
        assert (r.client_id, r.num_examples, r.num_steps) == (
            v.client_id,
            v.num_examples,
            v.num_steps,
        )
        assert v.metrics["train_loss"] == pytest.approx(r.metrics["train_loss"], rel=1e-5)


@pytest.mark.parametrize(("name", "data"), [("digits_cnn", DIGITS), ("sensor_cnn1d", SENSORS)])
@pytest.mark.parametrize(
    "plan",
    [
        dict(optimizer="sgd"),
        dict(optimizer="sgd", proximal_mu=0.5),
        dict(optimizer="momentum"),
        dict(optimizer="sgd", epochs=3, batch_size=5),
    ],
    ids=["sgd", "fedprox", "momentum", "3-epochs"],
)
def test_many_steps_equal_reference(name, data, plan) -> None:
    vr = runtime_for(name, data)
    w = vr.initial_weights()
    work = jobs(data, 9, **plan)
    steps = {len(range(0, c.num_examples, p.batch_size)) * p.epochs for c, p in work}
    assert len(steps) > 1, "clients must need different numbers of steps (padding exercised)"
    ref = vr.reference.train_clients(w, work)
    vec = vr.train_clients(w, work)
    assert max_abs_diff(ref, vec) <= 2e-5 * max(1.0, scale(ref))


def test_adam_over_many_steps_equals_reference_to_a_fraction_of_the_learning_rate() -> None:
    """Adam divides by √v: where a gradient is ~0, rounding flips the sign of a tiny step."""
    vr = runtime_for("digits_cnn", DIGITS)
    w = vr.initial_weights()
    work = jobs(DIGITS, 6, optimizer="adam", learning_rate=0.01)
    ref, vec = vr.reference.train_clients(w, work), vr.train_clients(w, work)
    assert max_abs_diff(ref, vec) <= 0.25 * 0.01  # a quarter of one step, over 18 steps
    off = sum(
        int(np.sum(~np.isclose(b, a, rtol=1e-3, atol=1e-3 * 0.01)))
        for r, v in zip(ref, vec, strict=True)
        for a, b in zip(r.delta, v.delta, strict=True)
    )
    assert off <= 1e-3 * sum(a.size for r in ref for a in r.delta)


def test_batch_norm_model_deviates_no_more_than_float_rounding_does() -> None:
    """With batch norm on tiny batches, local training is chaotic at float32 precision: the
    reference itself moves by a large amount when its start is perturbed by 1e-7. The
    vectorised trainer must stay within that envelope."""
    vr = runtime_for("mobilenet_tiny", DIGITS, width=0.5)
    w = vr.initial_weights()
    rng = np.random.default_rng(0)
    w_perturbed = tuple(
        (a * (1 + 1e-7 * rng.standard_normal(a.shape))).astype(np.float32) for a in w
    )
    work = jobs(DIGITS, 6, batch_size=16, learning_rate=0.01)
    ref = vr.reference.train_clients(w, work)
    envelope = max_abs_diff(ref, vr.reference.train_clients(w_perturbed, work))
    assert max_abs_diff(ref, vr.train_clients(w, work)) <= 2 * envelope + 1e-6


def test_batch_norm_statistics_ignore_padding_and_idle_clients() -> None:
    vr = runtime_for("mobilenet_tiny", DIGITS, width=0.5)
    w = vr.initial_weights()
    work = jobs(DIGITS, 5, epochs=1, batch_size=128)
    ref, vec = vr.reference.train_clients(w, work), vr.train_clients(w, work)
    moving = [i for i, p in enumerate(vr.program.packings) if not p.trainable]
    assert moving, "mobilenet_tiny has batch-norm moving statistics"
    for r, v in zip(ref, vec, strict=True):
        for i in moving:
            np.testing.assert_allclose(v.delta[i], r.delta[i], rtol=1e-4, atol=1e-6)


def test_head_only_training_keeps_the_backbone_fixed() -> None:
    vr = VectorizedRuntime(lambda: freeze_backbone(build_model("digits_cnn", (8, 8, 1), 10)))
    w = vr.initial_weights()
    work = jobs(DIGITS, 5)
    ref, vec = vr.reference.train_clients(w, work), vr.train_clients(w, work)
    assert max_abs_diff(ref, vec) <= 1e-5
    for u in vec:
        assert all(not d.any() for d in u.delta[:-2]) and u.delta[-2].any()


def test_clients_are_independent_of_their_chunk() -> None:
    """A client's update does not depend on who else is in its chunk."""
    vr = runtime_for("digits_cnn", DIGITS)
    w = vr.initial_weights()
    work = jobs(DIGITS, 8)
    together = vr.train_clients(w, work)
    alone = vr.train_clients(w, work[3:4])
    assert max_abs_diff([together[3]], alone) <= 1e-6


def test_wrong_shaped_client_fails_alone() -> None:
    vr = runtime_for("digits_cnn", DIGITS)
    work = jobs(DIGITS, 3)
    bad = ClientData(99, np.zeros((4, 7, 7, 1), np.float32), np.zeros(4, np.int64))
    results = vr.train_clients(vr.initial_weights(), [*work, (bad, work[0][1])])
    assert isinstance(results[3], ClientFailure) and "(7, 7, 1)" in results[3].error
    assert all(not isinstance(r, ClientFailure) for r in results[:3])


def test_unsupported_models_fall_back_with_one_notice() -> None:
    with pytest.raises(UnsupportedModel, match="MultiHeadAttention|not in a simple chain"):
        compile_program(build_model("tiny_transformer", (100, 3), 6))
    with pytest.warns(FallbackWarning, match="reference runtime in use") as caught:
        runtime = make_runtime(lambda: build_model("tiny_transformer", (100, 3), 6))
    assert isinstance(runtime, KerasRuntime) and len(caught) == 1
    with pytest.raises(UnsupportedModel):
        make_runtime(lambda: build_model("tiny_transformer", (100, 3), 6), kind="vectorized")
    inputs = keras.Input((8, 8, 1))
    dilated = keras.layers.Conv2D(4, 3, dilation_rate=2, name="dil")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(dilated)))
    with pytest.raises(UnsupportedModel, match="'dil'.*dilated"):
        compile_program(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(
            make_runtime(lambda: build_model("digits_cnn", (8, 8, 1), 10)), VectorizedRuntime
        )


def test_federation_with_dropouts_matches_the_reference_runtime() -> None:
    cfg = FederationConfig(
        clients_per_round=10, dropout_rate=0.3, local_epochs=2, batch_size=8, client_lr=0.05, seed=5
    )
    histories = []
    for kind in ("vectorized", "reference"):
        runtime = make_runtime(lambda: build_model("digits_cnn", (8, 8, 1), 10, seed=0), kind=kind)
        fed = Federation(data=DIGITS, runtime=runtime, config=cfg)
        fed.run(4)
        histories.append(fed.history)
    vec, ref = histories
    assert sum(len(r.dropped) for r in vec) > 0
    for a, b in zip(vec, ref, strict=True):
        assert (a.selected, a.completed, a.dropped) == (b.selected, b.completed, b.dropped)
        # Rounding compounds over rounds: the reference runtime itself moves by 1.3e-5 in
        # round 1 and 9e-4 by round 4 between TensorFlow's two CPU kernel sets (oneDNN on
        # and off, measured). A wrong update is off by far more than that.
        assert a.train_loss == pytest.approx(b.train_loss, rel=3e-3)
        assert abs(a.test_accuracy - b.test_accuracy) <= 0.01


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        VectorizedRuntime(lambda: build_model("digits_cnn", (8, 8, 1), 10), chunk_size=0)
    with pytest.raises(ValueError, match="'fast'"):
        make_runtime(lambda: build_model("digits_cnn", (8, 8, 1), 10), kind="fast")  # type: ignore[arg-type]
