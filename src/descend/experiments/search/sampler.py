"""Hill-climbing: the curriculum's random search around the best point so far.

Start from a point (the base configuration's values where the space holds
them, else the middle of each range).  Each next trial is drawn uniformly
from the ball of radius ``radius`` around the current best, in the unit cube
of the ranges (log space for log ranges: a radius of 0.15 over
``lr=log(1e-4,1e-1)`` is 0.45 decades).  The current best moves only when a
finished trial scores strictly better.  List parameters change to another of
their values with probability ``radius`` (one of them always changes when the
space has no ranges, so a proposal is never the centre itself).

The sampler keeps no state of its own: it reads the best finished trial from
the study's storage, so any number of workers climb together, each proposal
recording the centre it was drawn around (user attributes ``hc_center`` --
the trial number, -1 for the start point -- and ``hc_center_value``).
"""

from __future__ import annotations

import math

import numpy as np

from descend.experiments.search.space import Space


def ball_step(rng: np.random.Generator, dims: int, radius: float) -> np.ndarray:
    """A uniform draw from the ``dims``-dimensional ball of ``radius``."""
    if dims == 0:
        return np.zeros(0)
    direction = rng.standard_normal(dims)
    norm = float(np.linalg.norm(direction)) or 1.0
    return direction / norm * radius * rng.uniform() ** (1.0 / dims)


def neighbour(space: Space, center: dict, radius: float, rng: np.random.Generator) -> dict:
    """A proposal around ``center`` (stored values); ranges stay inside their bounds."""
    ranges = [p for p in space.params if p.is_range]
    step = ball_step(rng, len(ranges), radius)
    out = dict(center)
    for p, d in zip(ranges, step):
        out[p.name] = p.from_unit(p.to_unit(center[p.name]) + d)
    lists = [p for p in space.params if not p.is_range and len(p.choices) > 1]
    forced = None if ranges or not lists else lists[int(rng.integers(len(lists)))].name
    for p in lists:
        if p.name == forced or rng.uniform() < radius:
            others = [c for c in p.choices if c != center[p.name]]
            out[p.name] = others[int(rng.integers(len(others)))]
    return out


def unit_distance(space: Space, a: dict, b: dict) -> float:
    """Euclidean distance of two points over the range parameters, in unit-cube coordinates."""
    return math.sqrt(sum((p.to_unit(a[p.name]) - p.to_unit(b[p.name])) ** 2 for p in space.params if p.is_range))


def make_hillclimb_sampler(space: Space, start: dict, radius: float, seed: int):
    """An Optuna sampler (built lazily: Optuna is an optional dependency)."""
    from optuna.samplers import BaseSampler, RandomSampler
    from optuna.trial import TrialState

    class HillClimbSampler(BaseSampler):
        def __init__(self):
            self._fallback = RandomSampler(seed=seed)

        def infer_relative_search_space(self, study, trial):
            return {p.name: p.distribution() for p in space.params}

        def sample_relative(self, study, trial, search_space):
            ticket = trial.user_attrs.get("ticket")
            if ticket is None or trial.params:
                return {}  # a surplus trial, or a retry that keeps its parameters
            rng = np.random.default_rng([int(seed), 0x4C1, int(ticket)])
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            best = min(done, key=lambda t: (t.value, t.number)) if done else None
            if int(ticket) == 0 or best is None:
                center, number, value = start, -1, None
            else:
                center = {p.name: best.params[p.name] for p in space.params}
                number, value = best.number, best.value
            proposal = dict(start) if int(ticket) == 0 else neighbour(space, center, radius, rng)
            study._storage.set_trial_user_attr(trial._trial_id, "hc_center", number)
            study._storage.set_trial_user_attr(trial._trial_id, "hc_center_value", value)
            return {k: proposal[k] for k in search_space}

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    return HillClimbSampler()
