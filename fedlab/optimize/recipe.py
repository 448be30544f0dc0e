"""Recipes: compose compression steps and return one row of a comparison table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedlab._tf import keras
from fedlab.optimize.anatomy import strip_strings
from fedlab.optimize.convert import MODES, Mode, to_tflite
from fedlab.optimize.edgetpu import edgetpu_report
from fedlab.optimize.measure import measure_tflite
from fedlab.optimize.pruning import prune, sparsity_of
from fedlab.optimize.qat import cluster, quantize_aware

__all__ = ["Recipe", "RecipeResult", "compare", "standard_recipes"]


@dataclass(frozen=True, slots=True)
class Recipe:
    """prune → cluster → quantization-aware training → TFLite conversion → strip, each optional.

    Example: ``Recipe("prune75+cluster16+int8", prune=0.75, cluster=16, mode="int8")``.
    ``prune_block`` prunes Dense kernels in blocks (see :func:`fedlab.optimize.prune`);
    ``per_channel=False`` quantizes per tensor; ``strip`` removes the tensor names and
    signature definitions from the shipped file (:func:`fedlab.optimize.strip_strings`).
    """

    name: str
    prune: float | None = None
    structured_2_4: bool = False
    prune_block: tuple[int, int] = (1, 1)
    cluster: int | None = None
    qat: bool = False
    mode: Mode = "float32"
    int8_io: bool = False
    per_channel: bool = True
    strip: bool = False
    fine_tune_epochs: int = 2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.prune is not None and not 0 <= self.prune < 1:
            raise ValueError(f"prune sparsity must be in [0, 1), got {self.prune!r}")
        if self.qat and self.mode != "int8":
            raise ValueError("QAT produces an int8 model: use mode='int8'")
        if tuple(self.prune_block) != (1, 1) and (self.prune is None or self.structured_2_4):
            raise ValueError(
                f"prune_block={self.prune_block!r} needs a prune sparsity and no 2:4 sparsity"
            )
        if not self.per_channel and self.mode not in ("int8", "dynamic"):
            raise ValueError(f"per_channel=False needs mode='int8' or 'dynamic', got {self.mode!r}")
        if self.fine_tune_epochs < 1:
            raise ValueError(f"fine_tune_epochs must be >= 1, got {self.fine_tune_epochs!r}")

    def apply(self, model: keras.Model, x: np.ndarray, y: np.ndarray) -> keras.Model:
        """The Keras model after the training-time steps (pruning, clustering, QAT)."""
        out = model
        epochs = self.fine_tune_epochs
        if self.prune is not None or self.structured_2_4:
            out = prune(
                out,
                x,
                y,
                sparsity=self.prune or 0.5,
                epochs=epochs,
                structured_2_4=self.structured_2_4,
                block_size=tuple(self.prune_block),  # type: ignore[arg-type]
            )
        if self.cluster is not None:
            out = cluster(
                out,
                x,
                y,
                clusters=self.cluster,
                epochs=epochs,
                preserve_sparsity=self.prune is not None or self.structured_2_4,
            )
        if self.qat:
            out = quantize_aware(out, x, y, epochs=epochs)
        return out

    def run(
        self,
        model: keras.Model,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        *,
        latency_runs: int = 200,
    ) -> RecipeResult:
        """Apply the recipe to a trained model, convert, and measure through LiteRT."""
        x, y = train
        tuned = self.apply(model, x, y)
        data = to_tflite(
            tuned,
            mode=self.mode,
            representative=x if self.mode == "int8" else None,
            int8_io=self.int8_io,
            per_channel=self.per_channel,
        )
        if self.strip:
            data = strip_strings(data)
        report = measure_tflite(data, test[0], test[1], latency_runs=latency_runs)
        tpu = edgetpu_report(data)
        sparsity = sparsity_of(tuned) if not self.qat else float("nan")
        row = {
            "recipe": self.name,
            "accuracy": report.accuracy,
            "size_kb": report.size_bytes / 1024,
            "gzip_kb": report.gzip_bytes / 1024,
            "latency_ms": report.latency_ms_median,
            "latency_p90_ms": report.latency_ms_p90,
            "sparsity": sparsity,
            "edge_tpu_ready": tpu.ready,
        }
        return RecipeResult(self, row, data, report, tpu)


@dataclass(frozen=True, slots=True)
class RecipeResult:
    """A recipe's measured row, its ``.tflite`` bytes and the full reports."""

    recipe: Recipe
    row: dict[str, Any]
    tflite: bytes
    report: Any
    edgetpu: Any

    def to_dict(self) -> dict[str, Any]:
        """Row plus the recipe's parameters."""
        return {**self.row, "params": asdict(self.recipe)}


def standard_recipes(*, fine_tune_epochs: int = 4) -> tuple[Recipe, ...]:
    """The comparison the notebook and the benchmark run (Edge TPU-ready int8 I/O).

    Block pruning gets twice the fine-tuning epochs: a block removes four weights at once
    and the model needs longer to recover (with the same epochs as element-wise pruning it
    lost 1.4–3 accuracy points on digits; element-wise pruning gains nothing in size from
    the longer fine-tuning).
    """
    e = fine_tune_epochs
    return (
        Recipe("float32"),
        Recipe("dynamic-range", mode="dynamic"),
        Recipe("float16", mode="float16"),
        Recipe("int8 (post-training)", mode="int8", int8_io=True),
        Recipe(
            "int8 (per-tensor, stripped)",
            mode="int8",
            int8_io=True,
            per_channel=False,
            strip=True,
        ),
        Recipe("int8 (QAT)", qat=True, mode="int8", int8_io=True, fine_tune_epochs=e),
        Recipe("prune 75% + int8", prune=0.75, mode="int8", int8_io=True, fine_tune_epochs=e),
        Recipe(
            "prune 75% (4x1 blocks) + int8",
            prune=0.75,
            prune_block=(4, 1),
            mode="int8",
            int8_io=True,
            fine_tune_epochs=2 * e,
        ),
        Recipe(
            "prune 75% + cluster 16 + int8",
            prune=0.75,
            cluster=16,
            mode="int8",
            int8_io=True,
            fine_tune_epochs=e,
        ),
        Recipe(
            "2:4 sparsity + int8",
            structured_2_4=True,
            mode="int8",
            int8_io=True,
            fine_tune_epochs=e,
        ),
    )


def compare(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    recipes: tuple[Recipe, ...] | None = None,
    *,
    latency_runs: int = 200,
) -> list[RecipeResult]:
    """Run every recipe on the same trained model."""
    return [
        r.run(model, train, test, latency_runs=latency_runs)
        for r in (recipes or standard_recipes())
    ]
