"""One compare run: a (configuration, seed) trained from the seed's shared start, its ``result.json``.

:func:`execute` is what a worker runs; it records fingerprints (SHA-256) of the
initial weights its trainer received and of every epoch's batch order, so the
report can check that every configuration of a seed started alike.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass

import numpy as np

import descend
from descend.engines import default_threads, get_engine
from descend.errors import ConfigError, DivergenceError
from descend.io.rundir import write_json
from descend.model import MLP, init_params, init_state
from descend.train.config import TrainConfig
from descend.train.loop import batch_plan, cost_and_error, evaluate, fit, learning_rate_at

RESULT_FILE = "result.json"
RESULT_VERSION = 1


@dataclass(frozen=True)
class RunTask:
    """One (configuration, seed) pair, as sent to a worker (plain data, picklable)."""

    run_id: str
    index: int
    label: str
    seed: int
    config: dict
    budget: float | None
    path: str
    threads: int | None = None


# --- one run -----------------------------------------------------------------------------------

_DATA: dict = {}
_DATA_KEPT = 2  # prepared datasets kept per process: runs that alternate two preprocessings (say pca=50 and none) reuse both


def _host_data(cfg: TrainConfig):
    """Normalised NumPy splits, cached per (dataset, split seed, preprocessing): every configuration of
    a seed reuses them."""
    from descend.train.run import oversample, prepare_data

    key = (cfg.dataset, cfg.format, cfg.validation, cfg.seed, cfg.normalize, cfg.pca, cfg.balance)
    if key in _DATA:
        _DATA[key] = _DATA.pop(key)  # most recently used last
    else:
        while len(_DATA) >= _DATA_KEPT:
            _DATA.pop(next(iter(_DATA)))
        ds, normalizer = prepare_data(cfg)
        if ds.train.y is None:
            raise ConfigError(f"dataset {cfg.dataset!r} has no training labels")
        if ds.validation is None or ds.validation.y is None or len(ds.validation.y) == 0:
            raise ConfigError(f"compare needs validation rows; dataset {cfg.dataset!r} has none "
                              f"(set validation=0.1 in the base options)")
        rows = oversample(ds.train.y, cfg.seed) if cfg.balance == "oversample" else slice(None)
        test = None
        if ds.test is not None and ds.test.y is not None:
            test = (normalizer.transform(ds.test.X), ds.test.y)
        _DATA[key] = {"X": normalizer.transform(ds.train.X[rows]), "y": ds.train.y[rows],
                      "Xv": normalizer.transform(ds.validation.X), "yv": ds.validation.y, "test": test,
                      "n_in": int(normalizer.n_outputs), "n_out": len(ds.classes), "name": ds.name}
    return _DATA[key]


def _digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


class _RecordingTrainer:
    """Wraps an engine's Trainer: fingerprints the initial weights and each epoch's batch order it is
    given, and keeps the latest training state (the weights when a budget stops the run)."""

    def __init__(self, trainer):
        self._trainer = trainer
        self.init_digest: dict | None = None
        self.orders: list[str] = []
        self._last_order = None
        self.last_ts = None

    def __getattr__(self, name):
        return getattr(self._trainer, name)

    def init(self, params, model_state, opt_state=None):
        if self.init_digest is None:
            self.init_digest = {k: _digest(v) for k, v in sorted(params.items())}
        self.last_ts = self._trainer.init(params, model_state, opt_state)
        return self.last_ts

    def run(self, ts, X, y, order, *args, **kwargs):
        if order is not self._last_order:
            self._last_order = order
            self.orders.append(_digest(order))
        new_ts, losses = self._trainer.run(ts, X, y, order, *args, **kwargs)
        self.last_ts = new_ts
        return new_ts, losses


class _RecordingEngine:
    """The engine with :class:`_RecordingTrainer` trainers; everything else passes through."""

    def __init__(self, engine):
        self._engine = engine
        self.trainer_record: _RecordingTrainer | None = None

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def trainer(self, *args, **kwargs):
        self.trainer_record = _RecordingTrainer(self._engine.trainer(*args, **kwargs))
        return self.trainer_record


class _BudgetReached(Exception):
    """Raised from the evaluation callback when a run has used its wall-clock budget."""


def execute(task: RunTask) -> dict:
    """Train one (configuration, seed), write its ``result.json`` atomically and return the record."""
    cfg = TrainConfig.from_dict(task.config)
    data = _host_data(cfg)
    batch = min(cfg.batch_size or len(data["y"]), len(data["y"]))
    sizes = (data["n_in"], *cfg.hidden, data["n_out"])
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    threads = task.threads or cfg.threads or default_threads(cfg.engine, batch, macs)
    engine = _RecordingEngine(get_engine(cfg.engine, device=cfg.device, dtype=cfg.dtype, threads=threads))
    spec = MLP(hidden=cfg.hidden, activation=cfg.activation, dropout_keep=cfg.dropout_keep, batchnorm=cfg.batchnorm)
    params = init_params(spec, data["n_in"], data["n_out"], key=cfg.seed, dtype=cfg.dtype)
    model_state = init_state(spec, data["n_in"], data["n_out"], dtype=cfg.dtype)
    X, y = engine.asarray(data["X"]), engine.put_labels(data["y"])
    Xv, yv = engine.asarray(data["Xv"]), data["yv"]
    _, steps_per_epoch = batch_plan(cfg, len(data["y"]))

    # Row 0: the untrained network, so every curve starts from the same point.
    v_cost, v_error = evaluate(engine, spec, engine.put_tree(params), engine.put_tree(model_state), Xv, yv)
    rows = [{"epoch": 0.0, "step": 0, "time": 0.0, "lr": learning_rate_at(cfg, steps_per_epoch, 0),
             "train_cost": None, "valid_cost": v_cost, "valid_error": v_error}]

    def on_evaluation(row):
        rows.append(dict(row))
        if task.budget is not None and row["time"] >= task.budget:
            raise _BudgetReached

    status, message, stopped_by_budget = "ok", "", False
    final = None
    started = time.perf_counter()
    try:
        result = fit(engine, spec, cfg, X, y, Xv, yv, params=params, model_state=model_state,
                     on_evaluation=on_evaluation)
        final = (result.params, result.model_state)
    except _BudgetReached:
        stopped_by_budget = True
        host = engine.trainer_record.to_numpy(engine.trainer_record.last_ts)
        final = (host.params, host.model_state)
    except DivergenceError as exc:
        status, message = "diverged", str(exc)
    wall = time.perf_counter() - started
    recorder = engine.trainer_record

    history = rows
    trained = history[1:]
    metrics = {"steps": trained[-1]["step"] if trained else 0,
               "epochs": trained[-1]["epoch"] if trained else 0.0,
               "train_seconds": trained[-1]["time"] if trained else 0.0,
               "wall_seconds": wall, "stopped_by_budget": stopped_by_budget}
    if trained:
        errors = [r["valid_error"] for r in trained]
        best = int(np.argmin(errors))
        metrics.update(final_valid_error=trained[-1]["valid_error"], final_valid_cost=trained[-1]["valid_cost"],
                       best_valid_error=errors[best], best_epoch=trained[best]["epoch"],
                       best_step=trained[best]["step"])
    if final is not None and data["test"] is not None:
        Xt, yt = data["test"]
        logits = engine.logits(spec, engine.put_tree(final[0]), engine.put_tree(final[1]), engine.asarray(Xt))
        metrics["test_cost"], metrics["test_error"] = cost_and_error(logits, yt)
    record = {
        "version": RESULT_VERSION, "run_id": task.run_id, "index": task.index, "label": task.label,
        "seed": task.seed, "status": status, "message": message, "config": task.config, "budget": task.budget,
        "engine": engine.name, "device": engine.device, "threads": threads, "dataset": data["name"],
        "metrics": metrics, "history": history,
        "fingerprint": {"init_params": recorder.init_digest if recorder else None,
                        "batch_orders": recorder.orders if recorder else [],
                        "n_train": int(len(data["y"]))},
        "versions": {"descend": descend.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    write_json(task.path, record)
    return record
