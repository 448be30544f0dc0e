"""``KitRuntime``: the server's initial model and central evaluation, from a signed kit.

A fleet's global model must be the one the devices run: the kit's trainable ``.tflite``.
This runtime reads its weights and evaluates through the same LiteRT model (numpy and
ai-edge-litert only), so the ServerApp process needs no TensorFlow. It never trains:
clients train on their devices (:class:`~fedlab.fleet.dispatcher.FlowerDispatcher`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedlab.data.federated_dataset import ClientData
from fedlab.edge.manifest import Manifest, verify_kit
from fedlab.edge.model import ModelSpec, TrainableModel
from fedlab.edge.trainer import LiteRTTrainer
from fedlab.federated.runtime_base import ClientFailure
from fedlab.federated.types import ClientPlan, ClientUpdate, Weights

__all__ = ["KitRuntime"]


class KitRuntime:
    """Initial weights and evaluation of a LiteRT (Raspberry Pi) kit.

    Parameters
    ----------
    kit_dir : str or Path
        The kit folder (its signature is verified).
    trusted_key : str
        Base64 Ed25519 public key the kit must be signed with.

    Raises
    ------
    KitVerificationError
        The kit's signature or hashes do not verify.
    ValueError
        The kit is not a LiteRT kit, or its model does not train every weight (the initial
        value of a frozen weight is not in the ``.tflite`` signatures).
    """

    def __init__(self, kit_dir: str | Path, trusted_key: str) -> None:
        self.kit_dir = Path(kit_dir)
        self.manifest: Manifest = verify_kit(self.kit_dir, trusted_key)
        info = self.manifest.info
        if info.get("mode") != "litert":
            raise ValueError(
                f"kit_dir {str(kit_dir)!r}: a {info.get('mode')!r} kit; KitRuntime needs a "
                "'litert' (raspberry_pi) kit"
            )
        model = info["model"]
        self.model_version = str(model["version"])
        self.spec = ModelSpec.from_dict(model["spec"])
        if tuple(self.spec.trainable_indices) != tuple(range(len(self.spec.weight_shapes))):
            raise ValueError(
                f"kit_dir {str(kit_dir)!r}: the model trains only {self.spec.trainable!r} "
                "weights; KitRuntime needs a kit that trains all of them"
            )
        self._model = TrainableModel(self.kit_dir / model["file"], self.spec)
        self._trainer = LiteRTTrainer(self._model)
        self._initial = tuple(np.array(w, np.float32) for w in self._model.get_weights())

    def initial_weights(self) -> Weights:
        """The kit model's weights (what every device starts from)."""
        return tuple(w.copy() for w in self._initial)

    def train_clients(
        self, global_weights: Weights, jobs: Sequence[tuple[ClientData, ClientPlan]]
    ) -> list[ClientUpdate | ClientFailure]:
        """Not here: a fleet's clients train on their devices."""
        raise RuntimeError(
            "KitRuntime does not train: pass a dispatcher (FlowerDispatcher, AgentDispatcher)"
        )

    def evaluate(
        self, weights: Weights, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
    ) -> dict[str, float]:
        """Loss and accuracy of ``weights`` on ``(x, y)`` through the kit's LiteRT model."""
        return self._trainer.evaluate(weights, x, y)
