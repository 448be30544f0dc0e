"""Secure aggregation as a cohort-level server stage: in this process, or on a fleet.

The accepted clients' updates are summed by SecAgg+ (:mod:`fedlab.secure`): each client
masks its fixed-point update with pairwise and self masks, the server only ever holds masked
vectors and learns nothing but ``Σ nᵢ·xᵢ`` and ``Σ nᵢ`` (or ``Σ xᵢ`` unweighted). The sum goes
to the strategy's :meth:`aggregate_sum` — for DP-FedAvg the client-side clipping form, where
the server noises the sum it is given.

One server loop, :func:`drive_secure_round`, runs the four stages over a
:class:`SecureClients` channel: :class:`LocalSecureClients` plays the clients in this
process (:meth:`SecureAggregation.aggregate`, the simulation: the server pipeline saw each
update before it was masked), while a fleet dispatcher's channel reaches devices that keep
their updates (:meth:`SecureAggregation.aggregate_remote`: only masked vectors leave them,
so no per-update server check applies — the devices' clipping and the fixed-point clip,
``config.clip`` per coordinate, bound each client's influence instead).

Clients can drop out at each of the protocol's four stages (in simulation: ``dropout``,
drawn per round from ``seed``); below the threshold the round's aggregation aborts and
nothing is applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedlab.federated.reduce import CohortSum
from fedlab.federated.types import ClientUpdate
from fedlab.protocol.secagg import (
    SecAggReply,
    SecAggRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from fedlab.secure import (
    ADVERTISE,
    MASKED_INPUT,
    SHARE,
    STAGES,
    UNMASK,
    IdentityRegistry,
    RoundSetup,
    SecAggAborted,
    SecAggClient,
    SecAggConfig,
    SecAggResult,
    SecAggServer,
)

__all__ = [
    "LocalSecureClients",
    "SecureAggregation",
    "SecureClients",
    "SecureSum",
    "StageReplies",
    "drive_secure_round",
]


@dataclass(frozen=True, slots=True)
class SecureSum:
    """What secure aggregation gave the server in one round.

    ``cohort`` is the unmasked sum (``None`` when the protocol aborted, with ``failure``
    saying at which stage and why); ``lost`` maps each client whose input is not in the
    sum to the stage where it was lost; ``upload_bytes`` is what the clients sent in all
    (every reply frame); ``notes`` says, per client without a usable reply at some stage,
    why (no answer, a refusal, an undecodable frame); ``num_examples`` is the example count
    the protocol summed (inside the masked vectors; capped per client at ``max_examples``).
    """

    cohort: CohortSum | None
    lost: Mapping[int, str]
    failure: str = ""
    upload_bytes: int = 0
    error_bound: float = 0.0
    notes: Mapping[int, str] = field(default_factory=dict)
    num_examples: int = 0


@dataclass(frozen=True, slots=True)
class StageReplies:
    """What came back from one stage's exchange.

    ``messages`` are the decoded client messages that arrived in time (the server judges
    them); ``upload_bytes`` is the size of every reply frame received; ``lost`` maps each
    addressee with no usable reply to why (no answer, an error, an undecodable frame).
    """

    messages: tuple[SecAggReply, ...]
    upload_bytes: int = 0
    lost: Mapping[int, str] = field(default_factory=dict)


class SecureClients(Protocol):
    """Where the clients of a secure-aggregation round are: one exchange per stage.

    :class:`LocalSecureClients` plays them in this process (simulation); a fleet
    dispatcher (:class:`fedlab.fleet.FlowerDispatcher`, :class:`fedlab.fleet.AgentDispatcher`)
    sends each request to the device holding that client's update. The server's side,
    :func:`drive_secure_round`, is the same for both.
    """

    def exchange(self, stage: str, requests: Sequence[SecAggRequest]) -> StageReplies:
        """Deliver ``requests`` (one per addressee) and collect the replies until the
        stage's deadline."""
        ...


class LocalSecureClients:
    """Clients in this process, each holding its flattened update, speaking the wire.

    Every request and reply goes through :mod:`fedlab.protocol.secagg`'s encoding, as on a
    fleet, so the simulation exercises the bytes a device would see and counts them.

    Parameters
    ----------
    updates : mapping of int to ndarray
        Each client's flattened update.
    num_examples : mapping of int to int
        Each client's example count.
    drop : mapping of stage to set of int, optional
        Clients that answer nothing from that stage on (simulated dropouts).
    """

    def __init__(
        self,
        updates: Mapping[int, np.ndarray],
        num_examples: Mapping[int, int],
        *,
        drop: Mapping[str, set[int]] | None = None,
    ) -> None:
        self.updates = dict(updates)
        self.num_examples = dict(num_examples)
        self.drop = {k: set(v) for k, v in (drop or {}).items()}
        self._gone: set[int] = set()
        self._clients: dict[int, SecAggClient] = {}

    def exchange(self, stage: str, requests: Sequence[SecAggRequest]) -> StageReplies:
        """Each live addressee answers its request (see the class docstring)."""
        self._gone |= self.drop.get(stage, set())
        out: list[SecAggReply] = []
        lost: dict[int, str] = {}
        up = 0
        for frame in map(encode_request, requests):
            req = decode_request(frame)
            cid = req.client_id
            if cid in self._gone:
                lost[cid] = "no answer (simulated dropout)"
                continue
            try:
                msg = self._answer(req)
            except SecAggAborted as exc:  # the client refused the server's message
                self._gone.add(cid)
                lost[cid] = f"refused: {exc.reason}"
                continue
            reply = encode_reply(msg)
            up += len(reply)
            out.append(decode_reply(reply, req.setup, stage=stage))
        return StageReplies(tuple(out), up, lost)

    def _answer(self, req: SecAggRequest) -> SecAggReply:
        cid = req.client_id
        if req.stage == ADVERTISE:
            self._clients[cid] = SecAggClient(req.setup, cid)
        return self._clients[cid].respond(
            req.body, update=self.updates[cid], num_examples=self.num_examples[cid]
        )


def drive_secure_round(
    setup: RoundSetup,
    clients: SecureClients,
    shapes: Sequence[tuple[int, ...]],
    *,
    registry: IdentityRegistry | None = None,
) -> SecureSum:
    """The server's side of one SecAgg+ round over ``clients``: the one loop both worlds use.

    Parameters
    ----------
    setup : RoundSetup
        The round (its cohort are the clients whose updates are summed).
    clients : SecureClients
        Where those clients are.
    shapes : sequence of tuple
        The model's tensor shapes (the flat sum is cut back into them).
    registry : IdentityRegistry, optional
        Every advertised key pair must be signed by its client's enrolled device key
        (devices that sign updates sign it); others are refused at the first stage.

    Returns
    -------
    SecureSum
        The unmasked sum with who was lost where, or the failure (nothing to apply).
    """
    if sum(math.prod(s) for s in shapes) != setup.dimension:
        raise ValueError(f"shapes {list(shapes)} do not hold {setup.dimension} parameters")
    server = SecAggServer(setup, registry=registry)
    uploaded = 0
    notes: dict[int, str] = {}

    def refusals() -> None:  # what the server refused, and why, is the client's note
        for cid, stage, reason in server.refused:
            notes[cid] = f"refused by the server at {stage}: {reason}"

    def run(stage: str, inbox: Mapping[int, object]) -> tuple[Any, ...]:
        # Any: the server refuses (and counts as dropped) a reply of the wrong kind.
        nonlocal uploaded
        requests = [SecAggRequest(stage, setup, c, inbox[c]) for c in sorted(inbox)]  # type: ignore[arg-type]
        got = clients.exchange(stage, requests)
        uploaded += got.upload_bytes
        notes.update(got.lost)
        return got.messages

    try:
        broadcasts = server.receive_advertisements(run(ADVERTISE, dict.fromkeys(setup.cohort)))
        deliveries = server.receive_shares(run(SHARE, broadcasts))
        requests = server.receive_masked_inputs(run(MASKED_INPUT, deliveries))
        result: SecAggResult = server.receive_unmask_responses(run(UNMASK, requests))
    except SecAggAborted as exc:
        refusals()
        return SecureSum(
            None,
            dict.fromkeys(setup.cohort, "aborted"),
            f"{exc.stage}: {exc.reason}",
            uploaded,
            notes=notes,
        )
    refusals()
    # A survivor that did not help unmask is still in the sum (its mask was rebuilt).
    contributed = set(result.contributors)
    lost_at = {
        c: stage for stage, ids in result.dropped.items() for c in ids if c not in contributed
    }
    total = np.asarray(result.total, np.float64)
    tensors: list[np.ndarray] = []
    offset = 0
    for shape in shapes:
        size = math.prod(shape)
        tensors.append(total[offset : offset + size].reshape(shape))
        offset += size
    weight = float(result.num_examples) if result.weighted else float(len(result.contributors))
    cohort = CohortSum(tuple(tensors), weight, len(result.contributors))
    return SecureSum(
        cohort,
        lost_at,
        "",
        uploaded,
        float(result.error_bound),
        notes=notes,
        num_examples=int(result.num_examples),
    )


@dataclass(frozen=True, slots=True)
class SecureAggregation:
    """Sum the round's accepted updates with SecAgg+ (``config``): played in this process
    (:meth:`aggregate`) or with devices that hold their updates (:meth:`aggregate_remote`).

    Parameters
    ----------
    config : SecAggConfig
        Threshold, per-coordinate clip, graph degree, ``max_examples`` (the cap on the
        weight inside the masked vector), ring size, weighted or not.
    dropout : mapping of stage → probability
        Chance that a client still in the protocol stops answering at that stage
        (``"advertise_keys"``, ``"share_keys"``, ``"masked_input"``, ``"unmask"``).
    seed : int
        Seed of the dropout draws (the protocol's keys and masks use OS entropy).
    name : str
        The stage's name in logs and checkpoints.
    registry : IdentityRegistry, optional
        On a fleet: the devices' enrolled keys; each device's advertised key pair must
        carry its signature (devices with ``sign_updates`` sign it), so a node that is not
        the enrolled device cannot take part. Not for the simulation (its clients hold no
        device keys).
    """

    config: SecAggConfig
    dropout: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    name: str = "secure-aggregation"
    registry: IdentityRegistry | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.config, SecAggConfig):
            raise TypeError(f"config must be a SecAggConfig, got {self.config!r}")
        unknown = set(self.dropout) - set(STAGES)
        if unknown:
            raise ValueError(f"dropout: unknown stages {sorted(unknown)}; stages are {STAGES}")
        for stage, p in self.dropout.items():
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
                raise ValueError(f"dropout[{stage!r}] must be in [0, 1), got {p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.registry is not None and not isinstance(self.registry, IdentityRegistry):
            raise TypeError(f"registry must be an IdentityRegistry, got {self.registry!r}")

    def aggregate(self, round_index: int, updates: Sequence[ClientUpdate]) -> SecureSum:
        """Run one SecAgg+ round over ``updates`` (the accepted clients, at least two).

        Raises
        ------
        ValueError
            A ``registry`` is set: the simulated clients hold no device keys to sign with.
        """
        if self.registry is not None:
            raise ValueError(
                "SecureAggregation(registry=...) verifies devices' signed key adverts on a "
                "fleet; the simulated clients hold no device keys"
            )
        if len(updates) < 2:
            return SecureSum(
                None,
                {u.client_id: "cohort" for u in updates},
                f"secure aggregation needs at least 2 clients, {len(updates)} reported",
            )
        shapes = [tuple(np.shape(d)) for d in updates[0].delta]
        flat = {u.client_id: np.concatenate([np.ravel(d) for d in u.delta]) for u in updates}
        counts = {u.client_id: int(u.num_examples) for u in updates}
        cohort_ids = tuple(sorted(flat))
        rng = np.random.default_rng([self.seed, round_index, 0x5EC])
        drop: dict[str, set[int]] = {}
        alive = list(cohort_ids)
        for stage in STAGES:
            p = float(self.dropout.get(stage, 0.0))
            lost = {c for c, u in zip(alive, rng.random(len(alive)), strict=True) if u < p}
            if lost:
                drop[stage] = lost
                alive = [c for c in alive if c not in lost]
        setup = self.setup(round_index, cohort_ids, sum(math.prod(s) for s in shapes))
        if isinstance(setup, SecureSum):
            return setup
        return drive_secure_round(setup, LocalSecureClients(flat, counts, drop=drop), shapes)

    def setup(
        self, round_index: int, cohort: Sequence[int], dimension: int
    ) -> RoundSetup | SecureSum:
        """The round's public setup with fresh randomness, or why the cohort cannot run it."""
        cohort_ids = tuple(sorted(int(c) for c in cohort))
        if len(cohort_ids) < 2:
            return SecureSum(
                None,
                dict.fromkeys(cohort_ids, "cohort"),
                f"secure aggregation needs at least 2 clients, {len(cohort_ids)} reported",
            )
        try:
            return RoundSetup.create(
                self.config, round_index=round_index, cohort=cohort_ids, dimension=dimension
            )
        except ValueError as exc:  # e.g. a threshold the cohort cannot meet
            return SecureSum(None, dict.fromkeys(cohort_ids, "setup"), f"setup: {exc}")

    def aggregate_remote(
        self,
        round_index: int,
        cohort: Sequence[int],
        shapes: Sequence[tuple[int, ...]],
        clients: SecureClients,
    ) -> SecureSum:
        """Run one SecAgg+ round with clients that hold their own updates (a fleet).

        Parameters
        ----------
        round_index : int
            The round.
        cohort : sequence of int
            The clients whose held updates are to be summed (the accepted reports).
        shapes : sequence of tuple
            The model's tensor shapes.
        clients : SecureClients
            The dispatcher's channel to those clients' devices.
        """
        if self.dropout:
            raise ValueError(
                "dropout simulates losses in process; a fleet has its own: use "
                "SecureAggregation(config) without dropout with a fleet dispatcher"
            )
        dimension = sum(math.prod(s) for s in shapes)
        setup = self.setup(round_index, cohort, dimension)
        if isinstance(setup, SecureSum):
            return setup
        return drive_secure_round(setup, clients, shapes, registry=self.registry)
