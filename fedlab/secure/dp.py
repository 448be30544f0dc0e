"""Hooks where differential privacy meets secure aggregation (design; no TensorFlow here).

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

2. **Distributed discrete Gaussian noise on the clients** (Kairouz et al. 2021;
   tensorflow-privacy's ``DistributedDiscreteGaussianSumQuery``). Each client adds integer
   noise to its encoded vector *inside* the ring, so the server only ever unmasks a noised
   sum. The hook is :data:`IntegerNoise`: ``noise(q) -> z`` with ``z`` integer, same shape
   as ``q`` and ``|z| <= noise_bound``; pass it to ``SecAggClient.masked_input(...,
   noise=...)`` and set ``SecAggConfig.noise_bound`` so the ring keeps headroom for it.
   The noise sampler and its accounting (including the tail truncation ``noise_bound``
   implies, and the noise lost when clients drop out) belong to ``fedlab.privacy``; this
   package runs on devices and must not import TensorFlow. Trust model: no single party,
   the server included, sees an un-noised sum, as long as enough clients are honest.
"""

from __future__ import annotations

from fedlab.secure.fixedpoint import IntegerNoise

__all__ = ["IntegerNoise"]
