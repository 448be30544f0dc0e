"""Where differential privacy meets secure aggregation (no TensorFlow here).

Two trust models, two hooks:

1. **Central DP on the unmasked sum** (the client-side-clipping form of DP-FedAvg). Clients
   clip their update to L2 norm ``C`` *before* :meth:`FixedPoint.encode` (which then only
   guards the per-coordinate range). The server's cohort stage returns a
   :class:`~fedlab.secure.secagg.SecAggResult`; its ``total`` is the sum that the DP strategy
   (``fedlab.privacy``, workbench layer) adds Gaussian noise to, before dividing and taking
   the server step, and its ledger accounts the round as usual. Trust model: the server sees
   the un-noised *sum* (never an individual update) and is trusted to add the noise.
   Fixed-point rounding adds at most ``result.error_bound`` per coordinate; it is
   data-independent and does not change the sensitivity beyond ``C + sqrt(d) * resolution``.

2. **Distributed discrete Gaussian noise on the clients** (Kairouz, Liu and Steinke 2021;
   tensorflow-privacy's ``DistributedDiscreteGaussianSumQuery``). Each client adds integer
   noise to its encoded vector *inside* the ring, so the server only ever unmasks a noised
   sum. The hook is :data:`IntegerNoise`: ``noise(q) -> z`` with ``z`` integer, same shape
   as ``q`` (the update coordinates; the ``num_examples`` slot is never noised) and
   ``|z| <= noise_bound``; pass it to ``SecAggClient.masked_input(..., noise=...)`` (or
   ``run_round(..., noise=...)``) and set ``SecAggConfig.noise_bound`` so the ring keeps
   headroom for it.

   It exists: :class:`fedlab.secure.ddg.DistributedDiscreteGaussian` ``(sigma, bound)`` is
   the frozen config whose :meth:`~fedlab.secure.ddg.DistributedDiscreteGaussian.noise`
   method returns the hook. It draws exact N_Z(0, σ²) values in encoded integer units
   (Canonne-Kamath-Steinke rejection sampling, numpy only, ~10-20 ms per 1e5 coordinates)
   from the ``numpy.random.Generator`` it is given (a device: ``np.random.default_rng()``,
   seeded from OS entropy), and redraws any value beyond ``bound``; ``bound`` is the
   ``noise_bound`` to configure, chosen for a target tail mass with ``for_tail`` /
   :func:`fedlab.secure.ddg.bound_for_tail`. The tail ``P(|Z| > bound)`` is computed from the
   pmf (:func:`fedlab.secure.ddg.discrete_gaussian_tail`).

   The accounting lives in the workbench layer, :mod:`fedlab.privacy.ddg`: the sensitivity
   of fedlab's encoding in integer units (``encoded_sensitivity``; it requires an unweighted
   codec with a constant ``num_examples``, or counts declared public, because the count slot
   is summed without noise), the per-round RDP bound of Kairouz et al. (Proposition 14,
   with the contributors actually in the sum: dropouts take their noise with them), the
   truncation paid in δ, and ``DDGLedger.privacy_statement()`` naming the trust model.
   ``plan_ddg`` picks σ and ``noise_bound`` for a target central-equivalent noise
   multiplier. Trust model: no single party, the server included, sees an un-noised sum,
   provided the server is honest-but-curious, at most the declared number of contributors
   share their noise with it, and fewer than the secure-aggregation threshold collude.
"""

from __future__ import annotations

from fedlab.secure.fixedpoint import IntegerNoise

__all__ = ["IntegerNoise"]
