"""The protocol's value objects: strict constructors, plain-dict round trips and the
conversions to and from the round engine's types."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlab.federated.client_optimizer import ADAM
from fedlab.federated.stages import Pipeline, StageContext
from fedlab.federated.types import ClientPlan, ClientUpdate, Envelope
from fedlab.protocol import (
    OptimizerSpec,
    RoundTask,
    TrainPlan,
    UpdateEnvelope,
    weights_version,
)
from tests.protocol.conftest import small_envelope, small_task


def test_optimizer_defaults_are_the_engines_adam_constants() -> None:
    spec = OptimizerSpec(name="adam")
    assert (spec.beta_1, spec.beta_2, spec.epsilon) == (ADAM.beta_1, ADAM.beta_2, ADAM.epsilon)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
        ({"epochs": 2.5}, TypeError, "epochs must be an int, got 2.5"),
        ({"batch_size": True}, TypeError, "batch_size must be an int, got True"),
        ({"seed": "abc"}, TypeError, "seed must be an int, got 'abc'"),
        ({"learning_rate": math.inf}, ValueError, "learning_rate must be a finite number > 0"),
        ({"learning_rate": 0}, ValueError, "learning_rate must be a finite number > 0, got 0"),
        ({"proximal_mu": -1.0}, ValueError, "proximal_mu must be a finite number >= 0, got -1.0"),
        ({"optimizer": "adam"}, TypeError, "optimizer must be an OptimizerSpec, got 'adam'"),
    ],
)
def test_a_bad_plan_names_the_field_and_quotes_the_value(kwargs, error, message) -> None:
    values = {"epochs": 1, "batch_size": 4, "learning_rate": 0.1, **kwargs}
    with pytest.raises(error, match=message.replace("[", r"\[")):
        TrainPlan(**values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "rmsprop"},
            "optimizer must be one of ('sgd', 'momentum', 'adam'), got 'rmsprop'",
        ),
        ({"momentum": 1.0}, "momentum must be a number in [0, 1), got 1.0"),
        ({"beta_2": -0.1}, "beta_2 must be a number in [0, 1), got -0.1"),
        ({"epsilon": 0.0}, "epsilon must be a finite number > 0, got 0.0"),
    ],
)
def test_a_bad_optimizer_spec_names_the_field(kwargs, message) -> None:
    with pytest.raises(ValueError) as info:
        OptimizerSpec(**kwargs)
    assert str(info.value) == message


def test_plans_round_trip_through_plain_dicts() -> None:
    plan = TrainPlan(
        epochs=3,
        batch_size=8,
        learning_rate=0.05,
        optimizer=OptimizerSpec(name="momentum", momentum=0.9),
        proximal_mu=0.1,
        seed=4,
    )
    assert TrainPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ValueError, match=r"unknown plan fields \['colour'\]"):
        TrainPlan.from_dict({**plan.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="plan field 'epochs' is missing"):
        TrainPlan.from_dict({"batch_size": 8, "learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"unknown optimizer fields \['nesterov'\]"):
        TrainPlan.from_dict({**plan.to_dict(), "optimizer": {"name": "sgd", "nesterov": True}})


def test_a_task_hashes_its_weights_and_refuses_a_wrong_hash() -> None:
    task = small_task()
    assert task.base_version == weights_version(task.weights or ()) and len(task.base_version) == 32
    assert task.weights is not None and not task.weights[0].flags.writeable  # read-only copies
    with pytest.raises(ValueError, match="base_version 'x' does not match the weights"):
        RoundTask(
            round_index=1, model_version="v", plan=task.plan, weights=task.weights, base_version="x"
        )
    with pytest.raises(ValueError, match="model_version must be the kit's model version"):
        RoundTask(round_index=1, model_version="", plan=task.plan, weights=task.weights)
    with pytest.raises(ValueError, match="weights\\[0\\] contains NaN or Inf"):
        RoundTask(round_index=1, model_version="v", plan=task.plan, weights=(np.full(2, np.nan),))
    with pytest.raises(ValueError, match="give exactly one of weights and weights_ref"):
        RoundTask(round_index=1, model_version="v", plan=task.plan)
    with pytest.raises(ValueError, match="base_version is required with weights_ref"):
        RoundTask(round_index=1, model_version="v", plan=task.plan, weights_ref="registry:7")
    with pytest.raises(TypeError, match="weights\\[0\\] has dtype int64"):
        RoundTask(round_index=1, model_version="v", plan=task.plan, weights=(np.arange(3),))
    with pytest.raises(ValueError, match="deadline must be a finite number >= 0, got -1"):
        RoundTask(
            round_index=1, model_version="v", plan=task.plan, weights=task.weights, deadline=-1
        )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"num_examples": -1}, ValueError, "num_examples must be >= 0, got -1"),
        ({"num_examples": 2.0}, TypeError, "num_examples must be an int, got 2.0"),
        ({"metrics": {"train_loss": math.nan}}, ValueError, "metric 'train_loss' must be a finite"),
        ({"metrics": {"train_loss": "0.3"}}, ValueError, "metric 'train_loss' must be a finite"),
        ({"device_id": "pi 3/.."}, ValueError, "device_id must be 1-64 letters"),
        ({"headers": {"codec": [1]}}, ValueError, "header 'codec' must be a string, bool"),
        ({"body": (np.arange(3),)}, TypeError, "body\\[0\\] has dtype int64"),
        ({"base_version": ""}, ValueError, "base_version must be a non-empty string, got ''"),
    ],
)
def test_a_bad_envelope_names_the_field(change, error, message) -> None:
    good = small_envelope()
    fields = {k: getattr(good, k) for k in good.__dataclass_fields__}
    with pytest.raises(error, match=message):
        UpdateEnvelope(**{**fields, **change})


def test_an_envelope_carries_nonfinite_tensors_for_the_server_to_judge() -> None:
    good = small_envelope()
    fields = {k: getattr(good, k) for k in good.__dataclass_fields__}
    nan = UpdateEnvelope(**{**fields, "body": (np.full((2, 3), np.nan, np.float32),)})
    assert np.isnan(nan.body[0]).all()  # type: ignore[index]
    opaque = UpdateEnvelope(**{**fields, "body": b"\x00\x01", "headers": {"codec": "topk"}})
    assert opaque.body == b"\x00\x01" and opaque.nbytes == 2


def test_conversions_to_and_from_the_round_engine() -> None:
    plan = ClientPlan(
        client_id=5,
        round_index=2,
        epochs=3,
        batch_size=16,
        learning_rate=0.05,
        optimizer="momentum",
        momentum=0.9,
        proximal_mu=0.01,
        seed=11,
    )
    weights = (np.ones((2, 3), np.float32), np.zeros(3, np.float32))
    task = RoundTask.from_client_plan(plan, model_version="kit-v1", weights=weights)
    assert ClientPlan(**task.client_plan_fields()) == plan
    update = ClientUpdate(
        client_id=5,
        delta=(np.full((2, 3), 0.1, np.float32), np.zeros(3, np.float32)),
        num_examples=30,
        num_steps=6,
        metrics={"train_loss": 0.7},
    )
    envelope = UpdateEnvelope.from_client_update(update, task, device_id="pi-5")
    assert envelope.round_index == 2 and envelope.base_version == task.base_version
    context = StageContext(
        round_index=2,
        weight_shapes=((2, 3), (3,)),
        weights=weights,
        client_id=5,
        expect_headers=task.expect_headers(),
    )
    received = Pipeline().receive(Envelope(**envelope.engine_fields()), context)
    assert received.num_examples == 30 and received.metrics == {"train_loss": 0.7}
    for got, sent in zip(received.delta, update.delta, strict=True):
        np.testing.assert_array_equal(got, sent)
