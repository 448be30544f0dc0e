"""The in-process driver's helpers: the uniformity score and the cost sweep."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.secure import cost_sweep, uniformity


def test_uniformity_scores_random_words_near_zero_and_structured_ones_high():
    rng = np.random.default_rng(0)
    random = rng.integers(0, 2**32, size=50_000, dtype=np.uint64).astype(np.uint32)
    assert abs(uniformity(random)["z"]) < 6
    small = np.arange(50_000, dtype=np.uint32)  # all in the lowest bin
    assert uniformity(small)["z"] > 100


@pytest.mark.parametrize(
    ("vector", "bins", "quoted"),
    [
        (np.zeros(10, np.uint32), 64, "320"),
        (np.zeros(1000, np.float32), 64, "float32"),
        (np.zeros(1000, np.uint32), 3, "3"),
    ],
)
def test_uniformity_refuses_what_it_cannot_score(vector, bins, quoted):
    with pytest.raises(ValueError, match=quoted):
        uniformity(vector, bins=bins)


def test_cost_sweep_reports_every_pair_and_bandwidth_close_to_float32():
    rows = cost_sweep([4, 6], [0.0, 0.25], dimension=3000, seed=1)
    assert [(r["cohort"], r["dropout"]) for r in rows] == [(4, 0.0), (4, 0.25), (6, 0.0), (6, 0.25)]
    assert all(r["ok"] and 1 < r["upload expansion"] < 1.2 for r in rows), rows
    planned = cost_sweep([6], [0.2], dimension=100, graph="planned")
    assert planned[0]["degree"] == 5
    with pytest.raises(ValueError, match="'ring'"):
        cost_sweep([4], [0.0], dimension=10, graph="ring")
