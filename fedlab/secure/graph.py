"""The SecAgg+ communication graph: a random k-regular Harary graph, or the complete graph.

Bell et al. (2020) replace Bonawitz et al.'s (2017) complete graph by a random k-regular
graph: nodes sit on a ring in a random order and each is joined to its k/2 nearest on either
side. The order comes from a public per-round seed, so server and clients build the same
graph without talking. ``k >= n - 1`` is the complete graph (Bonawitz).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

__all__ = ["neighbourhoods", "plan_neighbours"]


def neighbourhoods(cohort: Sequence[int], k: int, seed: bytes) -> dict[int, frozenset[int]]:
    """Each client's neighbours in the round's graph.

    Parameters
    ----------
    cohort : sequence of int
        Distinct client ids.
    k : int
        Degree: even and ``>= 2``, or ``>= len(cohort) - 1`` for the complete graph.
    seed : bytes
        Public round seed fixing the random order.
    """
    ids = list(cohort)
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError(f"cohort ids must be distinct, got {ids!r}")
    if k >= n - 1:
        return {c: frozenset(ids) - {c} for c in ids}
    if k < 2 or k % 2:
        raise ValueError(f"k must be even and >= 2 (or >= n - 1 = {n - 1}), got {k!r}")
    order = sorted(ids, key=lambda c: hashlib.sha256(seed + c.to_bytes(8, "big")).digest())
    half = k // 2
    return {
        c: frozenset(order[(p + off) % n] for off in range(-half, half + 1) if off)
        for p, c in enumerate(order)
    }


def _tail(k: int, p: float, at_least: int) -> float:
    """P(Binomial(k, p) >= at_least)."""
    return sum(math.comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(at_least, k + 1))


def plan_neighbours(n: int, dropout: float, failure: float = 1e-3) -> tuple[int, int]:
    """Smallest even degree k (and its threshold t = k//2 + 1) that survives ``dropout``.

    Chooses k so that, with every client dropping independently with probability
    ``dropout``, a union bound over the ``n`` clients puts the chance that some client keeps
    fewer than ``t`` live neighbours below ``failure``. Falls back to the complete graph
    (``k = n - 1``) when no sparser graph qualifies — the usual case for small cohorts.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not 0 <= dropout < 0.5:
        raise ValueError(f"dropout must be in [0, 0.5), got {dropout!r}")
    if not 0 < failure < 1:
        raise ValueError(f"failure must be in (0, 1), got {failure!r}")
    for k in range(2, n - 1, 2):
        t = k // 2 + 1
        if n * _tail(k, dropout, k - t + 1) <= failure:
            return k, t
    return n - 1, (n - 1) // 2 + 1
