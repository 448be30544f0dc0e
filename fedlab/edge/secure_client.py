"""A device's side of secure aggregation: keep the update, answer the four stages.

When a task's plan says ``hold_update``, the agent trains as usual but keeps the update in
its state folder (:func:`hold_update`) and sends only the envelope's metadata. The server
then runs the SecAgg+ stages; each request reaches :meth:`DeviceSecAgg.answer` (in a fresh
process on Flower: every message is a new ClientApp process), which rebuilds this round's
:class:`~fedlab.secure.secagg.SecAggClient` from the state folder, answers, and saves it
again. The update leaves the device only inside the masked vector.

Files (owner-only, written atomically, deleted once the device has answered the unmasking
request or a new round's update replaces them): ``secagg-held.npz`` (the flat float32
update, its ``num_examples``, round and run), ``secagg-state.json`` (the round's key
pairs, self-mask seed and the shares held for neighbours — secrets, bound to the round's
whole setup) and ``secagg-sent.json`` (a masked input of this update was sent: the device
refuses to mask it again under a new setup). A round that aborts or a device the server
stops asking leaves them until the next update replaces them.

numpy, cryptography and fedlab's wire only: no TensorFlow, no round engine.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from fedlab.edge.config import DeviceConfig
from fedlab.edge.identity import device_key
from fedlab.edge.model import atomic_write_bytes
from fedlab.protocol import RoundTask, UpdateEnvelope
from fedlab.protocol.secagg import SecAggRequest, decode_request, encode_reply
from fedlab.secure.identity import DeviceIdentity
from fedlab.secure.secagg import (
    ADVERTISE,
    MASKED_INPUT,
    SecAggAborted,
    SecAggClient,
)

__all__ = [
    "HELD_FILE",
    "SENT_FILE",
    "STATE_FILE",
    "DeviceSecAgg",
    "device_secagg",
    "forget_other_runs",
    "hold_update",
]

HELD_FILE = "secagg-held.npz"
STATE_FILE = "secagg-state.json"
SENT_FILE = "secagg-sent.json"  # a masked input of the held update has left the device


def hold_update(state_dir: str | Path, task: RoundTask, envelope: UpdateEnvelope) -> None:
    """Keep ``envelope``'s update (answering ``task``) for the secure-aggregation stages.

    Raises
    ------
    ValueError
        The body is not tensors (a codec ran: held updates are masked, not encoded).
    """
    if isinstance(envelope.body, bytes):
        raise ValueError("a held update must be tensors, not an encoded payload")
    flat = np.concatenate([np.ravel(np.asarray(a, dtype=np.float32)) for a in envelope.body])
    buf = io.BytesIO()
    np.savez(
        buf,
        update=flat,
        num_examples=np.int64(envelope.num_examples),
        round_index=np.int64(task.round_index),
        run_id=np.str_(task.run_id),
        base_version=np.str_(task.base_version),
    )
    state = Path(state_dir)
    for name in (STATE_FILE, SENT_FILE):  # a new update starts a new protocol run
        (state / name).unlink(missing_ok=True)
    atomic_write_bytes(state / HELD_FILE, buf.getvalue(), mode=0o600)


class DeviceSecAgg:
    """Answers secure-aggregation requests for one device.

    Parameters
    ----------
    state_dir : str or Path
        The agent's state folder (the held update and the round's protocol state).
    client_id : int
        The client this device is enrolled as; requests for another are refused.
    identity : DeviceIdentity, optional
        The device key: signs the advertised keys.
    """

    def __init__(
        self, state_dir: str | Path, client_id: int, *, identity: DeviceIdentity | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.client_id = int(client_id)
        self.identity = identity

    def answer(self, frame: bytes) -> bytes:
        """The encoded reply to one encoded request.

        Raises
        ------
        fedlab.protocol.ProtocolError
            The frame is not a valid request.
        SecAggAborted
            The device refuses (wrong client, no update held for this round, a stage out
            of order, a share that does not decrypt…); the reason says which.
        """
        req = decode_request(frame)
        if req.client_id != self.client_id:
            raise SecAggAborted(
                req.stage, f"request for client {req.client_id}, this is client {self.client_id}"
            )
        if req.stage == ADVERTISE:
            self._held(req)  # refuse before advertising if there is nothing to sum
            sent = self.state_dir / SENT_FILE
            if sent.is_file():
                # Masking the same update again under a new setup would hand the server two
                # maskings of it (and, with distributed DP, two independent noise draws).
                raise SecAggAborted(
                    req.stage,
                    f"a masked input of this update was already sent "
                    f"({sent.read_text(errors='replace')[:80]}); train again for a new one",
                )
            client = SecAggClient(req.setup, self.client_id, identity=self.identity)
        else:
            client = self._load(req)
        update, n = self._held(req) if req.stage == MASKED_INPUT else (None, 0)
        frame_out = encode_reply(client.respond(req.body, update=update, num_examples=n))
        if req.stage == MASKED_INPUT:
            record = {"round_index": req.setup.round_index, "setup": req.setup.digest()}
            atomic_write_bytes(self.state_dir / SENT_FILE, json.dumps(record).encode(), mode=0o600)
        if client.stage == "done":
            self.forget()
        else:
            data = json.dumps(client.to_state()).encode()
            atomic_write_bytes(self.state_dir / STATE_FILE, data, mode=0o600)
        return frame_out

    def forget(self) -> None:
        """Delete the held update and the protocol state (the round is over)."""
        for name in (STATE_FILE, HELD_FILE, SENT_FILE):
            (self.state_dir / name).unlink(missing_ok=True)

    def _load(self, req: SecAggRequest) -> SecAggClient:
        path = self.state_dir / STATE_FILE
        if not path.is_file():
            raise SecAggAborted(req.stage, "no secure-aggregation state for this round here")
        try:
            state = json.loads(path.read_bytes())
            return SecAggClient.from_state(req.setup, state, identity=self.identity)
        except ValueError as exc:
            raise SecAggAborted(req.stage, str(exc)) from None

    def _held(self, req: SecAggRequest) -> tuple[np.ndarray, int]:
        path = self.state_dir / HELD_FILE
        if not path.is_file():
            raise SecAggAborted(req.stage, "no update held on this device")
        with np.load(path, allow_pickle=False) as held:
            update = np.asarray(held["update"])
            n = int(held["num_examples"])
            r = int(held["round_index"])
        if r != req.setup.round_index:
            raise SecAggAborted(
                req.stage, f"the held update is for round {r}, not {req.setup.round_index}"
            )
        if update.size != req.setup.dimension:
            raise SecAggAborted(
                req.stage,
                f"the held update has {update.size} values, the round sums {req.setup.dimension}",
            )
        return update, n


def device_secagg(config: DeviceConfig, client_id: int) -> DeviceSecAgg:
    """The secure-aggregation side of the device ``config`` describes, enrolled as
    ``client_id`` (its key signs the advertised keys when it signs updates). Cheap: no kit
    verification, no model, no data — a stage message needs none of them.

    Raises
    ------
    ValueError
        The device has no ``state_dir`` (the held update lives there).
    """
    if not config.state_dir:
        raise ValueError(
            "secure aggregation needs the device's state_dir (the update is held there)"
        )
    identity = None
    if config.sign_updates:
        identity = DeviceIdentity.from_private_bytes(client_id, device_key(config.state_dir))
    return DeviceSecAgg(config.state_dir, client_id, identity=identity)


def forget_other_runs(state_root: str | Path, keep: str) -> list[Path]:
    """Delete the secure-aggregation files (held update, protocol secrets) in every
    per-run state folder ``state_root/run-*`` except ``keep``; returns the folders cleaned.

    A Flower device keeps its state per run: a run that ended mid-protocol (an aborted
    round, a server that stopped asking) would otherwise leave them there for good.
    """
    cleaned = []
    for folder in sorted(Path(state_root).glob("run-*")):
        if folder.name == keep or not folder.is_dir():
            continue
        present = [folder / n for n in (STATE_FILE, HELD_FILE, SENT_FILE) if (folder / n).exists()]
        for path in present:
            path.unlink(missing_ok=True)
        if present:
            cleaned.append(folder)
    return cleaned
