"""Secure aggregation and authenticated updates (device layer: numpy + cryptography only).

* :mod:`~fedlab.secure.secagg` — SecAgg+ / SecAgg rounds: :class:`SecAggClient`,
  :class:`SecAggServer`, messages, :class:`SecAggAborted`.
* :mod:`~fedlab.secure.fixedpoint` — clipped updates (and ``num_examples``) in Z_(2^bits).
* :mod:`~fedlab.secure.shamir`, :mod:`~fedlab.secure.prg`, :mod:`~fedlab.secure.graph` — the
  primitives: Shamir over GF(2^521 - 1), ChaCha20 masks, the k-regular graph.
* :mod:`~fedlab.secure.identity` — Ed25519 device keys, enrolment, signed updates, verifier.
* :mod:`~fedlab.secure.seal` — sealing a payload to the aggregator (X25519 + ChaCha20-Poly1305).
* :mod:`~fedlab.secure.dp` — where DP noise plugs in; :mod:`~fedlab.secure.ddg` — the
  distributed discrete Gaussian noise a client adds (``SecAggConfig.noise_sigma``).
* :mod:`~fedlab.secure.simulate` — the in-process driver.

How a cohort-level server stage drives one round (the transport carries the messages; a
``receive_*`` call gets whatever arrived before the stage deadline, and whoever is missing
has dropped out)::

    setup = RoundSetup.create(config, round_index=r, cohort=ids, dimension=d)  # sent with tasks
    server = SecAggServer(setup, registry=registry)        # registry: signed key adverts
    # device:  client = SecAggClient(setup, my_id, identity=my_identity)
    b = server.receive_advertisements([...client.advertise_keys()...])    # -> per-client
    s = server.receive_shares([...client.share_keys(b[id])...])           # -> per-client
    # device signs MaskedInput.payload() with its Ed25519 key (UpdateVerifier checks it as a
    # per-envelope stage, then MaskedInput.from_payload rebuilds it)
    u = server.receive_masked_inputs([...client.masked_input(s[id], delta, n)...])
    result = server.receive_unmask_responses([...client.unmask(u[id])...])  # SecAggResult
    # strategy: DP noise on result.total, then result.total / result.num_examples, server step

Any ``receive_*`` may raise :class:`SecAggAborted` (``.stage``, ``.reason``): apply nothing.
"""

from __future__ import annotations

from fedlab.secure.ddg import (
    DistributedDiscreteGaussian,
    bound_for_tail,
    discrete_gaussian_tail,
    sample_discrete_gaussian,
)
from fedlab.secure.fixedpoint import FixedPoint, IntegerNoise
from fedlab.secure.graph import neighbourhoods, plan_neighbours
from fedlab.secure.identity import (
    DeviceIdentity,
    IdentityRegistry,
    SignedUpdate,
    UpdateHeader,
    UpdateVerifier,
    Verdict,
)
from fedlab.secure.seal import SealError, aggregator_key, open_sealed, public_bytes, seal
from fedlab.secure.secagg import (
    ADVERTISE,
    MASKED_INPUT,
    SHARE,
    STAGES,
    UNMASK,
    AdvertiseKeys,
    KeyBroadcast,
    MaskedInput,
    RoundSetup,
    SecAggAborted,
    SecAggClient,
    SecAggConfig,
    SecAggResult,
    SecAggServer,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedlab.secure.simulate import RoundOutcome, cost_sweep, plain_sum, run_round, uniformity

__all__ = [
    "ADVERTISE",
    "MASKED_INPUT",
    "SHARE",
    "STAGES",
    "UNMASK",
    "AdvertiseKeys",
    "DeviceIdentity",
    "DistributedDiscreteGaussian",
    "FixedPoint",
    "IdentityRegistry",
    "IntegerNoise",
    "KeyBroadcast",
    "MaskedInput",
    "RoundOutcome",
    "RoundSetup",
    "SealError",
    "SecAggAborted",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "ShareDelivery",
    "ShareKeys",
    "SignedUpdate",
    "UnmaskRequest",
    "UnmaskResponse",
    "UpdateHeader",
    "UpdateVerifier",
    "Verdict",
    "aggregator_key",
    "bound_for_tail",
    "cost_sweep",
    "discrete_gaussian_tail",
    "neighbourhoods",
    "open_sealed",
    "plain_sum",
    "plan_neighbours",
    "public_bytes",
    "run_round",
    "sample_discrete_gaussian",
    "seal",
    "uniformity",
]
