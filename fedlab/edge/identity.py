"""The device's own signing key: generated on the device, never leaving it.

The private key is 32 raw Ed25519 bytes in ``state_dir/device_key`` (mode 0600, written
atomically); the server enrols the public key (``python -m fedlab.edge.agent --enrol``
prints it with the device id). A kit never carries a private key: kits are shared by many
devices, identities are not.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedlab.edge.config import ConfigError
from fedlab.edge.model import atomic_write_bytes

__all__ = ["DEVICE_KEY_FILE", "device_key", "public_key"]

#: The device's private key, in ``state_dir``.
DEVICE_KEY_FILE = "device_key"


def device_key(state_dir: str | Path) -> bytes:
    """The device's raw private key, generated (0600) on first use.

    Raises
    ------
    ConfigError
        The kept key is not 32 bytes, or it cannot be read or written.
    """
    path = Path(state_dir) / DEVICE_KEY_FILE
    try:
        if path.is_file():
            raw = path.read_bytes()
            if len(raw) != 32:
                raise ConfigError(
                    f"{path}: {len(raw)} bytes, not a 32-byte Ed25519 key (restore it from a "
                    "backup, or delete it and enrol the new key)"
                )
            return raw
        raw = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        atomic_write_bytes(path, raw, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot keep the device key in {path}: {exc}") from exc
    return raw


def public_key(raw: bytes) -> bytes:
    """The 32-byte public key of a raw private key (what the server enrols)."""
    return (
        Ed25519PrivateKey.from_private_bytes(raw)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
