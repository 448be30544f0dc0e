"""The Coral path: an int8 backbone makes embeddings (on the Edge TPU when one is present),
and a softmax-regression head is trained in numpy on the CPU — only the head is federated.

This is Coral's on-device back-propagation recipe (``SoftmaxRegression`` in pycoral),
written here so that it runs on Python 3.11 (pycoral's wheels stop at 3.9).
"""

from __future__ import annotations

import ctypes.util
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedlab.federated.batching import batch_schedule
from fedlab.federated.types import ClientPlan, ClientUpdate

__all__ = [
    "EDGETPU_CUSTOM_OP",
    "EDGETPU_LIBRARY",
    "HEAD_OPTIMIZERS",
    "EdgeTPUUnavailable",
    "EmbeddingBackbone",
    "HeadTrainer",
    "softmax_head_gradient",
    "softmax_head_step",
]

EDGETPU_LIBRARY = "libedgetpu.so.1"
#: The custom operator name edgetpu_compiler puts into a compiled model's flatbuffer.
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"

#: Client optimizers the head trainer runs (Adam does not run on the device).
HEAD_OPTIMIZERS = ("sgd", "momentum")


class EdgeTPUUnavailable(RuntimeError):
    """The configuration requires an Edge TPU, and none could be used."""


def _load_edgetpu_delegate(library: str) -> Any:
    from ai_edge_litert.interpreter import load_delegate

    if not edgetpu_library_present(library):
        # Asking LiteRT anyway works too, but leaves a half-built Delegate whose __del__
        # raises (ai-edge-litert 2.3).
        raise OSError(f"{library} not found (install libedgetpu1-std)")
    return load_delegate(library)


def edgetpu_library_present(library: str = EDGETPU_LIBRARY) -> bool:
    """True when the Edge TPU runtime library can be found by the dynamic loader."""
    if ctypes.util.find_library("edgetpu"):
        return True
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Quant:
    scale: float
    zero: int
    dtype: Any


class EmbeddingBackbone:
    """A full-integer (int8 I/O) ``.tflite`` backbone that maps examples to embeddings.

    Parameters
    ----------
    model : bytes or path
        The backbone (for the Edge TPU, compiled with ``edgetpu_compiler``; a CPU-only run
        takes the uncompiled int8 model).
    fallback : {"refuse", "cpu"}
        Without a usable Edge TPU: raise :class:`EdgeTPUUnavailable`, or run on the CPU
        with a warning.
    threads : int
        CPU interpreter threads.
    delegate_loader : callable, optional
        Loads the Edge TPU delegate (injected by tests; default loads ``libedgetpu.so.1``).
    """

    def __init__(
        self,
        model: bytes | str | Path,
        *,
        fallback: str = "refuse",
        threads: int = 1,
        delegate_loader: Any = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        if fallback not in ("refuse", "cpu"):
            raise ValueError(f"fallback must be 'refuse' or 'cpu', got {fallback!r}")
        data = Path(model).read_bytes() if isinstance(model, str | Path) else bytes(model)
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("backbone is not a TFLite model")
        loader = delegate_loader or _load_edgetpu_delegate
        delegates: list[Any] = []
        # Only a model compiled by edgetpu_compiler has work for the Edge TPU (one
        # edgetpu-custom-op); the delegate accepts an uncompiled model and runs nothing.
        self.compiled = EDGETPU_CUSTOM_OP in data
        if not self.compiled:
            self.reason = (
                "the backbone is not compiled for the Edge TPU (no edgetpu-custom-op: the kit "
                "was built without edgetpu_compiler), so the delegate would run nothing"
            )
        else:
            self.reason = ""
            try:
                delegates = [loader(EDGETPU_LIBRARY)]
            except (OSError, ValueError, RuntimeError) as exc:
                self.reason = f"Edge TPU delegate {EDGETPU_LIBRARY} not usable: {exc}"
        self.on_edgetpu = bool(delegates)
        #: What really runs the backbone, as the agent reports it.
        self.runs_on = f"cpu: {self.reason}"
        if self.on_edgetpu:
            self.runs_on = "edgetpu: compiled model + delegate loaded"
        if not self.on_edgetpu:
            if fallback == "refuse":
                raise EdgeTPUUnavailable(
                    f"{self.reason}; this device is configured with coral_fallback='refuse' "
                    "(set it to 'cpu' to run the int8 backbone on the CPU instead)"
                )
            warnings.warn(f"{self.reason}; running the int8 backbone on the CPU", stacklevel=2)
        self._interpreter = Interpreter(
            model_content=data, num_threads=threads, experimental_delegates=delegates or None
        )
        self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        (out,) = self._interpreter.get_output_details()
        self._in, self._out = inp, out
        self.input_shape = tuple(int(d) for d in inp["shape"][1:])
        self.batch = int(inp["shape"][0])
        self.embedding_dim = int(np.prod(out["shape"][1:]))
        self._qin = _Quant(float(inp["quantization"][0]), int(inp["quantization"][1]), inp["dtype"])
        self._qout = _Quant(
            float(out["quantization"][0]), int(out["quantization"][1]), out["dtype"]
        )

    def embed(self, x: np.ndarray) -> np.ndarray:
        """float32 embeddings (dequantized) of float examples."""
        x = np.asarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"examples of shape {x.shape[1:]}, backbone expects {self.input_shape}"
            )
        q = self._qin
        out = np.zeros((len(x), self.embedding_dim), np.float32)
        for i in range(0, len(x), self.batch):
            chunk = x[i : i + self.batch]
            feed = np.zeros((self.batch, *self.input_shape), np.float32)
            feed[: len(chunk)] = chunk
            if np.issubdtype(q.dtype, np.integer):
                info = np.iinfo(q.dtype)
                feed = np.clip(np.round(feed / q.scale + q.zero), info.min, info.max)
            self._interpreter.set_tensor(self._in["index"], feed.astype(q.dtype))
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._out["index"]).reshape(self.batch, -1)
            r = self._qout
            values = (raw.astype(np.float32) - r.zero) * r.scale if r.scale else raw
            out[i : i + len(chunk)] = values[: len(chunk)]
        return out


def softmax_head_gradient(
    kernel: np.ndarray, bias: np.ndarray, h: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Gradient of the mean cross-entropy of softmax regression ``z = h·W + b`` on a batch
    (pure kernel): ``(dW, db, loss)``, the loss taken before any step."""
    z = h @ kernel + bias
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(np.maximum(p[np.arange(n), y], 1e-30)).mean())
    p[np.arange(n), y] -= 1.0
    p /= n
    return h.T @ p, p.sum(axis=0), loss


def softmax_head_step(
    kernel: np.ndarray, bias: np.ndarray, h: np.ndarray, y: np.ndarray, lr: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """One SGD step of softmax regression ``z = h·W + b`` on a batch (pure kernel).

    Returns the new kernel, the new bias and the batch's mean cross-entropy before the step.
    """
    dw, db, loss = softmax_head_gradient(kernel, bias, h, y)
    return kernel - lr * dw, bias - lr * db, loss


class HeadTrainer:
    """Trains only the Dense head on embeddings; the update covers every model weight, with
    zeros for the backbone, so the server aggregates it like any other.

    Parameters
    ----------
    backbone : EmbeddingBackbone
        Embeddings of the local examples.
    weight_shapes : sequence of tuple
        Shapes of every weight of the full model (workbench order).
    head_indices : (int, int)
        Indices of the head's kernel and bias among them.
    num_classes : int
        Output classes.
    """

    def __init__(
        self,
        backbone: EmbeddingBackbone,
        weight_shapes: Sequence[tuple[int, ...]],
        head_indices: tuple[int, int],
        num_classes: int,
    ) -> None:
        k, b = head_indices
        expected = ((backbone.embedding_dim, num_classes), (num_classes,))
        got = (tuple(weight_shapes[k]), tuple(weight_shapes[b]))
        if got != expected:
            raise ValueError(f"head weights {got} do not fit the backbone's embeddings {expected}")
        self.backbone = backbone
        self.weight_shapes = tuple(tuple(s) for s in weight_shapes)
        self.head_indices = (k, b)
        self.num_classes = num_classes
        self._cache: tuple[str, np.ndarray] | None = None

    def _embeddings(self, x: np.ndarray) -> np.ndarray:
        # The local data rarely changes between rounds: embed it once per content.
        key = hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).hexdigest()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.backbone.embed(x))
        return self._cache[1]

    def train(
        self, global_weights: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, plan: ClientPlan
    ) -> ClientUpdate:
        """``plan.epochs`` epochs on the head over the local examples, with the plan's client
        optimizer as every trainer runs it: SGD, or SGD with momentum ``β``
        (``m ← βm + g; w ← w − ηm``), and FedProx's ``μ`` (``g ← g + μ(w − w_global)``,
        the gradient of ``μ/2 ‖w − w_global‖²`` added to the loss).

        Raises
        ------
        ValueError
            An optimizer the head does not run (Adam), wrong weight shapes or bad labels.
        """
        if plan.optimizer not in HEAD_OPTIMIZERS:
            raise ValueError(
                f"optimizer {plan.optimizer!r} does not run on the Coral head; use one of "
                f"{HEAD_OPTIMIZERS}"
            )
        if len(global_weights) != len(self.weight_shapes):
            n = len(self.weight_shapes)
            raise ValueError(f"expected {n} global weight arrays, got {len(global_weights)}")
        k, b = self.head_indices
        kernel = np.asarray(global_weights[k], np.float64)
        bias = np.asarray(global_weights[b], np.float64)
        if kernel.shape != self.weight_shapes[k] or bias.shape != self.weight_shapes[b]:
            raise ValueError("global head weights have the wrong shape")
        y = np.asarray(y)
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes})")
        h = self._embeddings(x).astype(np.float64)
        schedule = batch_schedule(len(y), plan.batch_size, plan.epochs, plan.seed)
        w, c, total = kernel.copy(), bias.copy(), 0.0
        mu, lr = plan.proximal_mu, plan.learning_rate
        beta = plan.momentum if plan.optimizer == "momentum" else 0.0
        mw, mc = np.zeros_like(w), np.zeros_like(c)
        for idx in schedule:
            gw, gc, loss = softmax_head_gradient(w, c, h[idx], y[idx])
            if mu:
                gw, gc = gw + mu * (w - kernel), gc + mu * (c - bias)
            mw, mc = beta * mw + gw, beta * mc + gc
            w, c = w - lr * mw, c - lr * mc
            total += loss * len(idx)
        delta = [np.zeros(s, np.float32) for s in self.weight_shapes]
        delta[k] = (w - kernel).astype(np.float32)
        delta[b] = (c - bias).astype(np.float32)
        return ClientUpdate(
            client_id=plan.client_id,
            delta=tuple(delta),
            num_examples=len(y),
            num_steps=len(schedule),
            metrics={"train_loss": total / (len(y) * plan.epochs)},
        )
