"""The fedlab ``ClientApp``: a SuperNode's device runs :class:`~fedlab.edge.agent.DeviceAgent`.

Start a device with (TLS and a registered node key; see ``fedlab-fleet``)::

    flower-supernode --root-certificates ca.crt --auth-supernode-private-key node.key \\
        --superlink SUPERLINK:9092 --clientappio-api-address 127.0.0.1:9094 \\
        --node-config 'device-config="/etc/fedlab/device.json" client-id=3'

``device-config`` is the agent's ``device.json`` (kit, trusted key, local data, state);
``client-id`` is the fedlab client this device is enrolled as; ``emulate-delay-s`` (default
0) makes the device wait that long before training (a slow board, for drills and tests),
``emulate-secagg-delay-s`` before it sends its masked input (a board lost in the middle of
secure aggregation).

The agent keeps its state per Flower run (``state_dir/run-<run id>``): its "task already
answered" record is keyed by round and base model only, and every run starts from the
kit's model, so a second run's round 0 would otherwise be refused as answered.

Every message is handled by a fresh ``flwr-clientapp`` process (Flower 1.23), so the
agent is rebuilt per message: the kit's signature is verified, the local data loaded and
the LiteRT model opened each time; what lasts between rounds is the agent's
``state_dir`` (checkpoint, last round).

Imports Flower, numpy, cryptography and ai-edge-litert — never TensorFlow.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from fedlab.edge.agent import DeviceAgent, peak_rss_mb
from fedlab.edge.config import DeviceConfig
from fedlab.edge.secure_client import device_secagg, forget_other_runs
from fedlab.edge.transport import InProcessTransport
from fedlab.fleet.messages import frame_of, op_of, reply_content
from fedlab.log import configure_logging, get_logger
from fedlab.protocol import ProtocolError, decode_task, encode
from fedlab.protocol.secagg import decode_request
from fedlab.secure.secagg import MASKED_INPUT, SecAggAborted

__all__ = ["REFUSED", "app", "node_settings"]

_log = get_logger("fedlab.fleet.clientapp")

#: Error code of a reply whose task the device refused (Flower's own codes are below 100).
REFUSED = 100

app = ClientApp()


def node_settings(context: Context) -> tuple[str, int]:
    """``(device-config path, client id)`` from the SuperNode's ``--node-config``.

    Parameters
    ----------
    context : flwr.app.Context
        The message's context.

    Raises
    ------
    ValueError
        A key is missing or has the wrong type (naming it).
    """
    cfg = context.node_config
    path = cfg.get("device-config")
    if not isinstance(path, str) or not path:
        raise ValueError(f'--node-config needs device-config="/path/device.json", got {path!r}')
    cid = cfg.get("client-id")
    if isinstance(cid, bool) or not isinstance(cid, int) or cid < 0:
        raise ValueError(f"--node-config needs client-id=<int >= 0>, got {cid!r}")
    return path, cid


def _config(context: Context) -> DeviceConfig:
    path, _ = node_settings(context)
    config = DeviceConfig.load(path)
    if config.state_dir:
        config = replace(config, state_dir=str(Path(config.state_dir) / f"run-{context.run_id}"))
    return config


def _agent(context: Context, transport: InProcessTransport) -> DeviceAgent:
    return DeviceAgent(_config(context), transport)


def _delay(context: Context, key: str = "emulate-delay-s") -> float:
    value = context.node_config.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"--node-config {key} must be a number >= 0, got {value!r}")
    return float(value)


def _facts(agent: DeviceAgent | None, client_id: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client_id": client_id,
        "pid": os.getpid(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    if agent is not None:
        out.update(
            device_id=agent.config.device_id,
            accelerator=agent.accelerator,
            num_examples=len(agent.y),
            kit_version=int(agent.manifest.info.get("kit_version", 0)),
            last_round=agent.last_round,
        )
    return out


@app.query()
def query(msg: Message, context: Context) -> Message:
    """``hello``: say which client this node is (and what it runs); ``secagg``: answer a
    secure-aggregation stage with the update this device holds."""
    _, cid = node_settings(context)
    try:
        op = op_of(msg)
    except ValueError as exc:
        return Message(Error(REFUSED, str(exc)), reply_to=msg)
    if op == "hello":
        agent = _agent(context, InProcessTransport())
        return Message(reply_content(None, _facts(agent, cid)), reply_to=msg)
    configure_logging("info")
    try:
        request = frame_of(msg)
        stage = decode_request(request).stage
        _log.info("client %d secure aggregation: %s", cid, stage)
        if stage == MASKED_INPUT:
            time.sleep(_delay(context, "emulate-secagg-delay-s"))
        frame = device_secagg(_config(context), cid).answer(request)
    except SecAggAborted as exc:
        _log.warning("client %d refused secure aggregation: %s", cid, exc)
        return Message(Error(REFUSED, f"secure aggregation refused: {exc.reason}"), reply_to=msg)
    except (ProtocolError, ValueError) as exc:
        return Message(
            Error(REFUSED, f"not a valid secure-aggregation request: {exc}"), reply_to=msg
        )
    return Message(reply_content(frame, {"client_id": cid}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the task in the message; reply with the encoded update envelope."""
    # Each message runs in a flwr-clientapp process of its own, with this app as its
    # program: its progress lines go to the SuperNode's log (stderr) at INFO.
    configure_logging("info")
    start = time.perf_counter()
    _, cid = node_settings(context)
    transport = InProcessTransport()
    agent = _agent(context, transport)
    try:
        task = decode_task(frame_of(msg))
    except (ProtocolError, ValueError) as exc:
        return Message(Error(REFUSED, f"not a valid task: {exc}"), reply_to=msg)
    if task.client_id != cid:
        return Message(
            Error(REFUSED, f"task for client {task.client_id}, this node is client {cid}"),
            reply_to=msg,
        )
    if agent.config.state_dir:  # secrets a run that ended mid-protocol left behind
        run_dir = Path(agent.config.state_dir)
        forget_other_runs(run_dir.parent, run_dir.name)
    _log.info("client %d training round %d", cid, task.round_index)
    time.sleep(_delay(context))
    transport.task = task
    try:
        done = agent.run_once()
    except ValueError as exc:  # the agent refused the task (version, weights, plan)
        return Message(Error(REFUSED, f"task refused: {exc}"), reply_to=msg)
    if done is None:
        return Message(
            Error(REFUSED, f"round {task.round_index} of this model was already answered"),
            reply_to=msg,
        )
    envelope = done[1]
    facts = _facts(agent, cid)
    facts.update(
        round_index=task.round_index,
        train_loss=envelope.metrics.get("train_loss"),
        seconds=round(time.perf_counter() - start, 4),
    )
    return Message(reply_content(encode(envelope), facts), reply_to=msg)
