"""A lower bound on ε from a worst-case pair of neighbouring fleets (a hypothesis test).

An accountant gives an *upper* bound on ε; a bug there (a wrong sensitivity, a wrong
sampling model) makes it too small, and no amount of testing against the accountant
itself finds that. This module builds the other side: two neighbouring fleets, a test
that tells them apart from the released noised sums, and the ε that the test's error
rates prove. Any (ε, δ)-DP mechanism satisfies ``P[S] ≤ e^ε·Q[S] + δ`` for every event S
of its output, so ``ε ≥ log((P[S] − δ) / Q[S])`` for the test S below; an accountant that
reports less is wrong.

The pair (all clipped updates in units of C, noise σ = z per round):

* ``"fixed"`` (a cohort of k of N without replacement, replace-one): every device sends
  −C·e, except one that sends +C·e in one fleet (and −C·e, like the others, in its
  neighbour); it is in the cohort with probability p = k/N. Along e, shifted by the constant
  k·C, a round releases ``(1 − p)·N(0, z²) + p·N(2, z²)`` against ``N(0, z²)``: the
  replaced device moves the sum by 2C, which is why replace-one accounting needs z/2. The
  other coordinates are pure noise.
* ``"poisson"`` (add/remove): the device sends +C·e in one fleet and is absent in the other:
  ``(1 − q)·N(0, z²) + q·N(1, z²)`` against ``N(0, z²)``, both directions.

The test: quantise each round's output into fine bins (post-processing, so the binned
outputs are a fair observation of the mechanism), round each bin's log-likelihood ratio
*down* to a grid, add them over the rounds and reject when the sum reaches a threshold.
P[S] and Q[S] of that test are computed exactly (the distributions of the sum under both
fleets, by convolution of non-negative arrays, so without cancellation), and the best
threshold is reported. Rounding and binning only weaken the test, so the result is a
valid lower bound at any resolution; a finer grid brings it closer to the pair's true ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["EpsilonLowerBound", "epsilon_lower_bound"]


@dataclass(frozen=True, slots=True)
class EpsilonLowerBound:
    """The ε a hypothesis test proves, with the test's error rates.

    Attributes
    ----------
    epsilon : float
        ``log((P[S] − δ) / Q[S])`` of the best threshold (0 when no test beats δ).
    delta : float
        The δ it holds at.
    p_reject, q_reject : float
        P[S] under the fleet with the worst-case device, Q[S] under its neighbour.
    assumptions : str
        The pair and the sampling it was built for.
    """

    epsilon: float
    delta: float
    p_reject: float
    q_reject: float
    assumptions: str


def _mixture_bins(
    edges: np.ndarray, means: tuple[float, ...], weights: tuple[float, ...], sigma: float
) -> np.ndarray:
    """Mass of each bin ``[edges[i], edges[i+1])`` under Σ w·N(μ, σ²), without cancellation."""
    mass = np.zeros(len(edges) - 1)
    for mu, w in zip(means, weights, strict=True):
        if w == 0:
            continue
        a, b = (edges[:-1] - mu) / sigma, (edges[1:] - mu) / sigma
        # Φ(b) − Φ(a) for bins left of μ, Φ(−a) − Φ(−b) right of it: both terms small, exact.
        left = special.ndtr(b) - special.ndtr(a)
        right = special.ndtr(-a) - special.ndtr(-b)
        mass += w * np.where(a < 0, left, right)
    return np.clip(mass, 0.0, None)


def _power(pmf: np.ndarray, rounds: int) -> np.ndarray:
    """The pmf of the sum of ``rounds`` independent copies (repeated squaring)."""
    result = np.ones(1)
    base = pmf
    while rounds:
        if rounds & 1:
            result = np.convolve(result, base)
        rounds >>= 1
        if rounds:
            base = np.convolve(base, base)
    return result


def _one_direction(
    p_mass: np.ndarray, q_mass: np.ndarray, rounds: int, delta: float, grid: float
) -> tuple[float, float, float]:
    keep = (p_mass > 0) & (q_mass > 0)  # bins where one side is 0 only help the test; skip
    loss = np.log(p_mass[keep]) - np.log(q_mass[keep])
    index = np.floor(loss / grid).astype(np.int64)
    low = int(index.min())
    size = int(index.max()) - low + 1
    p_pmf = np.bincount(index - low, weights=p_mass[keep], minlength=size)
    q_pmf = np.bincount(index - low, weights=q_mass[keep], minlength=size)
    p_total, q_total = _power(p_pmf, rounds), _power(q_pmf, rounds)
    # P[S_t], Q[S_t] for S_t = {rounded loss sum >= t}, summed from the tail (no cancellation).
    p_tail = np.cumsum(p_total[::-1])[::-1]
    q_tail = np.cumsum(q_total[::-1])[::-1]
    useful = (p_tail > delta) & (q_tail > 0)
    if not useful.any():
        return 0.0, 0.0, 0.0
    eps = np.full(len(p_tail), -np.inf)
    eps[useful] = np.log(p_tail[useful] - delta) - np.log(q_tail[useful])
    best = int(np.argmax(eps))
    return max(0.0, float(eps[best])), float(p_tail[best]), float(q_tail[best])


def epsilon_lower_bound(
    *,
    noise_multiplier: float,
    population: int,
    cohort: int,
    rounds: int,
    delta: float,
    sampling: str = "fixed",
    bins: int = 4000,
    grid: float = 0.02,
) -> EpsilonLowerBound:
    """ε proven by a likelihood-ratio test between a worst-case pair of neighbouring fleets.

    Parameters
    ----------
    noise_multiplier : float
        z > 0: noise standard deviation over the clipping norm on the clipped sum.
    population, cohort : int
        N devices, k per round (q = k/N).
    rounds : int
        Released rounds (each with a fresh cohort and fresh noise).
    delta : float
        The δ of the bound.
    sampling : {"fixed", "poisson"}
        ``"fixed"``: k of N without replacement, replace-one adjacency; ``"poisson"``:
        independent inclusion with probability k/N, add/remove adjacency.
    bins, grid : int, float
        Resolution of the output quantisation and of the log-likelihood-ratio grid (a
        finer one gives a bound closer to the pair's true ε; any one is valid).

    Returns
    -------
    EpsilonLowerBound
        A valid lower bound on ε(δ) of the DP-FedAvg round mechanism with these parameters.
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    if not isinstance(population, int) or population < 1:
        raise ValueError(f"population must be an int >= 1, got {population!r}")
    if not isinstance(cohort, int) or not 1 <= cohort <= population:
        raise ValueError(f"cohort must be an int in [1, {population}], got {cohort!r}")
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if sampling not in ("fixed", "poisson"):
        raise ValueError(f"sampling must be 'fixed' or 'poisson', got {sampling!r}")
    if not (isinstance(bins, int) and bins >= 10):
        raise ValueError(f"bins must be an int >= 10, got {bins!r}")
    if not grid > 0:
        raise ValueError(f"grid must be > 0, got {grid!r}")
    z, p = float(noise_multiplier), cohort / population
    reach = 2.0 + 10.0 * z
    edges = np.concatenate([[-np.inf], np.linspace(-reach, reach, bins - 1), [np.inf]])
    if sampling == "fixed":
        replaced = _mixture_bins(edges, (0.0, 2.0), (1 - p, p), z)
        uniform = _mixture_bins(edges, (0.0,), (1.0,), z)
        directions = [(replaced, uniform), (uniform, replaced)]
        pair = (
            f"fixed cohort of {cohort} of {population}, replace-one: every device sends −C·e, "
            "except one that sends +C·e in one fleet"
        )
    else:
        present = _mixture_bins(edges, (0.0, 1.0), (1 - p, p), z)
        absent = _mixture_bins(edges, (0.0,), (1.0,), z)
        directions = [(present, absent), (absent, present)]
        pair = (
            f"Poisson sampling q = {cohort}/{population}, add/remove: one device sends C·e "
            "or is absent, every other device 0"
        )
    best = max(_one_direction(a, b, rounds, delta, grid) for a, b in directions)
    return EpsilonLowerBound(
        epsilon=best[0],
        delta=float(delta),
        p_reject=best[1],
        q_reject=best[2],
        assumptions=(
            f"{pair}; Gaussian noise z·C = {z:g}·C on the clipped sum, {rounds} rounds; "
            "likelihood-ratio test on the binned outputs"
        ),
    )
