"""Census of issue 18: hostile and broken inputs through the public API, each classified.

Run ``python -m tests.hostile.census`` (about a minute). It is self-contained and adapts to
the API before and after issue 18, so the same cases can be counted on both sides
(``git worktree add /tmp/before <commit>``; copy this file in; run it there). Outcomes:

refused   refused with a clear reason (rejected entry, ValueError naming the field,
          fallback with a warning naming the file, the documented exit code and message)
unclear   refused late, with an unclear message or the wrong exit code
accepted  accepted silently (including a damaged file whose changed contents were used)
crashed   an exception escaped, a traceback, or the whole round was lost
harmless  a byte flip that changed nothing any reader uses (accepted identical)
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fedlab.edge.transport import TASK_FILE, FileTransport
from fedlab.federated import ClientPlan, ClientUpdate, Federation, FederationConfig
from fedlab.federated.checkpoint import FederationState, latest_checkpoint, save_checkpoint
from fedlab.protocol import (
    KIND_ENVELOPE,
    KIND_TASK,
    RoundTask,
    UpdateEnvelope,
    encode,
    unpack_frame,
)
from tests.hostile.conftest import raw_frame

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ((4, 3), (3,))
WEIGHTS = (np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), np.full(3, 0.1, np.float32))
RESULTS: dict[str, Counter] = {}


def tally(item: str, outcome: str) -> None:
    RESULTS.setdefault(item, Counter())[outcome] += 1


def task(round_index: int = 1, weights=WEIGHTS) -> RoundTask:
    plan = ClientPlan(
        client_id=0, round_index=round_index, epochs=1, batch_size=4, learning_rate=0.1
    )
    return RoundTask.from_client_plan(plan, model_version="kit-v1", weights=weights)


def envelope(t: RoundTask, update: ClientUpdate) -> UpdateEnvelope:
    return UpdateEnvelope.from_client_update(update, t)


def honest(seed: int, n: int = 20) -> ClientUpdate:
    rng = np.random.default_rng(seed)
    delta = tuple((0.01 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES)
    return ClientUpdate(0, delta, n, num_steps=5, metrics={"train_loss": 0.5})


NEW_COLLECT = "devices" in inspect.signature(FileTransport.collect).parameters


def collect(exchange: FileTransport, t: RoundTask, devices=("a", "b", "c", "m")):
    if NEW_COLLECT:
        return exchange.collect(t, devices=dict.fromkeys(devices, 40))
    return exchange.collect(t.round_index, SHAPES)


def header(t: RoundTask, device: str, **changes) -> dict:
    h = {
        "device_id": device,
        "client_id": 0,
        "round_index": t.round_index,
        "num_examples": 20,
        "num_steps": 5,
        "metrics": {"train_loss": 0.5},
        "headers": {},
        "body": "tensors",
        "model_version": t.model_version,
        "base_version": t.base_version,
    }
    if "train_loss" in changes:
        h["metrics"] = {"train_loss": changes.pop("train_loss")}
    h.update(changes)
    return h


def write(path: Path, head, delta=None, raw: str | None = None) -> None:
    text = raw if raw is not None else json.dumps(head)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw_frame(KIND_ENVELOPE, text, delta or honest(3).delta))


def judge_victim(
    exchange: FileTransport,
    t: RoundTask,
    item: str,
    devices=("a", "b", "c", "m"),
    victim="m-r1.flab",
    original=None,
):
    try:
        accepted, rejected = collect(exchange, t, devices)
    except Exception:
        return tally(item, "crashed")
    got = dict(accepted)
    if not all(f"{d}-r1.flab" in got for d in "abc"):
        return tally(item, "crashed")  # valid updates of the round lost
    if victim in dict(rejected):
        return tally(item, "refused")
    if victim not in got:
        return tally(item, "accepted")  # silently dropped: no reason recorded
    u = got[victim]
    same = (
        original is not None
        and u.num_examples == original.num_examples
        and all(np.array_equal(a, b) for a, b in zip(u.delta, original.delta, strict=True))
        and dict(u.metrics) == dict(original.metrics)
    )
    tally(item, "harmless" if same else "accepted")


def update_files(tmp: Path) -> None:
    t = task()
    base = tmp / "base"
    ex = FileTransport(base)
    for i, d in enumerate("abcm"):
        ex.submit(d, envelope(t, honest(i)))
    original = (ex.updates / "m-r1.flab").read_bytes()
    for at in range(len(original)):  # item 1: every single-byte flip
        raw = bytearray(original)
        raw[at] ^= 0xFF
        (ex.updates / "m-r1.flab").write_bytes(bytes(raw))
        judge_victim(ex, t, "1 update-file byte flips", original=honest(3))
    for cut in range(0, len(original), 4):  # item 1: truncations
        (ex.updates / "m-r1.flab").write_bytes(original[:cut])
        judge_victim(ex, t, "1 update-file truncations", original=honest(3))
    values = [10**9, 41, math.inf, True, math.nan, 2.5, "20", 0, -3, None]
    for v in values:  # item 2: num_examples in the header
        write(ex.updates / "m-r1.flab", header(t, "m", num_examples=v))
        judge_victim(ex, t, "2 num_examples in update files")
    for raw in ('{"x": 1e400}', "[1, 2]", '"text"', "null", "{"):
        write(
            ex.updates / "m-r1.flab",
            None,
            raw=raw.replace(
                '{"x": 1e400}',
                json.dumps(header(t, "m")).replace('"num_examples": 20', '"num_examples": 1e400'),
            ),
        )
        judge_victim(ex, t, "1 random/invalid headers")
    for loss in ("0.3", True, [1], {"a": 1}):
        write(ex.updates / "m-r1.flab", header(t, "m", train_loss=loss))
        judge_victim(ex, t, "2 text train_loss in update files")
    for scale in (1e30, 3e38):
        write(
            ex.updates / "m-r1.flab",
            header(t, "m"),
            tuple(np.full(s, scale, np.float32) for s in SHAPES),
        )
        judge_victim(ex, t, "2 huge deltas in update files")
    (ex.updates / "m-r1.flab").write_bytes(original)
    # item 3: stale, duplicate, unknown, relabelled, other model version
    last = task(0, tuple(w - 0.01 for w in WEIGHTS))
    cases = {
        "stale (last round's, relabelled)": lambda: write(
            ex.updates / "m-r1.flab", header(last, "m", round_index=1)
        ),
        "unknown device": lambda: ex.submit("intruder", envelope(t, honest(7))),
        "duplicate device (case)": lambda: ex.submit("M", envelope(t, honest(8))),
        "other model version": lambda: write(
            ex.updates / "m-r1.flab", header(t, "m", model_version="kit-v0")
        ),
        "renamed file": lambda: shutil.copy(ex.updates / "c-r1.flab", ex.updates / "m-r1.flab"),
    }
    for make in cases.values():
        for p in ex.updates.glob("*"):
            if p.name not in {"a-r1.flab", "b-r1.flab", "c-r1.flab"}:
                p.unlink()
        make()
        victims = [
            p.name
            for p in ex.updates.glob("*")
            if p.name not in {"a-r1.flab", "b-r1.flab", "c-r1.flab"}
        ]
        try:
            accepted, _ = collect(ex, t)
        except Exception:
            tally("3 stale/duplicate/unknown/relabelled", "crashed")
            continue
        bad = [v for v in victims if v in dict(accepted)]
        tally("3 stale/duplicate/unknown/relabelled", "accepted" if bad else "refused")


class NumpyRuntime:
    def __init__(self, hostile=None) -> None:
        self.hostile, self.victims = hostile, []

    def initial_weights(self):
        return (np.full((6, 4), 0.5, np.float32), np.zeros(4, np.float32))

    def train_clients(self, w, jobs):
        out = [
            ClientUpdate(
                c.client_id,
                (np.full((6, 4), 0.01, np.float32), np.full(4, 0.01, np.float32)),
                c.num_examples,
                3,
                {"train_loss": 0.25},
            )
            for c, _ in jobs
        ]
        if self.hostile and out:
            self.victims.append(out[0].client_id)
            out[0] = self.hostile(out[0])
        return out

    def evaluate(self, weights, x, y, *, batch_size=1024):
        return {"loss": 0.0, "accuracy": 0.0}


def forge(**f):
    def apply(u):
        v = {
            "client_id": u.client_id,
            "delta": u.delta,
            "num_examples": u.num_examples,
            "num_steps": u.num_steps,
            "metrics": u.metrics,
        }
        v.update({k: (x(u) if callable(x) else x) for k, x in f.items()})
        return ClientUpdate(**v)

    return apply


def rounds() -> None:
    from fedlab.data import federated_digits

    data = federated_digits(num_clients=20, alpha=0.5, seed=1)
    full = lambda value: lambda u: tuple(np.full(d.shape, value, np.float32) for d in u.delta)  # noqa: E731
    cases = [forge(num_examples=v) for v in (10**9, math.inf, True, math.nan, 2.5, "7", 0)]
    cases += [forge(num_examples=lambda u: u.num_examples + 1)]
    cases += [
        forge(metrics=m)
        for m in ({"train_loss": "0.1"}, {"train_loss": math.nan}, {"acc": math.inf}, ["x"])
    ]
    cases += [
        forge(num_steps=-1),
        forge(delta=full(1e30)),
        forge(delta=full(3e38)),
        forge(delta=full(math.nan)),
    ]
    cases += [
        forge(delta=lambda u: tuple(d.tolist() for d in u.delta)),
        forge(delta=lambda u: (u.delta[0].T, u.delta[1])),
    ]
    cases += [forge(delta=None), forge(client_id=lambda u: u.client_id + 1), forge(client_id="3")]
    cases += [forge(num_examples=10**9, delta=lambda u: tuple(-5 * d for d in u.delta))]
    for hostile in cases:
        runtime = NumpyRuntime(hostile)
        fed = Federation(
            data=data,
            runtime=runtime,
            config=FederationConfig(clients_per_round=5, seed=3, eval_every=100),
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = fed.run_round()
                fed.run_round()
        except Exception:
            tally("2 hostile updates in a simulated round", "crashed")
            continue
        victim = runtime.victims[0]
        finite = all(np.isfinite(w).all() for w in fed.weights)
        if victim in [c for c, _ in result.rejected] and finite:
            tally("2 hostile updates in a simulated round", "refused")
        elif not finite:
            tally("2 hostile updates in a simulated round", "crashed")  # model destroyed
        else:
            tally("2 hostile updates in a simulated round", "accepted")


def checkpoints(tmp: Path) -> None:
    def state(r):
        w = (np.full((5, 3), r, np.float32), np.arange(3, dtype=np.float32) + r)
        return FederationState(
            r, w, {"v": tuple(x * 0.5 for x in w)}, [{"round_index": i} for i in range(r)], "abc"
        )

    folder = tmp / "ckpt"
    save_checkpoint(folder, state(1))
    newest = save_checkpoint(folder, state(2))
    original = newest.read_bytes()
    for at in range(len(original)):
        raw = bytearray(original)
        raw[at] ^= 0xFF
        newest.write_bytes(bytes(raw))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                got = latest_checkpoint(folder)
            except Exception:
                tally("5 checkpoint byte flips", "crashed")
                continue
        if (
            got is not None
            and got.rounds_done == 1
            and any(newest.name in str(w.message) for w in caught)
        ):
            tally("5 checkpoint byte flips", "refused")
        elif got is not None and got.rounds_done == 2:
            same = all(
                np.array_equal(a, b) for a, b in zip(got.weights, state(2).weights, strict=True)
            )
            tally(
                "5 checkpoint byte flips",
                "harmless" if same and got.history == state(2).history else "accepted",
            )
        else:
            tally("5 checkpoint byte flips", "unclear")


def config(tmp: Path) -> None:
    bad = [
        ("clients_per_round", True),
        ("clients_per_round", 2.0),
        ("clients_per_round", "10"),
        ("client_lr", "0.05"),
        ("client_lr", math.inf),
        ("client_lr", True),
        ("seed", -1),
        ("seed", 1.5),
        ("seed", True),
        ("seed", "0"),
        ("local_epochs", True),
        ("batch_size", np.float64(10.0)),
        ("eval_every", None),
        ("client_momentum", "0.9"),
        ("client_momentum", math.nan),
        ("dropout_rate", "0"),
        ("dropout_rate", math.nan),
        ("deadline_s", math.inf),
        ("deadline_s", "30"),
        ("over_selection", math.nan),
        ("seconds_per_example", -1.0),
        ("seconds_per_example", math.inf),
        ("client_optimizer", 3),
        ("client_optimizer", ["sgd"]),
    ]
    for name, value in bad:
        classify_config(FederationConfig, {name: value}, name, value)
    for value in (math.nan, 1.5, True, "0.5"):
        classify_config(
            FederationConfig,
            {"clients_per_round": None, "client_fraction": value},
            "client_fraction",
            value,
        )
    plan = {"client_id": 0, "round_index": 0, "epochs": 1, "batch_size": 8, "learning_rate": 0.1}
    for name, value in [
        ("seed", "abc"),
        ("seed", -1),
        ("epochs", 2.5),
        ("epochs", "3"),
        ("batch_size", True),
        ("learning_rate", math.inf),
        ("learning_rate", "0.1"),
        ("optimizer", "rmsprop"),
        ("momentum", 1.0),
        ("client_id", -2),
        ("round_index", None),
        ("proximal_mu", math.nan),
    ]:
        classify_config(ClientPlan, {**plan, name: value}, name, value, item="6 ClientPlan values")
    from fedlab.data import federated_digits
    from fedlab.federated import build_federation

    data = federated_digits(num_clients=20, alpha=0.5, seed=1)
    for strategy in ("fedavgm", "fedadam"):
        classify_config(
            build_federation,
            {"data": data, "strategy": strategy, "strategy_params": {"server_lr": math.inf}},
            "server_lr",
            math.inf,
        )
    file = tmp / "a-file"
    file.write_text("x")
    classify_config(
        build_federation, {"data": data, "checkpoint_dir": file}, "checkpoint_dir", str(file)
    )


def classify_config(make, kwargs, name, value, item="6 configuration values") -> None:
    try:
        make(**kwargs)
    except ValueError as exc:
        text = str(exc)
        tally(
            item,
            "refused"
            if name in text and (repr(value) in text or str(value) in text)
            else "unclear",
        )
    except Exception:
        tally(item, "unclear")
    else:
        tally(item, "accepted")


def agent_and_kits(tmp: Path) -> None:
    from fedlab.edge.manifest import generate_signing_key, public_key_b64, write_manifest
    from fedlab.models import build_model
    from fedlab.optimize.trainable import export_trainable_tflite

    kit = tmp / "kit"
    model = build_model("digits_cnn", (8, 8, 1), 10)
    export = export_trainable_tflite(model, batch_size=16)
    export.save(kit / "model" / "model.tflite")
    key = generate_signing_key(tmp / "k.pem")
    version = hashlib.sha256(export.model).hexdigest()
    info = {
        "mode": "litert",
        "model": {"file": "model/model.tflite", "spec": export.metadata(), "version": version},
    }
    write_manifest(
        kit, sorted(str(p.relative_to(kit)) for p in kit.rglob("*") if p.is_file()), key, info
    )
    weights = tuple(np.asarray(w, np.float32) for w in model.get_weights())
    base = {"client_id": 3, "round_index": 0, "epochs": 1, "batch_size": 16, "learning_rate": 0.05}
    good = RoundTask.from_client_plan(ClientPlan(**base), model_version=version, weights=weights)

    def device(folder: Path, data="data.npz", **extra) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        if not (folder / "data.npz").exists():
            np.savez(
                folder / "data.npz",
                x=rng.random((40, 8, 8, 1), np.float32),
                y=rng.integers(0, 10, 40),
            )
        cfg = {
            "device_id": "pi-3",
            "kit_dir": str(kit),
            "data_path": data,
            "trusted_key": public_key_b64(key),
            "transport": {"kind": "files", "folder": "exchange"},
            **extra,
        }
        (folder / "device.json").write_text(json.dumps(cfg))
        return folder / "device.json"

    def run(config: Path):
        proc = subprocess.run(
            [sys.executable, "-m", "fedlab.edge.agent", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        return proc.returncode, proc.stderr

    def classify(code, err, expected, needle, item, produced=False):
        if "Traceback" in err or code == 1:
            tally(item, "crashed")
        elif code == expected and needle in err:
            tally(item, "refused")
        elif code == 0 or produced:
            tally(item, "accepted")
        else:
            tally(item, "unclear")

    plans = [
        ({"seed": "abc"}, "seed"),
        ({"epochs": 2.5}, "epochs"),
        ({"batch_size": "16"}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"learning_rate": math.inf}, "learning_rate"),
        ({"optimizer": {"name": "adam"}}, "optimizer"),
        ({"batch_size": 64}, "batch"),
        ({"colour": "red"}, "colour"),
    ]
    headers = [
        ({"model_version": None}, "model_version"),
        ({"model_version": "0" * 64}, "model version"),
        ({"plan": "nonsense"}, "plan"),
    ]
    if getattr(good, "base_version", None):
        headers.append(({"base_version": "f" * 32}, "base_version"))
    else:
        headers.append(({"base_version": "f" * 32}, "base_version"))  # old code ignores it
    for i, (change, needle) in enumerate(
        [(("plan", c), n) for c, n in plans] + [(("top", c), n) for c, n in headers]
    ):
        folder = tmp / f"task{i}"
        config = device(folder)
        head = unpack_frame(encode(good)).header
        kind, c = change
        (head["plan"].update(c) if kind == "plan" else head.update(c))
        (folder / "exchange").mkdir(exist_ok=True)
        (folder / "exchange" / TASK_FILE).write_bytes(
            raw_frame(KIND_TASK, json.dumps(head), weights)
        )
        code, err = run(config)
        produced = (folder / "exchange" / "updates").exists()
        if kind == "top" and needle == "base_version" and not getattr(good, "base_version", None):
            tally(
                "7 agent: bad task values", "accepted" if produced else "unclear"
            )  # damaged weights used
            continue
        classify(code, err, 6, needle, "7 agent: bad task values", produced)
    rows = np.hstack([np.ones((4, 64)), np.arange(4)[:, None]])
    files = tmp / "files"
    files.mkdir()
    np.savetxt(
        files / "header.csv", rows, delimiter=",", header="f" + ",f" * 63 + ",label", comments=""
    )
    (files / "empty.npz").write_bytes(b"")
    np.savez(files / "whole.npz", x=np.zeros((4, 8, 8, 1)), y=np.zeros(4))
    (files / "truncated.npz").write_bytes((files / "whole.npz").read_bytes()[:300])
    np.savez(files / "pickled.npz", x=np.array([{"e": 1}] * 4, dtype=object), y=np.zeros(4))
    (files / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (files / "nul.csv").write_bytes(b"\x00" * 100)
    (files / "empty.csv").write_text("")
    for i, name in enumerate(
        [
            "empty.npz",
            "truncated.npz",
            "pickled.npz",
            "binary.csv",
            "nul.csv",
            "empty.csv",
            "header.csv",
        ]
    ):
        folder = tmp / f"data{i}"
        config = device(folder, data=str(files / name))
        code, err = run(config)
        classify(code, err, 4, "local data refused", "7 agent: bad local data")
    # item 8: kits
    sys.path.insert(0, str(ROOT))
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k1 = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    k2 = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

    def make_kit(folder: Path, k=k1, created="2026-02-01T00:00:00Z") -> Path:
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "wheels").mkdir(parents=True)
        shutil.copy2(ROOT / "device_kits/common.sh", folder / "common.sh")
        for n in ("setup.sh", "fedlab-agent.service", "README.md"):
            shutil.copy2(ROOT / "device_kits/raspberry_pi" / n, folder / n)
        (folder / "wheels/fedlab-0.1.0-py3-none-any.whl").write_bytes(b"w")
        (folder / "requirements-device.txt").write_text("numpy==1.26.4\n")
        t = json.loads((ROOT / "device_kits/raspberry_pi/device.example.json").read_text())
        t["trusted_key"] = public_key_b64(k)
        (folder / "device.json.template").write_text(json.dumps(t))
        fs = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        write_manifest(folder, fs, k, {"created": created})
        return folder

    def setup(kit_dir: Path, prefix: Path, *args):
        return subprocess.run(
            ["bash", str(kit_dir / "setup.sh"), "--dry-run", "--prefix", str(prefix), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def kit_case(tamper, prefix_state: str, *args):
        prefix = tmp / f"root-{sum(RESULTS.get('8 kits', Counter()).values())}"
        if prefix_state == "installed":
            setup(make_kit(tmp / "installed", created="2026-03-01T00:00:00Z"), prefix)
        kit_dir = tamper(make_kit(tmp / "candidate"))
        proc = setup(kit_dir, prefix, *args)
        planned = "[dry-run]" in proc.stdout
        if proc.returncode != 0 and not planned:
            tally("8 kits", "refused")
        elif proc.returncode != 0:
            tally("8 kits", "unclear")  # refused, but after planning installs
        else:
            tally("8 kits", "accepted")

    def unlisted(k):
        (k / "wheels/fedlab-0.0.9-py3-none-any.whl").write_bytes(b"x")
        return k

    def requirements(k):
        (k / "requirements-device.txt").write_text("evil==6.6.6\n")
        return k

    def missing(k):
        (k / "README.md").unlink()
        return k

    def forged(k):
        return make_kit(k, k=k2, created="2027-01-01T00:00:00Z")

    def older(k):
        return make_kit(k, created="2026-01-01T00:00:00Z")

    for tamper in (unlisted, requirements, missing):
        kit_case(tamper, "fresh")
        kit_case(tamper, "installed")
    kit_case(forged, "installed")
    kit_case(older, "installed")
    k = make_kit(tmp / "v")
    (k / "wheels/fedlab-0.0.9-py3-none-any.whl").write_bytes(b"x")
    from fedlab.edge import KitVerificationError, verify_kit

    try:
        verify_kit(k, public_key_b64(k1))
        tally("8 kits", "accepted")
    except KitVerificationError:
        tally("8 kits", "refused")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for step in (update_files, rounds, checkpoints, config, agent_and_kits):
            with contextlib.redirect_stderr(io.StringIO()):
                (step(root) if inspect.signature(step).parameters else step())
    total = Counter()
    kinds = ("refused", "unclear", "accepted", "crashed", "harmless")
    print(f"{'item':42s} {'tried':>6s} " + " ".join(f"{k:>8s}" for k in kinds))
    for item in sorted(RESULTS):
        c = RESULTS[item]
        total.update(c)
        print(f"{item:42s} {sum(c.values()):6d} " + " ".join(f"{c[k]:8d}" for k in kinds))
    print(f"{'total':42s} {sum(total.values()):6d} " + " ".join(f"{total[k]:8d}" for k in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
