"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

Secrets are short byte strings (a 32-byte self-mask seed, a 32-byte X25519 private key), so
one field element holds a whole secret; a share is 66 bytes. Share ``x`` coordinates are the
holders' 1-based positions in the round's cohort, so they never need to travel.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache

__all__ = ["PRIME", "SHARE_BYTES", "combine", "split"]

#: The Mersenne prime 2^521 - 1.
PRIME = (1 << 521) - 1
#: Bytes of one share's y value.
SHARE_BYTES = 66
_MAX_SECRET = 64


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, bytes]:
    """Split ``secret`` so any ``threshold`` of the shares at ``xs`` recover it.

    Parameters
    ----------
    secret : bytes
        At most 64 bytes.
    threshold : int
        Shares needed to reconstruct (``1 <= threshold <= len(xs)``).
    xs : sequence of int
        Distinct non-zero evaluation points (holder positions).

    Returns
    -------
    dict
        ``x -> share`` (``SHARE_BYTES`` bytes each).
    """
    if not isinstance(secret, bytes) or len(secret) > _MAX_SECRET:
        raise ValueError(f"secret must be at most {_MAX_SECRET} bytes, got {secret!r:.40}")
    points = list(xs)
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise ValueError(f"xs must be distinct positive field elements, got {points!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(f"threshold must be an int, got {threshold!r}")
    if not 1 <= threshold <= len(points):
        raise ValueError(f"threshold must be in [1, {len(points)}], got {threshold!r}")
    coeffs = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    out: dict[int, bytes] = {}
    for x in points:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        out[x] = y.to_bytes(SHARE_BYTES, "big")
    return out


def combine(shares: Mapping[int, bytes], length: int) -> bytes:
    """Recover a ``length``-byte secret from ``x -> share`` (Lagrange interpolation at 0).

    Exactly the shares given are used; with fewer than the threshold the result is an
    unrelated value, so callers check what they recover (e.g. against a public key).
    """
    if not shares:
        raise ValueError("no shares to combine")
    xs = tuple(shares)
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError(f"share points must be distinct and positive, got {list(xs)!r}")
    coeffs = _lagrange_at_zero(xs)
    secret = sum(c * int.from_bytes(shares[x], "big") for c, x in zip(coeffs, xs, strict=True))
    secret %= PRIME
    if secret >= 1 << (8 * length):
        raise ValueError("shares do not combine to a secret of the expected length")
    return secret.to_bytes(length, "big")


@lru_cache(maxsize=1024)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange basis at 0 for the points ``xs`` (one modular inverse: batch inversion).

    Cached: the server rebuilds many secrets from the same set of share holders.
    """
    nums, dens = [], []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * xm % PRIME
                den = den * (xm - xj) % PRIME
        nums.append(num)
        dens.append(den)
    prefix = [1]
    for d in dens:
        prefix.append(prefix[-1] * d % PRIME)
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(xs)
    for j in range(len(xs) - 1, -1, -1):
        out[j] = nums[j] * (inv * prefix[j] % PRIME) % PRIME
        inv = inv * dens[j] % PRIME
    return tuple(out)
