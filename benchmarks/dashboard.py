"""Dashboard overhead (issue 6): rounds with the live dashboard vs the same rounds without it.

Both runs happen inside one real IPython kernel (started with jupyter_client, as JupyterLab
does), so every widget update is serialized and published on the kernel's IOPub socket the
way it is when a browser is attached. The federation is the synthetic sensor fleet of
notebook 03 (100 devices, 10 per round, vectorized runtime); each repetition times ``ROUNDS``
rounds bare (``federation.run``) and ``ROUNDS`` rounds driven by the dashboard's Start
button (worker thread, plots, client grid and round log redrawn), alternating, after a
warm-up; the ratio of the medians is reported. Target: ≤ 1.10. Writes
``build/bench/dashboard.json``.

Usage: ``python benchmarks/dashboard.py [--rounds 40] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KERNEL_CODE = """
import json, statistics, time
import fedlab
from fedlab.ui import FederationDashboard

def make():
    fleet = fedlab.federated_sensors(num_devices=100, test_devices=40, seed=0)
    return fedlab.build_federation(
        fleet, model="sensor_cnn1d", heterogeneity=1.0, clients_per_round=10,
        local_epochs=2, batch_size=16, client_lr=0.2, dropout_rate=0.1, deadline_s=20.0,
        over_selection=0.3, seed=0)

bare, watched = make(), make()
dash = FederationDashboard(watched, target_rounds={rounds}, refresh_interval={interval})
for fed in (bare, watched):          # warm-up: compile the round's graphs
    fed.run(2)
    fed.reset()
times = {{"bare": [], "dashboard": []}}
for _ in range({repeats}):
    bare.reset()
    t = time.perf_counter(); bare.run({rounds}); times["bare"].append(time.perf_counter() - t)
    dash.reset()
    t = time.perf_counter()
    dash.start_button.click()
    dash.runner.wait()
    times["dashboard"].append(time.perf_counter() - t)
    assert watched.rounds_done == {rounds} and dash.runner.state == "finished"
    assert len(dash.accuracy_line.x) == {rounds}
same = bare.history.deterministic_records() == watched.history.deterministic_records()
print("RESULT" + json.dumps({{"times": times, "same_history": same}}))
"""


def run_in_kernel(code: str, timeout: float = 1800) -> dict:
    """Execute ``code`` in a fresh IPython kernel; return the JSON it printed after RESULT."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    out: list[str] = []
    errors: list[str] = []

    def on_output(msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    try:
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=on_output)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    if reply["content"]["status"] != "ok" or errors:
        raise RuntimeError("benchmark code failed in the kernel:\n" + "\n".join(errors))
    text = "".join(out)
    return json.loads(text.split("RESULT", 1)[1].strip().splitlines()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import statistics

    out: dict = {"rounds": args.rounds, "repeats": args.repeats, "runs": {}}
    # Default redraw throttle (0.25 s), and the worst case: a redraw after every event.
    for label, interval in (("default (0.25 s throttle)", 0.25), ("every event", 0.0)):
        code = textwrap.dedent(KERNEL_CODE).format(
            rounds=args.rounds, repeats=args.repeats, interval=interval
        )
        result = run_in_kernel(code)
        bare = statistics.median(result["times"]["bare"])
        dash = statistics.median(result["times"]["dashboard"])
        ratio = dash / bare
        out["runs"][label] = {
            "refresh_interval_s": interval,
            "bare_s": result["times"]["bare"],
            "dashboard_s": result["times"]["dashboard"],
            "median_bare_s": bare,
            "median_dashboard_s": dash,
            "ratio": ratio,
            "same_history": result["same_history"],
        }
        print(
            f"{label:>26}: {args.rounds} rounds bare {bare:.3f} s, with dashboard {dash:.3f} s "
            f"→ ratio {ratio:.3f} (target ≤ 1.10); same history: {result['same_history']}"
        )
    browser = ROOT / "build" / "artifacts" / "browser_latency.json"
    if browser.is_file():
        out["browser_latency"] = json.loads(browser.read_text())
        print(f"button latency from the last browser test: {out['browser_latency']}")
    path = ROOT / "build" / "bench" / "dashboard.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    # Targets are reported (stdout and JSON), not enforced: a noisy run must not stop `make bench`.
    return 0


if __name__ == "__main__":
    sys.exit(main())
