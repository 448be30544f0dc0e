"""``TrainableModel``: the signatures of a trainable ``.tflite`` driven through LiteRT.

Device layer: numpy and ai-edge-litert only (no TensorFlow).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ModelSpec", "TrainableModel", "atomic_write_bytes"]


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new, never half.

    The bytes go to a temporary file in the same folder, are flushed and fsynced, and
    replace ``path`` with ``os.replace`` (atomic on POSIX); the folder is fsynced too.

    Parameters
    ----------
    path : path
        The file to write.
    data : bytes
        Its new content.
    mode : int
        Permission bits of the file (not filtered by the umask). The default 0644 lets a
        service user read what root wrote (a kit, a task); pass 0o600 for secrets.
    """
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits in 0..0o777, got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        # mkstemp creates 0600: without this a kit written by root is unreadable by the
        # service user that runs the agent.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a device needs to know about a trainable model (the ``.json`` beside it).

    Attributes
    ----------
    batch_size : int
        Static batch of the ``train`` and ``infer`` signatures.
    input_shape : tuple of int
        One example's shape.
    num_classes : int
        Output classes.
    weight_shapes : tuple of tuple of int
        Every weight of the full model, in the workbench's (Keras) order.
    trainable_indices : tuple of int
        The weights the device trains (``w00``, ``w01``… of the signatures, in order).
    trainable : str
        ``"all"`` or ``"head"``.
    ops : tuple of str
        Operators in the flatbuffer.
    """

    batch_size: int
    input_shape: tuple[int, ...]
    num_classes: int
    weight_shapes: tuple[tuple[int, ...], ...]
    trainable_indices: tuple[int, ...]
    trainable: str
    ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes!r}")
        n = len(self.weight_shapes)
        if not self.trainable_indices or any(not 0 <= i < n for i in self.trainable_indices):
            raise ValueError(f"trainable_indices {self.trainable_indices} do not fit {n} weights")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Rebuild from the metadata JSON (unknown or missing fields are an error)."""
        fields = set(cls.__dataclass_fields__)
        unknown, missing = set(data) - fields, fields - set(data) - {"ops"}
        if unknown or missing:
            raise ValueError(
                f"model metadata: unknown fields {sorted(unknown)}, missing {sorted(missing)}"
            )
        return cls(
            batch_size=int(data["batch_size"]),
            input_shape=tuple(int(d) for d in data["input_shape"]),
            num_classes=int(data["num_classes"]),
            weight_shapes=tuple(tuple(int(d) for d in s) for s in data["weight_shapes"]),
            trainable_indices=tuple(int(i) for i in data["trainable_indices"]),
            trainable=str(data["trainable"]),
            ops=tuple(str(o) for o in data.get("ops", ())),
        )

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        """Read the metadata JSON file."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return json.loads(json.dumps(asdict(self)))


class TrainableModel:
    """The ``train``/``infer``/``get_weights``/``set_weights`` signatures of one model.

    Parameters
    ----------
    model : bytes or path
        The trainable ``.tflite`` (from ``fedlab.optimize.export_trainable_tflite``).
    spec : ModelSpec
        Its metadata.
    threads : int
        Interpreter threads.
    """

    def __init__(self, model: bytes | str | Path, spec: ModelSpec, *, threads: int = 1) -> None:
        data = Path(model).read_bytes() if isinstance(model, str | Path) else bytes(model)
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError(f"{model if isinstance(model, str | Path) else 'bytes'}: not TFLite")
        self.spec = spec
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=data, num_threads=threads)
        signatures = self._interpreter.get_signature_list()
        needed = {"train", "infer", "get_weights", "set_weights"}
        if not needed <= set(signatures):
            raise ValueError(
                f"model has signatures {sorted(signatures)}; a trainable model needs "
                f"{sorted(needed)}"
            )
        self._train = self._interpreter.get_signature_runner("train")
        self._infer = self._interpreter.get_signature_runner("infer")
        self._get = self._interpreter.get_signature_runner("get_weights")
        self._set = self._interpreter.get_signature_runner("set_weights")
        self.trainable_shapes = tuple(spec.weight_shapes[i] for i in spec.trainable_indices)
        got = tuple(tuple(int(d) for d in a.shape) for a in self.get_weights())
        if got != self.trainable_shapes:
            raise ValueError(
                f"model weights {got} do not match the metadata {self.trainable_shapes}"
            )

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 1) -> TrainableModel:
        """``path`` (``.tflite``) with its metadata ``path.json``."""
        p = Path(path)
        return cls(p, ModelSpec.load(p.with_suffix(".json")), threads=threads)

    def get_weights(self) -> list[np.ndarray]:
        """The trainable weights, in order."""
        out = self._get()
        return [np.array(out[f"w{i:02d}"]) for i in range(len(out))]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Load trainable weights (this also resets momentum and the FedProx anchor)."""
        if len(weights) != len(self.trainable_shapes):
            raise ValueError(
                f"expected {len(self.trainable_shapes)} weight arrays, got {len(weights)}"
            )
        arrays = {}
        for i, (w, shape) in enumerate(zip(weights, self.trainable_shapes, strict=True)):
            a = np.asarray(w, dtype=np.float32)
            if a.shape != shape:
                raise ValueError(f"weight {i}: shape {a.shape}, model expects {shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"weight {i}: contains NaN or Inf")
            arrays[f"w{i:02d}"] = a
        self._set(**arrays)

    def train_step(
        self,
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        *,
        lr: float,
        mu: float = 0.0,
        beta: float = 0.0,
    ) -> float:
        """One step on a full static batch; returns the weighted cross-entropy."""
        out = self._train(
            x=np.ascontiguousarray(x, dtype=np.float32),
            y=np.ascontiguousarray(y, dtype=np.int32),
            w=np.ascontiguousarray(weights, dtype=np.float32),
            # Shape (1,), not rank 0: ai-edge-litert's aarch64 binding (1.4-2.3) crashes
            # resizing an input to [] (device_kits/arm64/README.md); [1] broadcasts the same.
            lr=np.full((1,), lr, np.float32),
            mu=np.full((1,), mu, np.float32),
            beta=np.full((1,), beta, np.float32),
        )
        return float(out["loss"])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of any number of examples (padded to the static batch)."""
        b = self.spec.batch_size
        x = np.asarray(x, dtype=np.float32)
        out = np.zeros((len(x), self.spec.num_classes), np.float32)
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            padded = np.zeros((b, *self.spec.input_shape), np.float32)
            padded[: len(chunk)] = chunk
            out[i : i + len(chunk)] = self._infer(x=padded)["logits"][: len(chunk)]
        return out

    def save_checkpoint(self, path: str | Path) -> Path:
        """Atomically write the trainable weights to ``path`` (``.npz``)."""
        buf = io.BytesIO()
        np.savez(buf, *self.get_weights())
        return atomic_write_bytes(path, buf.getvalue())

    def restore_checkpoint(self, path: str | Path) -> None:
        """Load weights written by :meth:`save_checkpoint`."""
        with np.load(path) as f:
            self.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
