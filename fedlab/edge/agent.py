"""The device agent: verify the kit, load local data, train on each task, hand the update on.

Tasks arrive as :class:`fedlab.protocol.RoundTask` frames and updates leave as
:class:`fedlab.protocol.UpdateEnvelope` frames (through the configured transport).

Usage::

    python -m fedlab.edge.agent --config /etc/fedlab/device.json           # one task
    python -m fedlab.edge.agent --config /etc/fedlab/device.json --loop    # as a service

Exit codes: 0 done (or no task), 2 configuration error, 3 kit verification failed
(including a kit older than one this device already ran: a rollback), 4 bad local data,
5 Edge TPU required but unavailable, 6 the task was refused (damaged, bad values, another
model version) or training or the transport failed. With ``--loop`` a refused task or
failed round is reported on stderr and the agent keeps polling, and a data file that is
not there yet (a first install) is waited for; it never ends with a traceback. Imports
numpy, cryptography and ai-edge-litert — never TensorFlow.

A restarted agent does not train a task twice: the last answered task (run, round and base
model version) is kept in ``state_dir/last_round.json`` and read at start. Without a
``device_id`` in ``device.json`` the agent generates one and keeps it in ``state_dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import resource
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedlab.codec import CodecState, ErrorFeedback
from fedlab.codec import from_config as codec_from_config
from fedlab.edge.config import ConfigError, DeviceConfig, resolve_device_id
from fedlab.edge.coral import EdgeTPUUnavailable, EmbeddingBackbone, HeadTrainer
from fedlab.edge.data import DataError, DataMissing, load_local_data
from fedlab.edge.identity import device_key, public_key
from fedlab.edge.manifest import KitVerificationError, Manifest, check_not_rollback, verify_kit
from fedlab.edge.model import ModelSpec, TrainableModel, atomic_write_bytes
from fedlab.edge.secure_client import hold_update
from fedlab.edge.trainer import LiteRTTrainer
from fedlab.edge.transport import FileTransport, Transport
from fedlab.federated.stages import clip_arrays
from fedlab.federated.types import ClientPlan
from fedlab.log import get_logger
from fedlab.protocol import RoundTask, UpdateEnvelope, encoded_size
from fedlab.protocol.signing import sign_envelope
from fedlab.secure.identity import DeviceIdentity

__all__ = [
    "LAST_ROUND_FILE",
    "DeviceAgent",
    "enrolment",
    "main",
    "peak_rss_mb",
    "transport_from_config",
]

_log = get_logger("fedlab.edge.agent")  # not __name__: it runs as __main__ too

LAST_ROUND_FILE = "last_round.json"


def transport_from_config(config: DeviceConfig) -> Transport:
    """The transport ``device.json`` names."""
    kind = config.transport["kind"]
    if kind == "files":
        return FileTransport(config.transport["folder"])
    raise ConfigError(f"unknown transport kind {kind!r}")  # pragma: no cover - validated


class DeviceAgent:
    """One device's federated client.

    Parameters
    ----------
    config : DeviceConfig
        The device's configuration.
    transport : Transport, optional
        Where tasks come from (default: the one ``config.transport`` names).
    delegate_loader : callable, optional
        Loads the Edge TPU delegate (tests inject one).

    Raises
    ------
    KitVerificationError, ConfigError, ValueError, EdgeTPUUnavailable
        Before anything runs: the kit is refused (or older than one this device ran),
        the config does not fit the kit, the local data does not fit the model, or an
        Edge TPU is required and absent.

    Attributes
    ----------
    accelerator : str
        What really runs the model: ``"cpu"``, or for Coral ``"edgetpu: compiled model +
        delegate loaded"`` / ``"cpu: <why not the Edge TPU>"``.
    """

    def __init__(
        self,
        config: DeviceConfig,
        transport: Transport | None = None,
        *,
        delegate_loader: Any = None,
    ) -> None:
        self.manifest: Manifest = verify_kit(config.kit_dir, config.trusted_key)
        if config.state_dir:
            try:
                self.kit_version = check_not_rollback(self.manifest, config.state_dir)
            except OSError as exc:
                raise ConfigError(
                    f"field 'state_dir' {config.state_dir!r} is not writable by this user: {exc}"
                ) from exc
        self.config = config = resolve_device_id(config)
        self._key = device_key(config.state_dir) if config.sign_updates else None
        info = self.manifest.info
        kit_mode = info.get("mode")
        if kit_mode != config.mode:
            raise ConfigError(
                f"field 'mode' is {config.mode!r} but the kit was built for {kit_mode!r}"
            )
        kit = Path(config.kit_dir)
        model = info["model"]
        self.model_version = str(model["version"])
        self.trainer: LiteRTTrainer | HeadTrainer
        if config.mode == "litert":
            spec = ModelSpec.from_dict(model["spec"])
            self.trainable = TrainableModel(kit / model["file"], spec, threads=config.threads)
            self.trainer = LiteRTTrainer(self.trainable)
            input_shape, classes = spec.input_shape, spec.num_classes
            self.accelerator = "cpu"
        else:
            backbone = EmbeddingBackbone(
                kit / model["backbone"],
                fallback=config.coral_fallback,
                threads=config.threads,
                delegate_loader=delegate_loader,
            )
            shapes = tuple(tuple(s) for s in model["weight_shapes"])
            classes = int(model["num_classes"])
            self.trainer = HeadTrainer(backbone, shapes, tuple(model["head_indices"]), classes)
            input_shape = backbone.input_shape
            self.on_edgetpu = backbone.on_edgetpu
            self.accelerator = backbone.runs_on
        self.x, self.y = load_local_data(
            config.data_path, tuple(input_shape), classes, csv_header=config.csv_header
        )
        self.transport = transport if transport is not None else transport_from_config(config)
        self.last_round: int | None = None
        self._last_task: tuple[int, str, str] | None = self._read_last_task()

    def _read_last_task(self) -> tuple[int, str, str] | None:
        """The task answered before a restart, from ``state_dir`` (None: none kept)."""
        if not self.config.state_dir:
            return None
        path = Path(self.config.state_dir) / LAST_ROUND_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            last = (
                int(record["round_index"]),
                str(record["base_version"]),
                str(record.get("run_id", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            # Written atomically, so this is a hand edit or an older agent's record: the
            # worst outcome of ignoring it is one task trained again. Said, not hidden.
            warnings.warn(f"{path}: ignored ({type(exc).__name__}: {exc})", stacklevel=3)
            return None
        self.last_round = last[0]
        return last

    def run_once(self) -> tuple[RoundTask, UpdateEnvelope] | None:
        """Fetch a task; train; submit its envelope. None when there is no new task (none
        published, or this task — same run, round and global model — was already done).

        Raises
        ------
        ValueError
            The task is damaged, has invalid values, is for another model version, its
            weights do not fit or are not inline, or its plan does not run here.
        """
        task = self.transport.fetch(self.config.device_id)
        if task is None or (task.round_index, task.base_version, task.run_id) == self._last_task:
            return None
        if task.model_version != self.model_version:
            raise ValueError(
                f"task for model version {task.model_version[:12]}…, this kit has "
                f"{self.model_version[:12]}…: install the matching kit"
            )
        if task.weights is None:
            raise ValueError(
                f"the task names its weights by reference ({task.weights_ref!r}); this "
                "device's transport delivers them inline"
            )
        plan = ClientPlan(**task.client_plan_fields())
        update = self.trainer.train(task.weights, self.x, self.y, plan)
        envelope = UpdateEnvelope.from_client_update(update, task, device_id=self.config.device_id)
        if task.plan.clip_norm:  # DP: the device bounds its own contribution
            assert not isinstance(envelope.body, bytes)
            clipped, norm = clip_arrays(envelope.body, task.plan.clip_norm)
            headers = dict(envelope.headers)
            # NaN/Inf goes on unclipped: the server's validation refuses it (a held update:
            # the fixed-point encoding at the masked-input stage does). A held update's
            # norm stays on the device with it.
            if math.isfinite(norm) and not task.plan.hold_update:
                headers["clip_norm_before"] = norm
            envelope = replace(envelope, body=clipped or envelope.body, headers=headers)
        encoded = self._encode(envelope, task) if task.plan.codec else None
        if encoded is not None:
            envelope = encoded[0]
        if task.plan.hold_update:  # secure aggregation: the update leaves only masked
            if not self.config.state_dir:
                raise ValueError(
                    "the task holds the update for secure aggregation: this "
                    "device needs a state_dir"
                )
            hold_update(self.config.state_dir, task, envelope)
            # Only what the server needs to run the protocol leaves the device: no loss, no
            # count (it travels inside the masked vector), no norm before clipping.
            envelope = replace(
                envelope,
                body=b"",
                num_examples=1,
                num_steps=0,
                metrics={},
                headers={**envelope.headers, "held": True},
            )
        if self._key is not None:  # the client id is the one the server enrolled us under
            envelope = sign_envelope(
                envelope, DeviceIdentity.from_private_bytes(task.client_id, self._key)
            )
        self.transport.submit(self.config.device_id, envelope)
        if encoded is not None and encoded[2] is not None:  # only once the update is out
            atomic_write_bytes(encoded[2], encoded[1].to_bytes(), mode=0o600)
        self.last_round = task.round_index
        self._last_task = (task.round_index, task.base_version, task.run_id)
        if self.config.state_dir:
            state = Path(self.config.state_dir)
            if isinstance(self.trainer, LiteRTTrainer):
                self.trainable.save_checkpoint(state / "checkpoint.npz")
            record = {
                "round_index": task.round_index,
                "base_version": task.base_version,
                "run_id": task.run_id,
                "num_examples": update.num_examples,  # the device's own record: the truth
                "train_loss": update.metrics.get("train_loss"),
                "time": time.time(),
            }
            atomic_write_bytes(state / LAST_ROUND_FILE, json.dumps(record).encode())
        return task, envelope

    def _encode(
        self, envelope: UpdateEnvelope, task: RoundTask
    ) -> tuple[UpdateEnvelope, CodecState, Path | None]:
        """The envelope with its body encoded by the task's codec, the codec's next state
        and where to keep it (``state_dir``; the residual of error feedback lives here)."""
        codec = codec_from_config(json.loads(task.plan.codec))
        path = None
        state = CodecState(seed=task.client_id, step=task.round_index)  # stateless default
        if self.config.state_dir:
            key = hashlib.sha256(
                f"{task.run_id}:{task.client_id}:{task.plan.codec}".encode()
            ).hexdigest()  # a new run starts from a zero residual
            path = Path(self.config.state_dir) / f"codec-{key[:16]}.state"
            state = (
                CodecState.from_bytes(path.read_bytes())
                if path.is_file()
                else codec.init_state(seed=task.client_id)
            )
        elif isinstance(codec, ErrorFeedback):
            raise ValueError("the task's codec uses error feedback: this device needs a state_dir")
        assert not isinstance(envelope.body, bytes)
        payload, next_state = codec.encode(envelope.body, state)
        encoded = replace(
            envelope, body=payload, headers={**envelope.headers, "codec": task.plan.codec}
        )
        return encoded, next_state, path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` of ``/proc/self/status`` where it exists: ``ru_maxrss`` survives ``exec``
    and would report the parent's peak for a process started from a big one.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _start(config: DeviceConfig, *, loop: bool, interval: float) -> DeviceAgent:
    """The agent; with ``loop``, a data file not copied yet is waited for (a first install
    ends before the owner copies it, and a crash-looping service would be stopped)."""
    waiting = False
    while True:
        try:
            return DeviceAgent(config)
        except DataMissing as exc:
            if not loop:
                raise
            if not waiting:
                _log.warning(
                    "fedlab-agent: waiting for local data: %s (copy it there; checking every %g s)",
                    exc,
                    interval,
                )
                waiting = True
            time.sleep(interval)


def enrolment(config: DeviceConfig) -> dict[str, str]:
    """``{"device_id", "public_key"}`` (hex): what the server's registry enrols (the key is
    generated on first use and kept in ``state_dir``)."""
    if not config.state_dir:
        raise ConfigError("--enrol needs 'state_dir' (the key and the device id are kept there)")
    config = resolve_device_id(config)
    return {
        "device_id": config.device_id,
        "public_key": public_key(device_key(config.state_dir)).hex(),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m fedlab.edge.agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="path of device.json")
    parser.add_argument("--loop", action="store_true", help="keep polling for tasks")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between polls")
    parser.add_argument(
        "--enrol",
        action="store_true",
        help="print this device's id and public signing key (JSON) for the server, and exit",
    )
    from fedlab.log import add_log_level_argument, configure_logging

    add_log_level_argument(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = DeviceConfig.load(args.config)
        if args.enrol:
            print(json.dumps(enrolment(config)), flush=True)
            return 0
        agent = _start(config, loop=args.loop, interval=args.interval)
    except ConfigError as exc:
        print(f"fedlab-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    except KitVerificationError as exc:
        print(f"fedlab-agent: kit refused: {exc}", file=sys.stderr)
        return 3
    except EdgeTPUUnavailable as exc:
        print(f"fedlab-agent: {exc}", file=sys.stderr)
        return 5
    except DataError as exc:
        print(f"fedlab-agent: local data refused: {exc}", file=sys.stderr)
        return 4
    except (ValueError, OSError) as exc:  # a verified kit whose model does not load
        print(f"fedlab-agent: kit refused: the model does not load: {exc}", file=sys.stderr)
        return 3
    while True:
        start = time.perf_counter()
        try:
            result = agent.run_once()
        except Exception as exc:  # reported, and the service keeps polling: never a traceback
            print(f"fedlab-agent: round failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if not args.loop:
                return 6
            result = None
        if result is not None:
            task, envelope = result
            print(
                json.dumps(
                    {
                        "device_id": agent.config.device_id,
                        "accelerator": agent.accelerator,
                        "registry_version": agent.manifest.info.get("registry_version", ""),
                        "round_index": task.round_index,
                        "num_examples": envelope.num_examples,
                        "num_steps": envelope.num_steps,
                        "train_loss": envelope.metrics.get("train_loss"),
                        "bytes_up": encoded_size(envelope),
                        "seconds": round(time.perf_counter() - start, 4),
                        "peak_rss_mb": round(peak_rss_mb(), 1),
                        "tensorflow_imported": "tensorflow" in sys.modules,
                    }
                ),
                flush=True,
            )
        elif result is None and not args.loop:
            print("fedlab-agent: no task", file=sys.stderr)
        if not args.loop:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
