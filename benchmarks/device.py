"""Device targets of issue 5, measured in one run; writes ``build/bench/device.json``.

1. LiteRT train step on the digits CNN (batch 16, 1 thread, median of 300 steps, 5
   repeats) next to the same step in TensorFlow (the workbench's compiled Keras step) and
   the LiteRT inference of the batch. Target: median ≤ 1 ms.
2. The device agent for one training round, in a subprocess that can import only numpy,
   cryptography, ai-edge-litert and fedlab: its peak RSS (VmHWM) and whether TensorFlow got
   imported. Target: ≤ 150 MB, never.
3. Its update against the Keras reference runtime from the same start and batches.
   Target: relative difference ≤ 1e-4.

Usage: ``python benchmarks/device.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import numpy as np

    from fedlab._tf import tf
    from fedlab.data import federated_digits
    from fedlab.data.federated_dataset import ClientData
    from fedlab.edge.bench import latency
    from fedlab.edge.model import TrainableModel
    from fedlab.federated import ClientPlan, KerasRuntime
    from fedlab.federated.aggregate import relative_difference
    from fedlab.kits import build_kit, make_emulated_devices, run_emulated_round
    from fedlab.models import build_model
    from fedlab.protocol import RoundTask

    # One thread for TensorFlow too, so both runtimes are compared on one core.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out: dict = {"train_step": {}}
    work = Path(tempfile.mkdtemp(prefix="fedlab-bench-device-"))
    rng = np.random.default_rng(0)
    print("1 · train step, batch 16, 1 thread (median of 300 steps; 5 repeats)")
    for name, shape, k in (("digits_cnn", (8, 8, 1), 10), ("sensor_cnn1d", (100, 3), 6)):
        model = build_model(name, shape, k)
        kit = build_kit(model, target="raspberry_pi", out=work, signing_key=work / "key.pem")
        trainable = TrainableModel.load(kit.folder / "model" / "model.tflite", threads=1)
        x = rng.normal(size=(16, *shape)).astype(np.float32)
        y = rng.integers(0, k, 16).astype(np.int32)
        w = np.full(16, 1 / 16, np.float32)
        runtime = KerasRuntime(lambda n=name, s=shape, c=k: build_model(n, s, c))
        step = runtime._begin_client(
            runtime.initial_weights(), ClientPlan(0, 0, 1, 16, 1e-6, seed=0)
        )
        xt, yt = tf.constant(x), tf.constant(y.astype(np.int64))
        calls = {
            "litert_train": partial(trainable.train_step, x, y, w, lr=1e-6),
            "litert_infer": partial(trainable.logits, x),
            "tensorflow_train": partial(step, xt, yt),
        }
        runs: dict[str, list[float]] = {key: [] for key in calls}
        for _ in range(5):  # interleaved, so drifting machine load hits all three alike
            for key, call in calls.items():
                runs[key].append(latency(call, 300)["median_ms"])
        row: dict = {key: statistics.median(v) for key, v in runs.items()}
        row["repeats"] = runs
        row["tf_over_litert"] = row["tensorflow_train"] / row["litert_train"]
        out["train_step"][name] = row
        print(
            f"  {name:<13} LiteRT train {row['litert_train']:.3f} ms (target ≤ 1 ms for digits), "
            f"infer {row['litert_infer']:.3f} ms; "
            f"TensorFlow train {row['tensorflow_train']:.3f} ms "
            f"→ TF/LiteRT {row['tf_over_litert']:.2f}×"
        )

    print("2 · one agent round in a device-only subprocess (digits CNN)")
    kit = build_kit(
        build_model("digits_cnn", (8, 8, 1), 10),
        target="raspberry_pi",
        out=work,
        signing_key=work / "key.pem",
    )
    data = federated_digits(num_clients=20, seed=1)
    client = max(data.clients, key=lambda c: c.num_examples)
    (device,) = make_emulated_devices(kit, [client], work / "fleet")
    runtime = KerasRuntime(lambda: build_model("digits_cnn", (8, 8, 1), 10))
    weights = runtime.initial_weights()
    plan = ClientPlan(
        client_id=0, round_index=0, epochs=5, batch_size=16, learning_rate=0.05, seed=3
    )
    version = kit.manifest.info["model"]["version"]
    task = RoundTask.from_client_plan(plan, model_version=version, weights=weights)
    start = time.perf_counter()
    result = run_emulated_round([device], work / "fleet" / "exchange", task)
    wall = time.perf_counter() - start
    if result.failures or result.rejected or not result.accepted:
        print(f"the device round failed: {result.failures or result.rejected}")
        return 1
    report = result.reports[device.device_id]
    got = result.accepted[0][1]
    expected = runtime.train_one(weights, ClientData(0, client.x, client.y), plan)
    rel = relative_difference(got.delta, expected.delta)
    out["agent"] = {
        **report,
        "process_wall_s": wall,
        "examples": client.num_examples,
        "epochs": plan.epochs,
        "update_rel_diff_vs_keras": rel,
    }
    print(
        f"  {client.num_examples} examples × {plan.epochs} epochs = {report['num_steps']} steps in "
        f"{report['seconds']:.3f} s; process {wall:.2f} s incl. start-up; peak RSS "
        f"{report['peak_rss_mb']:.1f} MB (target ≤ 150); TensorFlow imported: "
        f"{report['tensorflow_imported']}"
    )
    print(f"3 · update vs Keras reference: relative difference {rel:.2e} (target ≤ 1e-4)")
    digits = out["train_step"]["digits_cnn"]["litert_train"]
    out["targets"] = {
        "train_step_ms_le_1": digits <= 1.0,
        "agent_rss_mb_le_150": report["peak_rss_mb"] <= 150,
        "agent_without_tensorflow": not report["tensorflow_imported"],
        "update_rel_diff_le_1e-4": rel <= 1e-4,
    }
    path = ROOT / "build" / "bench" / "device.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"targets: {out['targets']}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
