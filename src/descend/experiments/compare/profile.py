"""Performance profiles: on what fraction of problems is a method within a factor tau of the fastest?

For problem ``p`` let ``t[m][p]`` be method ``m``'s time to the target (None
when it never reached it) and ``best[p]`` the fastest method's time there.
The profile of ``m`` at ``tau`` is the fraction of *all* problems with
``t[m][p] <= tau * best[p]``; a problem no method solved counts against
every method.  This is how the AlgoPerf benchmark scores training algorithms
(tau from 1 to 4); the area under the curve summarizes it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

DEFAULT_TAUS = tuple(float(t) for t in np.linspace(1.0, 4.0, 61))


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def performance_profile(times: dict[str, dict[str, float | None]], taus=DEFAULT_TAUS) -> dict[str, list[float]]:
    """method -> the fraction of problems within ``tau`` x the fastest, for each ``tau``."""
    problems = sorted({p for per in times.values() for p in per})
    if not problems:
        return {m: [0.0] * len(taus) for m in times}
    best = {}
    for p in problems:
        reached = [float(per[p]) for per in times.values() if _finite(per.get(p))]
        best[p] = min(reached) if reached else None
    out = {}
    for m, per in times.items():
        ratios = [float(per[p]) / best[p] if best[p] is not None and _finite(per.get(p)) else math.inf
                  for p in problems]
        out[m] = [sum(r <= tau * (1 + 1e-12) for r in ratios) / len(problems) for tau in taus]
    return out


def profile_area(fractions: list[float], taus=DEFAULT_TAUS) -> float:
    """The area under one profile, normalised by the tau range (1 = fastest everywhere)."""
    taus = np.asarray(taus, dtype=float)
    if len(taus) < 2:
        return float(fractions[0]) if fractions else 0.0
    ys = np.asarray(fractions, dtype=float)
    return float(np.sum((ys[1:] + ys[:-1]) * np.diff(taus)) / 2 / (taus[-1] - taus[0]))


# --- over finished comparisons ----------------------------------------------------------------------------


def median_time(hits: list) -> float | None:
    """The median over seeds of the time to the target, a seed that never reached it counting as infinite
    (None when half or more of the seeds never reached it)."""
    if not hits:
        return None
    mid = float(np.median([math.inf if h is None else float(h) for h in hits]))
    return None if math.isinf(mid) else mid


def times_from_compares(directories) -> tuple[dict[str, dict[str, float | None]], list[str]]:
    """method (run label) -> problem (one finished compare directory) -> median seconds to its target."""
    from descend.errors import ConfigError
    from descend.experiments.compare.report import first_reaching
    from descend.experiments.compare.study import load_study, plan
    from descend.io.rundir import read_json

    times: dict[str, dict[str, float | None]] = {}
    problems = []
    for directory in directories:
        directory = Path(directory)
        study = load_study(directory)
        if study.target_error is None:
            raise ConfigError(f"`profile` needs comparisons with a target error; {directory} has none "
                              f"(rerun it with --target-error)")
        problem = f"{directory.name}: {study.title}"
        problems.append(problem)
        hits: dict[str, list] = {}
        for task in plan(study, directory):  # a tuned run keeps its label, so its path
            if not Path(task.path).is_file():
                continue
            record = read_json(task.path)
            row = first_reaching(record["history"], study.target_error) if record["status"] == "ok" else None
            hits.setdefault(task.label, []).append(None if row is None else row["time"])
        for label, values in hits.items():
            times.setdefault(label, {})[problem] = median_time(values)
    for per in times.values():
        for p in problems:
            per.setdefault(p, None)  # a method missing from a problem did not reach its target there
    return times, problems


def plot_profile(profile: dict[str, list[float]], taus, path, *, title: str = "") -> Path:
    from descend.reports.plots import blank_figure, save_figure

    fig = blank_figure(7, 4.6, dpi=100)
    ax = fig.subplots()
    for i, (method, fractions) in enumerate(profile.items()):
        ax.plot(taus, fractions, color=f"C{i % 10}", lw=1.8, drawstyle="steps-post",
                label=f"{method} (area {profile_area(fractions, taus):.2f})")
    ax.set_xlim(taus[0], taus[-1])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ (within τ × the fastest time to the target)")
    ax.set_ylabel("fraction of problems")
    ax.grid(True, alpha=0.35)
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title or "performance profile")
    return save_figure(fig, path)


def profile_markdown(profile: dict[str, list[float]], taus, problems: list[str], times) -> str:
    shown = [t for t in (1.0, 1.5, 2.0, 3.0, 4.0) if any(abs(t - x) < 1e-9 for x in taus)]
    at = {t: min(range(len(taus)), key=lambda i: abs(taus[i] - t)) for t in shown}
    head = ["method", "area (τ 1–4)", *(f"τ={t:g}" for t in shown)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, fractions in sorted(profile.items(), key=lambda kv: -profile_area(kv[1], taus)):
        lines.append("| " + " | ".join([method, f"{profile_area(fractions, taus):.2f}",
                                        *(f"{fractions[at[t]]:.2f}" for t in shown)]) + " |")
    lines += ["", "Median seconds to each problem's target (— = not reached by half the seeds):", "",
              "| method | " + " | ".join(problems) + " |", "|" + "---|" * (len(problems) + 1)]
    for method, per in times.items():
        lines.append("| " + " | ".join([method, *(("—" if per[p] is None else f"{per[p]:.3g}") for p in problems)])
                     + " |")
    return "\n".join(lines) + "\n"


def write_profile(directories, out_dir) -> str:
    """profile.png and profile.md over finished comparisons; returns the Markdown."""
    from descend.io.atomic import atomic_write_text

    times, problems = times_from_compares(directories)
    profile = performance_profile(times)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_profile(profile, DEFAULT_TAUS, out_dir / "profile.png",
                 title=f"performance profile over {len(problems)} problem(s)")
    text = profile_markdown(profile, DEFAULT_TAUS, problems, times)
    atomic_write_text(out_dir / "profile.md", text)
    return text
