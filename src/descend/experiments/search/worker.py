"""A search worker: one session of Optuna's ``study.optimize`` on the shared storage.

``descend search`` places each session (:func:`run_worker`) with
:mod:`descend.placement`: in a worker process on this machine (started with
its thread counts in the environment, stopped by its PID) or as a task on an
existing Dask cluster.  A session loads the dataset's training rows once
(never the test set), builds the same stratified folds as every other worker,
then takes queued trials until the queue is empty.

Each trial trains the candidate configuration once per fold, on the fold's
training rows with the normaliser fitted on them, scores it on the held-out
fold, reports the running mean after each fold (the pruner may stop a hopeless
trial there) and returns the mean over the folds.
"""

from __future__ import annotations

import importlib
import os
import socket
import time

HOOK_VARIABLE = "DESCEND_SEARCH_TEST_HOOK"
# What each --metric minimizes per task: valid_error (the default) is the task's error measure, RMSE for regression.
TASK_METRICS = {"classification": {"valid_error": "valid_error", "valid_cost": "valid_cost"},
                "regression": {"valid_error": "valid_rmse", "valid_rmse": "valid_rmse", "valid_cost": "valid_cost"}}


class CVContext:
    """What a worker keeps between trials: the training rows, the folds, the engines."""

    def __init__(self, spec: dict):
        from descend.experiments.search.kfold import fold_digest, make_folds
        from descend.experiments.search.space import parse_space
        from descend.train.config import TrainConfig

        self.spec = spec
        self.base = TrainConfig.from_dict(spec["config"])
        self.space = parse_space(spec["space"], self.base)
        self.k = int(spec["folds"])
        self.threads = int(spec.get("threads") or 1)
        self.X, self.y, self.classes, self.image_shape, self.task, self.n_out = training_rows(self.base)
        self.metric = TASK_METRICS[self.task][spec["metric"]]  # valid_error is RMSE on regression targets
        self.folds = make_folds(self.y, self.k, self.base.seed, self.task)
        self.digest = fold_digest(self.folds)
        self._engines: dict = {}
        self.hook = _load_hook()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def engine(self, cfg):
        from descend.train.setup import make_engine

        key = (cfg.engine, cfg.device, cfg.dtype)
        if key not in self._engines:
            self._engines[key] = make_engine(cfg, self.threads)
        return self._engines[key]

    def fold_score(self, cfg, fold: int, trial=None) -> dict:
        """Train ``cfg`` on the fold's training rows; cost and error (regression: cost, RMSE, MAE, R^2) on its
        held-out rows."""
        import numpy as np

        from descend.experiments.search.kfold import fold_rows
        from descend.train.loop import evaluate_metrics, fit, fit_options
        from descend.train.setup import prepare_rows, setup_run

        started = time.perf_counter()
        if self.hook is not None:
            value = self.hook(cfg, fold, trial)
            if value is not None:
                return {"score": float(value), "seconds": time.perf_counter() - started, "steps": 0}
        train, held = fold_rows(self.folds, fold)
        data = prepare_rows(cfg, self.X[train], self.y[train], self.n_out, self.X[held], self.y[held],
                            image_shape=self.image_shape, task=self.task)
        run = setup_run(cfg, data.n_in, data.n_out, data.n_train, engine=self.engine(cfg),
                        image_shape=data.image_shape, task=self.task)
        engine, spec = run.engine, run.spec
        X_held, y_held = engine.asarray(data.X_valid), data.y_valid
        result = fit(engine, spec, fit_options(cfg), engine.asarray(data.X_train), engine.put_labels(data.y_train),
                     X_held, y_held, params=run.params, model_state=run.model_state, target_std=data.target_std,
                     image_shape=data.image_shape)
        # regression targets are standardized with the fold's training rows and scored in the targets' units
        measured = evaluate_metrics(engine, spec, engine.put_tree(result.params), engine.put_tree(result.model_state),
                                    X_held, y_held, data.target_std)
        score = measured[self.metric.removeprefix("valid_")]
        if not np.isfinite(score):
            score = float("inf")
        return {"score": float(score), **{f"valid_{k}": float(v) for k, v in measured.items()},
                "seconds": time.perf_counter() - started, "steps": int(result.steps)}


def search_dataset(cfg):
    """The dataset with every training row in ``train`` (no validation carved) and the test set apart."""
    from descend.errors import ConfigError
    from descend.train.setup import load_dataset

    ds = load_dataset(cfg.replace(validation=0))
    if ds.train.y is None:
        raise ConfigError(f"dataset {cfg.dataset!r} has no training labels to search with")
    return ds


def training_rows(cfg):
    """(X, y, classes, image shape, task, outputs) of the dataset's training rows: what a worker searches on
    (never the test set)."""
    ds = search_dataset(cfg)
    return ds.train.X, ds.train.y, tuple(ds.classes), ds.image_shape, ds.task, ds.n_outputs


def _load_hook():
    """A test-only stand-in for a fold's training: ``module:function`` in DESCEND_SEARCH_TEST_HOOK.

    ``function(cfg, fold, trial)`` may sleep, return a fold score (float), or
    return None to train for real.  Read from the environment only, never from a
    run directory, so no file can make a worker import code.
    """
    target = os.environ.get(HOOK_VARIABLE)
    if not target:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def make_objective(ctx: CVContext):
    import numpy as np
    import optuna

    from descend.errors import DescendError

    def objective(trial):
        storage = trial.study._storage
        if hasattr(storage, "record_heartbeat"):
            storage.record_heartbeat(trial._trial_id)  # at once: the heartbeat thread may not run before a kill
        if trial.user_attrs.get("ticket") is None:
            # The queue ran dry between this worker's check and its pop: nothing left to do.
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise optuna.TrialPruned("no queued work left")
        values = {p.name: p.suggest(trial) for p in ctx.space.params}
        retry_of = storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        trial.set_user_attr("worker", ctx.worker)
        trial.set_user_attr("folds", ctx.digest)
        try:
            cfg = ctx.space.config(ctx.base, values)
            scores, seconds = [], []
            for fold in range(ctx.k):
                result = ctx.fold_score(cfg, fold, trial)
                scores.append(result["score"])
                seconds.append(round(result["seconds"], 3))
                trial.set_user_attr("fold_scores", scores)
                trial.set_user_attr("fold_seconds", seconds)
                trial.report(float(np.mean(scores)), fold)
                if fold < ctx.k - 1 and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {fold + 1} of {ctx.k}")
        except DescendError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        return float(np.mean(scores))

    return objective


def make_sampler(spec: dict, ctx: CVContext | None = None, worker_index: int = 0):
    import optuna

    seed = int(spec["config"].get("seed", 0))
    method = spec["method"]
    if method == "tpe":
        import warnings

        trials = int(spec.get("trials") or 20)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant_liar is an "experimental" argument
            return optuna.samplers.TPESampler(seed=seed + 7919 * worker_index, constant_liar=True,
                                              n_startup_trials=max(1, min(10, trials // 2)))
    if method == "hillclimb":
        from descend.experiments.search.sampler import make_hillclimb_sampler

        space = ctx.space
        return make_hillclimb_sampler(space, space.start(ctx.base), float(spec["radius"]), seed)
    return optuna.samplers.RandomSampler(seed=seed + 7919 * worker_index)  # grid / random: queued points


def make_pruner(spec: dict):
    import optuna

    if spec.get("pruner", "median") == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def run_worker(spec: dict) -> int:
    """Take queued trials until none is left (or the coordinator asks to stop); the number run."""
    from optuna.trial import TrialState

    from descend.errors import DescendError
    from descend.experiments.search.storage import fail_stale, import_optuna, make_storage

    optuna = import_optuna()
    parent = os.getppid() if spec.get("local") else None
    if spec.get("worker_lock"):
        _hold_shared_lock(spec["worker_lock"])
    ctx = CVContext(spec)
    storage = make_storage(spec["storage"], int(spec["heartbeat"]), create_tables=False)
    study = optuna.load_study(study_name=spec["study"], storage=storage,
                              sampler=make_sampler(spec, ctx, int(spec.get("worker_index", 0))),
                              pruner=make_pruner(spec))
    ran = [0]

    def queue(s) -> tuple[int, int]:
        """(WAITING, RUNNING) trials of tickets."""
        states = [t.state for t in s.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
                  if t.user_attrs.get("ticket") is not None]
        return states.count(TrialState.WAITING), states.count(TrialState.RUNNING)

    def orphaned() -> bool:
        """The coordinator that started this worker is gone: finish the trial at hand, take no other."""
        return parent is not None and os.getppid() != parent

    def after_trial(s, trial):
        ran[0] += 1
        if queue(s)[0] == 0 or s.user_attrs.get("stop") or orphaned():
            s.stop()

    while not study.user_attrs.get("stop") and not orphaned():
        waiting, running = queue(study)
        if waiting:
            study.optimize(make_objective(ctx), callbacks=[after_trial], catch=(DescendError,))
        elif running:
            # Other workers' last trials: stay until they finish, to take a dead worker's trial once
            # its heartbeat goes stale (it is then queued again).
            fail_stale(study)
            time.sleep(min(1.0, float(spec["heartbeat"])))
        else:
            break
    return ran[0]


def _hold_shared_lock(path: str) -> None:
    """A shared lock on the run directory's workers lock, held until this process exits."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # never closed: the kernel releases it when the process ends
