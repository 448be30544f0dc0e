"""Kit manifests: SHA-256 of every file, signed with the workbench's Ed25519 key.

The device trusts the public key written into its ``device.json`` at setup time, never a
key shipped inside the kit it is verifying.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedlab.edge.model import atomic_write_bytes

__all__ = [
    "INSTALLED_VERSION_FILE",
    "MANIFEST",
    "SIGNATURE",
    "KitVerificationError",
    "Manifest",
    "check_not_rollback",
    "generate_signing_key",
    "kit_version",
    "load_signing_key",
    "public_key_b64",
    "sha256_file",
    "verify_kit",
    "write_manifest",
]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: In the device's ``state_dir``: the highest ``kit_version`` it has run (setup.sh writes
#: it too), so an older signed kit put in place by hand is refused as a rollback.
INSTALLED_VERSION_FILE = "kit_version.json"


class KitVerificationError(Exception):
    """A kit failed verification (a file changed, is missing, or the signature is bad)."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def generate_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Create an Ed25519 key, stored as PEM (mode 0600) at ``path``; refuses to overwrite."""
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists: load it with load_signing_key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64 (what ``device.json`` stores as ``trusted_key``)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _public_key(b64: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise KitVerificationError(
            f"trusted_key is not a base64 Ed25519 public key: {exc}"
        ) from exc


@dataclass(frozen=True, slots=True)
class Manifest:
    """A verified manifest: file hashes and the free-form ``info`` (versions, model spec)."""

    files: dict[str, str]
    info: dict[str, Any]


def write_manifest(
    folder: str | Path, files: list[str], key: Ed25519PrivateKey, info: dict[str, Any]
) -> Manifest:
    """Hash ``files`` (relative to ``folder``), write ``manifest.json`` and its signature."""
    root = Path(folder)
    bad = [f for f in files if Path(f).is_absolute() or ".." in Path(f).parts]
    if bad:
        raise ValueError(f"manifest paths must be relative and inside the kit: {bad}")
    hashes = {f: sha256_file(root / f) for f in sorted(files)}
    body = json.dumps({"files": hashes, "info": info}, indent=1, sort_keys=True).encode()
    atomic_write_bytes(root / MANIFEST, body)
    atomic_write_bytes(root / SIGNATURE, base64.b64encode(key.sign(body)) + b"\n")
    return Manifest(hashes, info)


def verify_kit(folder: str | Path, trusted_key: str) -> Manifest:
    """Check the manifest's signature, then every file's hash, and that the kit holds no
    file the manifest does not list.

    Parameters
    ----------
    folder : path
        The kit.
    trusted_key : str
        Base64 raw Ed25519 public key of the workbench (from the device's configuration).

    Raises
    ------
    KitVerificationError
        Naming the manifest, the signature, the first file that is missing or changed, or
        the files that are not listed.
    """
    root = Path(folder)
    manifest, signature = root / MANIFEST, root / SIGNATURE
    if not manifest.is_file():
        raise KitVerificationError(f"{manifest}: no manifest — not a fedlab kit")
    if not signature.is_file():
        raise KitVerificationError(f"{signature}: the manifest is not signed")
    try:
        body, raw_sig = manifest.read_bytes(), signature.read_bytes()
    except OSError as exc:
        raise KitVerificationError(
            f"{exc.filename}: cannot be read by user id {os.getuid()} ({exc.strerror}): the "
            "kit must be readable by the service user (files 0644, folders 0755)"
        ) from None
    try:
        sig = base64.b64decode(raw_sig.strip(), validate=True)
    except ValueError as exc:
        raise KitVerificationError(f"{signature}: not base64 ({exc})") from exc
    try:
        _public_key(trusted_key).verify(sig, body)
    except InvalidSignature:
        raise KitVerificationError(
            f"{signature}: the manifest's signature does not verify with the trusted key "
            "(the manifest was changed, or signed by another workbench)"
        ) from None
    try:
        data = json.loads(body)
        files = data["files"]
        info = data.get("info", {})
        if not (isinstance(files, dict) and isinstance(info, dict)):
            raise TypeError("'files' and 'info' must be objects")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise TypeError("'files' must map paths to hex digests")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KitVerificationError(f"{manifest}: signed but malformed ({exc})") from None
    for name, expected in sorted(files.items()):
        path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts or name in (MANIFEST, SIGNATURE):
            raise KitVerificationError(f"manifest lists a path outside the kit: {name!r}")
        if not path.is_file():
            raise KitVerificationError(f"{name}: listed in the manifest but missing from the kit")
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise KitVerificationError(
                f"{name}: cannot be read by user id {os.getuid()} ({exc.strerror}): the kit "
                "must be readable by the service user (files 0644, folders 0755)"
            ) from None
        if actual != expected:
            raise KitVerificationError(
                f"{name}: SHA-256 {actual[:16]}… does not match the manifest's {expected[:16]}… "
                "(the file was modified after the kit was signed)"
            )
    listed = {Path(name) for name in files} | {Path(MANIFEST), Path(SIGNATURE)}
    unlisted = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_dir() and p.relative_to(root) not in listed
    )
    if unlisted:
        raise KitVerificationError(
            f"files not in the signed manifest: {unlisted[:5]}"
            f"{' …' if len(unlisted) > 5 else ''} (a kit holds exactly what was signed)"
        )
    return Manifest(dict(files), dict(info))


def kit_version(manifest: Manifest) -> int:
    """The signed, monotonically increasing ``kit_version`` (0 for kits made before it)."""
    value = manifest.info.get("kit_version", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise KitVerificationError(
            f"the signed manifest's kit_version {value!r} is not an int >= 0"
        )
    return value


def check_not_rollback(manifest: Manifest, state_dir: str | Path) -> int:
    """Refuse a kit older than one this device already ran; record this one otherwise.

    Parameters
    ----------
    manifest : Manifest
        The verified kit's manifest.
    state_dir : path
        The device's state folder (holds :data:`INSTALLED_VERSION_FILE`).

    Returns
    -------
    int
        The kit's version.

    Raises
    ------
    KitVerificationError
        The kit's ``kit_version`` is lower than the recorded one, or the record is damaged.
    """
    version = kit_version(manifest)
    record = Path(state_dir) / INSTALLED_VERSION_FILE
    installed = 0
    if record.is_file():
        try:
            installed = json.loads(record.read_text())["kit_version"]
            if not isinstance(installed, int) or isinstance(installed, bool):
                raise TypeError(f"kit_version is {installed!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise KitVerificationError(
                f"{record}: damaged ({exc}); setup.sh rewrites it when it installs a kit"
            ) from None
    if version < installed:
        raise KitVerificationError(
            f"kit_version {version} is older than kit_version {installed} already installed "
            "on this device: refusing a rollback (install a newer kit, or reinstall this one "
            "on purpose with setup.sh --allow-rollback)"
        )
    if version > installed or not record.is_file():
        atomic_write_bytes(record, json.dumps({"kit_version": version}).encode() + b"\n")
    return version
