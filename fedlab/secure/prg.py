"""Key derivation and the seeded mask generator (ChaCha20 keystream from ``cryptography``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["agree", "derive_key", "mask"]

_NONCE = bytes(16)  # every seed is used for exactly one stream


def derive_key(material: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of ``material`` bound to ``info`` (32 bytes)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """X25519 shared secret with ``peer_public`` (32 raw bytes), derived for ``info``."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return derive_key(shared, info)


def mask(seed: bytes, length: int, dtype: type[np.unsignedinteger[Any]]) -> np.ndarray:
    """A uniformly random ring vector of ``length`` entries expanded from a 32-byte seed."""
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    width = np.dtype(dtype).itemsize
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(length * width)), dtype=dtype)
