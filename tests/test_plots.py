"""fedlab.plots: every figure titled, axes labelled with units, labels that do not overlap."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from fedlab import plots


def _axes(fig):
    return fig.axes[0]


def _labelled(fig, *, units: bool = True) -> None:
    ax = _axes(fig)
    assert ax.get_title(), "untitled figure"
    for label in (ax.get_xlabel(), ax.get_ylabel()):
        assert label, "an axis without a label"
        if units:
            assert "(" in label and ")" in label, f"no unit in {label!r}"


def test_stacked_bar_sums_parts_and_is_labelled() -> None:
    fig = plots.stacked_bar_chart(
        ["float32", "int8"],
        {"weights": [30.0, 8.0], "quantization": [0.0, 2.5], "structure": [3.0, 3.0]},
        ylabel="size (KB)",
        xlabel="file (recipe)",
        title="Where the bytes go",
    )
    ax = _axes(fig)
    tops = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2)
        tops[x] = max(tops.get(x, 0.0), patch.get_y() + patch.get_height())
    assert tops == pytest.approx({0: 33.0, 1: 13.5})
    _labelled(fig)
    with pytest.raises(ValueError, match="'weights' has 1 values for 2 bars"):
        plots.stacked_bar_chart(["a", "b"], {"weights": [1.0]}, ylabel="KB", title="t")


def test_ratio_sweep_has_target_and_ceiling() -> None:
    fig = plots.ratio_sweep_chart(
        [20_000, 5_000, 80_000],
        {"int8 file ratio": [3.0, 2.1, 3.6], "weights-only ratio (ceiling)": [3.9, 3.8, 3.95]},
        ceiling="weights-only ratio (ceiling)",
        target=3.9,
        title="int8 ratio against model size",
    )
    ax = _axes(fig)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["int8 file ratio"].get_xdata()) == [5_000, 20_000, 80_000]  # sorted by x
    assert lines["weights-only ratio (ceiling)"].get_linestyle() == "--"
    assert list(lines["target 3.9×"].get_ydata()) == [3.9, 3.9]
    assert ax.get_xscale() == "log"
    _labelled(fig)


def test_latency_whiskers_reach_p90() -> None:
    fig = plots.latency_chart(
        ["float32", "int8"], [1.0, 0.5], [1.4, 0.6], groups=["digits", "digits"], title="LiteRT"
    )
    ax = _axes(fig)
    widths = sorted(p.get_width() for p in ax.patches if p.get_height() == pytest.approx(0.7))
    assert widths == [0.5, 1.0]
    segments = next(c for c in ax.collections if hasattr(c, "get_segments")).get_segments()
    ends = sorted(round(float(seg[:, 0].max()), 6) for seg in segments)
    assert ends == [0.6, 1.4]
    _labelled(fig, units=False)  # y: recipe names
    assert "(ms)" in ax.get_xlabel()
    with pytest.raises(ValueError, match="swapped"):
        plots.latency_chart(["a"], [2.0], [1.0], title="t")


def test_scatter_labels_do_not_overlap_each_other() -> None:
    rng = np.random.default_rng(0)
    # Eleven recipes crowded into a corner, as in notebook 01's size/accuracy scatter.
    names = [f"prune 75% + int8 recipe {i}" for i in range(11)]
    xs, ys = 10 + rng.random(11) * 2, 0.95 + rng.random(11) * 0.01
    crowd = [(n, float(x), float(y)) for n, x, y in zip(names, xs, ys, strict=True)]
    fig = plots.scatter_chart(
        {"digits CNN": crowd[:6], "sensor 1-D CNN": crowd[6:]},
        xlabel="size (KB)",
        ylabel="test accuracy (fraction)",
        title="Size against accuracy",
        logx=True,
    )
    ax = _axes(fig)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 11
    overlapping = [(i, j) for i, j in itertools.combinations(range(11), 2)
                   if boxes[i].overlaps(boxes[j])]  # fmt: skip
    assert not overlapping, overlapping
    _labelled(fig)


def test_existing_charts_have_units() -> None:
    fig = plots.accuracy_curves({"FedAvg": [0.2, 0.5, 0.7]}, title="FedAvg")
    _labelled(fig, units=False)
    assert "(fraction" in _axes(fig).get_ylabel()
