"""The grouped convolution's own gradient equals per-group ordinary convolutions, on every
CPU kernel set (TensorFlow's own grouped gradient exists only in oneDNN)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.portability

from fedlab.federated.vectorized.grouped import grouped_conv2d, same_padding  # noqa: E402

CASES = [
    # (H, W, kh, kw, sh, sw, padding, C, O, groups, batch)
    (8, 8, 3, 3, 1, 1, "SAME", 1, 16, 5, 4),  # digits CNN, first layer
    (8, 8, 3, 3, 1, 1, "SAME", 16, 32, 3, 2),  # digits CNN, second layer
    (1, 100, 1, 5, 1, 2, "SAME", 3, 16, 4, 3),  # sensor 1-D CNN, strided
    (1, 50, 1, 5, 1, 2, "SAME", 16, 32, 2, 3),
    (32, 32, 3, 3, 2, 2, "SAME", 3, 8, 3, 2),  # MobileNet stem
    (9, 7, 3, 2, 2, 3, "VALID", 2, 3, 2, 2),  # odd sizes, strides that leave rows unused
    (9, 7, 4, 3, 3, 2, "SAME", 2, 3, 2, 2),  # even kernel: asymmetric SAME padding
    (6, 6, 1, 1, 1, 1, "VALID", 8, 8, 3, 2),  # pointwise
    (5, 5, 5, 5, 1, 1, "VALID", 2, 2, 1, 1),  # one group, kernel as large as the map
]


def _per_group(x, k, case):
    _, _, _, _, sh, sw, pad, c, o, groups, _ = case
    outs = [
        tf.nn.conv2d(x[..., g * c : (g + 1) * c], k[..., g * o : (g + 1) * o], [1, sh, sw, 1], pad)
        for g in range(groups)
    ]
    return tf.concat(outs, -1)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_value_and_both_gradients_equal_per_group_convolutions(case) -> None:
    h, w, kh, kw, sh, sw, pad, c, o, groups, n = case
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((n, h, w, groups * c)), tf.float32)
    k = tf.constant(rng.standard_normal((kh, kw, c, groups * o)), tf.float32)
    results = []
    for fn in (
        lambda x, k: grouped_conv2d(
            x,
            k,
            spatial=(h, w),
            kernel_size=(kh, kw),
            strides=(sh, sw),
            padding=pad,
            channels=c,
            filters=o,
        ),
        lambda x, k: _per_group(x, k, case),
    ):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = fn(x, k)
            weights = tf.constant(np.random.default_rng(1).standard_normal(y.shape), tf.float32)
            loss = tf.reduce_sum(y * weights)
        results.append((y, *tape.gradient(loss, [x, k])))
    for ours, ref in zip(*results, strict=True):
        scale = float(tf.reduce_max(tf.abs(ref)))
        assert float(tf.reduce_max(tf.abs(ours - ref))) <= 1e-5 * scale


def test_same_padding_is_tensorflows() -> None:
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(9, 4, 3) == (0, 1)  # the odd pixel goes after
    assert same_padding(100, 5, 2) == (1, 2)
    with pytest.raises(ValueError, match="'CAUSAL'"):
        grouped_conv2d(
            tf.zeros([1, 4, 4, 2]),
            tf.zeros([3, 3, 1, 2]),
            spatial=(4, 4),
            kernel_size=(3, 3),
            strides=(1, 1),
            padding="CAUSAL",
            channels=1,
            filters=1,
        )


def test_trains_where_tensorflows_own_gradient_does_not() -> None:
    """With oneDNN off (the default on AVX2-only and ARM CPUs) TensorFlow 2.15 has no
    gradient for a grouped convolution; ours runs there and agrees with per-group convs."""
    script = textwrap.dedent(
        """
        import tensorflow as tf
        from fedlab.federated.vectorized.grouped import grouped_conv2d
        x = tf.random.normal([2, 8, 8, 12]); w = tf.random.normal([3, 3, 3, 12])
        with tf.GradientTape() as t:
            t.watch(w); native = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME"))
        try:
            t.gradient(native, w); print("native: ok")
        except tf.errors.InvalidArgumentError as exc:
            print("native: fails:", "grouped convolutions" in str(exc))
        with tf.GradientTape() as t:
            t.watch(w)
            ours = tf.reduce_sum(grouped_conv2d(x, w, spatial=(8, 8), kernel_size=(3, 3),
                strides=(1, 1), padding="SAME", channels=3, filters=3))
        print("ours:", bool(tf.reduce_all(tf.math.is_finite(t.gradient(ours, w)))))
        """
    )
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "native: fails: True" in done.stdout, done.stdout
    assert "ours: True" in done.stdout, done.stdout
