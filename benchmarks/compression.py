"""Compression targets of issue 4, measured in one run; writes ``build/bench/compression.json``.

For the digits CNN and the sensor 1-D CNN (trained centrally first): the float32, int8
(post-training and QAT), pruned and clustered ``.tflite`` models, measured through LiteRT.
Prints the ratios the issue sets targets for:

* int8 at least 3.9× smaller than float32, accuracy drop ≤ 1 point;
* pruned 75 % + int8 + gzip at least 10× smaller than float32, drop ≤ 1.5 points;
* QAT int8 accuracy ≥ post-training int8 − 0.2 points.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--fine-tune", type=int, default=6)
    args = parser.parse_args()

    from fedlab.data import federated_sensors, load_digits
    from fedlab.models import build_model
    from fedlab.optimize import Recipe, compare, fit, keras_accuracy

    recipes = (
        Recipe("float32"),
        Recipe("int8", mode="int8", int8_io=True),
        Recipe("qat-int8", qat=True, mode="int8", int8_io=True, fine_tune_epochs=args.fine_tune),
        Recipe(
            "prune75-int8", prune=0.75, mode="int8", int8_io=True, fine_tune_epochs=args.fine_tune
        ),
        Recipe(
            "prune75-cluster16-int8",
            prune=0.75,
            cluster=16,
            mode="int8",
            int8_io=True,
            fine_tune_epochs=args.fine_tune,
        ),
    )
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
    for name, (model, tr, te) in cases.items():
        fit(model, tr[0], tr[1], epochs=args.epochs, seed=0)
        results = {r.recipe.name: r for r in compare(model, tr, te, recipes)}
        f32, i8 = results["float32"], results["int8"]
        weights_f32 = sum(w.nbytes for w in model.get_weights())
        entry = {
            "keras_accuracy": keras_accuracy(model, te[0], te[1]),
            "rows": {k: r.row for k, r in results.items()},
            "int8_file_ratio": f32.report.size_bytes / i8.report.size_bytes,
            "int8_weights_only_ratio": weights_f32 / (weights_f32 / 4),
            "int8_fixed_overhead_kb": (i8.report.size_bytes - weights_f32 / 4) / 1024,
            "int8_accuracy_drop_points": 100 * (f32.row["accuracy"] - i8.row["accuracy"]),
            "prune75_int8_gzip_ratio": f32.report.size_bytes
            / results["prune75-int8"].report.gzip_bytes,
            "prune75_int8_accuracy_drop_points": 100
            * (f32.row["accuracy"] - results["prune75-int8"].row["accuracy"]),
            "prune75_cluster16_int8_gzip_ratio": f32.report.size_bytes
            / results["prune75-cluster16-int8"].report.gzip_bytes,
            "prune75_cluster16_int8_accuracy_drop_points": 100
            * (f32.row["accuracy"] - results["prune75-cluster16-int8"].row["accuracy"]),
            "qat_minus_ptq_points": 100
            * (results["qat-int8"].row["accuracy"] - i8.row["accuracy"]),
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
        print(
            f"  int8 file ratio {entry['int8_file_ratio']:.2f}x "
            "(target >= 3.9; weights alone 4.0x, "
            f"fixed overhead {entry['int8_fixed_overhead_kb']:.1f} KB), accuracy drop "
            f"{entry['int8_accuracy_drop_points']:.2f} points (target <= 1)"
        )
        print(
            f"  prune75+int8+gzip {entry['prune75_int8_gzip_ratio']:.2f}x (target >= 10), drop "
            f"{entry['prune75_int8_accuracy_drop_points']:.2f} points (target <= 1.5)"
        )
        print(
            "  prune75+cluster16+int8+gzip "
            f"{entry['prune75_cluster16_int8_gzip_ratio']:.2f}x, drop "
            f"{entry['prune75_cluster16_int8_accuracy_drop_points']:.2f} points"
        )
        print(
            f"  QAT - PTQ int8 accuracy {entry['qat_minus_ptq_points']:+.2f} points "
            "(target >= -0.2)"
        )
    path = ROOT / "build" / "bench" / "compression.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
