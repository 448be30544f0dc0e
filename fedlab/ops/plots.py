"""Figures of the operations layer: the registry's lineage, drift streams (return figures)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedlab.ops.drift import DriftAlert
from fedlab.ops.registry import Registry

__all__ = ["drift_chart", "lineage_chart", "lineage_layout"]

STATUS_COLOURS = {
    "production": "tab:green",
    "rejected": "tab:red",
    "retired": "tab:blue",
    "purged": "lightgrey",
}


def lineage_layout(registry: Registry) -> list[dict[str, Any]]:
    """One row per version: id, label, parent, generation (depth), lane and status.

    Status: ``production`` (on that channel now), ``rejected`` (a canary refused it),
    ``purged`` (weights removed by retention), else ``retired``.
    """
    nodes, _ = registry.graph()
    production = registry.current()
    rejected = {
        e.version for e in registry.audit_log(action="canary_decision") if not e.detail["promoted"]
    }
    depth: dict[str, int] = {}
    lanes: dict[int, int] = {}
    rows = []
    for v in nodes:  # oldest first, so a parent is placed before its children
        depth[v.id] = depth[v.parent] + 1 if v.parent in depth else 0
        lane = lanes.get(depth[v.id], 0)
        lanes[depth[v.id]] = lane + 1
        status = (
            "production"
            if v.id == production
            else "rejected"
            if v.id in rejected
            else "purged"
            if v.purged
            else "retired"
        )
        rows.append(
            {
                "id": v.id,
                "label": v.label or v.short,
                "parent": v.parent,
                "generation": depth[v.id],
                "lane": lane,
                "status": status,
                "rounds": v.provenance.rounds,
                "accuracy": v.provenance.metrics.get("test_accuracy"),
            }
        )
    return rows


def lineage_chart(registry: Registry, *, title: str = "Model lineage", ax: Any = None) -> Any:
    """The lineage graph: versions by generation (x) and branch (y), edges parent → child,
    coloured by status; each labelled with its name, short id and rounds."""
    import matplotlib.pyplot as plt

    rows = lineage_layout(registry)
    if ax is None:
        width = 2.2 * (1 + max((r["generation"] for r in rows), default=0))
        fig, ax = plt.subplots(figsize=(max(6.0, width), 3.5))
    else:
        fig = ax.figure
    where = {r["id"]: (r["generation"], -r["lane"]) for r in rows}
    for r in rows:
        if r["parent"] in where:
            (x0, y0), (x1, y1) = where[r["parent"]], where[r["id"]]
            ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "grey"})
    for status, colour in STATUS_COLOURS.items():
        chosen = [r for r in rows if r["status"] == status]
        if chosen:
            ax.scatter(
                [where[r["id"]][0] for r in chosen],
                [where[r["id"]][1] for r in chosen],
                s=400,
                color=colour,
                label=status,
                zorder=3,
                edgecolors="black",
            )
    for r in rows:
        x, y = where[r["id"]]
        ax.annotate(
            f"{r['label']}\n{r['id'][:8]} · {r['rounds']} rounds",
            (x, y),
            textcoords="offset points",
            xytext=(0, -30),
            ha="center",
            fontsize=8,
        )
    ax.set_xlabel("generation (training runs from the first version)")
    ax.set_yticks([])
    ax.set_ylabel("branch")
    ys = [y for _, y in where.values()] or [0]
    ax.set_ylim(min(ys) - 1, max(ys) + 0.6)
    xs = [x for x, _ in where.values()] or [0]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def drift_chart(
    streams: Mapping[str, Sequence[float]],
    *,
    onset: int | None = None,
    alerts: Sequence[DriftAlert] = (),
    title: str = "What the server sees per round (cohort means)",
) -> Any:
    """One panel per stream against the round, with the drift onset and the alarms."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(streams), 1, figsize=(7, 1.8 * len(streams)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (name, values) in zip(axes, streams.items(), strict=True):
        ax.plot(np.arange(len(values)), values, lw=1)
        ax.set_ylabel(name)
        if onset is not None:
            ax.axvline(onset, color="grey", linestyle="--", label="drift onset")
        for alert in alerts:
            ax.axvline(
                alert.round_index, color="tab:red", linestyle=":", label=f"alarm ({alert.stream})"
            )
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("monitoring round")
    fig.tight_layout()
    return fig
