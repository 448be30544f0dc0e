"""A content-addressed model registry: immutable versions, lineage, channels and an audit log.

Layout of a registry folder::

    index.sqlite          versions, channels, device reports, the append-only audit log
    blobs/ab/abcdef….fmw  one blob per distinct set of weights, named by its SHA-256

A **version** is weights + model config + provenance (parent version, rounds, strategy, DP
ledger state, seeds, code version). Its id is the SHA-256 of the weights' blob hash and the
canonical JSON of config and provenance, so the same model registered twice is the same
version, and a version can never change: its blob is verified against its hash on every read.

Writes are crash-safe in this order: the blob goes to a temporary file in ``blobs/``, is
fsync'ed and renamed to its hash (atomic on POSIX); only then is the index row inserted, in
a SQLite transaction. A process killed during the blob write leaves a ``*.tmp`` file and no
version; killed between rename and commit it leaves an unreferenced blob (no version either;
:meth:`Registry.orphan_blobs` lists them). SQLite runs in WAL mode with ``BEGIN IMMEDIATE``
transactions and a busy timeout, so several processes can register and promote at once.

**Channels** (``"production"``, ``"canary"``…) point at versions. :meth:`Registry.promote`
moves a channel, :meth:`Registry.rollback` moves it back to the version it had before,
:meth:`Registry.pin` freezes it. Every change, and every canary decision, is an event in the
audit log, which SQLite triggers make append-only (an UPDATE or DELETE on it aborts).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.federated.types import Weights

__all__ = [
    "AuditEvent",
    "ModelVersion",
    "Provenance",
    "Registry",
    "RegistryError",
    "RegistryObserver",
    "code_version",
    "decode_weights",
    "encode_weights",
]

_BLOB_MAGIC = b"FEDLAB-WEIGHTS 1\n"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY,
    parent TEXT REFERENCES versions(id),
    blob TEXT NOT NULL,
    blob_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    provenance TEXT NOT NULL,
    purged_at REAL
);
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL REFERENCES versions(id),
    pinned INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    previous TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS devices (
    device_id INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    reported_at REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


class RegistryError(Exception):
    """A registry operation was refused (unknown version, pinned channel, damaged blob…)."""


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, else the installed version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        if out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass  # no git or not a checkout: the package version below says what is installed
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"fedlab=={version('fedlab')}"
    except PackageNotFoundError:
        return "unknown"


def _canonical(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not plain JSON (numbers must be finite): {exc}") from exc


@dataclass(frozen=True, slots=True)
class Provenance:
    """How a version was made (all plain JSON values).

    Attributes
    ----------
    parent : str
        The version it was trained from (``""`` for a root).
    rounds : int
        Federated rounds that produced it from its parent.
    strategy : mapping
        ``strategy_to_dict`` of the server strategy.
    dp : mapping
        The privacy ledger's state (ε, δ, events, accountant) or ``{}`` without DP.
    seeds : mapping
        Data, partition and federation seeds.
    code_version : str
        ``git describe`` or the package version (see :func:`code_version`).
    metrics : mapping
        Central metrics at registration (accuracy, loss).
    extra : mapping
        Anything else worth keeping (the federation fingerprint, a note).
    """

    parent: str = ""
    rounds: int = 0
    strategy: Mapping[str, Any] = field(default_factory=dict)
    dp: Mapping[str, Any] = field(default_factory=dict)
    seeds: Mapping[str, Any] = field(default_factory=dict)
    code_version: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.parent, str):
            raise TypeError(f"parent must be a version id string, got {self.parent!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ValueError(f"rounds must be an int >= 0, got {self.rounds!r}")
        for name in ("strategy", "dp", "seeds", "metrics", "extra"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a mapping, got {type(value).__name__}")
            _canonical(dict(value))  # raises ValueError naming what is not JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return {
            "parent": self.parent,
            "rounds": self.rounds,
            "strategy": dict(self.strategy),
            "dp": dict(self.dp),
            "seeds": dict(self.seeds),
            "code_version": self.code_version,
            "metrics": dict(self.metrics),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        """Rebuild from :meth:`to_dict` output."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown Provenance fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable registry entry (its weights are read with :meth:`Registry.load`)."""

    id: str
    parent: str
    blob: str
    blob_bytes: int
    created_at: float
    label: str
    config: Mapping[str, Any]
    provenance: Provenance
    purged: bool = False

    @property
    def short(self) -> str:
        """The first 10 hex digits of the id."""
        return self.id[:10]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit log."""

    seq: int
    at: float
    action: str
    channel: str
    version: str
    previous: str
    actor: str
    detail: Mapping[str, Any]


def encode_weights(weights: Weights) -> bytes:
    """A deterministic byte form of ``weights``: magic, a JSON header line, raw C-order
    little-endian buffers. Same arrays → same bytes (``np.savez`` embeds timestamps)."""
    arrays = [np.ascontiguousarray(w) for w in weights]
    if not arrays:
        raise ValueError("weights must hold at least one tensor")
    for i, a in enumerate(arrays):
        if a.dtype.kind not in "fiu" or a.dtype.itemsize > 8:
            raise ValueError(f"tensor {i} has unsupported dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"tensor {i} holds NaN or Inf; a model version must be finite")
    header = [{"dtype": a.dtype.newbyteorder("<").str, "shape": list(a.shape)} for a in arrays]
    parts = [_BLOB_MAGIC, _canonical(header).encode(), b"\n"]
    parts += [a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in arrays]
    return b"".join(parts)


def decode_weights(blob: bytes) -> Weights:
    """Inverse of :func:`encode_weights`; a ``RegistryError`` if the bytes are not one."""
    if not blob.startswith(_BLOB_MAGIC):
        raise RegistryError("not a fedlab weights blob (bad magic)")
    head, sep, body = blob[len(_BLOB_MAGIC) :].partition(b"\n")
    try:
        header = json.loads(head)
        out, offset = [], 0
        for spec in header:
            dtype = np.dtype(spec["dtype"])
            count = int(np.prod(spec["shape"], dtype=np.int64))
            size = count * dtype.itemsize
            if offset + size > len(body):
                raise ValueError("truncated")
            out.append(
                np.frombuffer(body, dtype, count, offset)
                .reshape(spec["shape"])
                .astype(dtype.newbyteorder("="))
            )
            offset += size
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"damaged weights blob: {exc}") from exc
    if not sep or offset != len(body):
        raise RegistryError("damaged weights blob: trailing or missing bytes")
    return tuple(out)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Registry:
    """A model registry in ``root`` (created if missing).

    Parameters
    ----------
    root : str or Path
        Folder of the index and the blobs.
    actor : str
        Recorded in the audit log as who made each change.
    timeout_s : float
        How long a writer waits for another process's transaction.
    """

    def __init__(self, root: str | Path, *, actor: str = "", timeout_s: float = 30.0) -> None:
        if not isinstance(root, str | os.PathLike) or not str(root):
            raise ValueError(f"root must be a folder path, got {root!r}")
        if not isinstance(actor, str):
            raise TypeError(f"actor must be a string, got {actor!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"root must be a folder, got {str(self.root)!r}, which is a file")
        self.actor = actor or f"pid-{os.getpid()}"
        self.timeout_s = float(timeout_s)
        self.blobs = self.root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    # -- plumbing --------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(
            self.root / "index.sqlite", timeout=self.timeout_s, isolation_level=None
        )
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (``BEGIN IMMEDIATE``) so that two processes
        never both read a channel and then both move it."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _blob_path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / f"{digest}.fmw"

    def _write_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        final = self._blob_path(digest)
        if final.exists() and self._blob_ok(final, digest):
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{digest}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(final.parent)
        return digest

    @staticmethod
    def _blob_ok(path: Path, digest: str) -> bool:
        return hashlib.sha256(path.read_bytes()).hexdigest() == digest

    def _event(
        self,
        db: sqlite3.Connection,
        action: str,
        *,
        channel: str = "",
        version: str = "",
        previous: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        db.execute(
            "INSERT INTO events (at, action, channel, version, previous, actor, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                time.time(),
                action,
                channel,
                version,
                previous,
                self.actor,
                _canonical(dict(detail or {})),
            ),
        )

    @staticmethod
    def _row_to_version(row: tuple[Any, ...]) -> ModelVersion:
        vid, parent, blob, nbytes, created, label, config, prov, purged = row
        return ModelVersion(
            id=vid,
            parent=parent or "",
            blob=blob,
            blob_bytes=int(nbytes),
            created_at=float(created),
            label=label,
            config=json.loads(config),
            provenance=Provenance.from_dict(json.loads(prov)),
            purged=purged is not None,
        )

    # -- versions --------------------------------------------------------------------
    def register(
        self,
        weights: Weights,
        *,
        config: Mapping[str, Any] | None = None,
        provenance: Provenance | None = None,
        label: str = "",
    ) -> ModelVersion:
        """Store an immutable version; returns it (the existing one if already stored).

        Parameters
        ----------
        weights : tuple of arrays
            The model's weights (finite).
        config : mapping, optional
            The model's config (architecture name, input shape…), plain JSON.
        provenance : Provenance, optional
            How it was made; ``provenance.parent`` must be a registered version or ``""``.
        label : str
            A human name ("v1", "fine-tuned after drift"); not part of the identity.
        """
        config = dict(config or {})
        provenance = provenance if provenance is not None else Provenance()
        if not isinstance(provenance, Provenance):
            raise TypeError(f"provenance must be a Provenance, got {type(provenance).__name__}")
        if not isinstance(label, str):
            raise TypeError(f"label must be a string, got {label!r}")
        config_json = _canonical(config)
        prov_json = _canonical(provenance.to_dict())
        data = encode_weights(tuple(weights))  # validates before anything is written
        blob_digest = hashlib.sha256(data).hexdigest()
        vid = hashlib.sha256(f"{blob_digest}\n{config_json}\n{prov_json}".encode()).hexdigest()
        if provenance.parent and self._get(provenance.parent) is None:
            raise RegistryError(f"parent version {provenance.parent!r} is not in the registry")
        self._write_blob(data)
        with self._write() as db:
            if db.execute("SELECT 1 FROM versions WHERE id=?", (vid,)).fetchone() is None:
                db.execute(
                    "INSERT INTO versions (id, parent, blob, blob_bytes, created_at, label, "
                    "config, provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        vid,
                        provenance.parent or None,
                        blob_digest,
                        len(data),
                        time.time(),
                        label,
                        config_json,
                        prov_json,
                    ),
                )
                self._event(
                    db,
                    "register",
                    version=vid,
                    previous=provenance.parent,
                    detail={"label": label, "bytes": len(data)},
                )
        version = self._get(vid)
        assert version is not None
        return version

    def _get(self, vid: str) -> ModelVersion | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT id, parent, blob, blob_bytes, created_at, label, config, provenance, "
                "purged_at FROM versions WHERE id=?",
                (vid,),
            ).fetchone()
        return self._row_to_version(row) if row else None

    def resolve(self, ref: str) -> str:
        """A full version id from an id, a unique id prefix (≥ 6 hex digits) or a channel."""
        if not isinstance(ref, str) or not ref:
            raise RegistryError(f"not a version reference: {ref!r}")
        with self._connect() as db:
            row = db.execute("SELECT version FROM channels WHERE name=?", (ref,)).fetchone()
            if row:
                return str(row[0])
            if len(ref) < 6:
                raise RegistryError(f"no channel {ref!r} (and too short for a version prefix)")
            rows = db.execute(
                "SELECT id FROM versions WHERE id LIKE ? LIMIT 2", (ref + "%",)
            ).fetchall()
        if len(rows) != 1:
            raise RegistryError(f"{'no' if not rows else 'more than one'} version matches {ref!r}")
        return str(rows[0][0])

    def get(self, ref: str) -> ModelVersion:
        """The version ``ref`` names (id, prefix or channel)."""
        version = self._get(self.resolve(ref))
        if version is None:
            raise RegistryError(f"unknown version {ref!r}")
        return version

    def load(self, ref: str) -> Weights:
        """The weights of ``ref``, verified against their hash (a damaged blob is an error)."""
        version = self.get(ref)
        if version.purged:
            raise RegistryError(f"version {version.short}'s weights were purged by retention")
        path = self._blob_path(version.blob)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise RegistryError(f"blob of version {version.short} is missing: {path}") from exc
        if hashlib.sha256(data).hexdigest() != version.blob:
            raise RegistryError(
                f"blob of version {version.short} is corrupted: its SHA-256 does not match "
                f"{version.blob[:12]}… ({path})"
            )
        return decode_weights(data)

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, parent, blob, blob_bytes, created_at, label, config, provenance, "
                "purged_at FROM versions ORDER BY created_at, rowid"
            ).fetchall()
        return [self._row_to_version(r) for r in rows]

    def lineage(self, ref: str) -> list[ModelVersion]:
        """``ref`` and its ancestors, newest first."""
        chain = [self.get(ref)]
        while chain[-1].parent:
            parent = self._get(chain[-1].parent)
            if parent is None:  # cannot happen: the foreign key refuses it
                raise RegistryError(f"parent {chain[-1].parent} of {chain[-1].short} missing")
            chain.append(parent)
        return chain

    def graph(self) -> tuple[list[ModelVersion], list[tuple[str, str]]]:
        """The lineage graph: every version, and ``(parent, child)`` edges."""
        nodes = self.versions()
        return nodes, [(v.parent, v.id) for v in nodes if v.parent]

    # -- channels --------------------------------------------------------------------
    def channels(self) -> dict[str, tuple[str, bool]]:
        """``{channel: (version id, pinned)}``."""
        with self._connect() as db:
            rows = db.execute("SELECT name, version, pinned FROM channels").fetchall()
        return {name: (version, bool(pinned)) for name, version, pinned in rows}

    def current(self, channel: str = "production") -> str | None:
        """The version id a channel points at, or None."""
        return self.channels().get(channel, (None, False))[0]

    def promote(
        self,
        ref: str,
        channel: str = "production",
        *,
        reason: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> str:
        """Point ``channel`` at ``ref``; refused if the channel is pinned. Returns the id."""
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty string, got {channel!r}")
        vid = self.resolve(ref)
        if self.get(vid).purged:
            raise RegistryError(f"cannot promote {vid[:10]}: its weights were purged")
        with self._write() as db:
            row = db.execute(
                "SELECT version, pinned FROM channels WHERE name=?", (channel,)
            ).fetchone()
            if row and row[1]:
                raise RegistryError(f"channel {channel!r} is pinned to {row[0][:10]}; unpin it")
            previous = row[0] if row else ""
            db.execute(
                "INSERT INTO channels (name, version, pinned, updated_at) VALUES (?, ?, 0, ?) "
                "ON CONFLICT(name) DO UPDATE SET version=excluded.version, "
                "updated_at=excluded.updated_at",
                (channel, vid, time.time()),
            )
            self._event(
                db,
                "promote",
                channel=channel,
                version=vid,
                previous=previous,
                detail={"reason": reason, **dict(detail or {})},
            )
        return vid

    def rollback(
        self,
        channel: str = "production",
        *,
        reason: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> str:
        """Move ``channel`` back to the version it pointed at before its last move.

        Follows the audit log: rolling back twice goes back two steps (rollbacks themselves
        are skipped over). Refused if the channel is pinned or has no earlier version.
        """
        with self._write() as db:
            row = db.execute(
                "SELECT version, pinned FROM channels WHERE name=?", (channel,)
            ).fetchone()
            if row is None:
                raise RegistryError(f"no channel {channel!r}")
            if row[1]:
                raise RegistryError(f"channel {channel!r} is pinned to {row[0][:10]}; unpin it")
            moves = db.execute(
                "SELECT action, version, previous FROM events WHERE channel=? AND action IN "
                "('promote', 'rollback') ORDER BY seq",
                (channel,),
            ).fetchall()
            stack: list[str] = []  # the channel's history with rolled-back moves undone
            for action, _version, previous in moves:
                if action == "promote":
                    stack.append(previous)
                elif stack:
                    stack.pop()
            target = stack[-1] if stack else ""
            if not target:
                raise RegistryError(f"channel {channel!r} has no earlier version to roll back to")
            db.execute(
                "UPDATE channels SET version=?, updated_at=? WHERE name=?",
                (target, time.time(), channel),
            )
            self._event(
                db,
                "rollback",
                channel=channel,
                version=target,
                previous=row[0],
                detail={"reason": reason, **dict(detail or {})},
            )
        return str(target)

    def pin(self, channel: str = "production", *, reason: str = "") -> None:
        """Freeze ``channel``: promote and rollback are refused until :meth:`unpin`."""
        self._set_pin(channel, True, reason)

    def unpin(self, channel: str = "production", *, reason: str = "") -> None:
        """Allow ``channel`` to move again."""
        self._set_pin(channel, False, reason)

    def _set_pin(self, channel: str, pinned: bool, reason: str) -> None:
        with self._write() as db:
            row = db.execute("SELECT version FROM channels WHERE name=?", (channel,)).fetchone()
            if row is None:
                raise RegistryError(f"no channel {channel!r}")
            db.execute("UPDATE channels SET pinned=? WHERE name=?", (int(pinned), channel))
            self._event(
                db,
                "pin" if pinned else "unpin",
                channel=channel,
                version=row[0],
                detail={"reason": reason},
            )

    def record(
        self,
        action: str,
        *,
        version: str = "",
        channel: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append a custom event (a canary decision, a drift alert) to the audit log."""
        if not isinstance(action, str) or not action:
            raise ValueError(f"action must be a non-empty string, got {action!r}")
        with self._write() as db:
            self._event(db, action, channel=channel, version=version, detail=detail)

    def audit_log(self, *, action: str | None = None) -> list[AuditEvent]:
        """The audit log, oldest first (optionally only one ``action``)."""
        query = "SELECT seq, at, action, channel, version, previous, actor, detail FROM events"
        args: tuple[Any, ...] = ()
        if action is not None:
            query, args = query + " WHERE action=?", (action,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY seq", args).fetchall()
        return [
            AuditEvent(
                seq=int(r[0]),
                at=float(r[1]),
                action=r[2],
                channel=r[3],
                version=r[4],
                previous=r[5],
                actor=r[6],
                detail=json.loads(r[7]),
            )
            for r in rows
        ]

    # -- devices ---------------------------------------------------------------------
    def report_running(self, device_ids: Any, ref: str) -> None:
        """Devices report that they run ``ref`` (kept: the latest report per device)."""
        vid = self.resolve(ref)
        ids = [int(d) for d in np.atleast_1d(np.asarray(device_ids))]
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT INTO devices (device_id, version, reported_at) VALUES (?, ?, ?) "
                "ON CONFLICT(device_id) DO UPDATE SET version=excluded.version, "
                "reported_at=excluded.reported_at",
                [(d, vid, now) for d in ids],
            )

    def running(self) -> dict[int, str]:
        """``{device id: version id}`` from the latest reports."""
        with self._connect() as db:
            rows = db.execute("SELECT device_id, version FROM devices").fetchall()
        return {int(d): str(v) for d, v in rows}

    # -- storage ---------------------------------------------------------------------
    def purge(self, ref: str, *, reason: str = "") -> None:
        """Delete a version's weights (retention); its record and lineage stay.

        Refused for a version a channel points at or a device reports running.
        """
        vid = self.resolve(ref)
        with self._write() as db:
            used = db.execute("SELECT name FROM channels WHERE version=?", (vid,)).fetchall()
            if used:
                raise RegistryError(f"{vid[:10]} is on channel(s) {[u[0] for u in used]}")
            if db.execute("SELECT 1 FROM devices WHERE version=? LIMIT 1", (vid,)).fetchone():
                raise RegistryError(f"{vid[:10]} is still running on devices")
            blob = db.execute(
                "SELECT blob FROM versions WHERE id=? AND purged_at IS NULL", (vid,)
            ).fetchone()
            if blob is None:
                return
            db.execute("UPDATE versions SET purged_at=? WHERE id=?", (time.time(), vid))
            shared = db.execute(
                "SELECT 1 FROM versions WHERE blob=? AND purged_at IS NULL", (blob[0],)
            ).fetchone()
            self._event(db, "purge", version=vid, detail={"reason": reason})
        if shared is None:
            self._blob_path(blob[0]).unlink(missing_ok=True)

    def storage_bytes(self) -> int:
        """Bytes on disk: blobs plus the index (and its WAL)."""
        total = sum(p.stat().st_size for p in self.blobs.rglob("*.fmw"))
        return total + sum(p.stat().st_size for p in self.root.glob("index.sqlite*"))

    def orphan_blobs(self) -> list[Path]:
        """Blobs (and temporary files) no version references: what a crash can leave."""
        with self._connect() as db:
            used = {r[0] for r in db.execute("SELECT blob FROM versions").fetchall()}
        return [
            p
            for p in sorted(self.blobs.rglob("*"))
            if p.is_file() and (p.suffix == ".tmp" or p.stem not in used)
        ]


class RegistryObserver:
    """Registers the federation's global model every ``every`` committed rounds.

    An :class:`~fedlab.federated.observers.Observer` (duck-typed: the registry does not
    import the round engine). Each version's parent is the previous one it registered (or
    ``parent``), with the rounds in between, the strategy, the config's seeds, the central
    metrics, the federation's fingerprint, the privacy ledger's state when a ``tracker``
    (:class:`~fedlab.privacy.PrivacyTracker`) is given, and :func:`code_version`.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        every: int = 1,
        parent: str = "",
        model_config: Mapping[str, Any] | None = None,
        tracker: Any = None,
        label: str = "round {round}",
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.registry = registry
        self.every = every
        self.parent = registry.resolve(parent) if parent else ""
        self.model_config = dict(model_config or {})
        self.tracker = tracker
        self.label = label
        self._since = 0
        self._code = code_version()
        self.registered: list[ModelVersion] = []

    def on_round_start(self, federation: Any, round_index: int, selected: Any) -> None:
        """Nothing to do."""

    def on_training_start(self, federation: Any, round_index: int, client_ids: Any) -> None:
        """Nothing to do."""

    def on_client_done(self, federation: Any, round_index: int, outcome: Any) -> None:
        """Nothing to do."""

    def on_round_end(self, federation: Any, result: Any) -> None:
        """Register the committed model every ``every`` rounds."""
        from fedlab.federated.strategies import strategy_to_dict
        from fedlab.notebook import to_jsonable

        self._since += 1
        if federation.rounds_done % self.every:
            return
        dp: dict[str, Any] = {}
        if self.tracker is not None and self.tracker.epsilons:
            dp = {
                "epsilon": self.tracker.epsilons[-1][1],
                "delta": self.tracker.delta,
                "rounds": self.tracker.epsilons[-1][0],
                "statement": self.tracker.privacy_statement(),
            }
        provenance = Provenance(
            parent=self.parent,
            rounds=self._since,
            strategy=to_jsonable(strategy_to_dict(federation.strategy)),
            dp=to_jsonable(dp),
            seeds={"federation": federation.config.seed},
            code_version=self._code,
            metrics=to_jsonable(
                {
                    "test_accuracy": result.test_accuracy,
                    "test_loss": result.test_loss,
                    "train_loss": result.train_loss,
                }
            ),
            extra={
                "fingerprint": federation.fingerprint(),
                "rounds_done": federation.rounds_done,
                "config": to_jsonable(federation.config.to_dict()),
            },
        )
        version = self.registry.register(
            federation.weights,
            config=self.model_config,
            provenance=provenance,
            label=self.label.format(round=federation.rounds_done),
        )
        self.parent, self._since = version.id, 0
        self.registered.append(version)
