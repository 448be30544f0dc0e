"""The model registry on real SQLite and real files: content addressing, channels, audit
log, two writer processes, a kill during a blob write, a corrupted blob. No TensorFlow."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedlab.ops.registry import (
    Provenance,
    Registry,
    RegistryError,
    code_version,
    decode_weights,
    encode_weights,
)

ROOT = Path(__file__).resolve().parents[2]


def weights(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((4, 3)).astype(np.float32),
        rng.standard_normal(3).astype(np.float32),
    )


def same(a, b) -> bool:
    return all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b, strict=True))


def test_weights_round_trip_bit_exactly_and_deterministically() -> None:
    w = (*weights(0), np.arange(5, dtype=np.int64), np.zeros((0, 2), np.float64))
    blob = encode_weights(w)
    assert encode_weights(w) == blob  # deterministic: the hash names the content
    assert same(decode_weights(blob), w)
    with pytest.raises(ValueError, match="NaN or Inf"):
        encode_weights((np.array([np.nan], np.float32),))
    with pytest.raises(RegistryError, match="damaged"):
        decode_weights(blob[:-3])


def test_versions_are_content_addressed_immutable_and_carry_provenance(tmp_path) -> None:
    reg = Registry(tmp_path)
    prov = Provenance(
        rounds=5,
        strategy={"name": "fedavg"},
        seeds={"data": 1},
        code_version=code_version(),
        dp={"epsilon": 2.5, "delta": 1e-5},
    )
    v1 = reg.register(weights(0), config={"model": "softmax"}, provenance=prov, label="v1")
    again = reg.register(weights(0), config={"model": "softmax"}, provenance=prov, label="dup")
    assert again.id == v1.id and len(reg.versions()) == 1  # same content, same version
    assert same(reg.load(v1.id), weights(0))
    assert reg.get(v1.id[:8]).provenance == prov and reg.get(v1.id).label == "v1"
    other = reg.register(weights(0), config={"model": "softmax"}, provenance=Provenance(rounds=6))
    assert other.id != v1.id and other.blob == v1.blob  # same weights, other history: new id
    child = reg.register(weights(1), provenance=Provenance(parent=v1.id, rounds=3))
    assert [v.id for v in reg.lineage(child.id)] == [child.id, v1.id]
    nodes, edges = reg.graph()
    assert {n.id for n in nodes} == {v1.id, other.id, child.id} and edges == [(v1.id, child.id)]
    assert prov.code_version and prov.code_version != "unknown"


def test_bad_input_is_a_clear_error_and_stores_nothing(tmp_path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError, match="parent version 'nope'"):
        reg.register(weights(0), provenance=Provenance(parent="nope"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        reg.register((np.array([np.inf], np.float32),))
    with pytest.raises(ValueError, match="not plain JSON"):
        Provenance(extra={"x": object()})
    with pytest.raises(ValueError, match="rounds must be an int"):
        Provenance(rounds=-1)
    with pytest.raises(RegistryError, match="no channel"):
        reg.rollback()
    assert reg.versions() == [] and reg.audit_log() == []
    assert not list(reg.blobs.rglob("*.fmw"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="which is a file"):
        Registry(tmp_path / "afile")


def test_promote_pin_rollback_and_an_append_only_audit_log(tmp_path) -> None:
    reg = Registry(tmp_path, actor="alice")
    a, b, c = (reg.register(weights(i)).id for i in range(3))
    reg.promote(a)
    reg.promote(b, reason="better")
    reg.promote(c)
    assert reg.current() == c
    assert reg.rollback(reason="bad") == b and reg.current() == b
    assert reg.rollback() == a  # twice: two steps back
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback()
    reg.pin(reason="freeze for the audit")
    with pytest.raises(RegistryError, match="pinned"):
        reg.promote(c)
    with pytest.raises(RegistryError, match="pinned"):
        reg.rollback()
    assert reg.current() == a
    reg.unpin()
    reg.promote(c)
    actions = [e.action for e in reg.audit_log()]
    assert actions == ["register"] * 3 + ["promote"] * 3 + ["rollback"] * 2 + [
        "pin",
        "unpin",
        "promote",
    ]
    assert {e.actor for e in reg.audit_log()} == {"alice"}
    assert reg.audit_log(action="promote")[1].detail["reason"] == "better"
    db = sqlite3.connect(tmp_path / "index.sqlite")
    for sql in ("UPDATE events SET action='x'", "DELETE FROM events"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()
    assert len(reg.audit_log()) == 11


def test_a_corrupted_blob_is_detected_by_its_hash(tmp_path) -> None:
    reg = Registry(tmp_path)
    v = reg.register(weights(0))
    path = next(reg.blobs.rglob("*.fmw"))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the weights: still decodes, but is not this model
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="corrupted"):
        reg.load(v.id)
    reg.register(weights(0))  # re-registering the same content heals the blob
    assert same(reg.load(v.id), weights(0))
    path.unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.load(v.id)


def _writer(root: str, worker: int, count: int) -> None:
    reg = Registry(root, actor=f"worker-{worker}")
    for i in range(count):
        v = reg.register(weights(1000 * worker + i), label=f"w{worker}-{i}")
        reg.promote(v.id, f"ch-{worker}")
        reg.promote(v.id, "production")
        reg.report_running([worker * 100 + i], v.id)


def test_two_writer_processes_lose_nothing(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    count = 25
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, count)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reg = Registry(tmp_path)
    labels = {v.label for v in reg.versions()}
    assert labels == {f"w{w}-{i}" for w in (1, 2) for i in range(count)}
    for v in reg.versions():  # every blob intact
        w, i = (int(s) for s in v.label[1:].split("-"))
        assert same(reg.load(v.id), weights(1000 * w + i))
    log = reg.audit_log()
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert len(log) == 2 * count * 3
    promotes = [e for e in log if e.action == "promote" and e.channel == "production"]
    # Each production move saw the move before it: no lost update of the channel.
    for before, after in itertools.pairwise(promotes):
        assert after.previous == before.version
    assert reg.current() == promotes[-1].version
    assert len(reg.running()) == 2 * count
    assert reg.orphan_blobs() == []


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from fedlab.ops import registry as registry_module
    from fedlab.ops.registry import Registry

    stage = sys.argv[2]
    reg = Registry(sys.argv[1])
    real_fsync, real_write = os.fsync, Registry._write

    def stall():
        print("stalled", flush=True)
        time.sleep(60)

    if stage == "blob":  # the blob's bytes are in the temporary file, not yet renamed
        def fsync(fd):
            real_fsync(fd)
            if os.fstat(fd).st_size > 1000:
                stall()
        registry_module.os.fsync = fsync
    else:  # the blob is renamed into place, the index row not yet written
        def write(self):
            stall()
            return real_write(self)
        Registry._write = write
    reg.register((np.ones((64, 64), np.float32),), label="half")
    """
)


@pytest.mark.parametrize("stage", ["blob", "index"])
def test_a_kill_during_a_write_leaves_no_half_version(tmp_path, stage) -> None:
    reg = Registry(tmp_path)
    keep = reg.register(weights(0), label="before")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), stage],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "stalled"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert [v.label for v in reg.versions()] == ["before"]
    assert same(reg.load(keep.id), weights(0))
    orphans = reg.orphan_blobs()
    assert len(orphans) == 1 and orphans[0].suffix == (".tmp" if stage == "blob" else ".fmw")
    done = reg.register((np.ones((64, 64), np.float32),), label="half")  # a retry succeeds
    assert same(reg.load(done.id), (np.ones((64, 64), np.float32),))


def test_devices_report_what_they_run_and_purge_keeps_lineage(tmp_path) -> None:
    reg = Registry(tmp_path)
    a = reg.register(weights(0)).id
    b = reg.register(weights(1), provenance=Provenance(parent=a)).id
    reg.promote(b)
    reg.report_running([1, 2], a)
    with pytest.raises(RegistryError, match="running on devices"):
        reg.purge(a)
    reg.report_running([1, 2], b)
    with pytest.raises(RegistryError, match="channel"):
        reg.purge(b)
    before = reg.storage_bytes()
    reg.purge(a, reason="retention")
    assert reg.storage_bytes() < before and reg.get(a).purged
    assert [v.id for v in reg.lineage(b)] == [b, a]
    with pytest.raises(RegistryError, match="purged"):
        reg.load(a)
    assert reg.running() == {1: b, 2: b}
