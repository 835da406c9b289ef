"""PCA figures as PNG files: cumulative explained variance, 2-D projection, components as images.

Drawn on :func:`descend.reports.plots.blank_figure` (``Figure`` +
``FigureCanvasAgg``: no pyplot, no global state, no window), written
atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from descend.reports.plots import blank_figure, save_figure

__all__ = ["plot_explained_variance", "plot_projection", "plot_components", "guess_image_shape"]

def guess_image_shape(d: int) -> tuple[int, int] | None:
    """``(s, s)`` when ``d`` is a perfect square of at least 4 (28 x 28 for MNIST), else None."""
    s = math.isqrt(d)
    return (s, s) if s * s == d and s >= 2 else None


def plot_explained_variance(ratio: Sequence[float], path, *, title: str = "Explained variance") -> Path:
    """Bars: each component's share of the total variance; line: the cumulative share."""
    ratio = np.asarray(ratio, dtype=np.float64)
    k = len(ratio)
    xs = np.arange(1, k + 1)
    cum = np.cumsum(ratio)
    fig = blank_figure()
    ax = fig.add_subplot()
    ax.bar(xs, ratio * 100, color="0.7", label="per component", width=0.8 if k < 200 else 1.0)
    ax.plot(xs, cum * 100, "-", color="C0", lw=2, marker="." if k <= 60 else None, label="cumulative")
    for level in (0.8, 0.9, 0.95, 0.99):
        hit = np.flatnonzero(cum >= level)
        if hit.size:
            i = int(hit[0])
            ax.axhline(level * 100, color="0.5", lw=0.6, ls=":")
            ax.annotate(f"{level:.0%} at {i + 1}", (xs[i], cum[i] * 100), textcoords="offset points",
                        xytext=(6, -12), fontsize=8, color="0.3")
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance (%)")
    ax.set_title(f"{title}: {cum[-1]:.1%} with {k} component{'s' if k != 1 else ''}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def plot_projection(Z: np.ndarray, labels: np.ndarray | None, path, *, classes: Sequence[str] | None = None,
                    ratio: Sequence[float] | None = None, title: str = "Projection on the first two components"
                    ) -> Path:
    """Scatter of rows' first two coordinates, coloured by label (one colour when unlabeled)."""
    Z = np.asarray(Z, dtype=np.float64)
    x = Z[:, 0]
    y = Z[:, 1] if Z.shape[1] > 1 else np.zeros_like(x)
    fig = blank_figure(7.0, 6.0)
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(x, y, s=3, alpha=0.5, color="C0", linewidths=0)
    else:
        labels = np.asarray(labels)
        values = np.unique(labels)
        cmap = colormaps["tab10" if len(values) <= 10 else "tab20"]
        for j, value in enumerate(values):
            sel = labels == value
            name = classes[int(value)] if classes is not None and 0 <= int(value) < len(classes) else str(value)
            ax.scatter(x[sel], y[sel], s=3, alpha=0.6, color=cmap(j % cmap.N), linewidths=0, label=name)
        if len(values) <= 20:
            ax.legend(markerscale=4, fontsize=8, loc="best", title="label")

    def axis(i):
        share = f" ({ratio[i]:.1%} of the variance)" if ratio is not None and len(ratio) > i else ""
        return f"component {i + 1}{share}"
    ax.set_xlabel(axis(0))
    ax.set_ylabel(axis(1) if Z.shape[1] > 1 else "(k = 1: no second component)")
    ax.set_title(f"{title} ({len(x)} rows)")
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def plot_components(components: np.ndarray, path, *, image_shape: tuple[int, int] | None = None,
                    ratio: Sequence[float] | None = None, count: int = 16) -> Path:
    """The first ``count`` components as images (diverging colours, 0 = white), or as curves without a shape."""
    comps = np.asarray(components, dtype=np.float64)[:count]
    n = len(comps)
    if image_shape is not None and int(np.prod(image_shape)) == comps.shape[1]:
        cols = min(n, 4 if n <= 8 else 8 if n > 16 else 4)
        rows = math.ceil(n / cols)
        fig = blank_figure(1.9 * cols + 0.8, 2.0 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i >= n:
                continue
            lim = float(np.abs(comps[i]).max()) or 1.0
            ax.imshow(comps[i].reshape(image_shape), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            share = f" ({ratio[i]:.1%})" if ratio is not None and len(ratio) > i else ""
            ax.set_title(f"#{i + 1}{share}", fontsize=9)
        fig.suptitle(f"First {n} principal component{'s' if n != 1 else ''} (red +, blue -)")
    else:
        fig = blank_figure()
        ax = fig.add_subplot()
        for i in range(min(n, 6)):
            ax.plot(comps[i], lw=0.8, label=f"#{i + 1}")
        ax.set_xlabel("feature")
        ax.set_ylabel("weight")
        ax.set_title(f"First {min(n, 6)} principal components")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)
