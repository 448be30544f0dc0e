"""Sealing a payload to the aggregator's X25519 key (ECIES-style, ChaCha20-Poly1305).

``seal`` uses a fresh ephemeral X25519 key per message; the AEAD key is HKDF-SHA256 of the
shared secret bound to both public keys, and the caller's ``aad`` (e.g. the signed update
header) is authenticated but not encrypted. Sign the plaintext, then seal it: the signature
proves origin, the seal hides the payload from relays (gateways, the transport).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedlab.secure.prg import derive_key

__all__ = ["SealError", "aggregator_key", "open_sealed", "public_bytes", "seal"]

_INFO = b"fedlab/seal/v1"
_NONCE = bytes(12)  # the key is fresh per message
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SealError(ValueError):
    """A sealed payload did not open (wrong key, tampered bytes or associated data)."""


def aggregator_key() -> X25519PrivateKey:
    """A fresh X25519 key for the aggregator (publish :func:`public_bytes` of it)."""
    return X25519PrivateKey.generate()


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    """The 32-byte raw public key of an aggregator key."""
    return private_key.public_key().public_bytes(*_RAW)


def seal(payload: bytes, recipient: bytes, *, aad: bytes = b"") -> bytes:
    """Encrypt ``payload`` to the X25519 public key ``recipient`` (32 raw bytes).

    Returns ``ephemeral public key (32) || ciphertext || tag (16)``: 48 bytes of overhead.
    """
    if not isinstance(recipient, bytes) or len(recipient) != 32:
        raise ValueError(f"recipient must be a 32-byte X25519 public key, got {recipient!r:.80}")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(*_RAW)
    key = derive_key(
        eph.exchange(X25519PublicKey.from_public_bytes(recipient)), _INFO + eph_pub + recipient
    )
    return eph_pub + ChaCha20Poly1305(key).encrypt(_NONCE, bytes(payload), aad)


def open_sealed(blob: bytes, private_key: X25519PrivateKey, *, aad: bytes = b"") -> bytes:
    """Decrypt a :func:`seal` output; :class:`SealError` names why it failed."""
    if not isinstance(private_key, X25519PrivateKey):
        raise TypeError(f"private_key must be an X25519PrivateKey, got {private_key!r}")
    if len(blob) < 48:
        raise SealError(f"sealed payload too short: {len(blob)} bytes < 48")
    eph_pub, body = blob[:32], blob[32:]
    me = public_bytes(private_key)
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError as exc:
        raise SealError(f"bad ephemeral key: {exc}") from None
    key = derive_key(shared, _INFO + eph_pub + me)
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, body, aad)
    except InvalidTag:
        raise SealError(
            "sealed payload does not open: wrong key, tampered bytes or associated data"
        ) from None
