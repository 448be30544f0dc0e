"""Simulation speed: naive Keras loop vs reference runtime vs vectorised trainer vs compute floor.

Workload (issue 3): digits, Dirichlet α = 0.5, 100 clients, all selected every round,
1 local epoch, batch 16, the zoo digits CNN. Every method runs in its own subprocess (so
its peak memory is its own), one after another in this one run, and reports the median
seconds per round over ≥ 5 rounds after a warm-up round:

(a) naive   — set_weights / fit / get_weights per client (the common way)
(b) reference — fedlab's KerasRuntime (compiled step, one client after another)
(c) vectorised — fedlab's VectorizedRuntime (all clients in one compiled graph)
(d) floor   — one Keras ``fit`` epoch over the union of the clients' data, same batch size

Everything is measured twice, with TensorFlow's oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0:
what AVX2-only x86 and ARM CPUs run) and on (the default on AVX-512 VNNI/AMX CPUs).

Then a scaling sweep of (c) on the synthetic sensor fleet (100 / 1,000 / 5,000 clients per
round) and the quickstart's accuracy curve with either runtime. Writes
``build/bench/simulation.json``. Usage: ``python benchmarks/simulation.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak_mb`` over the window."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRSS:
        self.base = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def worker(method: str, rounds: int) -> dict[str, object]:
    import numpy as np

    from fedlab._tf import keras, tf
    from fedlab.data import federated_digits, federated_sensors
    from fedlab.federated import ClientPlan, KerasRuntime, VectorizedRuntime, client_seed
    from fedlab.models import build_model

    def plans(data, r, batch=16):  # type: ignore[no-untyped-def]
        return [
            (c, ClientPlan(c.client_id, r, 1, batch, 0.05, seed=client_seed(0, r, c.client_id)))
            for c in data.clients
        ]

    if method.startswith("quickstart:"):
        return quickstart_gap(int(method.split(":")[1]))
    if method.startswith("sweep:"):
        n = int(method.split(":")[1])
        data = federated_sensors(num_devices=n, test_devices=1, windows_per_device=20, seed=0)
        runtime = VectorizedRuntime(lambda: build_model("sensor_cnn1d", (100, 3), 6))
        w = runtime.initial_weights()
        runtime.train_clients(w, plans(data, 0))
        times = []
        with PeakRSS() as mem:
            for r in range(1, rounds + 1):
                start = time.perf_counter()
                runtime.train_clients(w, plans(data, r))
                times.append(time.perf_counter() - start)
        sec = float(np.median(times))
        data_mb = sum(c.x.nbytes + c.y.nbytes for c in data.clients) / 2**20
        updates_mb = n * sum(a.nbytes for a in w) / 2**20
        return {
            "clients": n,
            "examples": int(data.sizes.sum()),
            "seconds_per_round": sec,
            "data_mb": data_mb,
            "updates_mb": updates_mb,
            "peak_rss_minus_data_and_updates_mb": mem.peak_mb - data_mb - updates_mb,
            "ms_per_client": 1000 * sec / n,
            "peak_rss_mb": mem.peak_mb,
            "rss_growth_mb": mem.growth_mb,
            "calls_per_round": runtime.calls / (rounds + 1),
        }

    data = federated_digits(num_clients=100, alpha=0.5, seed=0)

    def model_fn() -> keras.Model:
        return build_model("digits_cnn", (8, 8, 1), 10, seed=0)

    out: dict[str, object] = {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count(),
    }
    if method in ("naive", "floor"):
        model = model_fn()
        model.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        w = model.get_weights()
        union = data.union()

        def one_round() -> None:
            if method == "floor":
                model.fit(union.x, union.y, batch_size=16, epochs=1, verbose=0)
                return
            for client in data.clients:
                model.set_weights(w)
                model.fit(client.x, client.y, batch_size=16, epochs=1, verbose=0)
                model.get_weights()
    else:
        runtime = KerasRuntime(model_fn) if method == "reference" else VectorizedRuntime(model_fn)
        w = runtime.initial_weights()
        counter = iter(range(10**6))

        def one_round() -> None:
            runtime.train_clients(w, plans(data, next(counter)))

    one_round()  # warm-up: tracing, allocator
    times = []
    with PeakRSS() as mem:
        for _ in range(rounds):
            start = time.perf_counter()
            one_round()
            times.append(time.perf_counter() - start)
    out.update(
        seconds_per_round=float(np.median(times)),
        all_rounds=times,
        peak_rss_mb=mem.peak_mb,
        rss_growth_mb=mem.growth_mb,
    )
    return out


def quickstart_gap(rounds: int) -> dict[str, object]:
    """The quickstart notebook's workload (10 of 100 clients per round, 5 local epochs,
    batch 10) with either runtime: the accuracy curves and the median wall time per round
    (evaluation included; the first round, which traces the graphs, excluded)."""
    import numpy as np

    from fedlab.data import federated_digits
    from fedlab.federated import build_federation

    data = federated_digits(num_clients=100, alpha=0.5, seed=0)
    curves, per_round = {}, {}
    for kind in ("vectorized", "reference"):
        fed = build_federation(
            data,
            model="digits_cnn",
            runtime=kind,
            clients_per_round=10,
            local_epochs=5,
            batch_size=10,
            client_lr=0.1,
            seed=0,
        )
        history = fed.run(rounds)
        curves[kind] = history.series("test_accuracy")
        per_round[kind] = float(np.median([r.wall_time_s for r in history][1:]))
    gap = np.abs(curves["vectorized"] - curves["reference"])
    return {
        "rounds": rounds,
        "max_accuracy_gap": float(gap.max()),
        "final_accuracy": {k: float(v[-1]) for k, v in curves.items()},
        "median_seconds_per_round": per_round,
        "speedup": per_round["reference"] / per_round["vectorized"],
    }


def run_worker(method: str, rounds: int, onednn: str) -> dict[str, object]:
    """Run one measurement in a fresh process with ``TF_ENABLE_ONEDNN_OPTS=onednn`` (it is
    read once, when TensorFlow is imported)."""
    cmd = [sys.executable, __file__, "--worker", method, "--rounds", str(rounds)]
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"worker {method} (oneDNN={onednn}) failed:\n{done.stderr[-3000:]}")
    if "FallbackWarning" in done.stderr:
        raise RuntimeError(f"worker {method} (oneDNN={onednn}) fell back:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


SETTINGS = {"0": "oneDNN off (AVX2-only x86, ARM)", "1": "oneDNN on (AVX-512 VNNI/AMX default)"}
LABELS = {
    "naive": "(a) naive Keras fit loop",
    "reference": "(b) fedlab reference runtime",
    "vectorized": "(c) fedlab vectorised trainer",
    "floor": "(d) floor: one fit epoch on union",
}


def measure(onednn: str, quick: bool, rounds: int) -> dict[str, object]:
    """Every measurement of this benchmark under one oneDNN setting."""
    results: dict[str, dict[str, object]] = {}
    for method in LABELS:
        print(f"[oneDNN={onednn}] measuring {LABELS[method]} …", flush=True)
        results[method] = run_worker(method, rounds, onednn)
    sec = {m: float(results[m]["seconds_per_round"]) for m in results}  # type: ignore[arg-type]
    ratios = {
        "naive_over_vectorized": sec["naive"] / sec["vectorized"],
        "reference_over_vectorized": sec["reference"] / sec["vectorized"],
        "vectorized_over_floor": sec["vectorized"] / sec["floor"],
    }
    sweep = []
    for n in (100, 1000) if quick else (100, 1000, 5000):
        print(f"[oneDNN={onednn}] sweep: {n} clients per round …", flush=True)
        sweep.append(run_worker(f"sweep:{n}", 5, onednn))
    print(f"[oneDNN={onednn}] quickstart workload with either runtime …", flush=True)
    gap = run_worker(f"quickstart:{20 if quick else 50}", 0, onednn)
    return {
        "results": results,
        "seconds": sec,
        "ratios": ratios,
        "sweep": sweep,
        "quickstart": gap,
    }


def report(onednn: str, m: dict[str, object], rounds: int) -> None:
    """Print one setting's tables and ratios."""
    results, sec, ratios = m["results"], m["seconds"], m["ratios"]  # type: ignore[index]
    gap = m["quickstart"]
    threads = results["vectorized"]  # type: ignore[index]
    print()
    print(f"== {SETTINGS[onednn]} (TF_ENABLE_ONEDNN_OPTS={onednn})")
    print(
        "digits, Dirichlet 0.5, 100 clients/round, 1 epoch, batch 16, digits CNN "
        f"(median of {rounds} rounds after a warm-up)"
    )
    print(
        f"threads: intra-op {threads['intra_op_threads']} (0 = all cores), "
        f"inter-op {threads['inter_op_threads']}, cores {threads['cpu_count']}"
    )
    print(f"{'method':<38} {'s/round':>9} {'peak RSS MB':>12} {'RSS growth MB':>14}")
    for method, r in results.items():  # type: ignore[attr-defined]
        print(
            f"{LABELS[method]:<38} {sec[method]:9.3f} {float(r['peak_rss_mb']):12.0f} "
            f"{float(r['rss_growth_mb']):14.1f}"
        )
    print(f"a/c = {ratios['naive_over_vectorized']:.1f}x   (target >= 30)")
    print(f"b/c = {ratios['reference_over_vectorized']:.1f}x")
    print(f"c/d = {ratios['vectorized_over_floor']:.2f}    (target <= 1.0)")
    print("scaling sweep, synthetic sensor fleet, sensor 1-D CNN, vectorised")
    print(
        f"{'clients':>8} {'examples':>9} {'s/round':>9} {'ms/client':>10} {'calls':>6} "
        f"{'peak RSS MB':>12} {'data MB':>8} {'updates MB':>11} {'rest MB':>8}"
    )
    for row in m["sweep"]:  # type: ignore[attr-defined]
        print(
            f"{row['clients']:>8} {row['examples']:>9} {float(row['seconds_per_round']):9.3f} "
            f"{float(row['ms_per_client']):10.3f} {float(row['calls_per_round']):6.0f} "
            f"{float(row['peak_rss_mb']):12.0f} {float(row['data_mb']):8.0f} "
            f"{float(row['updates_mb']):11.0f} "
            f"{float(row['peak_rss_minus_data_and_updates_mb']):8.0f}"
        )
    per_client = [float(r["ms_per_client"]) for r in m["sweep"]]  # type: ignore[attr-defined]
    print(f"per-client cost, max/min across the sweep = {max(per_client) / min(per_client):.2f}")
    print(
        f"quickstart workload (10 clients/round, 5 epochs, batch 10; {gap['rounds']} rounds, "  # type: ignore[index]
        f"evaluation included): reference / vectorised wall time = {gap['speedup']:.2f}x "  # type: ignore[index]
        f"(target >= 2); max |accuracy gap| {gap['max_accuracy_gap']:.4f}"  # type: ignore[index]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sweep")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rounds)))
        return 0
    rounds = 5
    measured = {onednn: measure(onednn, args.quick, rounds) for onednn in SETTINGS}
    for onednn, m in measured.items():
        report(onednn, m, rounds)
    out = ROOT / "build" / "bench" / "simulation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "workload": "digits dirichlet0.5, 100 clients/round, 1 epoch, batch 16, digits_cnn",
                "settings": {
                    f"TF_ENABLE_ONEDNN_OPTS={onednn}": {
                        "description": SETTINGS[onednn],
                        "seconds_per_round": {
                            "naive_keras_fit_loop": m["seconds"]["naive"],  # type: ignore[index]
                            "reference_runtime": m["seconds"]["reference"],  # type: ignore[index]
                            "vectorized_runtime": m["seconds"]["vectorized"],  # type: ignore[index]
                            "floor_fit_epoch_on_union": m["seconds"]["floor"],  # type: ignore[index]
                        },
                        "ratios": m["ratios"],
                        "peak_rss_mb": {
                            k: v["peak_rss_mb"]
                            for k, v in m["results"].items()  # type: ignore[attr-defined]
                        },
                        "scaling_sweep": m["sweep"],
                        "quickstart": m["quickstart"],
                    }
                    for onednn, m in measured.items()
                },
            },
            indent=1,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
