"""A comparison as asked for: the study assembled from presets, files and run specs, then its tuning request."""

from __future__ import annotations

import dataclasses

from descend.experiments.compare.spec import Study, assemble_study
from descend.experiments.compare.tune import resolve_tuning


def build_study(dataset: str | None = None, *, tune: str | None = None, tune_budget=None,
                tune_method: str | None = None, folds: int | None = None, **options) -> Study:
    """:func:`~descend.experiments.compare.spec.assemble_study` (``options``), tuned when asked.

    Tuning (``tune``: a space; ``tune_budget``: trials per run) comes from the
    arguments over the file's ``[tune]`` table over a tuned preset's.
    """
    study, run_spaces, table, default_trials = assemble_study(dataset, **options)
    space = tune if tune is not None else table.get("space")
    if space is None and not run_spaces:
        return study
    trials = next((t for t in (tune_budget, table.get("budget")) if t is not None), default_trials)
    tuning = resolve_tuning(study, space, trials, method=tune_method or table.get("method", "tpe"),
                            folds=folds if folds is not None else table.get("folds"), per_run=run_spaces)
    return dataclasses.replace(study, tune=tuning.to_dict())
