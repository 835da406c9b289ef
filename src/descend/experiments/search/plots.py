"""Plots of a search: score per trial, a grid heatmap of two parameters, parallel coordinates.

``rows`` are the trials table's rows (dicts with ``trial``, ``state``,
``score``, ``last_score`` and one key per searched parameter, stored values).
Figures use ``Figure`` + ``FigureCanvasAgg`` (never pyplot), like every plot
of descend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from descend.experiments.search.space import Param, Space
from descend.reports.plots import new_figure, save_figure


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _label(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plot_scores(rows: list[dict], metric: str, path) -> Path:
    """Each finished trial's cross-validated score, pruned trials' last running mean, and the best so far."""
    fig, ax = new_figure()
    done = sorted((r for r in rows if r["state"] == "COMPLETE" and _finite(r.get("score"))),
                  key=lambda r: r["trial"])
    pruned = [r for r in rows if r["state"] == "PRUNED" and _finite(r.get("last_score"))]
    if done:
        xs = [r["trial"] for r in done]
        ys = [r["score"] for r in done]
        ax.plot(xs, ys, "o", ms=5, label="trial (mean over folds)")
        ax.step(xs, np.minimum.accumulate(ys), where="post", color="C3", label="best so far")
        i = int(np.argmin(ys))
        ax.plot([xs[i]], [ys[i]], "o", ms=11, mfc="none", mew=2, color="C3",
                label=f"best {ys[i]:.4g} (trial {xs[i]})")
    if pruned:
        ax.plot([r["trial"] for r in pruned], [r["last_score"] for r in pruned], "x", color="0.5",
                label="pruned (running mean when stopped)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"Cross-validated {metric} per trial")
    ax.grid(True, alpha=0.3)
    if done or pruned:
        ax.legend(loc="best")
        positive = [r["score"] for r in done] + [r["last_score"] for r in pruned]
        if min(positive) > 0 and max(positive) / min(positive) > 20:
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no finished trial", transform=ax.transAxes, ha="center", va="center", color="0.5")
    return save_figure(fig, path)


def varying(space: Space) -> list[Param]:
    return [p for p in space.params if p.is_range or len(p.choices) > 1]


def plot_heatmap(rows: list[dict], a: Param, b: Param, metric: str, path) -> Path:
    """Best score for each pair of values of two list parameters (best over the others)."""
    done = [r for r in rows if r["state"] == "COMPLETE" and _finite(r.get("score"))]
    grid = np.full((len(b.choices), len(a.choices)), np.nan)
    for r in done:
        if r.get(a.name) in a.choices and r.get(b.name) in b.choices:
            i, j = b.choices.index(r[b.name]), a.choices.index(r[a.name])
            grid[i, j] = r["score"] if np.isnan(grid[i, j]) else min(grid[i, j], r["score"])
    state = {(r.get(b.name), r.get(a.name)): r["state"].lower() for r in rows if r["state"] != "COMPLETE"}
    fig, ax = new_figure(max(4.5, 1.1 * len(a.choices) + 2.5), max(3.5, 0.8 * len(b.choices) + 2.0))
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap="viridis_r", aspect="auto")
    fig.colorbar(im, ax=ax, label=f"{metric} (best over other parameters)")
    ax.set_xticks(range(len(a.choices)), [_label(c) for c in a.choices])
    ax.set_yticks(range(len(b.choices)), [_label(c) for c in b.choices])
    ax.set_xlabel(a.name)
    ax.set_ylabel(b.name)
    ax.set_title(f"{metric} over {a.name} x {b.name}")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            text = (state.get((b.choices[i], a.choices[j]), "-") if np.isnan(grid[i, j])
                    else f"{grid[i, j]:.4g}")
            colour = "white" if np.isfinite(grid[i, j]) and grid[i, j] > mid else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    return save_figure(fig, path)


def plot_pair(rows: list[dict], a: Param, b: Param | None, metric: str, path) -> Path:
    """Score over one or two parameters (log axes for log ranges), for sampled searches."""
    done = [r for r in rows if r["state"] == "COMPLETE" and _finite(r.get("score"))]
    fig, ax = new_figure()

    def coords(p: Param):
        if p.is_range:
            return [float(r[p.name]) for r in done], None
        return [p.choices.index(r[p.name]) if r[p.name] in p.choices else np.nan for r in done], p.choices

    xs, xticks = coords(a)
    scores = [r["score"] for r in done]
    if b is None:
        ax.plot(xs, scores, "o")
        ax.set_ylabel(metric)
        title = f"{metric} over {a.name}"
    else:
        ys, yticks = coords(b)
        sc = ax.scatter(xs, ys, c=scores, cmap="viridis_r", s=36, edgecolors="0.3", linewidths=0.5)
        fig.colorbar(sc, ax=ax, label=metric)
        if done:
            i = int(np.argmin(scores))
            ax.plot([xs[i]], [ys[i]], "o", ms=14, mfc="none", mew=2, color="C3", label="best")
            ax.legend(loc="best")
        ax.set_ylabel(b.name)
        if b.is_range and b.log:
            ax.set_yscale("log")
        if yticks is not None:
            ax.set_yticks(range(len(yticks)), [_label(c) for c in yticks])
        title = f"{metric} over {a.name} x {b.name}"
    if a.is_range and a.log:
        ax.set_xscale("log")
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), [_label(c) for c in xticks])
    ax.set_xlabel(a.name)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def _position(p: Param, value) -> float:
    if p.is_range:
        return p.to_unit(value)
    if len(p.choices) == 1 or value not in p.choices:
        return 0.5
    return p.choices.index(value) / (len(p.choices) - 1)


def plot_parallel(rows: list[dict], space: Space, metric: str, path) -> Path:
    """One line per trial across the parameters' axes (log-scaled ranges) and the score, coloured by score."""
    from matplotlib import cm, colormaps, colors

    params = list(space.params)
    done = [r for r in rows if r["state"] == "COMPLETE" and _finite(r.get("score"))]
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    fig, ax = new_figure(max(6.0, 1.6 * (len(params) + 1) + 1.5), 4.8)
    axes_x = list(range(len(params) + 1))
    scores = np.array([r["score"] for r in done]) if done else np.zeros(0)
    lo, hi = (float(scores.min()), float(scores.max())) if done else (0.0, 1.0)
    span = (hi - lo) or 1.0
    norm = colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
    cmap = colormaps["viridis_r"]
    for r in pruned:
        ys = [_position(p, r.get(p.name)) for p in params]
        ax.plot(axes_x[:-1], ys, color="0.8", lw=0.8, zorder=1)
    best = int(np.argmin(scores)) if done else None
    for k, r in sorted(enumerate(done), key=lambda kr: -kr[1]["score"]):
        ys = [_position(p, r.get(p.name)) for p in params] + [(r["score"] - lo) / span]
        ax.plot(axes_x, ys, color=cmap(norm(r["score"])), lw=1.2, alpha=0.85, zorder=2)
    if best is not None:
        r = done[best]
        ys = [_position(p, r.get(p.name)) for p in params] + [(r["score"] - lo) / span]
        ax.plot(axes_x, ys, color="C3", lw=2.8, zorder=3, label=f"best (trial {r['trial']})")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, frameon=False)
    for x, p in zip(axes_x, params):
        ax.axvline(x, color="0.3", lw=0.8, zorder=0)
        if p.is_range:
            ticks = [(0.0, _label(p.low)), (1.0, _label(p.high))]
            if p.log:
                ticks.insert(1, (0.5, _label(float(f"{math.sqrt(p.low * p.high):.3g}"))))
        else:
            ticks = [(_position(p, c), _label(c)) for c in p.choices]
        for y, text in ticks:
            ax.text(x + 0.04, y, text, fontsize=7, va="center", color="0.25")
    ax.axvline(axes_x[-1], color="0.3", lw=0.8, zorder=0)
    ax.text(axes_x[-1] + 0.04, 0.0, f"{lo:.4g}", fontsize=7, va="center")
    ax.text(axes_x[-1] + 0.04, 1.0, f"{hi:.4g}", fontsize=7, va="center")
    ax.set_xticks(axes_x, [p.name + (" (log)" if p.is_range and p.log else "") for p in params] + [metric])
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, axes_x[-1] + 0.5)
    ax.set_title("Parallel coordinates (colour: score; grey: pruned)")
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label=metric)
    return save_figure(fig, path)


def search_plots(rows: list[dict], space: Space, method: str, metric: str, run_dir: Path) -> dict[str, Path]:
    """Every plot of a search, as {caption: path}."""
    run_dir = Path(run_dir)
    images = {"Score per trial": plot_scores(rows, metric, run_dir / "score_vs_trial.png")}
    vary = varying(space)
    if len(vary) >= 2 and not vary[0].is_range and not vary[1].is_range:
        images[f"Grid heatmap: {vary[0].name} x {vary[1].name}"] = plot_heatmap(
            rows, vary[0], vary[1], metric, run_dir / "grid_heatmap.png")
    elif vary:
        b = vary[1] if len(vary) > 1 else None
        caption = f"Score over {vary[0].name}" + (f" x {b.name}" if b else "")
        images[caption] = plot_pair(rows, vary[0], b, metric, run_dir / "score_over_params.png")
    images["Parallel coordinates"] = plot_parallel(rows, space, metric, run_dir / "parallel_coordinates.png")
    return images
