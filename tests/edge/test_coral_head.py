"""The Coral head trainer runs the client optimizer every trainer runs: SGD or momentum,
and FedProx's μ — checked against the Keras reference runtime on the same embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.data.federated_dataset import ClientData
from fedlab.edge.coral import HeadTrainer
from fedlab.federated import ClientPlan, KerasRuntime

DIM, CLASSES = 12, 4


class FakeBackbone:
    """Embeddings are the examples themselves (the head is what is under test)."""

    embedding_dim = DIM
    input_shape = (DIM,)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32)


def local_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, 60)
    centres = rng.standard_normal((CLASSES, DIM)).astype(np.float32)
    x = centres[y] + 0.5 * rng.standard_normal((60, DIM)).astype(np.float32)
    return x, y


def head_model():
    from fedlab._tf import keras

    inputs = keras.Input((DIM,))
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(inputs))


def plan(optimizer: str = "sgd", mu: float = 0.0) -> ClientPlan:
    return ClientPlan(
        client_id=1,
        round_index=0,
        epochs=3,
        batch_size=8,
        learning_rate=0.2,
        optimizer=optimizer,
        momentum=0.9,
        proximal_mu=mu,
        seed=3,
    )


def norm(arrays) -> float:
    return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


@pytest.fixture(scope="module")
def reference():
    runtime = KerasRuntime(head_model)
    return runtime, runtime.initial_weights()


@pytest.mark.parametrize(
    ("optimizer", "mu"), [("sgd", 0.0), ("sgd", 0.5), ("momentum", 0.0), ("momentum", 0.5)]
)
def test_the_head_update_equals_the_keras_reference(reference, optimizer, mu) -> None:
    runtime, weights = reference
    x, y = local_data()
    trainer = HeadTrainer(FakeBackbone(), ((DIM, CLASSES), (CLASSES,)), (0, 1), CLASSES)  # type: ignore[arg-type]
    got = trainer.train(weights, x, y, plan(optimizer, mu))
    expected = runtime.train_one(weights, ClientData(1, x, y), plan(optimizer, mu))
    diff = norm([a - b for a, b in zip(got.delta, expected.delta, strict=True)])
    assert diff / norm(expected.delta) < 1e-4
    assert got.num_steps == expected.num_steps


def test_fedprox_pulls_the_head_toward_the_global_weights(reference) -> None:
    _, weights = reference
    x, y = local_data(1)
    trainer = HeadTrainer(FakeBackbone(), ((DIM, CLASSES), (CLASSES,)), (0, 1), CLASSES)  # type: ignore[arg-type]
    drift = [norm(trainer.train(weights, x, y, plan("sgd", mu)).delta) for mu in (0.0, 0.5, 2.0)]
    assert drift[0] > drift[1] > drift[2] > 0, drift  # μ = 0 would be FedAvg: no pull


def test_adam_is_refused_on_the_head(reference) -> None:
    _, weights = reference
    x, y = local_data()
    trainer = HeadTrainer(FakeBackbone(), ((DIM, CLASSES), (CLASSES,)), (0, 1), CLASSES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="optimizer 'adam' does not run on the Coral head"):
        trainer.train(weights, x, y, plan("adam"))
