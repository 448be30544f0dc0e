"""``DeviceConfig``: the device's ``device.json``, validated field by field."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["DEVICE_ID_FILE", "ConfigError", "DeviceConfig", "resolve_device_id"]

MODES = ("litert", "coral")
FALLBACKS = ("refuse", "cpu")
TRANSPORTS = ("files",)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The generated device id, kept in ``state_dir`` across restarts and reinstalls.
DEVICE_ID_FILE = "device_id"


class ConfigError(ValueError):
    """``device.json`` is missing a field, has an unknown one, or a value of the wrong kind."""


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One device's configuration.

    Attributes
    ----------
    device_id : str
        Letters, digits, ``_.-``; at most 64 characters. Empty: the agent generates a
        random id once (``pi-<8 hex>``) and keeps it in ``state_dir`` (hostnames collide:
        many Pis are left as ``raspberrypi``).
    kit_dir : str
        The installed kit (relative paths are relative to the config file).
    data_path : str
        Local training data: ``.npz`` with ``x`` and ``y``, or ``.csv`` (features…, label).
    trusted_key : str
        Base64 Ed25519 public key of the workbench that signs kits.
    mode : {"litert", "coral"}
        Train the full model through LiteRT, or the head on Edge TPU embeddings.
    transport : dict
        ``{"kind": "files", "folder": PATH}`` — where tasks arrive and updates go.
    coral_fallback : {"refuse", "cpu"}
        ``coral`` without a usable Edge TPU: refuse to run, or use the CPU with a warning.
    threads : int
        LiteRT interpreter threads.
    state_dir : str
        Where the agent keeps its checkpoint (empty: no checkpoint).
    csv_header : bool
        A CSV ``data_path`` starts with a header row (skipped). Without it every row must
        be numeric: a text row is an error, never silently dropped.
    sign_updates : bool
        Sign every update with the device's Ed25519 key (generated on the device at first
        use and kept, 0600, in ``state_dir``; its public key is enrolled with the server:
        ``python -m fedlab.edge.agent --config device.json --enrol`` prints it).
    """

    device_id: str
    kit_dir: str
    data_path: str
    trusted_key: str
    mode: str = "litert"
    transport: dict[str, Any] = field(
        default_factory=lambda: {"kind": "files", "folder": "exchange"}
    )
    coral_fallback: str = "refuse"
    threads: int = 1
    state_dir: str = ""
    csv_header: bool = False
    sign_updates: bool = False

    def __post_init__(self) -> None:
        def fail(name: str, wanted: str) -> None:
            raise ConfigError(f"field {name!r} must be {wanted}, got {getattr(self, name)!r}")

        for name in ("device_id", "kit_dir", "data_path", "trusted_key", "state_dir"):
            if not isinstance(getattr(self, name), str):
                fail(name, "a string")
        if self.device_id and not _ID.match(self.device_id):
            fail("device_id", "1-64 letters, digits, '_', '.' or '-' (or empty: generated)")
        if not self.device_id and not self.state_dir:
            raise ConfigError(
                "field 'device_id' is empty (generate one) but 'state_dir' is empty too: "
                "set a device_id, or a state_dir to keep the generated one in"
            )
        for name in ("kit_dir", "data_path", "trusted_key"):
            if not getattr(self, name):
                fail(name, "a non-empty string")
        if self.mode not in MODES:
            fail("mode", f"one of {MODES}")
        if self.coral_fallback not in FALLBACKS:
            fail("coral_fallback", f"one of {FALLBACKS}")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            fail("threads", "an int >= 1")
        if not isinstance(self.csv_header, bool):
            fail("csv_header", "true or false")
        if not isinstance(self.sign_updates, bool):
            fail("sign_updates", "true or false")
        if self.sign_updates and not self.state_dir:
            raise ConfigError(
                "field 'sign_updates' is true but 'state_dir' is empty: the device key is "
                "kept in state_dir"
            )
        t = self.transport
        if not isinstance(t, dict) or t.get("kind") not in TRANSPORTS:
            fail("transport", f"an object with 'kind' in {TRANSPORTS}")
        if t["kind"] == "files" and not (isinstance(t.get("folder"), str) and t["folder"]):
            raise ConfigError(
                f"field 'transport.folder' must be a non-empty string, got {t.get('folder')!r}"
            )

    @classmethod
    def from_dict(cls, data: Any, *, base: str | Path | None = None) -> DeviceConfig:
        """Build from parsed JSON; relative paths are resolved against ``base``.

        Raises
        ------
        ConfigError
            Naming the missing, unknown or invalid field.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"device config must be a JSON object, got {type(data).__name__}")
        fields = cls.__dataclass_fields__
        required = [
            n for n, f in fields.items() if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [n for n in required if n not in data]
        if missing:
            raise ConfigError(f"missing field(s) {missing} (required: {required})")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"unknown field(s) {unknown}; allowed: {sorted(fields)}")
        config = cls(**data)
        if base is None:
            return config
        root = Path(base)

        def resolve(p: str) -> str:
            return p if not p or Path(p).is_absolute() else str((root / p).resolve())

        transport = dict(config.transport)
        if "folder" in transport:
            transport["folder"] = resolve(transport["folder"])
        return cls(
            **{
                **asdict(config),
                "kit_dir": resolve(config.kit_dir),
                "data_path": resolve(config.data_path),
                "state_dir": resolve(config.state_dir),
                "transport": transport,
            }
        )

    @classmethod
    def load(cls, path: str | Path) -> DeviceConfig:
        """Read ``device.json`` (relative paths relative to its folder)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, base=p.parent)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (what ``device.json`` holds)."""
        return asdict(self)


def resolve_device_id(config: DeviceConfig) -> DeviceConfig:
    """``config`` with its device id: the configured one, else the one kept in
    ``state_dir/device_id``, else a new random ``pi-<8 hex>`` (``coral-…`` in mode coral)
    written there for every later start.

    Raises
    ------
    ConfigError
        The kept id file is not a valid id, or cannot be written.
    """
    if config.device_id:
        return config
    from fedlab.edge.model import atomic_write_bytes

    path = Path(config.state_dir) / DEVICE_ID_FILE
    if path.is_file():
        kept = path.read_text().strip()
        if not _ID.match(kept):
            raise ConfigError(f"{path}: {kept[:80]!r} is not a device id (delete it to regenerate)")
        return replace(config, device_id=kept)
    new = f"{'coral' if config.mode == 'coral' else 'pi'}-{secrets.token_hex(4)}"
    try:
        atomic_write_bytes(path, new.encode() + b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot keep the generated device id in {path}: {exc}") from exc
    return replace(config, device_id=new)
