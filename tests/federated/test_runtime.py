"""The reference runtime against a numpy re-implementation of the same local training."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fedlab._tf import keras  # noqa: E402
from fedlab.data import ClientData  # noqa: E402
from fedlab.federated import ClientFailure, ClientPlan, KerasRuntime, batch_schedule  # noqa: E402


def softmax_model() -> keras.Model:
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(
        3, name="head", kernel_initializer=keras.initializers.GlorotUniform(0)
    )(inputs)
    return keras.Model(inputs, outputs)


def numpy_training(w, b, x, y, plan: ClientPlan):
    """Softmax regression trained exactly as the plan says, in float64 numpy."""
    w0, b0 = w.astype(np.float64), b.astype(np.float64)
    w, b = w0.copy(), b0.copy()
    mw, mb = np.zeros_like(w), np.zeros_like(b)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    t = 0
    for idx in batch_schedule(len(y), plan.batch_size, plan.epochs, plan.seed):
        xb, yb = x[idx].astype(np.float64), y[idx]
        logits = xb @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        gw = xb.T @ p / len(yb) + plan.proximal_mu * (w - w0)
        gb = p.mean(0) + plan.proximal_mu * (b - b0)
        if plan.optimizer == "sgd":
            w -= plan.learning_rate * gw
            b -= plan.learning_rate * gb
        elif plan.optimizer == "momentum":
            mw, mb = plan.momentum * mw + gw, plan.momentum * mb + gb
            w -= plan.learning_rate * mw
            b -= plan.learning_rate * mb
        else:
            t += 1
            mw, mb = 0.9 * mw + 0.1 * gw, 0.9 * mb + 0.1 * gb
            vw, vb = 0.999 * vw + 0.001 * gw**2, 0.999 * vb + 0.001 * gb**2
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            w -= plan.learning_rate * (mw / c1) / (np.sqrt(vw / c2) + 1e-7)
            b -= plan.learning_rate * (mb / c1) / (np.sqrt(vb / c2) + 1e-7)
    return w - w0, b - b0


@pytest.fixture(scope="module")
def runtime() -> KerasRuntime:
    return KerasRuntime(softmax_model)


@pytest.fixture(scope="module")
def client() -> ClientData:
    rng = np.random.default_rng(0)
    return ClientData(7, rng.normal(size=(23, 4)).astype(np.float32), rng.integers(0, 3, 23))


@pytest.mark.parametrize(
    "plan_kwargs",
    [
        dict(optimizer="sgd"),
        dict(optimizer="sgd", proximal_mu=0.5),
        dict(optimizer="momentum", momentum=0.9),
        dict(optimizer="adam", learning_rate=0.01),
    ],
    ids=["sgd", "fedprox", "momentum", "adam"],
)
def test_update_equals_numpy_reference(
    runtime: KerasRuntime, client: ClientData, plan_kwargs
) -> None:
    plan = ClientPlan(
        **{
            "client_id": 7,
            "round_index": 0,
            "epochs": 3,
            "batch_size": 5,
            "learning_rate": 0.2,
            "seed": 11,
            **plan_kwargs,
        }
    )
    w = runtime.initial_weights()
    update = runtime.train_one(w, client, plan)
    dw, db = numpy_training(w[0], w[1], client.x, client.y, plan)
    np.testing.assert_allclose(update.delta[0], dw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(update.delta[1], db, rtol=1e-4, atol=1e-5)
    assert update.num_examples == 23 and update.num_steps == 3 * 5  # ceil(23/5) = 5 per epoch
    assert update.metrics["train_loss"] > 0


def test_runtime_is_deterministic_and_resets_between_clients(runtime, client) -> None:
    plan = ClientPlan(7, 0, 2, 4, 0.1, optimizer="adam", seed=3)
    w = runtime.initial_weights()
    first = runtime.train_one(w, client, plan)
    runtime.train_one(w, client, ClientPlan(7, 0, 1, 4, 0.5, optimizer="momentum", seed=9))
    again = runtime.train_one(w, client, plan)
    for a, b in zip(first.delta, again.delta, strict=True):
        assert np.array_equal(a, b)


def test_proximal_term_pulls_towards_the_global_model(runtime, client) -> None:
    w = runtime.initial_weights()
    free = runtime.train_one(w, client, ClientPlan(7, 0, 5, 4, 0.3, seed=1))
    tied = runtime.train_one(w, client, ClientPlan(7, 0, 5, 4, 0.3, proximal_mu=5.0, seed=1))
    norm = lambda u: np.sqrt(sum(float((d**2).sum()) for d in u.delta))  # noqa: E731
    assert norm(tied) < 0.7 * norm(free)


def test_batch_schedule_visits_every_example_once_per_epoch() -> None:
    steps = batch_schedule(23, 5, 3, seed=2)
    assert [len(s) for s in steps] == [5, 5, 5, 5, 3] * 3
    for epoch in range(3):
        seen = np.concatenate(steps[epoch * 5 : epoch * 5 + 5])
        assert np.array_equal(np.sort(seen), np.arange(23))
    assert not np.array_equal(np.concatenate(steps[:5]), np.concatenate(steps[5:10]))
    with pytest.raises(ValueError, match="got 0"):
        batch_schedule(0, 5, 1, 0)


def test_evaluate_matches_numpy(runtime) -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(50, 4)).astype(np.float32), rng.integers(0, 3, 50)
    w = runtime.initial_weights()
    metrics = runtime.evaluate(w, x, y, batch_size=16)
    logits = x @ w[0] + w[1]
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert metrics["loss"] == pytest.approx(float(-logp[np.arange(50), y].mean()), rel=1e-5)


def test_failures_are_per_client(runtime, client) -> None:
    bad = ClientData(8, np.zeros((3, 5), np.float32), np.zeros(3, np.int64))
    plan = ClientPlan(7, 0, 1, 4, 0.1)
    results = runtime.train_clients(runtime.initial_weights(), [(client, plan), (bad, plan)])
    assert not isinstance(results[0], ClientFailure)
    assert isinstance(results[1], ClientFailure) and results[1].client_id == 8
    assert "(5,)" in results[1].error and "(4,)" in results[1].error


def test_weights_of_the_wrong_shape_are_refused(runtime) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        runtime.evaluate((np.zeros((4, 3), np.float32),), np.zeros((1, 4)), np.zeros(1, np.int64))


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        ClientPlan(0, 0, 0, 4, 0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        ClientPlan(0, 0, 1, 4, -0.1)
