"""Compression targets of issue 4, measured in one run; writes ``build/bench/compression.json``.

For the digits CNN and the sensor 1-D CNN (trained centrally first): the float32, int8
(post-training, per-tensor + stripped, and QAT), pruned (element-wise and in 4x1 blocks)
and clustered ``.tflite`` models, measured through LiteRT. Prints the ratios the issue sets
targets for:

* int8 at least 3.9x smaller than float32, accuracy drop <= 1 point;
* pruned 75 % + int8 + gzip at least 10x smaller than float32, drop <= 1.5 points;
* QAT int8 accuracy >= post-training int8 - 0.2 points;

then where the bytes of each file go (:func:`fedlab.optimize.anatomy`), the ceiling the
TFLite format puts on the int8 ratio of each model (its weight buffers alone), and a
width sweep of the digits CNN plus MobileNetV3-Small: the int8 file ratio against the
parameter count.

Usage: ``python benchmarks/compression.py [--epochs 20] [--fine-tune 6]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent


def _sweep(train_x, train_y):
    """int8 file ratio against model size (MobileNetV3-Small untrained: only sizes count)."""
    import numpy as np

    from fedlab._tf import keras
    from fedlab.models import build_model
    from fedlab.optimize import fit, int8_size_row

    rows = []
    for w in (1.0, 1.5, 2.0, 3.0):
        # one epoch moves the biases off zero (identical zero buffers are stored once)
        model = fit(build_model("digits_cnn", (8, 8, 1), 10, width=w), train_x, train_y, epochs=1)
        rows.append(int8_size_row(f"digits_cnn width {w}", model, train_x))
    mobilenet = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), weights=None, classes=1000
    )
    calibration = np.random.default_rng(0).random((8, 96, 96, 3), dtype=np.float32)
    rows.append(int8_size_row("MobileNetV3-Small (96x96)", mobilenet, calibration))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--fine-tune", type=int, default=6)
    args = parser.parse_args()

    from fedlab.data import federated_sensors, load_digits
    from fedlab.models import build_model
    from fedlab.optimize import (
        anatomy,
        compare,
        fit,
        keras_accuracy,
        standard_recipes,
        strip_strings,
    )

    # short keys for the JSON -> the notebook's recipes, so both measure the same thing
    wanted = {
        "float32": "float32",
        "int8": "int8 (post-training)",
        "int8-pt-stripped": "int8 (per-tensor, stripped)",
        "qat-int8": "int8 (QAT)",
        "prune75-int8": "prune 75% + int8",
        "prune75-block4x1-int8": "prune 75% (4x1 blocks) + int8",
        "prune75-cluster16-int8": "prune 75% + cluster 16 + int8",
    }
    standard = {r.name: r for r in standard_recipes(fine_tune_epochs=args.fine_tune)}
    recipes = tuple(standard[name] for name in wanted.values())
    train, test = load_digits(seed=0)
    fleet = federated_sensors(num_devices=200, test_devices=50, seed=0)
    sensors = fleet.union()
    cases = {
        "digits_cnn": (
            build_model("digits_cnn", (8, 8, 1), 10),
            (train.x, train.y),
            (test.x, test.y),
        ),
        "sensor_cnn1d": (
            build_model("sensor_cnn1d", (100, 3), 6),
            (sensors.x, sensors.y),
            (fleet.test.x, fleet.test.y),
        ),
    }
    out: dict[str, object] = {}
    verdicts: list[str] = []
    for name, (model, tr, te) in cases.items():
        fit(model, tr[0], tr[1], epochs=args.epochs, seed=0)
        results = dict(zip(wanted, compare(model, tr, te, recipes), strict=True))
        f32, i8 = results["float32"], results["int8"]
        size = {k: r.report.size_bytes for k, r in results.items()}
        gz = {k: r.report.gzip_bytes for k, r in results.items()}
        acc = {k: r.row["accuracy"] for k, r in results.items()}
        drop = {k: 100 * (acc["float32"] - a) for k, a in acc.items()}
        f32_stripped = len(strip_strings(f32.tflite))
        parts = {"float32": anatomy(f32.tflite), "int8": anatomy(i8.tflite)}
        entry = {
            "keras_accuracy": keras_accuracy(model, te[0], te[1]),
            "rows": {k: r.row for k, r in results.items()},
            "anatomy": {k: a.row() for k, a in parts.items()},
            "int8_file_ratio": size["float32"] / size["int8"],
            "int8_weights_only_ratio": parts["float32"].weight_bytes / parts["int8"].weight_bytes,
            "int8_stripped_ratio": f32_stripped / size["int8-pt-stripped"],
            "int8_accuracy_drop_points": drop["int8"],
            "int8_stripped_accuracy_drop_points": drop["int8-pt-stripped"],
            "prune75_int8_gzip_ratio": size["float32"] / gz["prune75-int8"],
            "prune75_int8_accuracy_drop_points": drop["prune75-int8"],
            "prune75_block_int8_gzip_ratio": size["float32"] / gz["prune75-block4x1-int8"],
            "prune75_block_int8_accuracy_drop_points": drop["prune75-block4x1-int8"],
            "prune75_cluster16_int8_gzip_ratio": size["float32"] / gz["prune75-cluster16-int8"],
            "prune75_cluster16_int8_accuracy_drop_points": drop["prune75-cluster16-int8"],
            "qat_minus_ptq_points": 100 * (acc["qat-int8"] - acc["int8"]),
        }
        out[name] = entry
        print(f"\n{name}: Keras accuracy {entry['keras_accuracy']:.4f}")
        print(
            f"  {'recipe':<24} {'accuracy':>8} {'KB':>8} {'gzip KB':>8} {'ms':>7} {'Edge TPU':>8}"
        )
        for k, r in results.items():
            row = r.row
            print(
                f"  {k:<24} {row['accuracy']:8.4f} {row['size_kb']:8.1f} {row['gzip_kb']:8.1f} "
                f"{row['latency_ms']:7.4f} {row['edge_tpu_ready']!s:>8}"
            )
        print("  where the bytes go (KB):")
        for k, a in parts.items():
            print(
                f"    {k:<8} file {a.file_bytes / 1024:6.1f}  weights {a.weight_bytes / 1024:6.1f}"
                f"  quantization {a.quantization_bytes / 1024:4.1f}"
                f"  strings {a.string_bytes / 1024:4.1f}  structure {a.structure_bytes / 1024:4.1f}"
                f"  ({a.tensors} tensors, {a.operators} ops)"
            )
        checks = [
            (
                "int8 file ratio",
                entry["int8_file_ratio"],
                3.9,
                entry["int8_accuracy_drop_points"],
                1.0,
            ),
            (
                "int8 per-tensor+stripped vs stripped float32",
                entry["int8_stripped_ratio"],
                3.9,
                entry["int8_stripped_accuracy_drop_points"],
                1.0,
            ),
            (
                "prune75+int8+gzip",
                entry["prune75_int8_gzip_ratio"],
                10.0,
                entry["prune75_int8_accuracy_drop_points"],
                1.5,
            ),
            (
                "prune75 (4x1 blocks)+int8+gzip",
                entry["prune75_block_int8_gzip_ratio"],
                10.0,
                entry["prune75_block_int8_accuracy_drop_points"],
                1.5,
            ),
            (
                "prune75+cluster16+int8+gzip",
                entry["prune75_cluster16_int8_gzip_ratio"],
                10.0,
                entry["prune75_cluster16_int8_accuracy_drop_points"],
                1.5,
            ),
        ]
        for label, ratio, target, points, limit in checks:
            ok = ratio >= target and points <= limit
            line = (
                f"{name}: {label} {ratio:.2f}x (target >= {target}), accuracy drop "
                f"{points:.2f} points (<= {limit}): {'met' if ok else 'MISSED'}"
            )
            verdicts.append(line)
            print("  " + line)
        print(
            f"  ceiling: the weight buffers alone are {entry['int8_weights_only_ratio']:.2f}x "
            "smaller in int8 (int32 biases and shape constants do not shrink)"
        )
        qat_ok = entry["qat_minus_ptq_points"] >= -0.2
        line = (
            f"{name}: QAT - PTQ int8 accuracy {entry['qat_minus_ptq_points']:+.2f} points "
            f"(target >= -0.2): {'met' if qat_ok else 'MISSED'}"
        )
        verdicts.append(line)
        print("  " + line)
    sweep = _sweep(train.x, train.y)
    out["size_sweep"] = sweep
    print("\nint8 file ratio against model size:")
    for row in sweep:
        print(
            f"  {row['model']:<28} {row['params']:>9,d} params"
            f"  float32 {row['float32 KB']:8.1f} KB  int8 {row['int8 KB']:7.1f} KB"
            f"  ratio {row['int8 file ratio']:.2f}x (weights only {row['weights-only ratio']:.2f}x,"
            f" int8 overhead {row['int8 overhead KB']:.1f} KB)"
        )
    out["verdicts"] = verdicts
    path = ROOT / "build" / "bench" / "compression.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print("\n" + "\n".join(verdicts))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
