"""The device layer: what runs on a Raspberry Pi or a Coral board.

numpy, cryptography and ai-edge-litert only — importing this package never imports
TensorFlow (a test blocks it). Tasks and updates travel as :mod:`fedlab.protocol` frames.
The workbench side (export, kit building) lives in
``fedlab.optimize.trainable`` and ``fedlab.kit``.
"""

from __future__ import annotations

from fedlab.edge.config import ConfigError, DeviceConfig
from fedlab.edge.coral import EdgeTPUUnavailable, EmbeddingBackbone, HeadTrainer
from fedlab.edge.manifest import KitVerificationError, Manifest, verify_kit
from fedlab.edge.model import ModelSpec, TrainableModel
from fedlab.edge.trainer import LiteRTTrainer
from fedlab.edge.transport import FileTransport, InProcessTransport, Transport

__all__ = [
    "ConfigError",
    "DeviceConfig",
    "EdgeTPUUnavailable",
    "EmbeddingBackbone",
    "FileTransport",
    "HeadTrainer",
    "InProcessTransport",
    "KitVerificationError",
    "LiteRTTrainer",
    "Manifest",
    "ModelSpec",
    "TrainableModel",
    "Transport",
    "verify_kit",
]
