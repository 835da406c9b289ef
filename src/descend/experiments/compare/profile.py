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
