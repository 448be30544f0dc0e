"""Partitioners: pure functions from labels (or groups) to per-client index arrays.

Every partitioner returns a list of sorted ``int64`` index arrays, one per client, that
are pairwise disjoint. They take a seed and never touch global random state.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "partition_by_group",
    "partition_dirichlet",
    "partition_iid",
    "partition_quantity_skew",
    "partition_shards",
]


def _check_clients(num_examples: int, num_clients: int, per_client_min: int = 1) -> None:
    if not isinstance(num_clients, int | np.integer) or isinstance(num_clients, bool):
        raise TypeError(f"num_clients must be an int, got {num_clients!r}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients!r}")
    if num_clients * per_client_min > num_examples:
        raise ValueError(
            f"num_clients={num_clients!r} needs at least {num_clients * per_client_min} examples "
            f"({per_client_min} per client), but there are only {num_examples}"
        )


def partition_iid(num_examples: int, num_clients: int, *, seed: int = 0) -> list[np.ndarray]:
    """Shuffle and deal the examples into ``num_clients`` near-equal parts.

    Parameters
    ----------
    num_examples : int
        Size of the dataset.
    num_clients : int
        Number of clients; at most ``num_examples``.
    seed : int
        Shuffle seed.
    """
    _check_clients(num_examples, num_clients)
    order = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]


def partition_dirichlet(
    labels: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    seed: int = 0,
    min_size: int = 2,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed partition: class *c*'s examples are split by ``Dirichlet(alpha)``.

    The standard non-IID benchmark partition (Hsu et al. 2019): for every class, client
    shares are drawn from a symmetric Dirichlet; small ``alpha`` gives clients few classes.
    Draws are repeated until every client has at least ``min_size`` examples.

    Parameters
    ----------
    labels : np.ndarray
        1-D integer labels.
    num_clients : int
        Number of clients.
    alpha : float
        Concentration, > 0 (0.1 very skewed, 100 almost IID).
    seed : int
        Seed of the draws.
    min_size : int
        Smallest acceptable client size.
    max_tries : int
        Redraws before giving up with a ``ValueError``.
    """
    labels = np.asarray(labels)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    _check_clients(len(labels), num_clients, min_size)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    fair = len(labels) / num_clients
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        held = np.zeros(num_clients)
        for idx in by_class:
            shares = rng.dirichlet(np.full(num_clients, alpha))
            # As in NIID-Bench (Li et al. 2022): clients already above a fair share get no
            # more, which keeps sizes from collapsing to zero without changing the skew.
            shares = shares * (held < fair)
            shares = shares / shares.sum()
            held += shares * len(idx)
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        sizes = [sum(len(c) for c in p) for p in parts]
        if min(sizes) >= min_size:
            return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    raise ValueError(
        f"could not give every one of {num_clients} clients >= {min_size} examples with "
        f"alpha={alpha!r} after {max_tries} draws; raise alpha or lower num_clients"
    )


def partition_shards(
    labels: np.ndarray, num_clients: int, *, shards_per_client: int = 2, seed: int = 0
) -> list[np.ndarray]:
    """Pathological non-IID partition of McMahan et al. (2017).

    Examples are sorted by label, cut into ``num_clients * shards_per_client`` equal shards,
    and every client receives ``shards_per_client`` random shards (so, usually, two classes).
    """
    labels = np.asarray(labels)
    if not isinstance(shards_per_client, int) or shards_per_client < 1:
        raise ValueError(f"shards_per_client must be a positive int, got {shards_per_client!r}")
    _check_clients(len(labels), num_clients, shards_per_client)
    rng = np.random.default_rng(seed)
    # A stable sort on a random permutation: shards are label-pure but shuffled within labels.
    perm = rng.permutation(len(labels))
    order = perm[np.argsort(labels[perm], kind="stable")]
    shards = np.array_split(order, num_clients * shards_per_client)
    assignment = rng.permutation(len(shards)).reshape(num_clients, shards_per_client)
    return [
        np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in assignment
    ]


def partition_quantity_skew(
    num_examples: int, num_clients: int, *, sigma: float = 1.0, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """IID labels but log-normally skewed client sizes (``sigma`` = 0 gives equal sizes)."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    _check_clients(num_examples, num_clients, min_size)
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, sigma, size=num_clients)
    spare = num_examples - min_size * num_clients
    sizes = min_size + np.floor(weights / weights.sum() * spare).astype(np.int64)
    # Hand the rounding remainder to the largest clients, one each.
    remainder = num_examples - int(sizes.sum())
    sizes[np.argsort(-weights)[:remainder]] += 1
    order = rng.permutation(num_examples)
    return [np.sort(p).astype(np.int64) for p in np.split(order, np.cumsum(sizes)[:-1])]


def partition_by_group(groups: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Natural partition: one client per distinct group id (device, user, subject).

    Returns
    -------
    parts : list of np.ndarray
        Index arrays, in ascending group-id order.
    group_ids : np.ndarray
        The group id of every part.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
    group_ids, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    cuts = np.cumsum(np.bincount(inverse))[:-1]
    return [np.sort(p).astype(np.int64) for p in np.split(order, cuts)], group_ids
