"""Ensemble members: how each differs (rows, columns, seed) and their training, placed by descend.placement."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from descend.errors import ConfigError, require
from descend.placement import Placement, run_in, run_tasks
from descend.train.config import TrainConfig
from descend.train.ensemble_model import VOTES


@dataclass(frozen=True)
class EnsembleConfig:
    """An ensemble run: how members differ, how they vote, and each member's training options.

    ``rows`` is the fraction of training rows each member sees (drawn with
    replacement when ``bootstrap``), ``features`` the fraction of input columns
    (always without replacement).  ``workers=0`` means one per core, at most
    one per member.  ``mc_samples`` is the largest number of Monte-Carlo
    dropout passes compared with weight scaling in the report.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    members: int = 10
    rows: float = 1.0
    bootstrap: bool = False
    features: float = 1.0
    vote: str = "soft"
    workers: int = 0
    mc_samples: int = 50

    def __post_init__(self):
        require(isinstance(self.train, TrainConfig), "train", "a TrainConfig", type(self.train).__name__)
        require(int(self.members) == self.members and self.members >= 1, "members", "an integer >= 1", self.members)
        require(0.0 < self.rows <= 1.0, "rows", "a fraction in (0, 1]", self.rows)
        require(0.0 < self.features <= 1.0, "features", "a fraction in (0, 1]", self.features)
        require(self.vote in VOTES, "vote", f"one of {VOTES}", self.vote)
        require(int(self.workers) == self.workers and self.workers >= 0, "workers",
                "an integer >= 0 (0 = one per core)", self.workers)
        require(int(self.mc_samples) == self.mc_samples and self.mc_samples >= 1, "mc_samples", "an integer >= 1",
                self.mc_samples)
        if self.features < 1.0 and self.train.layers is not None:
            from descend.model.parse import spatial_layers

            if spatial_layers(self.train.layers):
                raise ConfigError(f"`features` must be 1 with convolution or pooling layers (a subset of pixels is "
                                  f"no image). Received: features={self.features}, layers={self.train.layers!r}")
        require(self.train.balance == "none", "balance", "'none' for ensemble members (rows are resampled instead)",
                self.train.balance)

    def to_dict(self) -> dict:
        return {"members": self.members, "rows": self.rows, "bootstrap": self.bootstrap, "features": self.features,
                "vote": self.vote, "workers": self.workers, "mc_samples": self.mc_samples,
                "train": self.train.to_dict()}

    def resolved_workers(self) -> int:
        return min(self.members, self.workers or os.cpu_count() or 1)


# ---------------------------------------------------------------------------- plans


@dataclass(frozen=True, eq=False)
class MemberPlan:
    """What member ``index`` trains on: its seed, training rows and input columns (sorted indices)."""

    index: int
    seed: int
    rows: np.ndarray
    features: np.ndarray


def member_seed(seed: int, index: int) -> int:
    """A 31-bit seed of member ``index`` from the run's seed, independent across runs and members."""
    return int(np.random.SeedSequence([int(seed), 0xE45E, int(index)]).generate_state(1)[0] >> 1)


def plan_members(cfg: EnsembleConfig, n_rows: int, n_features: int) -> list[MemberPlan]:
    """Every member's rows and columns, a pure function of the config's seed and sizes."""
    plans = []
    for i in range(cfg.members):
        seed = member_seed(cfg.train.seed, i)
        rng = np.random.default_rng([seed, 0x0B5])
        n_take = max(1, int(round(cfg.rows * n_rows)))
        if cfg.bootstrap:
            rows = np.sort(rng.integers(0, n_rows, size=n_take))
        elif n_take == n_rows:
            rows = np.arange(n_rows)
        else:
            rows = np.sort(rng.choice(n_rows, size=n_take, replace=False))
        k = max(1, int(round(cfg.features * n_features)))
        cols = np.arange(n_features) if k == n_features else np.sort(rng.choice(n_features, size=k, replace=False))
        plans.append(MemberPlan(i, seed, rows.astype(np.int64), cols.astype(np.int64)))
    return plans


# ---------------------------------------------------------------------------- training


def _member_spec(cfg: TrainConfig, n_in: int, image_shape=None, task: str | None = None):
    from descend.train.setup import network_spec

    return network_spec(cfg, n_in, image_shape, task)


def _train_one(cfg: TrainConfig, plan: MemberPlan, X, y, X_valid, y_valid, n_classes: int,
               threads: int | None, image_shape=None, task: str | None = None, target_std=None) -> dict:
    """Train one member on its rows and columns; NumPy results (picklable for the parent)."""
    from descend.train.loop import fit, fit_options
    from descend.train.setup import setup_run

    member_cfg = cfg.replace(seed=plan.seed)
    cols = plan.features
    Xm = np.asarray(X[plan.rows][:, cols])
    run = setup_run(member_cfg, len(cols), n_classes, len(plan.rows), threads=threads, image_shape=image_shape,
                    task=task)
    engine = run.engine
    Xv = engine.asarray(np.asarray(X_valid[:, cols])) if X_valid is not None else None
    started = time.perf_counter()
    result = fit(engine, run.spec, fit_options(member_cfg), engine.asarray(Xm), engine.put_labels(y[plan.rows]),
                 Xv, y_valid, params=run.params, model_state=run.model_state, target_std=target_std,
                 image_shape=image_shape)
    return {"index": plan.index, "params": {k: np.asarray(v) for k, v in result.params.items()},
            "state": {k: np.asarray(v) for k, v in result.model_state.items()},
            "epochs": result.steps / max(result.steps_per_epoch, 1), "steps": result.steps,
            "stopped_early": result.stopped_early, "best_valid": result.best_metric,
            "seconds": time.perf_counter() - started, "engine": engine.name, "threads": run.threads}


@dataclass(frozen=True, eq=False)
class MemberTask:
    """One member to train, as sent to a worker (the data travels apart, once per worker)."""

    train: TrainConfig
    plan: MemberPlan
    n_classes: int  # a regression ensemble's: the number of targets
    threads: int | None
    image_shape: tuple | None = None
    task: str | None = None
    target_std: object = None  # regression: per-target standard deviations (validation RMSE in the targets' units)


def _worker_task(task: MemberTask, data: dict) -> dict:
    return _train_one(task.train, task.plan, data["X"], data["y"], data["X_valid"], data["y_valid"], task.n_classes,
                      task.threads, task.image_shape, task.task, task.target_std)


def member_placement(cfg: EnsembleConfig, n_members: int, dask: str | None = None) -> Placement:
    """Where the members train: this process (one worker), spawned processes, or a Dask cluster.

    Local workers get ``cores // workers`` compute threads each unless
    ``train.threads`` says; on Dask one each unless it says.  On Dask,
    ``workers`` bounds the members in flight (0 = all of them).
    """
    if dask:
        return Placement(workers=cfg.workers or None, threads=cfg.train.threads or 1, dask=dask)
    workers = min(cfg.resolved_workers(), n_members)
    if workers <= 1:
        return Placement(workers=1)
    return Placement(workers=workers, threads=cfg.train.threads or max(1, (os.cpu_count() or 1) // workers))


def member_data(X, y, X_valid=None, y_valid=None) -> dict:
    """What every member's training reads: memory-mapped by local workers, scattered once on Dask."""
    return {"X": X, "y": y, "X_valid": X_valid, "y_valid": y_valid}


def train_members(cfg: EnsembleConfig, plans: list[MemberPlan], X, y, X_valid=None, y_valid=None, *,
                  n_classes: int, log=None, dask: str | None = None, pool=None, image_shape=None,
                  task: str | None = None, target_std=None) -> list[dict]:
    """Train every planned member on normalised ``X`` (float32) and class ids ``y`` (``task="regression"``:
    standardized targets, ``n_classes`` their number, ``target_std`` their scale); results by index.

    With one worker the members train in this process one after another;
    otherwise in ``spawn``-ed worker processes that memory-map the data, or on
    the Dask cluster at ``dask``.  ``pool``: one already opened by
    :func:`~descend.placement.open_pool` for ``member_placement(cfg,
    len(plans), dask)`` with :func:`member_data`.
    """
    log = log or (lambda line: None)
    placement = member_placement(cfg, len(plans), dask)
    threads = placement.threads if placement.dask or placement.workers > 1 else cfg.train.threads
    tasks = [MemberTask(cfg.train, plan, n_classes, threads, image_shape, task, target_std) for plan in plans]
    results: dict[int, dict] = {}

    def done(_member, r):
        results[r["index"]] = r
        best = r.get("best_valid")
        extra = ("" if best is None else f", best validation RMSE {best:.4g}" if task == "regression"
                 else f", best validation {100 * best:.2f}%")
        log(f"descend: member {r['index'] + 1}/{cfg.members} trained in {r['seconds']:.1f} s "
            f"({r['epochs']:g} epochs{extra}); {len(results)}/{len(plans)} done")

    if pool is None:
        run_tasks(_worker_task, tasks, placement, shared=member_data(X, y, X_valid, y_valid), on_result=done,
                  log=log, name="descend-ensemble")
    else:
        run_in(pool, _worker_task, tasks, limit=placement.workers, on_result=done)
    return [results[p.index] for p in plans]
