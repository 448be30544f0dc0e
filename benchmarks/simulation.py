"""Simulation speed: naive Keras loop vs reference runtime vs vectorised trainer vs compute floor.

Workload (issue 3): digits, Dirichlet α = 0.5, 100 clients, all selected every round,
1 local epoch, batch 16, the zoo digits CNN. Every method runs in its own subprocess (so
its peak memory is its own), one after another in this one run, and reports the median
seconds per round over ≥ 5 rounds after a warm-up round:

(a) naive   — set_weights / fit / get_weights per client (the common way)
(b) reference — fedlab's KerasRuntime (compiled step, one client after another)
(c) vectorised — fedlab's VectorizedRuntime (all clients in one compiled graph)
(d) floor   — one Keras ``fit`` epoch over the union of the clients' data, same batch size

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
    import numpy as np

    from fedlab.data import federated_digits
    from fedlab.federated import build_federation

    data = federated_digits(num_clients=100, alpha=0.5, seed=0)
    curves, seconds = {}, {}
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
        start = time.perf_counter()
        curves[kind] = fed.run(rounds).series("test_accuracy")
        seconds[kind] = time.perf_counter() - start
    gap = np.abs(curves["vectorized"] - curves["reference"])
    return {
        "rounds": rounds,
        "max_accuracy_gap": float(gap.max()),
        "final_accuracy": {k: float(v[-1]) for k, v in curves.items()},
        "seconds": seconds,
        "speedup": seconds["reference"] / seconds["vectorized"],
    }


def run_worker(method: str, rounds: int) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", method, "--rounds", str(rounds)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    results: dict[str, dict[str, object]] = {}
    labels = {
        "naive": "(a) naive Keras fit loop",
        "reference": "(b) fedlab reference runtime",
        "vectorized": "(c) fedlab vectorised trainer",
        "floor": "(d) floor: one fit epoch on union",
    }
    for method in ("naive", "reference", "vectorized", "floor"):
        print(f"measuring {labels[method]} …", flush=True)
        results[method] = run_worker(method, rounds if method != "naive" or not args.quick else 5)
    sec = {m: float(results[m]["seconds_per_round"]) for m in results}  # type: ignore[arg-type]
    ratios = {
        "naive_over_vectorized": sec["naive"] / sec["vectorized"],
        "reference_over_vectorized": sec["reference"] / sec["vectorized"],
        "vectorized_over_floor": sec["vectorized"] / sec["floor"],
    }
    sizes = (100, 1000) if args.quick else (100, 1000, 5000)
    sweep = []
    for n in sizes:
        print(f"sweep: {n} clients per round …", flush=True)
        sweep.append(run_worker(f"sweep:{n}", 5))
    per_client = [float(s["ms_per_client"]) for s in sweep]  # type: ignore[arg-type]
    print("quickstart accuracy curves with either runtime …", flush=True)
    gap = quickstart_gap(20 if args.quick else 50)

    threads = results["vectorized"]
    print()
    print(
        "digits, Dirichlet 0.5, 100 clients/round, 1 epoch, batch 16, digits CNN "
        f"(median of {rounds} rounds after a warm-up)"
    )
    print(
        f"threads: intra-op {threads['intra_op_threads']} (0 = all cores), "
        f"inter-op {threads['inter_op_threads']}, cores {threads['cpu_count']}"
    )
    print(f"{'method':<38} {'s/round':>9} {'peak RSS MB':>12} {'RSS growth MB':>14}")
    for method in results:
        r = results[method]
        print(
            f"{labels[method]:<38} {sec[method]:9.3f} {float(r['peak_rss_mb']):12.0f} "  # type: ignore[arg-type]
            f"{float(r['rss_growth_mb']):14.1f}"
        )  # type: ignore[arg-type]
    print(f"a/c = {ratios['naive_over_vectorized']:.1f}x   (target >= 30)")
    print(f"b/c = {ratios['reference_over_vectorized']:.1f}x")
    print(f"c/d = {ratios['vectorized_over_floor']:.2f}    (target <= 1.0)")
    print()
    print("scaling sweep, synthetic sensor fleet, sensor 1-D CNN, vectorised")
    print(
        f"{'clients':>8} {'examples':>9} {'s/round':>9} {'ms/client':>10} {'calls':>6} "
        f"{'peak RSS MB':>12} {'data MB':>8} {'updates MB':>11} {'rest MB':>8}"
    )
    for s in sweep:
        print(
            f"{s['clients']:>8} {s['examples']:>9} {float(s['seconds_per_round']):9.3f} "  # type: ignore[arg-type]
            f"{float(s['ms_per_client']):10.3f} {float(s['calls_per_round']):6.0f} "  # type: ignore[arg-type]
            f"{float(s['peak_rss_mb']):12.0f} {float(s['data_mb']):8.0f} "  # type: ignore[arg-type]
            f"{float(s['updates_mb']):11.0f} {float(s['peak_rss_minus_data_and_updates_mb']):8.0f}"
        )  # type: ignore[arg-type]
    print(
        "(data and the returned per-client updates grow with the cohort by design; the rest —\n"
        " the trainer's working memory — is bounded by the chunk size)"
    )
    flat = max(per_client) / min(per_client)
    print(f"per-client cost, max/min across the sweep = {flat:.2f}   (target <= 1.5)")
    print()
    print(
        f"quickstart ({gap['rounds']} rounds): max |accuracy gap| vectorised vs reference = "
        f"{gap['max_accuracy_gap']:.4f}; final {gap['final_accuracy']}; "
        f"wall-time speedup {gap['speedup']:.1f}x"
    )

    out = ROOT / "build" / "bench" / "simulation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "workload": "digits dirichlet0.5, 100 clients/round, 1 epoch, batch 16, digits_cnn",
                "seconds_per_round": {
                    "naive_keras_fit_loop": sec["naive"],
                    "reference_runtime": sec["reference"],
                    "vectorized_runtime": sec["vectorized"],
                    "floor_fit_epoch_on_union": sec["floor"],
                },
                "peak_rss_mb": {m: results[m]["peak_rss_mb"] for m in results},
                "rss_growth_mb": {m: results[m]["rss_growth_mb"] for m in results},
                "ratios": ratios,
                "threads": {
                    k: threads[k] for k in ("intra_op_threads", "inter_op_threads", "cpu_count")
                },
                "scaling_sweep": sweep,
                "per_client_cost_max_over_min": flat,
                "quickstart_equivalence": gap,
            },
            indent=1,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
