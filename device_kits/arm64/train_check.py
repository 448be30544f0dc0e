"""Run the ``train`` signature of trainable ``.tflite`` models under each LiteRT op resolver.

Usage (on the device, or under qemu; numpy + ai-edge-litert only)::

    python train_check.py [--data data.npz] [--steps 30] [--json OUT] MODEL.tflite [...]

Each (model, resolver) pair runs in its own Python process, so a crash (SIGSEGV) is reported
as a result instead of ending the check. Every model needs its ``MODEL.json`` (the
``TrainableExport`` metadata) beside it. Prints one line per pair: ``ok`` with the loss of the
first step and the mean loss of the last five (same batch, lr 0.05), or the signal/exit code
and the step the process last reached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESOLVERS = ("AUTO", "BUILTIN", "BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")


def _child(
    model: str, resolver: str, data: str | None, steps: int, opts: argparse.Namespace
) -> None:
    """Runs in the child: print a JSON line per stage so the parent sees how far it got."""
    import faulthandler
    import resource

    faulthandler.enable()  # the Python stack of a SIGSEGV goes to stderr
    if opts.core:  # the guest's core_pattern says where (guest_test.sh, ARM64_CORE=1)
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    spec = json.loads(Path(model).with_suffix(".json").read_text())
    b, shape, k = spec["batch_size"], tuple(spec["input_shape"]), spec["num_classes"]
    rng = np.random.default_rng(0)
    if data:
        with np.load(data) as f:
            x = f["x"][:b].reshape(-1, *shape).astype(np.float32)
            y = f["y"][:b].astype(np.int32) % k
    else:
        x = rng.normal(size=(b, *shape)).astype(np.float32)
        y = rng.integers(0, k, b).astype(np.int32)
    w = np.full(b, 1.0 / b, np.float32)

    def stage(name: str, **extra: object) -> None:
        print(json.dumps({"stage": name, **extra}), flush=True)

    kwargs = {}
    if opts.preserve:
        kwargs["experimental_preserve_all_tensors"] = True
    interp = Interpreter(
        model_content=Path(model).read_bytes(),  # as fedlab.edge.model.TrainableModel does
        num_threads=opts.threads,
        experimental_op_resolver_type=getattr(OpResolverType, resolver),
        **kwargs,
    )
    stage("loaded")
    signatures = interp.get_signature_list()
    if not opts.train_first and "infer" in signatures:
        interp.get_signature_runner("infer")(x=x)
        stage("infer")
    if not opts.train_first and "set_weights" in signatures:
        weights = interp.get_signature_runner("get_weights")()
        stage("get_weights")
        interp.get_signature_runner("set_weights")(**weights)
        stage("set_weights")
    train = interp.get_signature_runner("train")
    stage("train_runner")
    feed = {"x": x, "y": y, "w": w}
    inputs = train.get_input_details()
    for name, value in (("lr", 0.05), ("mu", 0.0), ("beta", 0.0)):
        if name in inputs:  # rank 0 as exported (np.float32), or whatever the variant has
            shape = tuple(inputs[name]["shape"])
            if opts.scalars_1d:  # shape (1,) even into a rank-0 input: no resize to []
                feed[name] = np.full((1,), value, np.float32)
            else:
                feed[name] = np.full(shape, value, np.float32) if shape else np.float32(value)
    losses = []
    for i in range(steps):
        out = train(**feed)
        losses.append(float(out["loss"]))
        if i == 0:
            stage("train_first_step", loss=losses[0])
    stage("done", loss_first=losses[0], loss_last=float(np.mean(losses[-5:])), steps=steps)


def check(
    model: str, resolver: str, data: str | None, steps: int, timeout: float, extra: list[str]
) -> dict:
    """One (model, resolver) in a child process: its result as a dict."""
    t = time.monotonic()
    args = [sys.executable, __file__, "--child", resolver, "--steps", str(steps), *extra]
    args += ["--data", data, model] if data else [model]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"model": model, "resolver": resolver, "ok": False, "error": f"timeout {timeout}s"}
    stages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result = {
        "model": Path(model).name,
        "resolver": resolver,
        "ok": proc.returncode == 0 and bool(stages) and stages[-1]["stage"] == "done",
        "returncode": proc.returncode,
        "last_stage": stages[-1]["stage"] if stages else None,
        "seconds": round(time.monotonic() - t, 2),
    }
    if stages and stages[-1]["stage"] == "done":
        result.update(loss_first=stages[-1]["loss_first"], loss_last=stages[-1]["loss_last"])
    if proc.returncode != 0:
        result["error"] = (
            f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        )
        result["stderr_tail"] = proc.stderr.strip().splitlines()[-12:]
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--resolvers", default=",".join(RESOLVERS))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--threads", type=int, default=1, help="num_threads (-1: LiteRT's)")
    parser.add_argument(
        "--preserve", action="store_true", help="experimental_preserve_all_tensors=True"
    )
    parser.add_argument(
        "--train-first", action="store_true", help="no infer/get/set_weights before train"
    )
    parser.add_argument("--core", action="store_true", help="let the child dump core")
    parser.add_argument(
        "--scalars-1d",
        action="store_true",
        help="feed lr/mu/beta as shape (1,) arrays (the workaround of the rank-0 resize crash)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.models[0], args.child, args.data, args.steps, args)
        return 0
    extra = [f"--threads={args.threads}"]
    extra += [
        f
        for f, on in (
            ("--preserve", args.preserve),
            ("--train-first", args.train_first),
            ("--core", args.core),
            ("--scalars-1d", args.scalars_1d),
        )
        if on
    ]
    results = []
    for model in args.models:
        for resolver in args.resolvers.split(","):
            r = check(model, resolver, args.data, args.steps, args.timeout, extra)
            results.append(r)
            if r["ok"]:
                line = f"ok   loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}"
            else:
                line = f"FAIL {r.get('error')} after stage {r.get('last_stage')}"
            print(f"train-check {r['model']:<28} {resolver:<34} {line}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
