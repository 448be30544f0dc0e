"""Knowledge distillation (Hinton et al. 2015): a small student learns from a teacher's
temperature-softened outputs as well as from the labels."""

from __future__ import annotations

import numpy as np

from fedlab._tf import keras, tf

__all__ = ["distill"]


def distill(
    teacher: keras.Model,
    student: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    temperature: float = 4.0,
    alpha: float = 0.1,
    epochs: int = 5,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> keras.Model:
    """Train ``student`` in place on ``α·CE(y) + (1 − α)·T²·KL(teacher_T ‖ student_T)``.

    Both models output logits; the teacher is frozen. Returns the student.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if teacher.output_shape[-1] != student.output_shape[-1]:
        raise ValueError(
            f"teacher has {teacher.output_shape[-1]} outputs, student {student.output_shape[-1]}"
        )
    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    soft_targets = tf.nn.softmax(teacher.predict(x, batch_size=512, verbose=0) / temperature)

    @tf.function
    def step(xb: tf.Tensor, yb: tf.Tensor, tb: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = student(xb, training=True)
            hard = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
            log_student = tf.nn.log_softmax(logits / temperature)
            kl = tf.reduce_mean(
                tf.reduce_sum(tb * (tf.math.log(tb + 1e-12) - log_student), axis=-1)
            )
            loss = alpha * hard + (1 - alpha) * temperature**2 * kl
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    x32, y64 = np.asarray(x, np.float32), np.asarray(y, np.int64)
    targets = soft_targets.numpy()
    for _ in range(epochs):
        order = rng.permutation(len(y64))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            step(x32[idx], y64[idx], targets[idx])
    return student
