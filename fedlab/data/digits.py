"""sklearn's handwritten digits, bundled with scikit-learn (no network)."""

from __future__ import annotations

import numpy as np

from fedlab.data.arrays import LabeledArrays

__all__ = ["load_digits"]


def load_digits(
    *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[LabeledArrays, LabeledArrays]:
    """Load the 1,797 8×8 digit images as ``(train, test)``.

    Images are scaled to [0, 1], shaped ``(n, 8, 8, 1)`` float32; labels are int64 in 0..9.
    The split is stratified and seeded, so the same ``seed`` always gives the same split.

    Parameters
    ----------
    test_fraction : float
        Share of every class held out for the test set, in (0, 1).
    seed : int
        Seed of the split.

    Returns
    -------
    tuple of LabeledArrays
        The training and test sets.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        test_idx.append(idx[: round(len(idx) * test_fraction)])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    train_order = rng.permutation(np.flatnonzero(~test_mask))
    test_order = np.flatnonzero(test_mask)
    return (
        LabeledArrays(x[train_order], y[train_order], name="digits-train"),
        LabeledArrays(x[test_order], y[test_order], name="digits-test"),
    )
