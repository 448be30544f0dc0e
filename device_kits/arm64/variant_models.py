"""Dense-only trainable models that each drop one feature of the ``train`` signature.

Usage (the workbench's .venv)::

    python device_kits/arm64/variant_models.py OUT_DIR

The exported ``train`` of every trainable model crashes on the arm64 VM, even a one-layer
``Flatten → Dense``, while one-op probes of all its ops run. These models rebuild that Dense
``train`` (same ops as ``fedlab.optimize.trainable`` emits for it: BATCH_MATMUL, ADD,
LOG_SOFTMAX, ONE_HOT, EXP, SUM, the variable updates) and vary one thing at a time:

* scalars: ``rank0`` (``lr``, ``mu``, ``beta`` are rank-0 inputs, as exported), ``vec1``
  (shape ``(1,)`` inputs), ``const`` (no scalar inputs: lr 0.05, mu 0, beta 0 baked in);
* state: ``full`` (``w``, ``anchor``, ``m`` variables, the FedProx/momentum update) or
  ``sgd`` (``w`` only, ``w -= lr·g``);
* signatures: ``all`` (train, infer, get_weights, set_weights) or ``train`` (train only).

Writes ``OUT_DIR/<scalars>-<state>-<signatures>.tflite`` + ``.json`` (the fields
``train_check.py`` reads: batch 16, 8×8×1 input, 10 classes).
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from pathlib import Path

B, SHAPE, K = 16, (8, 8, 1), 10
F = 64


def build(scalars: str, state: str, sigs: str) -> bytes:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    init = [rng.normal(0, 0.1, (F, K)).astype(np.float32), np.zeros(K, np.float32)]

    class M(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = [tf.Variable(a, name=f"w{i:02d}") for i, a in enumerate(init)]
            if state == "full":
                self.anchor = [tf.Variable(a, name=f"anchor{i:02d}") for i, a in enumerate(init)]
                self.m = [
                    tf.Variable(np.zeros_like(a), name=f"m{i:02d}") for i, a in enumerate(init)
                ]

        def loss_grads(self, x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tuple:
            h = tf.reshape(x, (B, -1))
            kernel, bias = (v.read_value() for v in self.w)
            logits = tf.matmul(h, kernel) + bias
            onehot = tf.one_hot(y, K, dtype=tf.float32)
            logp = tf.nn.log_softmax(logits)
            weights = tf.reshape(w, (B, 1))
            loss = -tf.reduce_sum(weights * onehot * logp)
            d = weights * (tf.exp(logp) - onehot)
            return loss, [tf.matmul(h, d, transpose_a=True), tf.reduce_sum(d, axis=0)]

        def step(self, x, y, w, lr, mu, beta):
            loss, grads = self.loss_grads(x, y, w)
            if state == "full":
                for var, anchor, m, g in zip(self.w, self.anchor, self.m, grads, strict=True):
                    g = g + mu * (var - anchor)
                    m_new = beta * m + g
                    m.assign(m_new)
                    var.assign_sub(lr * m_new)
            else:
                for var, g in zip(self.w, grads, strict=True):
                    var.assign_sub(lr * g)
            return {"loss": loss}

    m = M()
    x = tf.TensorSpec((B, *SHAPE), tf.float32, name="x")
    y = tf.TensorSpec((B,), tf.int32, name="y")
    w = tf.TensorSpec((B,), tf.float32, name="w")
    if scalars == "const":
        train = tf.function(
            lambda x, y, w: m.step(x, y, w, 0.05, 0.0, 0.0), input_signature=[x, y, w]
        )
    else:
        shape = () if scalars == "rank0" else (1,)
        specs = [tf.TensorSpec(shape, tf.float32, name=n) for n in ("lr", "mu", "beta")]
        train = tf.function(m.step, input_signature=[x, y, w, *specs])
    signatures = {"train": train.get_concrete_function()}
    if sigs == "all":

        def set_weights(*values: tf.Tensor) -> dict:
            for i, value in enumerate(values):
                m.w[i].assign(value)
                if state == "full":
                    m.anchor[i].assign(value)
                    m.m[i].assign(tf.zeros_like(value))
            return {"ok": tf.constant(1, tf.int32)}

        infer = lambda x: {"logits": tf.matmul(tf.reshape(x, (B, -1)), m.w[0]) + m.w[1]}  # noqa: E731
        signatures["infer"] = tf.function(infer, input_signature=[x]).get_concrete_function()
        signatures["get_weights"] = tf.function(
            lambda: {f"w{i:02d}": v.read_value() for i, v in enumerate(m.w)}, input_signature=[]
        ).get_concrete_function()
        signatures["set_weights"] = tf.function(
            set_weights,
            input_signature=[
                tf.TensorSpec(a.shape, tf.float32, name=f"w{i:02d}") for i, a in enumerate(init)
            ],
        ).get_concrete_function()
    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(m, folder, signatures=signatures)
        conv = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=list(signatures))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.experimental_enable_resource_variables = True
        return bytes(conv.convert())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    meta = {"batch_size": B, "input_shape": list(SHAPE), "num_classes": K}
    for scalars, state, sigs in itertools.product(
        ("rank0", "vec1", "const"), ("full", "sgd"), ("all", "train")
    ):
        name = f"{scalars}-{state}-{sigs}"
        data = build(scalars, state, sigs)
        (out / f"{name}.tflite").write_bytes(data)
        (out / f"{name}.json").write_text(json.dumps(meta))
        print(f"{name:<20} {len(data):>7} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
