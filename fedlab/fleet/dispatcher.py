"""Dispatchers for real devices: over Flower (:class:`FlowerDispatcher`) and in this
process (:class:`AgentDispatcher`, the reference a Flower run must equal).

Both send each invited client a :class:`~fedlab.protocol.RoundTask` built from the server's
plan and hand back what the device's :class:`~fedlab.edge.agent.DeviceAgent` answered (an
:class:`~fedlab.protocol.UpdateEnvelope`), unchanged: the device trains with the same
LiteRT trainer either way, so the only difference between the two is the wire.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlab.edge.agent import DeviceAgent
from fedlab.edge.config import DeviceConfig
from fedlab.edge.secure_client import device_secagg
from fedlab.edge.transport import InProcessTransport
from fedlab.federated.dispatch import Dispatched, Report, RoundTasks
from fedlab.federated.secure_stage import StageReplies
from fedlab.federated.selection import ClientProfile
from fedlab.federated.types import Envelope
from fedlab.protocol import ProtocolError, RoundTask, decode_envelope, encode
from fedlab.protocol.secagg import SecAggReply, SecAggRequest, decode_reply, encode_request
from fedlab.secure.secagg import SecAggAborted

if TYPE_CHECKING:  # Flower is imported only by the Flower dispatcher's users
    from flwr.app import Message
    from flwr.serverapp import Grid

__all__ = ["AgentDispatcher", "FlowerDispatcher", "NodeInfo"]

#: Seconds a task message outlives its round's deadline.
_TTL_MARGIN_S = 30.0
#: Flower error codes meaning "no answer" (the message or its reply expired or vanished):
#: MESSAGE_UNAVAILABLE, REPLY_MESSAGE_UNAVAILABLE.
_NO_REPLY = frozenset({3, 4})


def _check_enrolled(enrolled: Sequence[int]) -> tuple[int, ...]:
    out = tuple(enrolled)
    if not out or any(not isinstance(n, int | np.integer) or n < 1 for n in out):
        raise ValueError(f"enrolled must be a non-empty sequence of ints >= 1, got {enrolled!r}")
    return tuple(int(n) for n in out)


def _task(
    plan: Any, tasks: RoundTasks, model_version: str, deadline: float, clip_norm: float | None
) -> RoundTask:
    task = RoundTask.from_client_plan(
        plan, model_version=model_version, weights=tasks.weights, deadline=deadline
    )
    # Secure aggregation: the device keeps its update; DP: it clips it first.
    plan_out = replace(task.plan, hold_update=tasks.hold_updates, clip_norm=clip_norm or 0.0)
    return replace(task, plan=plan_out)


def _check_clip(clip_norm: float | None) -> float | None:
    if clip_norm is None:
        return None
    if isinstance(clip_norm, bool) or not isinstance(clip_norm, int | float):
        raise TypeError(f"clip_norm must be a number, got {clip_norm!r}")
    if not (np.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be finite and > 0, got {clip_norm!r}")
    return float(clip_norm)


class _EnrolledFleet:
    """The roster half of the ``Dispatcher`` protocol for fleets of real devices: client
    ``i`` enrolled with ``enrolled[i]`` examples, no simulated profile."""

    enrolled: tuple[int, ...]

    @property
    def num_clients(self) -> int:
        """Number of enrolled clients."""
        return len(self.enrolled)

    def enrolled_examples(self, client_id: int) -> int:
        """The client's enrolled data size."""
        return self.enrolled[client_id]

    def profile(self, client_id: int) -> ClientProfile:
        """A default profile (real devices take the time they take)."""
        return ClientProfile()


class AgentDispatcher(_EnrolledFleet):
    """Device agents in this process, one per client id, over
    :class:`~fedlab.edge.transport.InProcessTransport`.

    Parameters
    ----------
    agents : mapping of int to DeviceAgent
        Client id → its agent; every agent must use an ``InProcessTransport``. Client ids
        without an agent are reported ``dropped`` when invited.
    enrolled : sequence of int
        Every client's enrolled number of examples (client ids ``0 … len − 1``).
    model_version : str
        The kit's model version the tasks name.
    clip_norm : float, optional
        Tell every device to clip its update to this L2 norm (DP-FedAvg's client-side
        clipping; the privacy ledger checks it under secure aggregation).
    """

    def __init__(
        self,
        agents: Mapping[int, DeviceAgent],
        *,
        enrolled: Sequence[int],
        model_version: str,
        clip_norm: float | None = None,
    ) -> None:
        self.client_clip_norm = _check_clip(clip_norm)
        self.enrolled = _check_enrolled(enrolled)
        for cid, agent in agents.items():
            if not 0 <= cid < len(self.enrolled):
                raise ValueError(f"agents: client id {cid} outside 0…{len(self.enrolled) - 1}")
            if not isinstance(agent.transport, InProcessTransport):
                raise TypeError(
                    f"agents[{cid}] uses {type(agent.transport).__name__}; "
                    "AgentDispatcher needs InProcessTransport"
                )
        self.agents = dict(agents)
        self.model_version = model_version
        #: Drill: stage -> clients whose devices stop answering from that stage on (a
        #: device lost in the middle of secure aggregation).
        self.silent_at: dict[str, set[int]] = {}

    @classmethod
    def from_devices(
        cls,
        configs: Mapping[int, str | Path],
        *,
        enrolled: Sequence[int],
        clip_norm: float | None = None,
    ) -> AgentDispatcher:
        """One in-process agent per ``device.json`` (client id → path), e.g. from
        :func:`fedlab.fleet.devices.write_devices`; the tasks name the kit's model version.

        Raises
        ------
        ValueError
            No device, or the devices run different kits.
        """
        agents = {
            cid: DeviceAgent(DeviceConfig.load(path), InProcessTransport())
            for cid, path in configs.items()
        }
        versions = {a.model_version for a in agents.values()}
        if len(versions) != 1:
            raise ValueError(f"the devices must run one kit, got model versions {versions}")
        return cls(agents, enrolled=enrolled, model_version=versions.pop(), clip_norm=clip_norm)

    def secure_clients(self, round_index: int) -> _AgentSecureClients:
        """The channel secure aggregation uses to reach the agents' held updates."""
        return _AgentSecureClients(self)

    def dispatch(
        self,
        tasks: RoundTasks,
        *,
        rng: np.random.Generator,
        on_training_start: Callable[[tuple[int, ...]], None],
    ) -> Dispatched:
        """Each invited agent trains its task in turn (see the class docstring)."""
        deadline = float(tasks.deadline_s or 0.0)
        on_training_start(tuple(p.client_id for p in tasks.plans if p.client_id in self.agents))
        reports: list[Report] = []
        expect: dict[str, Any] = {}
        down = 0
        start = time.perf_counter()
        for plan in tasks.plans:
            cid = plan.client_id
            task = _task(plan, tasks, self.model_version, deadline, self.client_clip_norm)
            expect = task.expect_headers()
            agent = self.agents.get(cid)
            if agent is None:
                reports.append(Report(cid, "dropped", detail="no device agent for this client"))
                continue
            transport = agent.transport
            assert isinstance(transport, InProcessTransport)
            transport.task = task
            down += len(encode(task))
            try:
                done = agent.run_once()
            except Exception as exc:  # this device's failure, not the round's
                reports.append(Report(cid, "failed", detail=f"{type(exc).__name__}: {exc}"))
                continue
            if done is None:
                reports.append(Report(cid, "failed", detail="the agent did not answer the task"))
                continue
            envelope = done[1]
            reports.append(
                Report(
                    cid,
                    "reported",
                    Envelope(**envelope.engine_fields()),
                    time.perf_counter() - start,
                    envelope.num_examples,
                )
            )
        return Dispatched(tuple(reports), "device agents (in process)", expect, down)


def _addressed(message: SecAggReply, req: SecAggRequest) -> SecAggReply:
    """``message`` if it answers ``req`` (its client and round), else ``ValueError``: a
    device must not speak for another (it would push that client out as a duplicate)."""
    if message.client_id != req.client_id or message.round_index != req.setup.round_index:
        raise ValueError(
            f"reply as client {message.client_id} for round {message.round_index} to a request "
            f"for client {req.client_id}, round {req.setup.round_index}"
        )
    return message


class _AgentSecureClients:
    """Secure-aggregation requests to in-process agents, through the same device code a
    SuperNode's ClientApp runs (:func:`fedlab.edge.secure_client.device_secagg`)."""

    def __init__(self, dispatcher: AgentDispatcher) -> None:
        self.dispatcher = dispatcher
        self._silent: set[int] = set()

    def exchange(self, stage: str, requests: Sequence[SecAggRequest]) -> StageReplies:
        """Each addressed agent answers (unless a drill silenced it)."""
        self._silent |= self.dispatcher.silent_at.get(stage, set())
        out: list[SecAggReply] = []
        lost: dict[int, str] = {}
        up = 0
        for req in requests:
            cid = req.client_id
            agent = self.dispatcher.agents.get(cid)
            if agent is None or cid in self._silent:
                lost[cid] = "no answer"
                continue
            try:
                frame = device_secagg(agent.config, cid).answer(encode_request(req))
                message = _addressed(decode_reply(frame, req.setup, stage=stage), req)
            except SecAggAborted as exc:
                lost[cid] = f"refused: {exc.reason}"
                continue
            except Exception as exc:  # this device's failure (its disk, its state), not the round's
                lost[cid] = f"failed: {type(exc).__name__}: {exc}"
                continue
            up += len(frame)
            out.append(message)
        return StageReplies(tuple(out), up, lost)


@dataclass
class NodeInfo:
    """What the dispatcher knows of one SuperNode: its Flower node id and what the device
    said about itself (``hello``) and in its last reply."""

    client_id: int
    node_id: int
    facts: dict[str, Any] = field(default_factory=dict)


class FlowerDispatcher(_EnrolledFleet):
    """fedlab clients on Flower SuperNodes, through a ``ServerApp``'s ``Grid``.

    Enrolment: each SuperNode says which fedlab client it is (the ``client-id`` of its
    ``--node-config``) in answer to a ``query`` (``hello``); Flower node ids change when a
    node without authentication restarts, client ids do not. Nodes that join later are
    asked at the start of the next round.

    A round: one ``train`` message per invited client whose node is online, carrying the
    encoded task; replies are pulled every ``poll_s`` until all are in or the deadline
    (``tasks.deadline_s``, else ``timeout_s``) passes. Outcomes:

    * ``reported`` — the reply's envelope (decoded here; the server's pipeline judges it,
      with ``expect_headers`` = the task's round, model version and base version);
    * ``dropped`` — no node online for the client, the node went offline before replying,
      or Flower answered ``NODE_UNAVAILABLE``;
    * ``straggler`` — no reply by the deadline from a node still connected;
    * ``failed`` — an error reply (the ClientApp raised or refused the task), or a reply
      that is not a valid envelope frame.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The ServerApp's grid.
    model_version : str
        The kit's model version every task names.
    enrolled : sequence of int
        Every client's enrolled number of examples (client ids ``0 … len − 1``): the cap on
        what its updates may claim.
    timeout_s : float
        Reply deadline when the round has none.
    poll_s : float
        Seconds between pulls (Flower's own ``send_and_receive`` polls every 3 s).
    hello_timeout_s : float
        How long an enrolment query waits for answers.
    offline_grace_s : float
        A node must stay offline this long before its task is given up (a loaded board's
        late heartbeat makes it look offline for a moment).
    secure_timeout_s : float
        Reply deadline of each secure-aggregation stage (a device that misses it is a
        dropout at that stage; the protocol recovers as long as enough answer).
    clip_norm : float, optional
        Tell every device to clip its update to this L2 norm (DP-FedAvg's client-side
        clipping; the privacy ledger checks it under secure aggregation).
    """

    def __init__(
        self,
        grid: Grid,
        *,
        model_version: str,
        enrolled: Sequence[int],
        timeout_s: float = 120.0,
        poll_s: float = 0.5,
        hello_timeout_s: float = 30.0,
        offline_grace_s: float = 10.0,
        secure_timeout_s: float = 60.0,
        clip_norm: float | None = None,
    ) -> None:
        self.client_clip_norm = _check_clip(clip_norm)
        for name, value in (
            ("timeout_s", timeout_s),
            ("secure_timeout_s", secure_timeout_s),
            ("poll_s", poll_s),
            ("hello_timeout_s", hello_timeout_s),
            ("offline_grace_s", offline_grace_s),
        ):
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if not isinstance(model_version, str) or not model_version:
            raise ValueError(f"model_version must be a non-empty string, got {model_version!r}")
        self.grid = grid
        self.model_version = model_version
        self.enrolled = _check_enrolled(enrolled)
        self.timeout_s = float(timeout_s)
        self.poll_s = float(poll_s)
        self.hello_timeout_s = float(hello_timeout_s)
        self.offline_grace_s = float(offline_grace_s)
        self.secure_timeout_s = float(secure_timeout_s)
        self.nodes: dict[int, NodeInfo] = {}  # client id -> node
        self._asked: set[int] = set()  # node ids already asked who they are
        self.notes: list[str] = []  # enrolment problems, for the operator

    # -- enrolment -------------------------------------------------------------------
    def online(self) -> set[int]:
        """Node ids the SuperLink reports connected."""
        return {int(n) for n in self.grid.get_node_ids()}

    def enroll(self, *, wait_for: int = 0, timeout_s: float | None = None) -> dict[int, int]:
        """Ask every node not asked yet which client it is; returns client id → node id.

        Parameters
        ----------
        wait_for : int
            Keep asking new nodes until this many clients are enrolled, or ``timeout_s``.
        timeout_s : float, optional
            Bound on the whole call (default ``hello_timeout_s``).

        Raises
        ------
        TimeoutError
            Fewer than ``wait_for`` clients enrolled within ``timeout_s``.
        """
        from flwr.app import Message

        from fedlab.fleet.messages import device_facts, hello_content

        limit = time.monotonic() + (self.hello_timeout_s if timeout_s is None else timeout_s)
        while True:
            online = self.online()
            for cid in [c for c, info in self.nodes.items() if info.node_id not in online]:
                del self.nodes[cid]  # offline: it is asked again when it (re)joins
            self._asked &= online  # a node that left and rejoined (same id) is asked again
            new = sorted(online - self._asked)
            if new:
                ttl = max(5.0, limit - time.monotonic())
                msgs = [Message(hello_content(), n, "query", ttl=ttl) for n in new]
                ids, got = self._collect(msgs, limit)
                asked = dict(zip(ids, new, strict=True))
                for mid, (reply, _) in got.items():
                    # an error reply may come from the SuperLink (src 1), not the node
                    node = asked[mid]
                    if reply.has_error():
                        self.notes.append(f"node {node}: hello failed: {reply.error.reason}")
                        continue
                    try:
                        facts = device_facts(reply)
                        cid = int(facts["client_id"])
                    except (ValueError, KeyError, TypeError) as exc:
                        self.notes.append(f"node {node}: bad hello reply ({exc})")
                        self._asked.add(node)
                        continue
                    self._asked.add(node)
                    if not 0 <= cid < self.num_clients:
                        self.notes.append(f"node {node}: client id {cid} is not enrolled")
                        continue
                    old = self.nodes.get(cid)
                    if old is not None and old.node_id in online and old.node_id != node:
                        self.notes.append(
                            f"node {node} claims client {cid}, already node {old.node_id}: ignored"
                        )
                        continue
                    self.nodes[cid] = NodeInfo(cid, node, facts)
            if len(self.nodes) >= wait_for or time.monotonic() >= limit:
                break
            time.sleep(self.poll_s)
        if len(self.nodes) < wait_for:
            raise TimeoutError(
                f"{len(self.nodes)} of {wait_for} clients enrolled within the timeout "
                f"(online nodes: {sorted(self.online())}; notes: {self.notes[-3:]})"
            )
        return {cid: info.node_id for cid, info in sorted(self.nodes.items())}

    def _collect(
        self,
        messages: Iterable[Message],
        limit: float,
        *,
        gone: Callable[[set[str]], None] | None = None,
    ) -> tuple[list[str], dict[str, tuple[Message, float]]]:
        """Push ``messages``; pull replies until all are in or ``limit`` (monotonic).
        Returns the sent message ids (in order) and ``{sent id: (reply, monotonic time it
        was pulled)}``; with ``gone``, a message whose node left is not waited for (and
        ``gone`` is told its ids)."""
        messages = list(messages)
        ids = [str(i) for i in self.grid.push_messages(messages)]
        dst = {mid: int(m.metadata.dst_node_id) for mid, m in zip(ids, messages, strict=True)}
        pending = {mid for mid in ids if mid}
        replies: dict[str, tuple[Message, float]] = {}
        offline_since: dict[str, float] = {}
        while pending:
            for reply in self.grid.pull_messages(sorted(pending)):
                mid = str(reply.metadata.reply_to_message_id)
                if mid in pending:
                    replies[mid] = (reply, time.monotonic())
                    pending.discard(mid)
            if not pending or time.monotonic() >= limit:
                break
            if gone is not None:
                # A node counts as gone only after it stayed offline for offline_grace_s: a
                # busy board's late heartbeat makes the SuperLink list it offline for a
                # moment, and giving up on it then would turn a slow reply into a straggler.
                online, now = self.online(), time.monotonic()
                for mid in pending:
                    if dst[mid] in online:
                        offline_since.pop(mid, None)
                    else:
                        offline_since.setdefault(mid, now)
                left = {
                    mid
                    for mid in pending
                    if mid in offline_since and now - offline_since[mid] >= self.offline_grace_s
                }
                if left:
                    gone(left)
                    pending -= left
                    if not pending:
                        break
            time.sleep(self.poll_s)
        return ids, replies

    # -- the round -------------------------------------------------------------------
    def dispatch(
        self,
        tasks: RoundTasks,
        *,
        rng: np.random.Generator,
        on_training_start: Callable[[tuple[int, ...]], None],
    ) -> Dispatched:
        """Send the round's tasks to the clients' SuperNodes and collect the replies (see
        the class docstring)."""
        from flwr.app import Message
        from flwr.common.constant import ErrorCode

        from fedlab.fleet.messages import device_facts, frame_of, task_content

        timeout = float(tasks.deadline_s) if tasks.deadline_s else self.timeout_s
        self.enroll(timeout_s=min(self.hello_timeout_s, timeout))
        online = self.online()
        reports: dict[int, Report] = {}
        sent: list[tuple[int, Message]] = []
        expect: dict[str, Any] = {}
        down = 0
        for plan in tasks.plans:
            cid = plan.client_id
            task = _task(plan, tasks, self.model_version, timeout, self.client_clip_norm)
            expect = task.expect_headers()
            info = self.nodes.get(cid)
            if info is None or info.node_id not in online:
                reports[cid] = Report(cid, "dropped", detail="no SuperNode online for this client")
                continue
            frame = encode(task)
            down += len(frame)
            # The TTL outlives the deadline, so an unanswered task is judged by the deadline
            # (straggler or dropped), not reported back by Flower as expired.
            ttl = timeout + _TTL_MARGIN_S
            sent.append((cid, Message(task_content(frame), info.node_id, "train", ttl=ttl)))
        on_training_start(tuple(cid for cid, _ in sent))
        start = time.monotonic()
        replies: dict[str, tuple[Message, float]] = {}
        mid_to_cid: dict[str, int] = {}
        if sent:
            ids, replies = self._collect([m for _, m in sent], start + timeout, gone=lambda _: None)
            # Message ids are assigned at push, in order. (An error reply may come from the
            # SuperLink, not the node: map by the message it answers, not by its sender.)
            mid_to_cid = {mid: cid for mid, (cid, _) in zip(ids, sent, strict=True)}
        for mid, (reply, pulled) in replies.items():
            cid = mid_to_cid[mid]
            elapsed = pulled - start
            if reply.has_error():
                code, reason = int(reply.error.code), str(reply.error.reason)
                detail = f"Flower error {code}: {reason}"
                if code == ErrorCode.NODE_UNAVAILABLE:
                    reports[cid] = Report(cid, "dropped", detail=detail)
                elif code not in _NO_REPLY:  # the ClientApp failed or refused the task
                    reports[cid] = Report(cid, "failed", detail=detail)
                # else: the task expired unanswered; judged below like a missing reply
                continue
            try:
                envelope = decode_envelope(frame_of(reply))
                facts = device_facts(reply)
            except (ProtocolError, ValueError) as exc:
                reports[cid] = Report(cid, "failed", detail=f"not a valid update reply ({exc})")
                continue
            if cid in self.nodes:
                self.nodes[cid].facts.update(facts)
            reports[cid] = Report(
                cid,
                "reported",
                Envelope(**envelope.engine_fields()),
                elapsed,
                envelope.num_examples,
            )
        online = self.online()
        for cid, msg in sent:
            if cid in reports:
                continue
            node = int(msg.metadata.dst_node_id)
            if node not in online:
                reports[cid] = Report(
                    cid, "dropped", detail=f"SuperNode {node} went offline before replying"
                )
            else:
                reports[cid] = Report(
                    cid,
                    "straggler",
                    duration_s=timeout,
                    detail=f"no reply within the {timeout:g} s deadline (node {node} connected)",
                )
        runtime = f"flower: {len(sent)} SuperNodes"
        return Dispatched(tuple(reports[p.client_id] for p in tasks.plans), runtime, expect, down)

    def secure_clients(self, round_index: int) -> _FlowerSecureClients:
        """The channel secure aggregation uses: one ``query`` per cohort member and stage,
        answered by the device's held update (each stage waits ``secure_timeout_s``)."""
        return _FlowerSecureClients(self)

    def state(self) -> list[dict[str, Any]]:
        """Per-client view for the operator: node id and the device's last facts."""
        return [
            {"client_id": cid, "node_id": info.node_id, **info.facts}
            for cid, info in sorted(self.nodes.items())
        ]


class _FlowerSecureClients:
    """Secure-aggregation stage requests as Flower ``query`` messages to the cohort's
    SuperNodes; a missing, failed or undecodable reply is a dropout at that stage."""

    def __init__(self, dispatcher: FlowerDispatcher) -> None:
        self.dispatcher = dispatcher

    def exchange(self, stage: str, requests: Sequence[SecAggRequest]) -> StageReplies:
        """Push one query per addressee; pull replies until all are in or the deadline."""
        from flwr.app import Message

        from fedlab.fleet.messages import frame_of, secagg_content

        d = self.dispatcher
        online = d.online()
        lost: dict[int, str] = {}
        sent: list[tuple[SecAggRequest, Message]] = []
        ttl = d.secure_timeout_s + _TTL_MARGIN_S
        for req in requests:
            info = d.nodes.get(req.client_id)
            if info is None or info.node_id not in online:
                lost[req.client_id] = "no SuperNode online"
                continue
            content = secagg_content(encode_request(req))
            sent.append((req, Message(content, info.node_id, "query", ttl=ttl)))
        out: list[SecAggReply] = []
        up = 0
        if sent:
            limit = time.monotonic() + d.secure_timeout_s
            ids, replies = d._collect([m for _, m in sent], limit, gone=lambda _: None)
            for mid, (req, _) in zip(ids, sent, strict=True):
                cid = req.client_id
                got = replies.get(mid)
                if got is None:
                    lost[cid] = f"no answer within {d.secure_timeout_s:g} s"
                    continue
                reply = got[0]
                if reply.has_error():
                    lost[cid] = f"Flower error {int(reply.error.code)}: {reply.error.reason}"
                    continue
                try:
                    frame = frame_of(reply)
                    out.append(_addressed(decode_reply(frame, req.setup, stage=stage), req))
                except (ProtocolError, ValueError) as exc:
                    lost[cid] = f"bad reply: {exc}"
                    continue
                up += len(frame)
        return StageReplies(tuple(out), up, lost)
