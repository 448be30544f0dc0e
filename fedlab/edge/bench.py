"""Latency of a model on this device: inference, and a train step when it has one.

Usage::

    python -m fedlab.edge.bench MODEL.tflite [--runs 200] [--threads 1] [--json]

A trainable model (with ``MODEL.json`` beside it) is timed through its ``infer`` and
``train`` signatures; any other ``.tflite`` through a plain invoke. Median and p90 of
``--runs`` calls after warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["latency", "main"]


def latency(call: Callable[[], Any], runs: int, warmup: int = 10) -> dict[str, float]:
    """Median and p90 milliseconds of ``call`` over ``runs`` calls after ``warmup``."""
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        call()
        times[i] = time.perf_counter() - t
    return {
        "median_ms": float(np.median(times) * 1e3),
        "p90_ms": float(np.percentile(times, 90) * 1e3),
    }


def bench_model(path: str | Path, *, runs: int = 200, threads: int = 1) -> dict[str, Any]:
    """Latencies of one model (see the module docstring)."""
    from ai_edge_litert.interpreter import Interpreter

    from fedlab.edge.model import ModelSpec, TrainableModel

    p = Path(path)
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"model": p.name, "bytes": p.stat().st_size, "threads": threads}
    meta = p.with_suffix(".json")
    if meta.is_file():
        spec = ModelSpec.load(meta)
        model = TrainableModel(p, spec, threads=threads)
        b = spec.batch_size
        x = rng.normal(size=(b, *spec.input_shape)).astype(np.float32)
        y = rng.integers(0, spec.num_classes, b).astype(np.int32)
        w = np.full(b, 1.0 / b, np.float32)
        out["batch"] = b
        out["infer"] = latency(lambda: model.logits(x), runs)
        out["train_step"] = latency(lambda: model.train_step(x, y, w, lr=1e-4), runs)
        return out
    interpreter = Interpreter(model_path=str(p), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    feed = np.zeros(inp["shape"], inp["dtype"])
    interpreter.set_tensor(inp["index"], feed)
    out["batch"] = int(inp["shape"][0])
    out["infer"] = latency(interpreter.invoke, runs)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m fedlab.edge.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    from fedlab.log import add_log_level_argument, configure_logging

    add_log_level_argument(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if not Path(args.model).is_file():
        print(f"fedlab-bench: {args.model}: no such file", file=sys.stderr)
        return 2
    result = bench_model(args.model, runs=args.runs, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    head = f"{result['model']}: {result['bytes']} bytes, batch {result['batch']}"
    print(f"{head}, {args.threads} thread(s)")
    for key in ("infer", "train_step"):
        if key in result:
            r = result[key]
            print(f"  {key:<10} median {r['median_ms']:.3f} ms   p90 {r['p90_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
