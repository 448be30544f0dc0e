"""Key derivation and the seeded mask generator (ChaCha20 keystream from ``cryptography``)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["MaskAccumulator", "agree", "derive_key", "mask"]

_NONCE = bytes(16)  # every seed is used for exactly one stream
_SLACK = 64  # update_into wants room beyond the input


def derive_key(material: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of ``material`` bound to ``info`` (32 bytes)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def agree(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """X25519 shared secret with ``peer_public`` (32 raw bytes), derived for ``info``.

    The seed is BLAKE2b-256 over the shared point, both public keys (in a fixed order) and
    ``info``, as libsodium's ``crypto_kx`` does; it is about 3x cheaper than an HKDF object
    per pair, and the server derives one seed per (dropped client, neighbour) pair.
    """
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    mine = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    lo, hi = sorted((mine, peer_public))
    return hashlib.blake2b(shared + lo + hi + info, digest_size=32).digest()


def mask(seed: bytes, length: int, dtype: type[np.unsignedinteger[Any]]) -> np.ndarray:
    """A uniformly random ring vector of ``length`` entries expanded from a 32-byte seed."""
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    width = np.dtype(dtype).itemsize
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(length * width)), dtype=dtype)


class MaskAccumulator:
    """Adds or subtracts seeded masks into a ring vector in place, reusing one buffer.

    ``update_into`` a preallocated buffer is about 5x faster than ``update`` (no 2 x 4 bytes
    per entry of fresh allocations per mask); this is the inner loop of both sides.

    Parameters
    ----------
    acc : ndarray
        The ring vector (``uint32`` or ``uint64``) to modify in place.
    """

    __slots__ = ("_buf", "_view", "_zeros", "acc")

    def __init__(self, acc: np.ndarray) -> None:
        if acc.dtype not in (np.uint32, np.uint64) or acc.ndim != 1:
            raise ValueError(f"acc must be a 1-D uint32/uint64 vector, got {acc.dtype} {acc.shape}")
        self.acc = acc
        self._zeros = bytes(acc.nbytes)
        self._buf = bytearray(acc.nbytes + _SLACK)
        self._view = np.frombuffer(self._buf, dtype=acc.dtype, count=acc.size)

    def add(self, seed: bytes, sign: int = 1) -> None:
        """``acc += sign * PRG(seed)`` modulo the ring (``sign`` is +1 or -1)."""
        if len(seed) != 32:
            raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
        Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor().update_into(
            self._zeros, self._buf
        )
        if sign == 1:
            self.acc += self._view
        elif sign == -1:
            self.acc -= self._view
        else:
            raise ValueError(f"sign must be +1 or -1, got {sign!r}")
