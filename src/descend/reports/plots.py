"""Training curves and confusion matrices as PNG files.

Figures are built with ``matplotlib.figure.Figure`` + ``FigureCanvasAgg``
directly, never ``pyplot``: no global figure registry, no backend switch
imposed on the user's process, thread-safe (``bench`` and search workers plot
concurrently) and never a window, even on a desktop.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io.atomic import atomic_path

__all__ = ["blank_figure", "new_figure", "plot_confusion", "plot_history", "plot_regression_history", "save_figure"]

_DPI = 110


def blank_figure(width: float = 7.0, height: float = 4.5, *, dpi: int = _DPI) -> Figure:
    """A figure with no axes yet, on the Agg canvas (no GUI backend, safe in worker processes)."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def new_figure(width: float = 7.0, height: float = 4.5) -> tuple[Figure, object]:
    """A figure and its one pair of axes (see :func:`blank_figure`)."""
    fig = blank_figure(width, height)
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically: a reader never sees half an image."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _series(history: Sequence[dict], key: str, scale: float = 1.0) -> tuple[list, list]:
    """(epochs, values) of rows where both exist and are finite numbers."""
    xs, ys = [], []
    for row in history:
        x, y = row.get("epoch"), row.get(key)
        if x is None or y is None:
            continue
        try:
            x, y = float(x), float(y) * scale
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def _finish(ax, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")


def plot_history(history: Sequence[dict], path_cost, path_error) -> tuple[Path, Path]:
    """Cost and error curves vs epoch from history rows; missing/None values are skipped.

    The learning rate, when it changes during the run, is drawn on a log-scale
    right axis of the cost plot: a schedule's effect is then visible on the curve.
    """
    fig, ax = new_figure()
    # The training objective carries the L1/L2 penalties; the validation cost is the data fit alone, so
    # that runs with different penalties compare on it.  The legend says which is which.
    for key, label, style in (("train_cost", "train (cross-entropy + penalties, mean over the steps)", "-"),
                              ("valid_cost", "validation (cross-entropy)", "-")):
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, style, label=label, marker="." if len(xs) < 30 else None)
    _finish(ax, "Cost", "cost")
    xs, lrs = _series(history, "lr")
    if xs and min(lrs) > 0 and max(lrs) > min(lrs):
        ax2 = ax.twinx()
        ax2.plot(xs, lrs, ":", color="0.4", label="learning rate")
        ax2.set_yscale("log")
        ax2.set_ylabel("learning rate", color="0.4")
        handles, labels = (a + b for a, b in zip(ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()))
        ax.legend(handles, labels, loc="best")
    cost = save_figure(fig, path_cost)

    fig, ax = new_figure()
    for key, label in (("train_error", "train"), ("valid_error", "validation"), ("test_error", "test")):
        xs, ys = _series(history, key, 100.0)
        if not xs:
            continue
        (line,) = ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
        if key == "valid_error":
            i = int(np.argmin(ys))
            ax.plot(
                [xs[i]], [ys[i]], "o", ms=9, mfc="none", mew=2, color=line.get_color(),
                label=f"best validation {ys[i]:.2f}% (epoch {xs[i]:g})",
            )
    _finish(ax, "Classification error", "error (%)")
    error = save_figure(fig, path_error)
    return cost, error


def plot_regression_history(history: Sequence[dict], path_cost, path_rmse) -> tuple[Path, Path]:
    """A regression run's curves: mean squared error (standardized targets) and validation RMSE (targets' units)."""
    fig, ax = new_figure()
    for key, label in (("train_cost", "train (mean squared error + penalties, mean over the steps)"),
                       ("valid_cost", "validation (mean squared error)")):
        xs, ys = _series(history, key)
        if xs:
            ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
    ax.set_yscale("log") if any(_series(history, "train_cost")[1]) else None
    _finish(ax, "Cost (standardized targets)", "mean squared error")
    cost = save_figure(fig, path_cost)
    fig, ax = new_figure()
    xs, ys = _series(history, "valid_rmse")
    if xs:
        (line,) = ax.plot(xs, ys, label="validation", marker="." if len(xs) < 30 else None)
        i = int(np.argmin(ys))
        ax.plot([xs[i]], [ys[i]], "o", ms=9, mfc="none", mew=2, color=line.get_color(),
                label=f"best validation {ys[i]:.4g} (epoch {xs[i]:g})")
    _finish(ax, "Root mean squared error", "RMSE (targets' units)")
    return cost, save_figure(fig, path_rmse)


def plot_confusion(cm, classes: Sequence[str] | None, path) -> Path:
    """Heatmap coloured by row fraction (per-class recall), annotated with counts.

    Row normalisation keeps rare classes readable next to frequent ones; the
    counts stay visible because they are what a reader checks.
    """
    cm = np.asarray(cm)
    n = cm.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n)]
    rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows != 0)
    side = min(max(4.0, 0.55 * n + 2.0), 20.0)
    fig, ax = new_figure(side + 1.2, side)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    rotate = max(map(len, names), default=0) > 2
    ax.set_xticks(range(n), names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    if n <= 40:
        fontsize = max(5, min(10, 120 // max(n, 1)))
        for i in range(n):
            for j in range(n):
                colour = "white" if frac[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color=colour, fontsize=fontsize)
    return save_figure(fig, path)
