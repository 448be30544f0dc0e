"""Matplotlib figures used by the notebooks (return figures; never call ``show``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedlab.data.federated_dataset import FederatedDataset
from fedlab.federated.history import History

__all__ = ["accuracy_curves", "interval_chart", "line_chart", "partition_heatmap", "scatter_chart"]


def _figure(ax: Any, size: tuple[float, float]) -> tuple[Any, Any]:
    """A new figure of ``size``, or the figure of the axes given."""
    import matplotlib.pyplot as plt

    if ax is None:
        return plt.subplots(figsize=size)
    return ax.figure, ax


def partition_heatmap(data: FederatedDataset, *, max_clients: int = 100, ax: Any = None) -> Any:
    """Heatmap of label counts per client (rows: classes, columns: clients)."""

    counts = data.label_counts()[:max_clients]
    fig, ax = _figure(ax, (10, 3))
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

    fig, ax = _figure(ax, (7, 4))
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


def line_chart(
    x: Sequence[float] | np.ndarray,
    series: Mapping[str, Sequence[float] | np.ndarray],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    hline: tuple[float, str] | None = None,
    ax: Any = None,
) -> Any:
    """Several named series against a shared x (markers when short); optional reference line."""

    fig, ax = _figure(ax, (7, 4))
    for label, values in series.items():
        values = np.asarray(values, dtype=float)
        mask = np.isfinite(values)
        ax.plot(
            np.asarray(x, float)[mask],
            values[mask],
            label=label,
            marker="o" if mask.sum() < 15 else None,
        )
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", label=hline[1])
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def interval_chart(
    labels: Sequence[str],
    values: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    *,
    ylabel: str,
    title: str = "",
    reference: float | None = None,
    ax: Any = None,
) -> Any:
    """Point estimates with their confidence intervals (e.g. attack AUCs)."""

    fig, ax = _figure(ax, (6, 3.5))
    pos = np.arange(len(labels))
    vals = np.asarray(values, float)
    err = np.vstack([vals - np.asarray(lows, float), np.asarray(highs, float) - vals])
    ax.errorbar(pos, vals, yerr=err, fmt="o", capsize=6)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle=":")
    ax.set_xticks(pos, labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return fig


def scatter_chart(
    points: Mapping[str, Sequence[tuple[str, float, float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    ax: Any = None,
) -> Any:
    """Labelled points, one marker style per group: ``{group: [(label, x, y), …]}``."""

    fig, ax = _figure(ax, (8, 4.5))
    for group, items in points.items():
        xs = [x for _, x, _ in items]
        ys = [y for _, _, y in items]
        ax.scatter(xs, ys, label=group)
        for label, x, y in items:
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
