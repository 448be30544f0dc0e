"""One-op TFLite probes for the pieces every ``train`` signature shares (loss, head backward,
variable update), to name the op that crashes on aarch64.

Usage::

    python op_probe.py export OUT_DIR    # workbench .venv (TensorFlow): writes OUT_DIR/*.tflite
    python op_probe.py run OUT_DIR/*.tflite   # device (numpy + ai-edge-litert): one process each
    python op_probe.py resize-empty MODEL.tflite   # resize an input to shape []: the crash

Shapes are those of the digits kit's head: batch 16, 64 features, 10 classes. Each model has
one signature; ``run`` prints ``ok`` or the signal per probe (exit 1 if any crashed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

B, F, K = 16, 64, 10


def probes() -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    x = tf.TensorSpec((B, F), tf.float32, name="x")
    z = tf.TensorSpec((B, K), tf.float32, name="z")
    y = tf.TensorSpec((B,), tf.int32, name="y")
    w = tf.TensorSpec((B,), tf.float32, name="w")
    g = tf.TensorSpec((F, K), tf.float32, name="g")
    init = np.random.default_rng(0).normal(size=(F, K)).astype(np.float32)

    def module(fn: Any, *specs: tf.TensorSpec, var: bool = False) -> tf.Module:
        m = tf.Module()
        m.v = tf.Variable(init) if var else None
        m.run = tf.function(lambda *a: {"out": fn(m, *a)}, input_signature=list(specs))
        return m

    def loss(m: Any, z: Any, y: Any, w: Any) -> Any:
        logp = tf.nn.log_softmax(z)
        return -tf.reduce_sum(tf.reshape(w, (B, 1)) * tf.one_hot(y, K) * logp)

    return {
        "one_hot": module(lambda m, y: tf.one_hot(y, K), y),
        "log_softmax": module(lambda m, z: tf.nn.log_softmax(z), z),
        "exp": module(lambda m, z: tf.exp(z), z),
        "sum": module(lambda m, z: tf.reduce_sum(z), z),
        "loss": module(loss, z, y, w),
        "matmul_adj_x": module(lambda m, x, z: tf.matmul(x, z, transpose_a=True), x, z),
        "matmul_transpose": module(lambda m, x, z: tf.matmul(tf.transpose(x), z), x, z),
        "matmul_adj_y": module(lambda m, z: tf.matmul(z, tf.constant(init), transpose_b=True), z),
        "var_read_matmul": module(lambda m, x: tf.matmul(x, m.v.read_value()), x, var=True),
        "var_assign": module(
            lambda m, g: (m.v.assign(m.v - 0.1 * g), m.v.read_value())[1], g, var=True
        ),
        # A rank-0 float input like the train signature's lr/mu/beta, and the same as shape (1,):
        # the signature runner resizes every input to its value's shape, [] for a scalar.
        "rank0_input": module(lambda m, x, s: x * s, x, tf.TensorSpec((), tf.float32, name="s")),
        "vec1_input": module(lambda m, x, s: x * s, x, tf.TensorSpec((1,), tf.float32, name="s")),
        "var_assign_adj_x": module(
            lambda m, x, z: (
                m.v.assign(m.v - 0.1 * tf.matmul(x, z, transpose_a=True)),
                m.v.read_value(),
            )[1],
            x,
            z,
            var=True,
        ),
    }


def export(out: Path) -> None:
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    for name, m in probes().items():
        fn = m.run.get_concrete_function()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], m)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        (out / f"{name}.tflite").write_bytes(conv.convert())
        print(f"probe {name}")


def child(path: str) -> None:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=Path(path).read_bytes(), num_threads=1)
    (key,) = interp.get_signature_list()
    run = interp.get_signature_runner(key)
    rng = np.random.default_rng(0)
    feed = {}
    for name, d in run.get_input_details().items():
        if d["dtype"] == np.int32:
            feed[name] = rng.integers(0, K, d["shape"]).astype(np.int32)
        else:
            feed[name] = rng.normal(size=d["shape"]).astype(np.float32)
    for _ in range(2):
        out = run(**feed)["out"]
    print(f"sum={float(np.sum(out)):.4f}")


def resize_empty(path: str) -> None:
    """``resize_tensor_input(i, [])`` on any model: what the signature runner does for a rank-0
    input. SIGSEGV in ai-edge-litert's aarch64 ``InterpreterWrapper::ResizeInputTensor``."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=Path(path).read_bytes(), num_threads=1)
    if interp.get_input_details():
        index = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(index, [1, F])
        print("resize_tensor_input(i, [1, 64]): ok", flush=True)
        interp.resize_tensor_input(index, [])
        print("resize_tensor_input(i, []): ok", flush=True)
        return
    # A multi-signature model (the trainable kit's) whose first subgraph has no input: resize
    # an input of a signature exactly as SignatureRunner.__call__ does for a rank-0 value.
    for key in interp.get_signature_list():
        runner = interp.get_signature_runner(key)
        inputs = runner.get_input_details()
        if inputs:
            name, detail = next(iter(inputs.items()))
            wrapper, sub = runner._interpreter_wrapper, runner._subgraph_index
            wrapper.ResizeInputTensor(detail["index"], np.array([], np.int32), False, sub)
            print(f"signature {key!r} input {name!r} resized to []: ok", flush=True)
            return


def run(paths: list[str]) -> int:
    bad = 0
    for path in paths:
        proc = subprocess.run(
            [sys.executable, __file__, "child", path],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode == 0:
            what = "ok   " + proc.stdout.strip().splitlines()[-1]
        else:
            bad += 1
            code = proc.returncode
            what = f"FAIL {'signal ' + str(-code) if code < 0 else 'exit ' + str(code)}"
            what += " " + " | ".join(proc.stderr.strip().splitlines()[-2:])
        print(f"op-probe {Path(path).stem:<20} {what}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "export":
        export(Path(rest[0]))
    elif cmd == "child":
        child(rest[0])
    elif cmd == "resize-empty":
        resize_empty(rest[0])
    else:
        sys.exit(run(rest))
