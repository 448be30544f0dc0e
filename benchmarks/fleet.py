"""Issue 14 targets, measured side by side; writes ``build/bench/fleet.json``.

1. **Flower path overhead.** The same federation (digits CNN kit, three devices, same seed
   and plans) run through a real loopback fleet — SuperLink + three SuperNodes with TLS and
   SuperNode authentication, fedlab's ServerApp and ClientApp — and in this process over the
   same ``DeviceAgent`` s (:class:`fedlab.fleet.AgentDispatcher`). Per round: the server's
   wall time through Flower, in-process, and the difference, next to the recipe's polling
   floor (``../shared/flower/RECIPE.md``: about 6 s per message, 12 s for a FedAvg round of
   train + evaluate; fedlab sends one ``train`` message per round and evaluates centrally).
   Also: the final weights of both runs (their largest difference).
2. **Device footprint.** Peak RSS of each SuperNode's process tree (``flower-supernode`` →
   ``flower-superexec`` → one ``flwr-clientapp`` per message), sampled from ``/proc`` every
   0.1 s (VmHWM per process, summed VmRSS per tree), and the installed kit's size; whether a
   Raspberry Pi Zero 2 W (512 MB RAM, of which ~380 MB are free after a Lite OS boot) fits.

3. **Secure aggregation over Flower.** The same rounds with ``secure_threshold=2``: the
   devices keep their updates and four SecAgg+ message exchanges follow each train
   message. Per round: wall time plain vs secure, bytes uploaded and their ratio to the
   float32 updates, and the largest weight difference to the plain run.

Usage: ``python benchmarks/fleet.py [--rounds 3]``. Absolute times depend on the machine's
load (this one is a shared 2-core box): read the ratios and differences.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: RAM of a Pi Zero 2 W left for applications after Raspberry Pi OS Lite boots (measured
#: figures in the community are 370–400 MB free of 512 MB; 380 MB is used here).
PI_ZERO_2W_FREE_MB = 380.0
#: The recipe's measured per-message polling floor of Flower 1.23 (3 s + 1 s + 3 s polls
#: and a process spawn; 12 s for a train + evaluate round).
RECIPE_FLOOR_PER_MESSAGE_S = 6.0


class TreeSampler:
    """Samples the memory of process trees (Linux /proc) in a background thread."""

    def __init__(self, roots: dict[str, int], interval: float = 0.1) -> None:
        self.roots = roots
        self.interval = interval
        self.tree_peak_kb = dict.fromkeys(roots, 0)
        self.hwm_kb: dict[str, dict[str, int]] = {name: {} for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _status(pid: int) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    out[k] = v.strip()
        except OSError:
            pass
        return out

    @staticmethod
    def _name(pid: int) -> str:
        try:
            parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return "?"
        for p in parts[:3]:
            name = os.path.basename(p.decode(errors="replace"))
            if name.startswith(("flower-", "flwr")):
                return name
        return os.path.basename(parts[0].decode(errors="replace"))

    def _sample(self) -> None:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                st = self._status(int(d))
                if "PPid" in st:
                    kids.setdefault(int(st["PPid"]), []).append(int(d))
        for name, root in self.roots.items():
            total, stack = 0, [root]
            while stack:
                pid = stack.pop()
                stack.extend(kids.get(pid, []))
                st = self._status(pid)
                if not st or st.get("State", "").startswith("Z"):
                    continue
                total += int(st.get("VmRSS", "0 kB").split()[0])
                hwm = int(st.get("VmHWM", "0 kB").split()[0])
                proc = self._name(pid)
                if proc in ("", "?"):  # exited between listing and reading
                    continue
                self.hwm_kb[name][proc] = max(self.hwm_kb[name].get(proc, 0), hwm)
            self.tree_peak_kb[name] = max(self.tree_peak_kb[name], total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from fedlab.fleet.devices import write_devices
    from fedlab.fleet.dispatcher import AgentDispatcher
    from fedlab.fleet.processes import LocalFleet
    from fedlab.fleet.run import FleetRunSpec, build_federation, fleet_data, read_run_output
    from fedlab.kits import build_kit
    from fedlab.models import build_model

    work = Path(tempfile.mkdtemp(prefix="fedlab-bench-fleet-"))
    kit = build_kit(
        build_model("digits_cnn", (8, 8, 1), 10),
        target="raspberry_pi",
        out=work / "kits",
        signing_key=work / "workbench.pem",
    )
    spec = FleetRunSpec(
        kit_dir=str(kit.folder),
        trusted_key=kit.trusted_key,
        out_dir=str(work / "flower-out"),
        num_clients=3,
        clients_per_round=3,
        rounds=args.rounds,
        min_nodes=3,
        round_timeout=120.0,
    )
    data = fleet_data(spec)
    devices = write_devices(
        work / "devices", kit_dir=kit.folder, trusted_key=kit.trusted_key, data=data
    )

    # -- 1. Flower ---------------------------------------------------------------------
    with LocalFleet(work / "flower", tls=True, node_auth=True) as fleet:
        t0 = time.monotonic()
        fleet.start_superlink()
        superlink_up = time.monotonic() - t0
        keys = {}
        for cid in devices:
            private, public = fleet.node_key(f"pi-{cid}")
            fleet.register(public)
            keys[cid] = private
        nodes = {
            cid: fleet.start_supernode(
                f"pi-{cid}", device_config=devices[cid], client_id=cid, key=keys[cid]
            )
            for cid in devices
        }
        nodes_up = time.monotonic() - t0 - superlink_up
        with TreeSampler({f"pi-{c}": p.pid for c, p in nodes.items()}) as sampler:
            submitted = time.monotonic()
            run_id = fleet.submit(spec)
            status = fleet.wait_run(run_id, 900, poll=0.5)
            submit_to_done = time.monotonic() - submitted
        out = read_run_output(spec.out_dir)
        # The same rounds with secure aggregation: the devices keep their updates and the
        # four SecAgg+ stages follow each round's train message.
        secure_spec = dataclasses.replace(
            spec, out_dir=str(work / "flower-secure-out"), secure_threshold=2
        )
        secure_status = fleet.wait_run(fleet.submit(secure_spec), 900, poll=0.5)
        secure_out = read_run_output(secure_spec.out_dir)
    if secure_status != "finished:completed":
        print(f"the secure Flower run ended {secure_status!r}", file=sys.stderr)
        return 1
    if status != "finished:completed":
        print(f"the Flower run ended {status!r}", file=sys.stderr)
        return 1
    flower_rounds = [r["wall_time_s"] for r in out["history"]]

    # -- the same rounds in this process ----------------------------------------------------
    ref_devices = write_devices(
        work / "ref-devices", kit_dir=kit.folder, trusted_key=kit.trusted_key, data=data
    )
    dispatcher = AgentDispatcher.from_devices(
        ref_devices, enrolled=[c.num_examples for c in data.clients]
    )
    ref_spec = dataclasses.replace(spec, out_dir=str(work / "ref"))
    federation = build_federation(ref_spec, dispatcher, data=data)
    federation.run(args.rounds)
    local_rounds = [r.wall_time_s for r in federation.history.rounds]
    gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(out["weights"], federation.weights, strict=True)
    )

    secure_rows = [
        {
            "round": r["round_index"],
            "plain_flower_s": round(p["wall_time_s"], 2),
            "secure_flower_s": round(r["wall_time_s"], 2),
            "secure_extra_s": round(r["wall_time_s"] - p["wall_time_s"], 2),
            "plain_bytes_up": p["bytes_up"],
            "secure_bytes_up": r["bytes_up"],
            "upload_expansion": round(
                r["bytes_up"] / (4 * sum(w.size for w in out["weights"]) * 3), 3
            ),
        }
        for r, p in zip(secure_out["history"], out["history"], strict=True)
    ]
    secure_gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(secure_out["weights"], out["weights"], strict=True)
    )

    # -- report -------------------------------------------------------------------------
    rows = []
    for r, (f, loc) in enumerate(zip(flower_rounds, local_rounds, strict=True)):
        rows.append(
            {
                "round": r,
                "flower_s": round(f, 2),
                "in_process_s": round(loc, 3),
                "overhead_s": round(f - loc, 2),
                "overhead_vs_recipe_floor": round((f - loc) / RECIPE_FLOOR_PER_MESSAGE_S, 2),
            }
        )
    device_s = [n.get("seconds", float("nan")) for n in out["nodes"]["nodes"]]
    trees = {
        name: {
            "tree_peak_rss_mib": round(kb / 1024, 1),
            "peak_vmhwm_mib": {k: round(v / 1024, 1) for k, v in sampler.hwm_kb[name].items()},
        }
        for name, kb in sampler.tree_peak_kb.items()
    }
    worst_tree = max(v["tree_peak_rss_mib"] for v in trees.values())
    kit_mb = kit.size_mb
    result = {
        "rounds": rows,
        "enroll_s": out["done"]["enroll_s"],
        "superlink_up_s": superlink_up,
        "supernodes_up_s": nodes_up,
        "submit_to_done_s": submit_to_done,
        "serverapp_total_s": out["done"]["total_s"],
        "device_train_s_last_round": device_s,
        "max_weight_gap_flower_vs_in_process": gap,
        "supernode_trees": trees,
        "kit_folder_mb": round(kit_mb[0], 2),
        "kit_tarball_mb": round(kit_mb[1], 2),
        "pi_zero_2w_free_mb": PI_ZERO_2W_FREE_MB,
        "pi_zero_2w_fits": worst_tree * 1.048576 < PI_ZERO_2W_FREE_MB,
        "secure_rounds": secure_rows,
        "max_weight_gap_secure_vs_plain": secure_gap,
    }
    bench = ROOT / "build" / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    (bench / "fleet.json").write_text(json.dumps(result, indent=2))

    print(f"Flower 1.23 loopback fleet (TLS + node auth), 3 SuperNodes, {args.rounds} rounds")
    print(f"{'round':>5} {'Flower s':>9} {'in-proc s':>10} {'overhead s':>11} {'/ 6 s floor':>12}")
    for row in rows:
        print(
            f"{row['round']:>5} {row['flower_s']:>9.2f} {row['in_process_s']:>10.3f} "
            f"{row['overhead_s']:>11.2f} {row['overhead_vs_recipe_floor']:>12.2f}"
        )
    print(
        f"enrolment (query round) {result['enroll_s']:.1f} s; submit → finished "
        f"{submit_to_done:.1f} s; SuperLink up {superlink_up:.1f} s, SuperNodes up "
        f"{nodes_up:.1f} s"
    )
    print(f"device training per round: {device_s} s; max |Flower − in-process| weight: {gap:g}")
    for name, tree in trees.items():
        print(
            f"{name}: tree peak RSS {tree['tree_peak_rss_mib']} MiB; VmHWM {tree['peak_vmhwm_mib']}"
        )
    print(
        f"kit: {kit_mb[0]:.2f} MB folder, {kit_mb[1]:.2f} MB tarball; Pi Zero 2 W "
        f"(~{PI_ZERO_2W_FREE_MB:.0f} MB free): "
        + ("fits" if result["pi_zero_2w_fits"] else "does NOT fit")
        + f" (worst tree {worst_tree} MiB)"
    )
    print("secure aggregation over the same fleet (threshold 2; devices keep their updates):")
    print(
        f"{'round':>5} {'plain s':>8} {'secure s':>9} {'extra s':>8} {'up kB plain':>12} "
        f"{'up kB secure':>13} {'/ float32':>10}"
    )
    for row in secure_rows:
        print(
            f"{row['round']:>5} {row['plain_flower_s']:>8.2f} {row['secure_flower_s']:>9.2f} "
            f"{row['secure_extra_s']:>8.2f} {row['plain_bytes_up'] / 1e3:>12.1f} "
            f"{row['secure_bytes_up'] / 1e3:>13.1f} {row['upload_expansion']:>10.3f}"
        )
    print(f"max |secure − plain| weight: {secure_gap:g} (fixed-point resolution)")
    print(f"wrote {bench / 'fleet.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
