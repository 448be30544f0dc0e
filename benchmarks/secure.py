"""Secure-aggregation targets of issue 15, side by side with plain aggregation in one run;
writes ``build/bench/secure.json``.

For a cohort of ``--clients`` (100) with ``--params`` (1e5) parameters, once over the
complete graph (Bonawitz et al. 2017) and once over the SecAgg+ graph that
:func:`fedlab.secure.plan_neighbours` picks for the dropout rate:

* upload expansion: a client's bytes over all four stages / plain float32 (target <= 1.1x);
* server unmasking with ``--dropout`` (30 %) of the clients lost after sharing keys, the
  costliest place to lose them (their pairwise masks must be rebuilt) (target <= 1 s);
* client masking time for one update (target <= 50 ms);
* the plain equivalents: float32 serialisation on the client, a weighted sum on the server;
* that the secure sum equals the plain weighted sum within the fixed-point bound.

Timings are medians over ``--repeats`` rounds on a shared machine: read them as upper bounds.
Usage: ``python benchmarks/secure.py [--clients 100] [--params 100000] [--dropout 0.3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from fedlab.secure import (
    MASKED_INPUT,
    STAGES,
    UNMASK,
    RoundSetup,
    SecAggConfig,
    plain_sum,
    plan_neighbours,
    run_round,
)

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 1000


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_row(updates, counts, survivors, repeats: int) -> dict:
    """Plain FedAvg: float32 on the wire, a weighted sum on the server."""
    x0 = updates[survivors[0]]

    def aggregate():
        total = np.zeros(x0.size, dtype=np.float64)
        for c in survivors:
            total += counts[c] * updates[c]
        return total / sum(counts[c] for c in survivors)

    return {
        "upload bytes per client": int(x0.astype(np.float32).nbytes),
        "client encode s": _median_time(lambda: x0.astype(np.float32).tobytes(), 20),
        "server aggregate s": _median_time(aggregate, repeats),
    }


def secure_row(name, k, t, n, d, updates, counts, lost, repeats: int) -> dict:
    config = SecAggConfig(threshold=t, clip=1.0, num_neighbours=k, max_examples=MAX_EXAMPLES)
    unmask, masking, sharing, server_total, exact = [], [], [], [], []
    unmask_cpu, masking_cpu = [], []
    failure = None
    for r in range(repeats):
        setup = RoundSetup.create(
            config,
            round_index=r,
            cohort=range(n),
            dimension=d,
            seed=f"bench round {r}".encode().ljust(32, b"."),
        )
        out = run_round(setup, updates, counts, drop={MASKED_INPUT: lost})
        if out.result is None:  # the graph is too sparse for this dropout: say so, go on
            failure = str(out.failure)
            masking.append(out.client_seconds[MASKED_INPUT])
            masking_cpu.append(out.client_cpu_seconds[MASKED_INPUT])
            sharing.append(out.client_seconds["share_keys"])
            break
        res = out.result
        expected, _ = plain_sum({c: updates[c] for c in res.contributors}, counts, setup.codec)
        exact.append(float(np.max(np.abs(res.total - expected))) / res.error_bound)
        unmask.append(out.server_seconds[UNMASK])
        unmask_cpu.append(out.server_cpu_seconds[UNMASK])
        masking_cpu.append(out.client_cpu_seconds[MASKED_INPUT])
        server_total.append(sum(out.server_seconds.values()))
        masking.append(out.client_seconds[MASKED_INPUT])
        sharing.append(out.client_seconds["share_keys"])
    # expansion without dropouts: every client goes through all four stages
    full = run_round(
        RoundSetup.create(config, round_index=99, cohort=range(n), dimension=d), updates, counts
    )
    upload = statistics.mean(full.upload_bytes.values())
    return {
        "graph": name,
        "degree k": setup.degree,
        "threshold t": t,
        "upload bytes per client": upload,
        "download bytes per client": statistics.mean(full.download_bytes.values()),
        "client masking s": statistics.median(masking),
        "client masking cpu s": statistics.median(masking_cpu),
        "server unmask cpu s": statistics.median(unmask_cpu) if unmask_cpu else None,
        "client key sharing s": statistics.median(sharing),
        "server unmask s": statistics.median(unmask) if unmask else None,
        "server all stages s": statistics.median(server_total) if unmask else None,
        "max |error| / bound": max(exact) if exact else None,
        "failure at this dropout": failure,
        "stages": list(STAGES),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, d = args.clients, args.params

    rng = np.random.default_rng(0)
    updates = {c: rng.normal(0, 0.05, d).astype(np.float32) for c in range(n)}
    counts = {c: int(rng.integers(10, MAX_EXAMPLES)) for c in range(n)}
    lost = set(rng.choice(n, size=round(args.dropout * n), replace=False).tolist())
    survivors = sorted(set(range(n)) - lost)

    plain = plain_row(updates, counts, survivors, args.repeats)
    k_plus, t_plus = plan_neighbours(n, args.dropout)
    rows = [
        secure_row("complete (SecAgg)", None, n // 2 + 1, n, d, updates, counts, lost, args.repeats)
    ]
    if k_plus < n - 1:
        rows.append(
            secure_row(
                f"k-regular (SecAgg+, planned for {args.dropout:.0%} dropout)",
                k_plus,
                t_plus,
                n,
                d,
                updates,
                counts,
                lost,
                args.repeats,
            )
        )
    k_mid = 2 * ((3 * n // 5) // 2)
    if 2 <= k_mid < min(k_plus, n - 1):
        rows.append(
            secure_row(
                f"k-regular (SecAgg+, k = 0.6 n = {k_mid})",
                k_mid,
                k_mid // 2 + 1,
                n,
                d,
                updates,
                counts,
                lost,
                args.repeats,
            )
        )
    k_small = max(2, 2 * int(np.ceil(np.log2(n))))
    rows.append(
        secure_row(
            f"k-regular (SecAgg+, k = 2·⌈log2 n⌉ = {k_small})",
            k_small,
            k_small // 2 + 1,
            n,
            d,
            updates,
            counts,
            lost,
            args.repeats,
        )
    )

    f32 = plain["upload bytes per client"]
    print(f"{n} clients, {d} parameters, {len(lost)} ({args.dropout:.0%}) lost after sharing keys")
    print(
        f"plain float32: upload {f32} B/client, client encode "
        f"{1e3 * plain['client encode s']:.2f} ms, server weighted sum of {len(survivors)} "
        f"{1e3 * plain['server aggregate s']:.1f} ms"
    )
    head = (
        f"{'graph':<44} {'k':>3} {'t':>3} {'upload ×':>9} {'mask ms':>8} {'(cpu)':>6} "
        f"{'share ms':>9} {'unmask s':>9} {'(cpu)':>6} {'server s':>9} {'unmask/plain':>13} "
        f"{'err/bound':>9}"
    )
    print(head)
    for row in rows:
        row["upload expansion"] = row["upload bytes per client"] / f32
        row["masking / plain encode"] = row["client masking s"] / plain["client encode s"]
        common = (
            f"{row['graph']:<44} {row['degree k']:>3} {row['threshold t']:>3} "
            f"{row['upload expansion']:>9.4f} {1e3 * row['client masking s']:>8.1f} "
            f"{1e3 * row['client masking cpu s']:>6.1f} {1e3 * row['client key sharing s']:>9.1f}"
        )
        if row["failure at this dropout"]:
            print(f"{common}   {row['failure at this dropout']}")
            continue
        row["unmask / plain aggregate"] = row["server unmask s"] / plain["server aggregate s"]
        print(
            f"{common} {row['server unmask s']:>9.3f} {row['server unmask cpu s']:>6.3f} "
            f"{row['server all stages s']:>9.3f} {row['unmask / plain aggregate']:>13.1f} "
            f"{row['max |error| / bound']:>9.3f}"
        )
    worst = {
        "upload expansion": max(r["upload expansion"] for r in rows),
        "server unmask s": max(r["server unmask s"] for r in rows if r["server unmask s"]),
        "client masking s": max(r["client masking s"] for r in rows),
        "server unmask cpu s": max(
            r["server unmask cpu s"] for r in rows if r["server unmask cpu s"]
        ),
        "client masking cpu s": max(r["client masking cpu s"] for r in rows),
    }
    print(
        f"targets: upload ≤ 1.1× (worst {worst['upload expansion']:.4f}×), "
        f"unmask ≤ 1 s (worst {worst['server unmask s']:.3f} s wall, "
        f"{worst['server unmask cpu s']:.3f} s cpu), "
        f"masking ≤ 50 ms (worst {1e3 * worst['client masking s']:.1f} ms wall, "
        f"{1e3 * worst['client masking cpu s']:.1f} ms cpu)"
    )
    print(
        f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(wall times include waiting for a CPU; cpu times do not)"
    )
    out = {
        "config": {**vars(args), "lost": sorted(lost), "max_examples": MAX_EXAMPLES},
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
            "load average": os.getloadavg(),
        },
        "plain": plain,
        "secure": rows,
        "worst": worst,
        "targets_met": {
            "upload expansion <= 1.1": worst["upload expansion"] <= 1.1,
            "server unmask <= 1 s (wall)": worst["server unmask s"] <= 1.0,
            "server unmask <= 1 s (cpu)": worst["server unmask cpu s"] <= 1.0,
            "client masking <= 50 ms (wall)": worst["client masking s"] <= 0.05,
            "client masking <= 50 ms (cpu)": worst["client masking cpu s"] <= 0.05,
        },
    }
    path = ROOT / "build" / "bench" / "secure.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
