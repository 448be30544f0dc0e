"""TLS certificates for a SuperLink and authentication keys for SuperNodes.

Flower 1.23 serves TLS on the Fleet and Control APIs with a CA-signed server certificate
whose subject alternative names must match the address SuperNodes and the ``flwr`` CLI
dial. SuperNode keys must be EC keys on a NIST curve in **OpenSSH** format (the SuperNode
loads them with ``load_ssh_private_key``; ``flwr supernode register`` reads the public key
with ``load_ssh_public_key``). Everything here uses the ``cryptography`` package (no
``openssl``/``ssh-keygen`` binaries needed). Private keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedlab.edge.model import atomic_write_bytes

__all__ = ["ServerCerts", "make_certs", "make_node_key"]


@dataclass(frozen=True, slots=True)
class ServerCerts:
    """Paths of a SuperLink's TLS material: CA certificate (for SuperNodes and the CLI),
    server certificate and key (for the SuperLink)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certs(
    out: str | Path, *, hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 365
) -> ServerCerts:
    """A CA and a server certificate for ``hosts`` (IP addresses and DNS names).

    Parameters
    ----------
    out : path
        Folder for ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key``.
    hosts : sequence of str
        Every address the SuperLink is reached at (each becomes a SAN).
    days : int
        Validity.

    Raises
    ------
    ValueError
        No hosts, or ``days`` < 1.
    """
    if not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ValueError(f"hosts must be non-empty strings, got {hosts!r}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days!r}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedlab fleet CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    atomic_write_bytes(folder / "ca.key", _key_pem(ca_key), mode=0o600)
    atomic_write_bytes(folder / "ca.crt", ca.public_bytes(pem))
    atomic_write_bytes(folder / "server.key", _key_pem(key), mode=0o600)
    atomic_write_bytes(folder / "server.pem", cert.public_bytes(pem))
    return ServerCerts(folder / "ca.crt", folder / "server.pem", folder / "server.key")


def make_node_key(out: str | Path, name: str) -> tuple[Path, Path]:
    """An EC P-384 SuperNode key pair in OpenSSH format: ``out/name`` (private, 0600) and
    ``out/name.pub`` (what ``flwr supernode register`` takes).

    Raises
    ------
    ValueError
        ``name`` is empty or contains a path separator.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    priv_path = atomic_write_bytes(folder / name, private, mode=0o600)
    pub_path = atomic_write_bytes(folder / f"{name}.pub", public + b"\n")
    return priv_path, pub_path
