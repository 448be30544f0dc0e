"""SecAgg+ (Bell et al. 2020) with Bonawitz et al. (2017) as the complete-graph case.

One round, four stages, each a client step and a server step over plain messages::

    client.advertise_keys()                 -> AdvertiseKeys     server.receive_advertisements
    client.share_keys(KeyBroadcast)         -> ShareKeys         server.receive_shares
    client.masked_input(ShareDelivery, x, n)-> MaskedInput       server.receive_masked_inputs
    client.unmask(UnmaskRequest)            -> UnmaskResponse    server.receive_unmask_responses
                                                                  -> SecAggResult (the exact sum)

* Key agreement: two X25519 key pairs per client per round, one to encrypt shares
  (ChaCha20-Poly1305), one to agree pairwise mask seeds with each graph neighbour.
* Masks: ``y_i = encode(x_i) + PRG(b_i) + sum_{j in N(i)} +-PRG(s_ij)`` in Z_(2^bits)
  (:mod:`fedlab.secure.prg`, ChaCha20); ``+`` if ``i < j``. Pairwise masks cancel in the sum
  of survivors; the server removes each survivor's self mask ``PRG(b_i)`` and the pairwise
  masks a dropped client left behind.
* Shamir t-of-k (:mod:`fedlab.secure.shamir`): ``b_i`` and the mask private key are shared
  with the client's k neighbours. At unmasking, each neighbour reveals the ``b`` share of a
  survivor or the key share of a dropped client, never both for the same client.
* Dropouts are whoever did not answer a stage (the messages handed to a ``receive_*`` call
  are the ones that arrived before the deadline). After key advertising and key sharing,
  clients left with fewer than ``t`` live neighbours are pruned (they have sent no masked
  input yet, so this is safe); after masked input and unmasking, the server checks that every
  needed secret has ``t`` live share holders. Otherwise, or below ``min_clients``, the round
  aborts with :class:`SecAggAborted` naming the stage and the reason, and no result exists.

Threat model: an honest-but-curious server and clients that follow the protocol; the
identity registry (optional) authenticates advertised keys, which is what the active-server
variant of Bonawitz et al. needs at that stage. There is no consistency-check round and no
proof that a client's input is in range: a malicious client can still send any ring vector.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fedlab.secure.ddg import DistributedDiscreteGaussian
from fedlab.secure.fixedpoint import FixedPoint, IntegerNoise
from fedlab.secure.graph import neighbourhoods
from fedlab.secure.identity import DeviceIdentity, IdentityRegistry
from fedlab.secure.prg import MaskAccumulator, agree
from fedlab.secure.shamir import SHARE_BYTES, combine, split

__all__ = [
    "ADVERTISE",
    "MASKED_INPUT",
    "SHARE",
    "SHARE_CIPHERTEXT_BYTES",
    "STAGES",
    "UNMASK",
    "AdvertiseKeys",
    "KeyBroadcast",
    "MaskedInput",
    "RoundSetup",
    "SecAggAborted",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "ShareDelivery",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
]

ADVERTISE = "advertise_keys"
SHARE = "share_keys"
MASKED_INPUT = "masked_input"
UNMASK = "unmask"
STAGES = (ADVERTISE, SHARE, MASKED_INPUT, UNMASK)

_ID = 8  # bytes for a client id on the wire
_SHARE_PLAIN = 2 * _ID + 2 * SHARE_BYTES
_SHARE_CT = _SHARE_PLAIN + 16
#: Bytes of one encrypted share pair (a ``ShareKeys`` / ``ShareDelivery`` ciphertext).
SHARE_CIPHERTEXT_BYTES = _SHARE_CT
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SecAggAborted(RuntimeError):
    """The round cannot produce a sum; nothing may be applied.

    Attributes
    ----------
    stage : str
        The stage at which the protocol stopped (one of :data:`STAGES`).
    reason : str
        Why, naming clients and counts.
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"secure aggregation aborted at {stage}: {reason}")
        self.stage = stage
        self.reason = reason


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """Protocol parameters shared by every round of a run.

    Parameters
    ----------
    threshold : int
        Shares needed to reconstruct a client's secret (t). Must be a strict majority of the
        neighbourhood, ``k // 2 < t <= k``: each neighbour reveals only one of a client's two
        secrets, so a server that tells some neighbours "it dropped" and others "it survived"
        still cannot collect t shares of both and unmask that client's input.
    clip : float
        Per-coordinate clipping bound of the fixed-point encoding.
    num_neighbours : int, optional
        Graph degree k (even). ``None``, or ``>= cohort - 1``, is the complete graph
        (Bonawitz et al.); see :func:`fedlab.secure.graph.plan_neighbours` for SecAgg+.
    max_examples : int
        Cap on a client's ``num_examples`` (the weight inside the masked vector).
    ring_bits : int
        32 or 64.
    weighted : bool
        Sum ``n_i x_i`` (weighted FedAvg) instead of ``x_i``.
    min_clients : int, optional
        Fewest survivors at any stage; defaults to ``threshold + 1``.
    noise_bound : int
        Integer headroom for a distributed-DP noise hook (:mod:`fedlab.secure.dp`).
    noise_sigma : float
        Distributed DP: every client adds discrete Gaussian noise N_Z(0, σ²) in integer
        units, truncated at ``noise_bound`` (``fedlab.secure.ddg``), to its encoded vector,
        from OS entropy: nobody, the server included, unmasks an un-noised sum. Needs
        ``weighted=False``; the example-count slot then carries 1 per client (no count is
        released). 0: no noise. Plan it with :func:`fedlab.privacy.ddg.plan_ddg`, account
        it with :class:`fedlab.privacy.DDGTracker`.
    max_clients : int, optional
        Ring headroom for this many clients in every round (default: each round's cohort).
        Fixing it fixes the encoding's scale across rounds, which distributed DP needs (its
        σ and sensitivity are in integer units).
    """

    threshold: int
    clip: float
    num_neighbours: int | None = None
    max_examples: int = 1
    ring_bits: int = 32
    weighted: bool = True
    min_clients: int | None = None
    noise_bound: int = 0
    noise_sigma: float = 0.0
    max_clients: int | None = None

    def __post_init__(self) -> None:
        _int("threshold", self.threshold, 1)
        if self.num_neighbours is not None:
            _int("num_neighbours", self.num_neighbours, 2)
        if self.min_clients is not None:
            _int("min_clients", self.min_clients, 1)
        if self.max_clients is not None:
            _int("max_clients", self.max_clients, 2)
        sigma = self.noise_sigma
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma >= 0:
            raise ValueError(f"noise_sigma must be a number >= 0, got {sigma!r}")
        if sigma:
            if self.weighted:
                raise ValueError(
                    "distributed DP (noise_sigma > 0) needs weighted=False: the example-count "
                    "slot is not noised"
                )
            self.noise  # noqa: B018 - validates sigma against noise_bound
        # the codec validates clip, max_examples, ring_bits, weighted, noise_bound
        FixedPoint(
            clip=self.clip,
            max_clients=1,
            max_examples=self.max_examples,
            ring_bits=self.ring_bits,
            weighted=self.weighted,
            noise_bound=self.noise_bound,
        )

    @property
    def noise(self) -> DistributedDiscreteGaussian | None:
        """Each client's distributed-DP noise (None without ``noise_sigma``)."""
        if not self.noise_sigma:
            return None
        return DistributedDiscreteGaussian(sigma=float(self.noise_sigma), bound=self.noise_bound)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (papermill parameters, device JSON)."""
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecAggConfig:
        """Rebuild from :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True, slots=True)
class RoundSetup:
    """Everything public about one round; the server builds it and sends it with the task.

    Parameters
    ----------
    config : SecAggConfig
        Protocol parameters.
    round_index : int
        The round.
    cohort : tuple of int
        Invited client ids (distinct, >= 0); their order fixes Shamir share points.
    dimension : int
        Number of update parameters (the masked vector has one more entry: num_examples).
    seed : bytes
        Public randomness fixing the graph; :meth:`create` draws it.
    """

    config: SecAggConfig
    round_index: int
    cohort: tuple[int, ...]
    dimension: int
    seed: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.config, SecAggConfig):
            raise TypeError(f"config must be a SecAggConfig, got {self.config!r}")
        _int("round_index", self.round_index, 0)
        _int("dimension", self.dimension, 1)
        if not isinstance(self.cohort, tuple) or not self.cohort:
            raise ValueError(f"cohort must be a non-empty tuple of ids, got {self.cohort!r}")
        for c in self.cohort:
            _int("client id", c, 0)
        if len(set(self.cohort)) != len(self.cohort):
            raise ValueError(f"cohort ids must be distinct, got {self.cohort!r}")
        if not isinstance(self.seed, bytes) or len(self.seed) < 16:
            raise ValueError(f"seed must be at least 16 bytes, got {self.seed!r}")
        n, t, k = len(self.cohort), self.config.threshold, self.degree
        if n < 2:
            raise ValueError(f"secure aggregation needs at least 2 clients, got cohort {n}")
        if not k // 2 < t <= k:
            raise ValueError(
                f"threshold must satisfy k//2 < t <= k for degree k={k} (cohort {n}), got t={t}"
            )
        if self.min_survivors > n:
            raise ValueError(f"min_clients={self.min_survivors} exceeds the cohort of {n}")
        self.codec  # noqa: B018 - validates the ring headroom for this cohort

    @classmethod
    def create(
        cls,
        config: SecAggConfig,
        *,
        round_index: int,
        cohort: Sequence[int],
        dimension: int,
        seed: bytes | None = None,
    ) -> RoundSetup:
        """A setup with fresh public randomness (or the given ``seed``, for reproducibility)."""
        return cls(
            config, round_index, tuple(int(c) for c in cohort), dimension, seed or os.urandom(32)
        )

    @property
    def degree(self) -> int:
        """The graph degree actually used (``n - 1`` for the complete graph)."""
        n = len(self.cohort)
        k = self.config.num_neighbours
        return n - 1 if k is None or k >= n - 1 else k

    @property
    def min_survivors(self) -> int:
        """Fewest clients that may remain at any stage."""
        m = self.config.min_clients
        return self.config.threshold + 1 if m is None else m

    @property
    def codec(self) -> FixedPoint:
        """The fixed-point codec with headroom for this cohort."""
        c = self.config
        if c.max_clients is not None and len(self.cohort) > c.max_clients:
            raise ValueError(
                f"a cohort of {len(self.cohort)} exceeds the config's max_clients={c.max_clients}"
            )
        return FixedPoint(
            clip=float(c.clip),
            max_clients=c.max_clients or len(self.cohort),
            max_examples=c.max_examples,
            ring_bits=c.ring_bits,
            weighted=c.weighted,
            noise_bound=c.noise_bound,
        )

    @property
    def context(self) -> bytes:
        """Domain-separation bytes binding every derived key to this round."""
        return b"fedlab/secagg/v1" + self.round_index.to_bytes(8, "big") + self.seed

    def digest(self) -> str:
        """SHA-256 (hex) of everything public about the round: config, round, cohort,
        dimension, seed (what a device's saved state is bound to)."""
        h = hashlib.sha256()
        h.update(repr(sorted(self.config.to_dict().items())).encode())
        h.update(repr((self.round_index, self.cohort, self.dimension)).encode())
        h.update(self.seed)
        return h.hexdigest()

    def neighbours(self) -> dict[int, frozenset[int]]:
        """The round's communication graph."""
        return neighbourhoods(self.cohort, self.degree, self.seed)

    def position(self, client_id: int) -> int:
        """The client's Shamir share point (1-based cohort position)."""
        return self.cohort.index(client_id) + 1


# -- messages ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AdvertiseKeys:
    """Stage 1, client -> server: the round's two public keys (optionally signed)."""

    client_id: int
    round_index: int
    cipher_key: bytes
    mask_key: bytes
    signature: bytes | None = None

    def signed_bytes(self, context: bytes) -> bytes:
        """What the identity key signs."""
        return (
            context
            + b"advertise"
            + self.client_id.to_bytes(8, "big")
            + self.cipher_key
            + (self.mask_key)
        )

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire (ids, keys, signature)."""
        return 2 * _ID + 64 + len(self.signature or b"")


@dataclass(frozen=True, slots=True)
class KeyBroadcast:
    """Stage 1, server -> client: the live neighbours' public keys."""

    round_index: int
    keys: Mapping[int, tuple[bytes, bytes]]

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire."""
        return _ID + len(self.keys) * (_ID + 64)


@dataclass(frozen=True, slots=True)
class ShareKeys:
    """Stage 2, client -> server: encrypted shares addressed to each live neighbour."""

    client_id: int
    round_index: int
    ciphertexts: Mapping[int, bytes]
    commitment: bytes  # SHA-256 of the self-mask seed: the server checks what it rebuilds

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire."""
        return 2 * _ID + 32 + sum(_ID + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True, slots=True)
class ShareDelivery:
    """Stage 2, server -> client: the ciphertexts addressed to it, by sender."""

    round_index: int
    ciphertexts: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire."""
        return _ID + sum(_ID + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """Stage 3, client -> server: the masked ring vector ``[n, q_0, ...]``."""

    client_id: int
    round_index: int
    vector: np.ndarray

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire."""
        return 2 * _ID + int(self.vector.nbytes)

    def payload(self) -> bytes:
        """The bytes a device signs and sends (little-endian ring words)."""
        return self.vector.astype(self.vector.dtype.newbyteorder("<"), copy=False).tobytes()

    @classmethod
    def from_payload(cls, setup: RoundSetup, client_id: int, payload: bytes) -> MaskedInput:
        """Rebuild from :meth:`payload` (after the envelope's signature was verified)."""
        dtype = np.dtype(setup.codec.dtype).newbyteorder("<")
        expected = (setup.dimension + 1) * dtype.itemsize
        if len(payload) != expected:
            raise ValueError(
                f"masked payload of {len(payload)} bytes, the round expects {expected}"
            )
        vector = np.frombuffer(payload, dtype=dtype).astype(setup.codec.dtype)
        return cls(int(client_id), setup.round_index, vector)


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Stage 4, server -> client: which neighbours survived and which dropped."""

    round_index: int
    survivors: frozenset[int]
    dropped: frozenset[int]

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire."""
        return _ID + _ID * (len(self.survivors) + len(self.dropped))


@dataclass(frozen=True, slots=True)
class UnmaskResponse:
    """Stage 4, client -> server: self-mask shares of survivors, key shares of the dropped."""

    client_id: int
    round_index: int
    seed_shares: Mapping[int, bytes]
    key_shares: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire."""
        n = len(self.seed_shares) + len(self.key_shares)
        return 2 * _ID + n * (_ID + SHARE_BYTES)


@dataclass(frozen=True, slots=True)
class SecAggResult:
    """The unmasked cohort sum: what a strategy reduces (and central DP noises).

    Attributes
    ----------
    total : ndarray
        float64 sum over contributors: ``sum_i n_i x_i`` if weighted, else ``sum_i x_i``.
    num_examples : int
        ``sum_i n_i`` (each capped at ``max_examples``), learnt only as a total.
    contributors : tuple of int
        Clients whose input is in the sum.
    dropped : dict
        Stage -> clients lost there (no answer, refused message, or pruned).
    error_bound : float
        Bound on |total - exact float sum| per coordinate from fixed-point rounding.
    """

    round_index: int
    total: np.ndarray
    num_examples: int
    contributors: tuple[int, ...]
    dropped: Mapping[str, tuple[int, ...]]
    error_bound: float
    weighted: bool

    def mean(self) -> np.ndarray:
        """Weighted (by num_examples) or plain mean of the contributors' updates."""
        if self.weighted:
            if self.num_examples == 0:
                raise ValueError("no examples in the cohort: the weighted mean is undefined")
            return self.total / self.num_examples
        return self.total / len(self.contributors)


# -- client -----------------------------------------------------------------------------------
class SecAggClient:
    """One client's side of one round (a fresh object per round: keys are per round).

    Parameters
    ----------
    setup : RoundSetup
        The round's public parameters.
    client_id : int
        This client (must be in the cohort).
    identity : DeviceIdentity, optional
        Signs the advertised keys (the server verifies against its registry).
    """

    def __init__(
        self, setup: RoundSetup, client_id: int, *, identity: DeviceIdentity | None = None
    ) -> None:
        if not isinstance(setup, RoundSetup):
            raise TypeError(f"setup must be a RoundSetup, got {setup!r}")
        if client_id not in setup.cohort:
            raise ValueError(f"client {client_id!r} is not in the round's cohort")
        if identity is not None and identity.client_id != client_id:
            raise ValueError(f"identity is for client {identity.client_id}, not {client_id}")
        self.setup = setup
        self.client_id = int(client_id)
        self._identity = identity
        self._graph = setup.neighbours()[self.client_id]
        self._pos = {c: i + 1 for i, c in enumerate(setup.cohort)}
        self._cipher_sk = X25519PrivateKey.generate()
        self._mask_sk = X25519PrivateKey.generate()
        self._peers: dict[int, tuple[bytes, bytes]] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # sender -> (seed share, key share)
        self._seed = b""
        self._stage = ADVERTISE

    @property
    def stage(self) -> str:
        """The stage this client expects next (``"done"`` after unmasking)."""
        return self._stage

    def to_state(self) -> dict[str, Any]:
        """Everything this client must remember between stages, as plain JSON values.

        A device answers each stage in a fresh process (a Flower ClientApp, a restarted
        agent), so its secrets live in its state folder between messages. They are
        secrets: write them owner-only and delete them once the round is done.
        """
        return {
            "client_id": self.client_id,
            "round_index": self.setup.round_index,
            "seed": self.setup.seed.hex(),
            "setup": self.setup.digest(),
            "stage": self._stage,
            "cipher_sk": self._cipher_sk.private_bytes_raw().hex(),
            "mask_sk": self._mask_sk.private_bytes_raw().hex(),
            "self_seed": self._seed.hex(),
            "peers": {str(j): [a.hex(), b.hex()] for j, (a, b) in sorted(self._peers.items())},
            "held": {str(j): [a.hex(), b.hex()] for j, (a, b) in sorted(self._held.items())},
        }

    @classmethod
    def from_state(
        cls,
        setup: RoundSetup,
        state: Mapping[str, Any],
        *,
        identity: DeviceIdentity | None = None,
    ) -> SecAggClient:
        """The client :meth:`to_state` saved, for the same ``setup``.

        Raises
        ------
        ValueError
            The state is for another round or setup, or is damaged.
        """
        try:
            cid = int(state["client_id"])
            if (
                int(state["round_index"]) != setup.round_index
                or bytes.fromhex(state["seed"]) != setup.seed
            ):
                raise ValueError("the saved state is for another round")
            if state["setup"] != setup.digest():
                raise ValueError("the saved state is for another setup of this round")
            client = cls(setup, cid, identity=identity)
            client._cipher_sk = X25519PrivateKey.from_private_bytes(
                bytes.fromhex(state["cipher_sk"])
            )
            client._mask_sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(state["mask_sk"]))
            client._seed = bytes.fromhex(state["self_seed"])
            client._peers = {
                int(j): (bytes.fromhex(a), bytes.fromhex(b)) for j, (a, b) in state["peers"].items()
            }
            client._held = {
                int(j): (bytes.fromhex(a), bytes.fromhex(b)) for j, (a, b) in state["held"].items()
            }
            stage = str(state["stage"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"secure-aggregation state is damaged: {exc}") from None
        if stage not in (*STAGES, "done"):
            raise ValueError(f"secure-aggregation state has an unknown stage {stage!r}")
        client._stage = stage
        return client

    def _step(self, stage: str, round_index: int) -> None:
        if self._stage != stage:
            raise SecAggAborted(stage, f"client {self.client_id} is at stage {self._stage}")
        if round_index != self.setup.round_index:
            raise SecAggAborted(
                stage, f"message for round {round_index}, this is {self.setup.round_index}"
            )

    def _box(self, peer: int) -> ChaCha20Poly1305:
        key = agree(self._cipher_sk, self._peers[peer][0], self.setup.context + b"share")
        return ChaCha20Poly1305(key)

    def _nonce(self, sender: int, recipient: int) -> bytes:
        s, r = self._pos[sender], self._pos[recipient]
        return s.to_bytes(4, "big") + r.to_bytes(4, "big") + bytes(4)

    def advertise_keys(self) -> AdvertiseKeys:
        """Stage 1: the two fresh public keys, signed if the client has an identity."""
        self._step(ADVERTISE, self.setup.round_index)
        msg = AdvertiseKeys(
            self.client_id,
            self.setup.round_index,
            self._cipher_sk.public_key().public_bytes(*_RAW),
            self._mask_sk.public_key().public_bytes(*_RAW),
        )
        if self._identity is not None:
            sig = self._identity.sign(msg.signed_bytes(self.setup.context))
            msg = AdvertiseKeys(msg.client_id, msg.round_index, msg.cipher_key, msg.mask_key, sig)
        self._stage = SHARE
        return msg

    def share_keys(self, broadcast: KeyBroadcast) -> ShareKeys:
        """Stage 2: Shamir-share the self-mask seed and mask key with the live neighbours."""
        self._step(SHARE, broadcast.round_index)
        t = self.setup.config.threshold
        peers = dict(broadcast.keys)
        strangers = set(peers) - self._graph
        if strangers:
            raise SecAggAborted(SHARE, f"keys for non-neighbours {sorted(strangers)}")
        if len(peers) < t:
            raise SecAggAborted(SHARE, f"{len(peers)} live neighbours, threshold {t}")
        if len({k for pair in peers.values() for k in pair}) != 2 * len(peers):
            raise SecAggAborted(SHARE, "neighbours advertised duplicate keys")
        self._peers = peers
        self._seed = os.urandom(32)
        order = sorted(peers)
        xs = [self._pos[j] for j in order]
        seed_shares = split(self._seed, t, xs)
        key_shares = split(self._mask_sk.private_bytes_raw(), t, xs)
        me = self.client_id.to_bytes(_ID, "big")
        ciphertexts = {}
        for j, x in zip(order, xs, strict=True):
            plain = me + j.to_bytes(_ID, "big") + seed_shares[x] + key_shares[x]
            ciphertexts[j] = self._box(j).encrypt(
                self._nonce(self.client_id, j), plain, self.setup.context
            )
        self._stage = MASKED_INPUT
        commitment = hashlib.sha256(self.setup.context + self._seed).digest()
        return ShareKeys(self.client_id, self.setup.round_index, ciphertexts, commitment)

    def masked_input(
        self,
        delivery: ShareDelivery,
        update: np.ndarray,
        num_examples: int,
        *,
        noise: IntegerNoise | None = None,
    ) -> MaskedInput:
        """Stage 3: keep the shares received, send the encoded update under all masks.

        Parameters
        ----------
        delivery : ShareDelivery
            Ciphertexts from the neighbours that took part in stage 2.
        update : ndarray
            This client's update (``setup.dimension`` values, any shape).
        num_examples : int
            Its example count (the weight; clamped to ``max_examples``).
        noise : callable, optional
            Distributed-DP integer noise hook (:mod:`fedlab.secure.dp`).
        """
        self._step(MASKED_INPUT, delivery.round_index)
        t = self.setup.config.threshold
        senders = set(delivery.ciphertexts)
        if not senders <= set(self._peers):
            raise SecAggAborted(
                MASKED_INPUT,
                f"shares from clients I did not share with: {sorted(senders - set(self._peers))}",
            )
        if len(senders) < t:
            raise SecAggAborted(MASKED_INPUT, f"{len(senders)} live neighbours, threshold {t}")
        x = np.asarray(update)
        if x.size != self.setup.dimension:
            raise ValueError(
                f"update has {x.size} values, the round expects {self.setup.dimension}"
            )
        held = {}
        for j in sorted(senders):
            try:
                plain = self._box(j).decrypt(
                    self._nonce(j, self.client_id), delivery.ciphertexts[j], self.setup.context
                )
            except InvalidTag:
                raise SecAggAborted(
                    MASKED_INPUT, f"share from client {j} does not decrypt"
                ) from None
            src, dst = (
                int.from_bytes(plain[:_ID], "big"),
                int.from_bytes(plain[_ID : 2 * _ID], "big"),
            )
            if (src, dst) != (j, self.client_id):
                raise SecAggAborted(
                    MASKED_INPUT, f"share from client {j} is addressed {src}->{dst}"
                )
            body = plain[2 * _ID :]
            held[j] = (body[:SHARE_BYTES], body[SHARE_BYTES:])
        codec = self.setup.codec
        ddg = self.setup.config.noise
        if ddg is not None:  # distributed DP: noise from OS entropy, no count released
            if noise is None:
                noise = ddg.noise()
            num_examples = 1
        y = codec.encode(x, num_examples, noise=noise)
        acc = MaskAccumulator(y)
        acc.add(self._seed)
        info = self.setup.context + b"mask"
        for j in sorted(senders):
            acc.add(agree(self._mask_sk, self._peers[j][1], info), 1 if self.client_id < j else -1)
        self._held = held
        self._stage = UNMASK
        return MaskedInput(self.client_id, self.setup.round_index, y)

    def respond(
        self,
        body: KeyBroadcast | ShareDelivery | UnmaskRequest | None,
        *,
        update: np.ndarray | None = None,
        num_examples: int = 0,
    ) -> AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse:
        """The stage step a server message asks for: ``None`` → :meth:`advertise_keys`,
        :class:`KeyBroadcast` → :meth:`share_keys`, :class:`ShareDelivery` →
        :meth:`masked_input` (of ``update`` and ``num_examples``), :class:`UnmaskRequest` →
        :meth:`unmask`. How a transport (simulated or a device) answers a request."""
        if body is None:
            return self.advertise_keys()
        if isinstance(body, KeyBroadcast):
            return self.share_keys(body)
        if isinstance(body, ShareDelivery):
            if update is None:
                raise ValueError("a masked input needs the client's update")
            return self.masked_input(body, update, num_examples)
        if isinstance(body, UnmaskRequest):
            return self.unmask(body)
        raise TypeError(f"not a server message: {type(body).__name__}")

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 4: reveal one share per neighbour: its seed if it survived, its key if not."""
        self._step(UNMASK, request.round_index)
        both = request.survivors & request.dropped
        if both:
            raise SecAggAborted(UNMASK, f"clients {sorted(both)} listed as survivor and dropped")
        unknown = (request.survivors | request.dropped) - set(self._held)
        if unknown:
            raise SecAggAborted(UNMASK, f"no shares held for clients {sorted(unknown)}")
        self._stage = "done"
        return UnmaskResponse(
            self.client_id,
            self.setup.round_index,
            {i: self._held[i][0] for i in sorted(request.survivors)},
            {d: self._held[d][1] for d in sorted(request.dropped)},
        )


# -- server -----------------------------------------------------------------------------------
@dataclass
class _Round:
    keys: dict[int, AdvertiseKeys] = field(default_factory=dict)
    alive: set[int] = field(default_factory=set)  # U1, then U2, U3
    shared: set[int] = field(default_factory=set)  # U2 (the share holders)
    commitments: dict[int, bytes] = field(default_factory=dict)
    total: np.ndarray | None = None


class SecAggServer:
    """The server's side of one round; a cohort-level stage drives it.

    Parameters
    ----------
    setup : RoundSetup
        The round's public parameters (sent to the clients with the task).
    registry : IdentityRegistry, optional
        If given, advertised keys must carry a valid signature of an enrolled device.

    Attributes
    ----------
    dropped : dict
        Stage -> clients lost there, filled as the round goes.
    refused : list of (client id, stage, reason)
        Messages refused (each such client counts as dropped at that stage).
    failure : SecAggAborted or None
        Set when the round aborted; every later call raises it again.
    """

    def __init__(self, setup: RoundSetup, *, registry: IdentityRegistry | None = None) -> None:
        if not isinstance(setup, RoundSetup):
            raise TypeError(f"setup must be a RoundSetup, got {setup!r}")
        self.setup = setup
        self.registry = registry
        self._graph = setup.neighbours()
        self._r = _Round(alive=set(setup.cohort))
        self._stage = ADVERTISE
        self.dropped: dict[str, tuple[int, ...]] = {}
        self.refused: list[tuple[int, str, str]] = []
        self.failure: SecAggAborted | None = None

    # helpers
    def _abort(self, stage: str, reason: str) -> NoReturn:
        self.failure = SecAggAborted(stage, reason)
        self._stage = "aborted"
        self._r = _Round()  # forget the partial sum and keys
        raise self.failure

    def _begin(self, stage: str) -> None:
        if self.failure is not None:
            raise self.failure
        if self._stage != stage:
            raise RuntimeError(f"server expects {self._stage}, got {stage}")

    def _collect(self, stage: str, messages: Iterable[Any], kind: type) -> dict[int, Any]:
        got: dict[int, Any] = {}
        m: Any
        for m in messages:
            cid = getattr(m, "client_id", None)
            right_kind = isinstance(m, kind)
            if not right_kind:
                self.refused.append(
                    (cid if isinstance(cid, int) else -1, stage, "wrong message type")
                )
            elif m.round_index != self.setup.round_index:
                self.refused.append((m.client_id, stage, f"for round {m.round_index}"))
            elif m.client_id not in self._r.alive:
                why = "not in the cohort" if m.client_id not in self.setup.cohort else "dropped"
                self.refused.append((m.client_id, stage, why))
            elif m.client_id in got:
                self.refused.append((m.client_id, stage, "duplicate message"))
            else:
                got[m.client_id] = m
        return got

    def _refuse(self, got: dict[int, Any], cid: int, stage: str, reason: str) -> None:
        del got[cid]
        self.refused.append((cid, stage, reason))

    def _prune(self, alive: set[int], stage: str) -> set[int]:
        t = self.setup.config.threshold
        alive = set(alive)
        while True:
            weak = {c for c in alive if len(self._graph[c] & alive) < t}
            if not weak:
                return alive
            alive -= weak

    def _survive(self, stage: str, before: set[int], answered: set[int], after: set[int]) -> None:
        self.dropped[stage] = tuple(sorted(before - after))
        if len(after) < self.setup.min_survivors:
            silent, pruned = sorted(before - answered), sorted(answered - after)
            why = f"no answer or refused: {silent}"
            if pruned:
                why += (
                    f"; then pruned for fewer than {self.setup.config.threshold} "
                    f"live neighbours: {pruned}"
                )
            self._abort(
                stage,
                f"{len(after)} clients left, at least {self.setup.min_survivors} needed "
                f"(threshold {self.setup.config.threshold}); {why}",
            )

    # stages
    def receive_advertisements(self, messages: Iterable[AdvertiseKeys]) -> dict[int, KeyBroadcast]:
        """Stage 1: collect public keys; return each live client's neighbours' keys."""
        self._begin(ADVERTISE)
        got = self._collect(ADVERTISE, messages, AdvertiseKeys)
        seen: set[bytes] = set()
        for cid, m in sorted(got.items()):
            if len(m.cipher_key) != 32 or len(m.mask_key) != 32 or m.cipher_key == m.mask_key:
                self._refuse(got, cid, ADVERTISE, "malformed public keys")
            elif {m.cipher_key, m.mask_key} & seen:
                self._refuse(got, cid, ADVERTISE, "public key reused from another client")
            elif self.registry is not None and (
                why := self.registry.check(cid, m.signed_bytes(self.setup.context), m.signature)
            ):
                self._refuse(got, cid, ADVERTISE, why)
            else:
                seen |= {m.cipher_key, m.mask_key}
        before = set(self._r.alive)
        alive = self._prune(set(got), ADVERTISE)
        self._survive(ADVERTISE, before, set(got), alive)
        self._r.keys = {c: got[c] for c in alive}
        self._r.alive = alive
        self._stage = SHARE
        return {
            c: KeyBroadcast(
                self.setup.round_index,
                {j: (got[j].cipher_key, got[j].mask_key) for j in sorted(self._graph[c] & alive)},
            )
            for c in sorted(alive)
        }

    def receive_shares(self, messages: Iterable[ShareKeys]) -> dict[int, ShareDelivery]:
        """Stage 2: route encrypted shares to their recipients among the live clients."""
        self._begin(SHARE)
        got = self._collect(SHARE, messages, ShareKeys)
        for cid, m in sorted(got.items()):
            expect = self._graph[cid] & self._r.alive
            if set(m.ciphertexts) != expect:
                self._refuse(
                    got,
                    cid,
                    SHARE,
                    f"shares addressed to {sorted(m.ciphertexts)}, "
                    f"live neighbours are {sorted(expect)}",
                )
            elif (
                any(len(c) != _SHARE_CT for c in m.ciphertexts.values()) or len(m.commitment) != 32
            ):
                self._refuse(got, cid, SHARE, "malformed share ciphertexts")
        before = set(self._r.alive)
        alive = self._prune(set(got), SHARE)
        self._survive(SHARE, before, set(got), alive)
        self._r.alive = self._r.shared = alive
        self._r.commitments = {c: got[c].commitment for c in alive}
        self._stage = MASKED_INPUT
        return {
            c: ShareDelivery(
                self.setup.round_index,
                {j: got[j].ciphertexts[c] for j in sorted(self._graph[c] & alive)},
            )
            for c in sorted(alive)
        }

    def receive_masked_inputs(self, messages: Iterable[MaskedInput]) -> dict[int, UnmaskRequest]:
        """Stage 3: sum the masked vectors; ask survivors to help unmask."""
        self._begin(MASKED_INPUT)
        got = self._collect(MASKED_INPUT, messages, MaskedInput)
        codec = self.setup.codec
        size = self.setup.dimension + 1
        for cid, m in sorted(got.items()):
            v = m.vector
            if not isinstance(v, np.ndarray) or v.dtype != codec.dtype or v.shape != (size,):
                self._refuse(
                    got,
                    cid,
                    MASKED_INPUT,
                    f"expected a {np.dtype(codec.dtype).name} "
                    f"vector of {size}, got {getattr(v, 'dtype', type(v))} "
                    f"{getattr(v, 'shape', '')}",
                )
        before = set(self._r.alive)
        alive = set(got)
        self._survive(MASKED_INPUT, before, alive, alive)
        self._feasible(MASKED_INPUT, alive, alive)
        total = np.zeros(size, dtype=codec.dtype)
        for c in sorted(alive):
            total += got[c].vector
        self._r.total = total
        self._r.alive = alive
        self._stage = UNMASK
        lost = self._r.shared - alive
        return {
            c: UnmaskRequest(
                self.setup.round_index,
                frozenset(self._graph[c] & alive),
                frozenset(self._graph[c] & lost),
            )
            for c in sorted(alive)
        }

    def _feasible(self, stage: str, survivors: set[int], helpers: set[int]) -> None:
        t = self.setup.config.threshold
        for c in sorted(self._r.shared):
            have = len(self._graph[c] & helpers)
            if have < t:
                what = "self-mask seed" if c in survivors else "mask key"
                self._abort(
                    stage,
                    f"cannot reconstruct the {what} of client {c}: {have} live share holders, "
                    f"threshold {t}",
                )

    def receive_unmask_responses(self, messages: Iterable[UnmaskResponse]) -> SecAggResult:
        """Stage 4: reconstruct secrets, remove every mask, decode the exact sum."""
        self._begin(UNMASK)
        got = self._collect(UNMASK, messages, UnmaskResponse)
        survivors, lost = self._r.alive, self._r.shared - self._r.alive
        for cid, m in sorted(got.items()):
            ok_s = set(m.seed_shares) == self._graph[cid] & survivors
            ok_k = set(m.key_shares) == self._graph[cid] & lost
            sizes = [len(s) for s in (*m.seed_shares.values(), *m.key_shares.values())]
            if not (ok_s and ok_k) or any(s != SHARE_BYTES for s in sizes):
                self._refuse(got, cid, UNMASK, "shares not for the requested clients")
        self.dropped[UNMASK] = tuple(sorted(survivors - set(got)))
        self._feasible(UNMASK, survivors, set(got))
        t = self.setup.config.threshold
        codec = self.setup.codec
        assert self._r.total is not None
        total = self._r.total
        acc = MaskAccumulator(total)
        pos = {c: i + 1 for i, c in enumerate(self.setup.cohort)}.__getitem__
        for i in sorted(survivors):
            holders = sorted(self._graph[i] & set(got))[:t]
            seed = combine({pos(h): got[h].seed_shares[i] for h in holders}, 32)
            if hashlib.sha256(self.setup.context + seed).digest() != self._r.commitments[i]:
                self._abort(
                    UNMASK, f"the self-mask shares of client {i} do not match its commitment"
                )
            acc.add(seed, -1)
        info = self.setup.context + b"mask"
        for d in sorted(lost):
            holders = sorted(self._graph[d] & set(got))[:t]
            raw = combine({pos(h): got[h].key_shares[d] for h in holders}, 32)
            key = X25519PrivateKey.from_private_bytes(raw)
            if key.public_key().public_bytes(*_RAW) != self._r.keys[d].mask_key:
                self._abort(UNMASK, f"the key shares of dropped client {d} do not match its key")
            for j in sorted(self._graph[d] & survivors):  # j added +m if j < d, else -m
                acc.add(agree(key, self._r.keys[j].mask_key, info), -1 if j < d else 1)
        vec, examples = codec.decode_sum(total)
        self._stage = "done"
        contributors = tuple(sorted(survivors))
        return SecAggResult(
            round_index=self.setup.round_index,
            total=vec,
            num_examples=examples,
            contributors=contributors,
            dropped=dict(self.dropped),
            error_bound=codec.sum_error(len(contributors)),
            weighted=codec.weighted,
        )
