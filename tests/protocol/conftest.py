"""Shared values of the protocol tests (no TensorFlow, no round engine)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings

from fedlab.protocol import RoundTask, TrainPlan, UpdateEnvelope

#: Every property here: reproducible, bounded, no example database.
FUZZ = settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: The digits CNN (fedlab.models "digits_cnn", 8x8x1 input, 10 classes): 38,282 weights.
DIGITS_SHAPES = (
    (3, 3, 1, 16),
    (16,),
    (3, 3, 16, 32),
    (32,),
    (512, 64),
    (64,),
    (64, 10),
    (10,),
)


def small_task(round_index: int = 1) -> RoundTask:
    weights = (np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), np.full(3, 0.5, np.float32))
    plan = TrainPlan(epochs=2, batch_size=4, learning_rate=0.1, proximal_mu=0.01, seed=7)
    return RoundTask(round_index=round_index, model_version="kit-v1", plan=plan, weights=weights)


def small_envelope(task: RoundTask | None = None) -> UpdateEnvelope:
    task = task or small_task()
    return UpdateEnvelope(
        client_id=3,
        device_id="pi-3",
        round_index=task.round_index,
        model_version=task.model_version,
        base_version=task.base_version,
        num_examples=20,
        num_steps=5,
        metrics={"train_loss": 0.5},
        body=(np.full((2, 3), 0.25, np.float32), np.zeros(3, np.float32)),
    )
