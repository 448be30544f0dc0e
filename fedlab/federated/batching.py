"""The batch order every client runtime follows, so runtimes can be compared exactly."""

from __future__ import annotations

import numpy as np

__all__ = ["batch_schedule", "client_seed"]


def client_seed(root_seed: int, round_index: int, client_id: int) -> int:
    """A 63-bit seed for one client in one round, independent of every other client."""
    ss = np.random.SeedSequence([root_seed, round_index, client_id, 0x5EED])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def batch_schedule(num_examples: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Index arrays of every local step: a fresh shuffle per epoch, the last batch smaller.

    Parameters
    ----------
    num_examples : int
        Examples on the client (> 0).
    batch_size : int
        Maximum batch size.
    epochs : int
        Local epochs.
    seed : int
        Seed of the shuffles (see :func:`client_seed`).
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples!r}")
    if batch_size < 1 or epochs < 1:
        raise ValueError(f"batch_size and epochs must be >= 1, got {batch_size!r}, {epochs!r}")
    rng = np.random.default_rng(seed)
    steps: list[np.ndarray] = []
    for _ in range(epochs):
        order = rng.permutation(num_examples)
        steps.extend(order[i : i + batch_size] for i in range(0, num_examples, batch_size))
    return steps
