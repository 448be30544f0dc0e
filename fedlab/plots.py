"""Matplotlib figures used by the notebooks (return figures; never call ``show``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedlab.data.federated_dataset import FederatedDataset
from fedlab.federated.history import History

__all__ = ["accuracy_curves", "partition_heatmap"]


def partition_heatmap(data: FederatedDataset, *, max_clients: int = 100, ax: Any = None) -> Any:
    """Heatmap of label counts per client (rows: classes, columns: clients)."""
    import matplotlib.pyplot as plt

    counts = data.label_counts()[:max_clients]
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 3))
    else:
        fig = ax.figure
    image = ax.imshow(counts.T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("client")
    ax.set_ylabel("label")
    ax.set_title(f"{data.name}: examples per client and label")
    fig.colorbar(image, ax=ax, label="examples")
    return fig


def accuracy_curves(
    curves: Mapping[str, History | Sequence[float]],
    *,
    title: str = "Test accuracy",
    xlabel: str = "round",
    target: float | None = None,
    ax: Any = None,
) -> Any:
    """Accuracy against rounds for several runs; a ``Sequence`` is plotted as given."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for label, curve in curves.items():
        values = (
            curve.series("test_accuracy")
            if isinstance(curve, History)
            else np.asarray(curve, float)
        )
        x = np.arange(1, len(values) + 1)
        mask = np.isfinite(values)
        ax.plot(x[mask], values[mask], label=label, marker="." if mask.sum() < 30 else None)
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
