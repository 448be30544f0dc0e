"""Matplotlib figures used by the notebooks (return figures; never call ``show``).

Every figure has a title and axis labels with their units (``"size (KB)"``,
``"latency (ms)"``); accuracy is a fraction of the test set (0–1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedlab.data.federated_dataset import FederatedDataset
from fedlab.federated.history import History

__all__ = [
    "accuracy_curves",
    "interval_chart",
    "latency_chart",
    "line_chart",
    "partition_heatmap",
    "place_labels",
    "ratio_sweep_chart",
    "scatter_chart",
    "stacked_bar_chart",
]

ACCURACY = "test accuracy (fraction, 0–1)"
ROUND = "federated round"


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
    ax.set_xlabel("client (index)")
    ax.set_ylabel("label (digit class)")
    ax.set_title(f"{data.name}: examples per client and label")
    fig.colorbar(image, ax=ax, label="examples (count)")
    return fig


def accuracy_curves(
    curves: Mapping[str, History | Sequence[float]],
    *,
    title: str = "Test accuracy",
    xlabel: str = ROUND,
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
    ax.set_ylabel(ACCURACY)
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
    """Labelled points, one marker style per group: ``{group: [(label, x, y), …]}``.

    Labels are placed so that they overlap neither each other nor another point: each
    tries positions around its point, nearest first, and a label pushed away from its point
    gets a thin leader line.
    """

    fig, ax = _figure(ax, (9, 5.5))
    items: list[tuple[str, float, float, Any]] = []
    for group, group_items in points.items():
        xs = [x for _, x, _ in group_items]
        ys = [y for _, _, y in group_items]
        collection = ax.scatter(xs, ys, label=group, zorder=3)
        color = collection.get_facecolor()[0]
        items += [(label, x, y, color) for label, x, y in group_items]
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.margins(x=0.15, y=0.12)
    place_labels(ax, items)
    return fig


# Offsets (points) tried around a marker, nearest first: right, left, above, below, diagonals.
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))


def place_labels(
    ax: Any, items: Sequence[tuple[str, float, float, Any]], *, fontsize: float = 7
) -> list[Any]:
    """Annotate ``(label, x, y, color)`` points on ``ax`` with non-overlapping labels.

    Returns the annotations, in the order of ``items``. Greedy: each label takes the nearest
    free position (not over another label or marker, inside the axes); when none of the
    rings is free it takes the last one tried, with a leader line.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((x, y)) for _, x, y, _ in items]
    radius = 5.0 * fig.dpi / 72  # a marker's half-size, in pixels
    taken: list[Any] = []
    placed = []
    for i, (label, x, y, color) in enumerate(items):
        annotation = None
        for ring in (4, 10, 18, 28, 40, 55):
            for dx, dy in _DIRECTIONS:
                if annotation is not None:
                    annotation.remove()
                annotation = ax.annotate(
                    label,
                    (x, y),
                    xytext=(dx * ring, dy * ring),
                    textcoords="offset points",
                    fontsize=fontsize,
                    color="black",
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    arrowprops=(
                        {"arrowstyle": "-", "color": color, "lw": 0.6} if ring > 10 else None
                    ),
                )
                box = annotation.get_window_extent(renderer).expanded(1.05, 1.1)
                inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                hits_marker = any(
                    j != i
                    and box.x0 - radius <= mx <= box.x1 + radius
                    and box.y0 - radius <= my <= box.y1 + radius
                    for j, (mx, my) in enumerate(markers)
                )
                if inside and not hits_marker and not any(box.overlaps(t) for t in taken):
                    break
            else:
                continue
            break
        assert annotation is not None
        taken.append(annotation.get_window_extent(renderer))
        placed.append(annotation)
    return placed


def stacked_bar_chart(
    labels: Sequence[str],
    parts: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
    xlabel: str = "",
    ax: Any = None,
) -> Any:
    """One bar per label, stacked from ``parts`` (``{part: [value per label]}``).

    Each bar is labelled with its total above it.
    """

    fig, ax = _figure(ax, (max(6.0, 1.1 * len(labels) + 2), 4.5))
    pos = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for part, values in parts.items():
        vals = np.asarray(values, dtype=float)
        if vals.shape != bottom.shape:
            raise ValueError(f"part {part!r} has {vals.size} values for {len(labels)} bars")
        ax.bar(pos, vals, bottom=bottom, label=part, width=0.7)
        bottom += vals
    for x, total in zip(pos, bottom, strict=True):
        ax.annotate(f"{total:.3g}", (x, total), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(pos, labels, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def ratio_sweep_chart(
    params: Sequence[float],
    ratios: Mapping[str, Sequence[float]],
    *,
    target: float | None = None,
    ceiling: str | None = None,
    title: str,
    ylabel: str = "float32 size / int8 size (×)",
    xlabel: str = "model parameters (count, log scale)",
    ax: Any = None,
) -> Any:
    """Size ratios against model size: one line per series, ``ceiling`` dashed, ``target``
    as a horizontal line."""

    fig, ax = _figure(ax, (7, 4))
    order = np.argsort(np.asarray(params, dtype=float))
    x = np.asarray(params, dtype=float)[order]
    for name, values in ratios.items():
        vals = np.asarray(values, dtype=float)[order]
        style = {"linestyle": "--", "color": "grey"} if name == ceiling else {}
        ax.plot(x, vals, marker="o", label=name, **style)
    if target is not None:
        ax.axhline(target, color="tab:red", linestyle=":", label=f"target {target:g}×")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def latency_chart(
    labels: Sequence[str],
    median: Sequence[float],
    p90: Sequence[float],
    *,
    title: str,
    xlabel: str = "latency per invoke (ms)",
    ylabel: str = "recipe",
    groups: Sequence[str] | None = None,
    ax: Any = None,
) -> Any:
    """Horizontal bars of median latency with a whisker up to the 90th percentile.

    ``groups`` (one per bar, e.g. the model) colours the bars and fills the legend.
    """

    med, high = np.asarray(median, dtype=float), np.asarray(p90, dtype=float)
    if not (len(labels) == med.size == high.size):
        raise ValueError(f"{len(labels)} labels, {med.size} medians, {high.size} p90s")
    if np.any(high < med):
        raise ValueError("a p90 below its median: the columns are swapped")
    fig, ax = _figure(ax, (8, 0.32 * len(labels) + 1.6))
    pos = np.arange(len(labels))[::-1]
    group_of = list(groups) if groups is not None else [""] * len(labels)
    palette = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(group_of))}
    ax.barh(pos, med, color=[palette[g] for g in group_of], height=0.7)
    ax.errorbar(med, pos, xerr=np.vstack([np.zeros_like(med), high - med]), fmt="none",
                ecolor="black", capsize=3, lw=1)  # fmt: skip
    ax.set_yticks(pos, labels, fontsize=8)
    if groups is not None:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=c, label=g) for g, c in palette.items()], fontsize=8)
    ax.set_xlabel(xlabel + ", bar: median, whisker: p90")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
