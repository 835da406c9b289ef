"""Comparison curves: one mean line per configuration across seeds, with a min-max band.

Seeds are put on a common x grid by linear interpolation (exact where their
evaluations coincide, as they do per epoch and per step); the grid spans the
range every seed covers.  Built with ``Figure`` + ``FigureCanvasAgg``, never
pyplot, and written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter

from descend.reports.plots import blank_figure, save_figure

AXES = {
    "epoch": ("epoch", "epochs"),
    "step": ("step", "optimizer steps"),
    "time": ("time", "wall-clock seconds (training + evaluation)"),
}
PANELS = (("valid_cost", "validation cost (cross-entropy)", 1.0, False),
          ("valid_error", "validation error (%)", 100.0, True))


def _curve(history, xkey, ykey, scale=1.0, positive_x=False):
    xs, ys = [], []
    for row in history:
        x, y = row.get(xkey), row.get(ykey)
        if x is None or y is None:
            continue
        x, y = float(x), float(y) * scale
        if math.isfinite(x) and math.isfinite(y) and (x > 0 or not positive_x):
            xs.append(x)
            ys.append(y)
    if not xs:
        return None
    order = np.argsort(xs, kind="stable")
    return np.asarray(xs)[order], np.asarray(ys)[order]


def band(histories, xkey, ykey, scale=1.0, positive_x=False):
    """``(grid, mean, low, high)`` across seeds, or None; low/high are None for a single seed."""
    curves = [c for c in (_curve(h, xkey, ykey, scale, positive_x) for h in histories) if c is not None]
    if not curves:
        return None
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, None, None
    lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if grid.size == 0:
        grid = np.array([lo])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _wide(groups, xkey) -> bool:
    """A log x axis when the evaluations span more than two decades (gd-variants: one full-batch step
    against 100,000 stochastic ones)."""
    xs = [float(r[xkey]) for _, hs in groups for h in hs for r in h if r.get(xkey) is not None]
    xs = [x for x in xs if x > 0]
    return bool(xs) and max(xs) / min(xs) > 100


def plot_curves(groups, axis: str, path, *, title: str = "", target: float | None = None,
                budget: float | None = None, panels=PANELS) -> Path:
    """``groups``: ``[(label, [history, ...]), ...]``; two panels (by default validation cost and error) vs
    ``axis``; ``panels`` holds (history column, axis label, scale, is a percentage) per panel."""
    xkey, xlabel = AXES[axis]
    log_x = axis in ("epoch", "step") and _wide(groups, xkey)
    fig = blank_figure(12, 4.6, dpi=100)
    axes = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(groups))]
    for ax, (ykey, ylabel, scale, percent) in zip(axes, panels):
        for (label, histories), colour in zip(groups, colours):
            b = band(histories, xkey, ykey, scale, positive_x=log_x)
            if b is None:
                continue
            x, mean, low, high = b
            n = len(histories)
            ax.plot(x, mean, color=colour, lw=1.8, label=f"{label} (mean of {n})" if n > 1 else label,
                    marker="." if len(x) < 25 and axis != "time" else None)
            if low is not None:
                ax.fill_between(x, low, high, color=colour, alpha=0.18, lw=0)
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        if percent:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}%" if f"{v:.0e}"[0] in "235" else ""))
            if target is not None:
                ax.axhline(100 * target, color="0.35", ls="--", lw=1, label=f"target {100 * target:g}%")
        if log_x:
            ax.set_xscale("log")
        if axis == "time" and budget is not None:
            ax.axvline(budget, color="0.35", ls=":", lw=1, label=f"budget {budget:g} s")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    bands = "; shaded: min-max over seeds" if any(len(h) > 1 for _, h in groups) else ""
    fig.suptitle(f"{title} — vs {xlabel.split(' (')[0]}{bands}" if title else f"vs {xlabel}{bands}")
    return save_figure(fig, path)


def plot_tuning_curves(tuning: list[dict], path, *, title: str = "") -> Path:
    """Best validation error so far against the number of tuning trials, one line per configuration."""
    from descend.experiments.compare.tune import best_so_far

    fig = blank_figure(7, 4.6, dpi=100)
    ax = fig.subplots()
    for i, row in enumerate(tuning):
        curve = best_so_far(row["trials"])
        if curve:
            ax.plot(np.arange(1, len(curve) + 1), 100 * np.asarray(curve), color=f"C{i % 10}", lw=1.8,
                    marker=".", drawstyle="steps-post", label=row["label"])
    ax.set_xlabel("tuning trials")
    ax.set_ylabel("best validation error so far (%)")
    ax.grid(True, alpha=0.35)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{title} — tuning curves" if title else "tuning curves")
    return save_figure(fig, path)


def plot_lr_sensitivity(tuning: list[dict], path, *, title: str = "") -> Path:
    """Validation error of every tuning trial against its learning rate (log axis), one colour per run."""
    fig = blank_figure(7, 4.6, dpi=100)
    ax = fig.subplots()
    for i, row in enumerate(tuning):
        points = sorted((float(t["params"]["lr"]), 100 * float(t["score"])) for t in row["trials"]
                        if "lr" in t["params"])
        if points:
            x, y = zip(*points)
            ax.plot(x, y, color=f"C{i % 10}", lw=0.8, alpha=0.6, marker="o", ms=4, label=row["label"])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation error (%)")
    ax.grid(True, which="major", alpha=0.35)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{title} — learning-rate sensitivity" if title else "learning-rate sensitivity")
    return save_figure(fig, path)


def plot_fits(fits, path, *, title: str = "") -> Path:
    """A one-feature regression's fitted curves: one panel per configuration, one line per seed, and the
    training points.  ``fits``: ``[(label, [record, ...]), ...]`` of records with a ``fitted_curve``."""
    fits = [(label, recs) for label, recs in fits if recs]
    n = len(fits)
    fig = blank_figure(4.2 * n, 4.2, dpi=100)
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True, squeeze=False)[0])
    for ax, (label, recs) in zip(axes, fits):
        first = recs[0]["fitted_curve"]
        px, py = np.asarray(first["points_x"]), np.asarray(first["points_y"])
        for j, r in enumerate(recs):
            curve = r["fitted_curve"]
            ax.plot(curve["x"], curve["y"], color=f"C{j % 10}", lw=1.6, label=f"seed {r['seed']}")
        ax.scatter(px, py, color="black", s=22, zorder=3, label="training points")
        span = float(py.max() - py.min()) or 1.0
        # a curve that shoots off between the points must not squash the points into a line
        ax.set_ylim(float(py.min()) - 0.35 * span, float(py.max()) + 0.35 * span)
        ax.set_title(label)
        ax.set_xlabel("x")
        ax.grid(True, alpha=0.35)
        ax.legend(loc="lower left", fontsize=8)
    axes[0].set_ylabel("y")
    fig.suptitle(f"{title} — fitted curves" if title else "fitted curves")
    return save_figure(fig, path)
