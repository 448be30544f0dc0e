"""Discrete Gaussian noise on the device: the client half of distributed DP (numpy only).

The discrete Gaussian N_Z(0, σ²) puts mass ``exp(-k²/(2σ²)) / N(σ)`` on every integer k,
``N(σ) = Σ_k exp(-k²/(2σ²))``. In the distributed discrete Gaussian mechanism (Kairouz, Liu
and Steinke, ICML 2021, arXiv:2102.06387) every client adds i.i.d. N_Z(0, σ²) noise to each
coordinate of its fixed-point encoded update *before* masking, so the server only ever
unmasks a noised sum; :mod:`fedlab.privacy.ddg` accounts it.

Sampling (:func:`sample_discrete_gaussian`) is Algorithm 3 of Canonne, Kamath and Steinke,
"The Discrete Gaussian for Differential Privacy" (NeurIPS 2020, arXiv:2004.00010),
vectorised: draw Y from the discrete Laplace of scale ``t = floor(σ) + 1`` (a geometric
magnitude ``floor(t·E)``, E ~ Exp(1), with a uniform sign, "-0" rejected) and keep it with
probability ``exp(-(|Y| - σ²/t)² / (2σ²))``; kept values are exactly N_Z(0, σ²). As in
tensorflow-privacy's ``discrete_gaussian_utils``, the geometric and Bernoulli draws use
floating point (``floor(t·E)`` of a float exponential, and a uniform compared with a float
probability) rather than the paper's exact rational arithmetic, so the law is the discrete
Gaussian up to float rounding of those probabilities (~1e-16 relative).

Truncation (:class:`DistributedDiscreteGaussian`): the ring reserves ``noise_bound``
headroom per client and coordinate, so every noise value must satisfy ``|z| <= bound``. An
entry drawn beyond the bound is **redrawn** (rejection), so each coordinate is exactly
N_Z(0, σ²) conditioned on ``|Z| <= bound``. The accounting pays for this with the tail mass
``P(|Z| > bound)`` computed here from the pmf (:func:`discrete_gaussian_tail`); see
:mod:`fedlab.privacy.ddg` for how it enters δ.

Randomness: the caller passes a ``numpy.random.Generator``. On a device use
``np.random.default_rng()`` (seeded from OS entropy) and never a fixed seed: anyone who can
predict the noise subtracts it from the released sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedlab.secure.fixedpoint import IntegerNoise

__all__ = [
    "DistributedDiscreteGaussian",
    "bound_for_tail",
    "discrete_gaussian_log_tail",
    "discrete_gaussian_pmf",
    "discrete_gaussian_tail",
    "discrete_gaussian_variance",
    "sample_discrete_gaussian",
]

# Below this σ the normaliser and variance are summed term by term; above it the Poisson
# summation form is exact to float precision (its first correction is exp(-2π²σ²)).
_DIRECT_SIGMA = 50.0
# At most this many tail terms are summed one by one; the rest is bounded by an integral.
_TAIL_TERMS = 4096
# Relative slack on the computed tail mass so float summation error cannot make it low.
_TAIL_SLACK = 1e-9


def _check_sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float | np.floating | np.integer):
        raise TypeError(f"sigma must be a number, got {sigma!r}")
    s = float(sigma)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    return s


def _check_bound(bound: int) -> int:
    if isinstance(bound, bool) or not isinstance(bound, int | np.integer):
        raise TypeError(f"bound must be an int, got {bound!r}")
    if bound < 0:
        raise ValueError(f"bound must be >= 0, got {bound!r}")
    return int(bound)


def _shape(size: int | tuple[int, ...]) -> tuple[int, ...]:
    shape = (size,) if isinstance(size, int | np.integer) else tuple(size)
    if any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in shape):
        raise ValueError(f"size must be a non-negative int or a tuple of them, got {size!r}")
    return tuple(int(s) for s in shape)


def _log_normaliser(sigma: float) -> float:
    """log N(σ), N(σ) = Σ_k exp(-k²/(2σ²)) (direct sum, or Poisson summation for large σ)."""
    if sigma <= _DIRECT_SIGMA:
        k = np.arange(1, math.ceil(40 * sigma) + 2, dtype=np.float64)
        return math.log1p(2.0 * float(np.sum(np.exp(-(k * k) / (2 * sigma * sigma)))))
    # Poisson summation: N(σ) = sqrt(2π)·σ·(1 + 2 Σ_{m>=1} exp(-2π²σ²m²)); the sum is 0 in
    # float for σ > 50.
    return 0.5 * math.log(2 * math.pi) + math.log(sigma)


def discrete_gaussian_pmf(sigma: float, values: np.ndarray | int) -> np.ndarray:
    """Exact pmf of N_Z(0, σ²) at integer ``values``.

    Parameters
    ----------
    sigma : float
        The scale σ > 0 (the standard deviation is slightly below σ; see
        :func:`discrete_gaussian_variance`).
    values : int or ndarray of int
        Points to evaluate.

    Returns
    -------
    ndarray
        float64 probabilities, same shape as ``values``.
    """
    s = _check_sigma(sigma)
    k = np.asarray(values)
    if not np.issubdtype(k.dtype, np.integer):
        raise TypeError(f"values must be integers, got {k.dtype}")
    kf = k.astype(np.float64)
    return np.exp(-(kf * kf) / (2 * s * s) - _log_normaliser(s))


def discrete_gaussian_variance(sigma: float) -> float:
    """Exact variance of N_Z(0, σ²): slightly below σ² (0.86·σ² at σ = 1/2, σ²(1 - 2e-7) at 1)."""
    s = _check_sigma(sigma)
    if s <= _DIRECT_SIGMA:
        k = np.arange(1, math.ceil(40 * s) + 2, dtype=np.float64)
        w = np.exp(-(k * k) / (2 * s * s))
        return float(2.0 * np.sum(k * k * w) / (1.0 + 2.0 * np.sum(w)))
    return s * s  # Poisson summation: corrections are exp(-2π²σ²) = 0 in float


def _log_gauss_integral(a: float, sigma: float) -> float:
    """An upper bound on log ∫_a^∞ exp(-t²/(2σ²)) dt (a >= 0), = log(σ·sqrt(π/2)·erfc(x))."""
    x = a / (sigma * math.sqrt(2.0))
    e = math.erfc(x)
    if e > 0.0:
        log_erfc = math.log(e)
    else:  # erfc underflowed: erfc(x) <= exp(-x²) / (x·sqrt(π)) for x > 0
        log_erfc = -x * x - math.log(x * math.sqrt(math.pi))
    return math.log(sigma) + 0.5 * math.log(math.pi / 2) + log_erfc


def discrete_gaussian_log_tail(sigma: float, bound: int) -> float:
    """log P(|Z| > bound) for Z ~ N_Z(0, σ²), computed from the pmf (an upper bound).

    ``P(|Z| > b) = 2 Σ_{k > b} exp(-k²/(2σ²)) / N(σ)``. The first ``min(40σ + 2, 4096)``
    terms of the sum are added one by one (in log space, so nothing underflows); the rest,
    if any, is bounded by the integral ``∫_m^∞ exp(-t²/(2σ²)) dt`` (from ``m + 1/2`` where
    the integrand is convex, t >= σ), which is >= the sum of a decreasing (convex) function
    over the integers beyond m. The result carries a relative slack of 1e-9 so float
    rounding cannot make it smaller than the true value. For σ <= 102 the sum is complete
    and the value is exact up to that slack; above, the integral overstates the remainder
    by a relative ~b²/(24σ⁴) (midpoint rule on a convex function).
    """
    s = _check_sigma(sigma)
    b = _check_bound(bound)
    terms = min(math.ceil(40 * s) + 2, _TAIL_TERMS)
    k = np.arange(b + 1, b + 1 + terms, dtype=np.float64)
    exponents = -(k * k) / (2 * s * s)
    top = float(exponents[0])
    log_direct = top + math.log(float(np.sum(np.exp(exponents - top))))
    m = b + terms  # last index summed
    a = m + 0.5 if m + 0.5 >= s else float(m)
    log_rest = _log_gauss_integral(a, s)
    log_sum = max(log_direct, log_rest) + math.log1p(math.exp(-abs(log_direct - log_rest)))
    return math.log(2.0) + log_sum - _log_normaliser(s) + _TAIL_SLACK


def discrete_gaussian_tail(sigma: float, bound: int) -> float:
    """P(|Z| > bound) for Z ~ N_Z(0, σ²): see :func:`discrete_gaussian_log_tail`."""
    return min(1.0, math.exp(discrete_gaussian_log_tail(sigma, bound)))


def bound_for_tail(sigma: float, tail: float, *, draws: int = 1) -> int:
    """Smallest integer bound b with ``draws · P(|Z| > b) <= tail``.

    Parameters
    ----------
    sigma : float
        The discrete Gaussian's scale.
    tail : float
        Target probability (in (0, 1)) that any of ``draws`` values exceeds the bound.
    draws : int
        Noise values the target covers (contributors x coordinates x rounds).
    """
    s = _check_sigma(sigma)
    if not (isinstance(tail, int | float) and 0 < tail < 1):
        raise ValueError(f"tail must be in (0, 1), got {tail!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    log_target = math.log(tail) - math.log(draws)

    def ok(b: int) -> bool:
        return discrete_gaussian_log_tail(s, b) <= log_target

    # P(|Z| > b) <= erfc(b / (σ√2)) <= exp(-b²/(2σ²)): this b is always enough.
    high = math.ceil(s * math.sqrt(-2.0 * log_target)) + 1
    while not ok(high):  # pragma: no cover - the bound above already holds
        high *= 2
    low = -1  # ok(-1) is False by convention
    while high - low > 1:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid
    return high


def sample_discrete_gaussian(
    sigma: float, size: int | tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Draw i.i.d. N_Z(0, σ²) values (Canonne-Kamath-Steinke rejection, vectorised).

    Parameters
    ----------
    sigma : float
        The scale σ > 0.
    size : int or tuple of int
        Output shape.
    rng : numpy.random.Generator
        Source of randomness (``np.random.default_rng()`` on a device).

    Returns
    -------
    ndarray
        int64 array of shape ``size``.
    """
    s = _check_sigma(sigma)
    shape = _shape(size)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    count = math.prod(shape)
    out = np.empty(count, dtype=np.int64)
    t = math.floor(s) + 1  # discrete Laplace scale
    centre = s * s / t
    inv_two_var = -1.0 / (2 * s * s)
    filled = 0
    while filled < count:
        need = count - filled
        draw = int(need * 1.5) + 64  # acceptance is >= ~0.7 for t = floor(σ) + 1
        # discrete Laplace(t) (CKS Algorithm 2): G = floor(t·E), E ~ Exp(1), is geometric
        # with P(G >= k) = exp(-k/t); a uniform sign, rejecting "-0" so 0 is not counted twice
        g = np.floor(rng.standard_exponential(draw) * t)
        negative = np.unpackbits(np.frombuffer(rng.bytes((draw + 7) // 8), dtype=np.uint8))
        negative = negative[:draw].astype(bool)
        # keep Y with probability exp(-(|Y| - σ²/t)² / (2σ²)); |Y| = G
        dev = g - centre
        dev *= dev
        dev *= inv_two_var
        keep = (rng.random(draw) < np.exp(dev, out=dev)) & ~(negative & (g == 0))
        y = g[keep][:need]
        np.negative(y, out=y, where=negative[keep][:need])
        out[filled : filled + y.size] = y
        filled += y.size
    return out.reshape(shape)


@dataclass(frozen=True, slots=True)
class DistributedDiscreteGaussian:
    """Per-client discrete Gaussian noise for distributed DP, truncated at the ring headroom.

    Parameters
    ----------
    sigma : float
        Scale σ of each client's N_Z(0, σ²) noise, in *encoded integer units* (the
        fixed-point steps of :class:`~fedlab.secure.fixedpoint.FixedPoint`). Must be >= 1/2,
        the range of Kairouz et al.'s analysis.
    bound : int
        Truncation: every noise value satisfies ``|z| <= bound``; a value drawn beyond it is
        redrawn. Set ``SecAggConfig(noise_bound=bound)`` so the ring keeps the headroom.
        Must be >= σ (at most ~32 % of draws redrawn); pick it with :meth:`for_tail`.

    Examples
    --------
    >>> ddg = DistributedDiscreteGaussian.for_tail(sigma=40.0, tail=1e-12, draws=10**7)
    >>> hook = ddg.noise(np.random.default_rng(0))  # a device: default_rng() (OS entropy)
    >>> z = hook(np.zeros(5, dtype=np.int64))
    >>> z.dtype, bool(np.all(np.abs(z) <= ddg.bound))
    (dtype('int64'), True)
    """

    sigma: float
    bound: int

    def __post_init__(self) -> None:
        s = _check_sigma(self.sigma)
        b = _check_bound(self.bound)
        if s < 0.5:
            raise ValueError(
                f"sigma must be >= 1/2 (Kairouz et al.'s analysis needs it), got {self.sigma!r}"
            )
        if b < s:
            raise ValueError(
                f"bound must be >= sigma (else most draws are redrawn), got bound={b} for sigma={s}"
            )
        object.__setattr__(self, "sigma", s)
        object.__setattr__(self, "bound", b)

    @classmethod
    def for_tail(cls, *, sigma: float, tail: float, draws: int = 1) -> DistributedDiscreteGaussian:
        """The smallest bound with ``draws · P(|Z| > bound) <= tail`` (:func:`bound_for_tail`)."""
        return cls(sigma=sigma, bound=max(bound_for_tail(sigma, tail, draws=draws), 1))

    @property
    def tail(self) -> float:
        """P(|Z| > bound) for one untruncated draw: the probability each value is redrawn."""
        return discrete_gaussian_tail(self.sigma, self.bound)

    @property
    def variance(self) -> float:
        """Variance of one (untruncated) noise value, slightly below σ²."""
        return discrete_gaussian_variance(self.sigma)

    def sample(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw truncated noise: N_Z(0, σ²) conditioned on ``|z| <= bound`` (int64)."""
        z = sample_discrete_gaussian(self.sigma, size, rng)
        flat = z.reshape(-1)
        out = np.flatnonzero(np.abs(flat) > self.bound)
        while out.size:
            flat[out] = sample_discrete_gaussian(self.sigma, out.size, rng)
            out = out[np.abs(flat[out]) > self.bound]
        return z

    def noise(self, rng: np.random.Generator | None = None) -> IntegerNoise:
        """The :data:`~fedlab.secure.fixedpoint.IntegerNoise` hook for ``masked_input``.

        Parameters
        ----------
        rng : numpy.random.Generator, optional
            Defaults to a fresh ``np.random.default_rng()`` seeded from OS entropy (what a
            device must use); pass a seeded one only in simulations and tests.
        """
        gen = np.random.default_rng() if rng is None else rng
        if not isinstance(gen, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(gen).__name__}")

        def hook(encoded: np.ndarray) -> np.ndarray:
            return self.sample(np.shape(encoded), gen)

        return hook

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (papermill parameters, device JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistributedDiscreteGaussian:
        """Rebuild from :meth:`to_dict`."""
        return cls(**data)
