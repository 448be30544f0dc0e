"""Distributed discrete Gaussian: what the noise costs a device, and what it buys in ε;
writes ``build/bench/ddg.json``.

In one run, side by side:

* the time to draw ``--params`` (1e5) discrete Gaussian values on one client against the time
  of the masking it rides on (``SecAggClient.masked_input`` without noise, same size, in a
  round of ``--clients`` over the complete graph), and the same masking with the noise hook;
* ε after 10 and 100 rounds at δ = 1e-5 for d = the digits CNN's parameter count (or
  ``--params`` with ``--no-model``) and n = 10..100 contributors, σ chosen by
  :func:`fedlab.privacy.ddg.plan_ddg` so the central-equivalent noise multiplier
  √n·σ/Δ2 is 1.0 in a 32-bit ring, next to dp-accounting's continuous Gaussian of the same
  total noise (RDP with the same orders, and PLD);
* the gap to the exact lower bound: ε of the exact 1-D mechanism (convolved pmfs,
  dp-accounting PLD) for the small-σ cases the tests check.

Times are medians of ``--repeats`` on a shared machine: read them as upper bounds.
Usage: ``python benchmarks/ddg.py [--params 100000] [--clients 10] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import dp_accounting
import numpy as np

from fedlab.privacy.ddg import (
    RDP_ORDERS,
    DDGLedger,
    Sensitivity,
    ddg_tau,
    exact_epsilon_1d,
    plan_ddg,
)
from fedlab.secure import MASKED_INPUT, RoundSetup, SecAggConfig, run_round
from fedlab.secure.ddg import DistributedDiscreteGaussian, sample_discrete_gaussian

ROOT = Path(__file__).resolve().parent.parent
DELTA = 1e-5
LOWER_BOUND_CASES = [(1.0, 10, 3, 10), (2.0, 10, 5, 10), (2.0, 50, 20, 1), (4.0, 20, 10, 100)]


def _median(fn, repeats: int) -> tuple[float, float]:
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def speed(d: int, clients: int, repeats: int) -> dict:
    """Sampler vs masking on one client, for ``d`` coordinates."""
    plan = plan_ddg(
        l2_clip=1.0,
        dim=d,
        contributors=clients,
        max_clients=clients,
        noise_multiplier=1.0,
        tail=1e-40,
    )
    rng = np.random.default_rng()
    sample_discrete_gaussian(plan.noise.sigma, 1000, rng)  # warm up
    draw = _median(lambda: sample_discrete_gaussian(plan.noise.sigma, d, rng), repeats)
    truncated = _median(lambda: plan.noise.sample(d, rng), repeats)
    config = SecAggConfig(
        threshold=clients // 2 + 1, clip=1.0, weighted=False, noise_bound=plan.noise.bound
    )
    updates = {c: rng.uniform(-0.01, 0.01, d) for c in range(clients)}
    counts = dict.fromkeys(range(clients), 1)
    masked, noised = [], []
    for r in range(repeats):
        setup = RoundSetup.create(config, round_index=r, cohort=range(clients), dimension=d)
        out = run_round(setup, updates, counts)
        masked.append((out.client_seconds[MASKED_INPUT], out.client_cpu_seconds[MASKED_INPUT]))
        out = run_round(setup, updates, counts, noise=plan.noise.noise(rng))
        noised.append((out.client_seconds[MASKED_INPUT], out.client_cpu_seconds[MASKED_INPUT]))
    mask = statistics.median(m[0] for m in masked), statistics.median(m[1] for m in masked)
    mask_noise = statistics.median(m[0] for m in noised), statistics.median(m[1] for m in noised)
    return {
        "params": d,
        "clients": clients,
        "sigma": plan.noise.sigma,
        "bound": plan.noise.bound,
        "sampler s": draw[0],
        "sampler cpu s": draw[1],
        "truncated sampler s": truncated[0],
        "masked_input s": mask[0],
        "masked_input cpu s": mask[1],
        "masked_input with noise s": mask_noise[0],
        "masked_input with noise cpu s": mask_noise[1],
    }


def _gaussian(z: float, rounds: int) -> tuple[float, float]:
    acc = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    acc.compose(dp_accounting.GaussianDpEvent(z), rounds)
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    pld.compose(dp_accounting.GaussianDpEvent(z), rounds)
    return float(acc.get_epsilon(DELTA)), float(pld.get_epsilon(DELTA))


def epsilon_table(d: int, cohorts: list[int], rounds: list[int]) -> list[dict]:
    """ε of the DDG (z = 1 central-equivalent) against the continuous Gaussian."""
    rows = []
    for t in rounds:
        gauss_rdp, gauss_pld = _gaussian(1.0, t)
        # truncation costs e^ε·η in δ: keep η below 1e-3·δ·e^(-1.2 ε)
        tail = 1e-3 * DELTA * math.exp(-1.2 * gauss_rdp)
        for n in cohorts:
            plan = plan_ddg(
                l2_clip=1.0,
                dim=d,
                contributors=n,
                max_clients=n,
                noise_multiplier=1.0,
                tail=tail,
                draws=n * d * t,
            )
            ledger = DDGLedger(delta=DELTA)
            for _ in range(t):
                ledger.record_round(noise=plan.noise, contributors=n, sensitivity=plan.sensitivity)
            eps = ledger.epsilon()
            rows.append(
                {
                    "rounds": t,
                    "contributors": n,
                    "dim": d,
                    "sigma": plan.noise.sigma,
                    "bound / sigma": plan.noise.bound / plan.noise.sigma,
                    "levels": plan.codec.levels,
                    "tau": ddg_tau(plan.noise.sigma, n),
                    "truncation eta": ledger.truncation_mass(),
                    "epsilon ddg": eps,
                    "epsilon gaussian rdp": gauss_rdp,
                    "epsilon gaussian pld": gauss_pld,
                    "ddg / gaussian rdp": eps / gauss_rdp,
                }
            )
    return rows


def lower_bound_gaps() -> list[dict]:
    """The ledger's ε against the exact 1-D ε (a lower bound) where it can be computed."""
    rows = []
    for sigma, n, shift, t in LOWER_BOUND_CASES:
        exact = exact_epsilon_1d(sigma=sigma, shares=n, sensitivity=shift, rounds=t, delta=DELTA)
        ledger = DDGLedger(delta=DELTA)
        noise = DistributedDiscreteGaussian(sigma=sigma, bound=math.ceil(60 * sigma) + 1)
        sens = Sensitivity.from_l2(float(shift), dim=1, adjacency="replace-one")
        for _ in range(t):
            ledger.record_round(noise=noise, contributors=n, sensitivity=sens)
        eps = ledger.epsilon()
        rows.append(
            {
                "sigma": sigma,
                "contributors": n,
                "sensitivity": shift,
                "rounds": t,
                "z": math.sqrt(n) * sigma / shift,
                "epsilon exact 1-D": exact,
                "epsilon ddg": eps,
                "ratio": eps / exact,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-model", action="store_true", help="use --params for the ε table")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "ddg.json")
    args = parser.parse_args()

    s = speed(args.params, args.clients, args.repeats)
    print(
        f"one client, {s['params']} coordinates, σ = {s['sigma']:.4g}, bound = {s['bound']} "
        f"({args.clients} clients, complete graph)"
    )
    print(
        f"  discrete Gaussian sampler      {1e3 * s['sampler s']:7.1f} ms "
        f"({1e3 * s['sampler cpu s']:.1f} cpu); with truncation "
        f"{1e3 * s['truncated sampler s']:.1f} ms"
    )
    print(
        f"  masked_input without noise     {1e3 * s['masked_input s']:7.1f} ms "
        f"({1e3 * s['masked_input cpu s']:.1f} cpu)"
    )
    print(
        f"  masked_input with the DDG hook {1e3 * s['masked_input with noise s']:7.1f} ms "
        f"({1e3 * s['masked_input with noise cpu s']:.1f} cpu); sampler / masking = "
        f"{s['sampler s'] / s['masked_input s']:.2f}"
    )

    if args.no_model:
        d = args.params
        what = f"d = {d}"
    else:
        from fedlab.models import digits_cnn

        d = int(digits_cnn((8, 8, 1), 10, seed=0).count_params())
        what = f"d = {d} (the digits CNN)"
    table = epsilon_table(d, [10, 20, 50, 100], [10, 100])
    print(
        f"\nε at δ = {DELTA:g}, {what}, replace-one adjacency, central-equivalent noise "
        "multiplier √n·σ/Δ2 = 1.0, 32-bit ring"
    )
    print(
        f"{'rounds':>6} {'n':>4} {'σ (int)':>10} {'bound/σ':>8} {'levels':>10} {'τ':>8} "
        f"{'η':>9} {'ε DDG':>8} {'ε Gauss RDP':>12} {'ε Gauss PLD':>12} {'DDG/RDP':>10}"
    )
    for r in table:
        print(
            f"{r['rounds']:>6} {r['contributors']:>4} {r['sigma']:>10.4g} "
            f"{r['bound / sigma']:>8.2f} {r['levels']:>10} {r['tau']:>8.1e} "
            f"{r['truncation eta']:>9.1e} {r['epsilon ddg']:>8.3f} "
            f"{r['epsilon gaussian rdp']:>12.3f} {r['epsilon gaussian pld']:>12.3f} "
            f"{r['ddg / gaussian rdp']:>10.7f}"
        )

    gaps = lower_bound_gaps()
    print(f"\nagainst the exact 1-D mechanism (a lower bound), δ = {DELTA:g}")
    print(f"{'σ':>5} {'n':>4} {'Δ':>4} {'T':>4} {'z':>6} {'ε exact':>9} {'ε DDG':>9} {'ratio':>7}")
    for g in gaps:
        print(
            f"{g['sigma']:>5g} {g['contributors']:>4} {g['sensitivity']:>4} {g['rounds']:>4} "
            f"{g['z']:>6.3f} {g['epsilon exact 1-D']:>9.4f} {g['epsilon ddg']:>9.4f} "
            f"{g['ratio']:>7.4f}"
        )
    print(
        f"\nload average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "(wall times include waiting for a CPU; cpu times do not)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "speed": s,
        "epsilon": table,
        "lower bound": gaps,
    }
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
