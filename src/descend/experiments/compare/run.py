"""One compare run: a (configuration, seed) trained from the seed's shared start, its ``result.json``.

:func:`execute` is what a worker runs.  Two fit callbacks watch the training:
:class:`Fingerprints` records SHA-256 fingerprints of the initial weights fit
starts from and of every epoch's batch order, so the report can check that
every configuration of a seed started alike; :class:`Budget` keeps every
evaluation row and stops the run once its wall-clock budget is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass

import numpy as np

from descend.errors import ConfigError, DivergenceError
from descend.io.rundir import write_json
from descend.train.config import TrainConfig
from descend.train.loop import Callback, batch_plan, cost_and_error, evaluate, fit, fit_options, learning_rate_at
from descend.train.inference import inference_rows
from descend.train.setup import prepare_data, setup_run, versions

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
    """The prepared (normalised NumPy) data, cached per (dataset, split seed, preprocessing): every
    configuration of a seed reuses it."""
    key = (cfg.dataset, cfg.format, cfg.validation, cfg.seed, cfg.normalize, cfg.pca, cfg.balance)
    if key in _DATA:
        _DATA[key] = _DATA.pop(key)  # most recently used last
    else:
        while len(_DATA) >= _DATA_KEPT:
            _DATA.pop(next(iter(_DATA)))
        data = prepare_data(cfg)
        if data.y_valid is None:
            raise ConfigError(f"compare needs validation rows; dataset {cfg.dataset!r} has none "
                              f"(set validation=0.1 in the base options)")
        # the raw dataset is not kept: only the normalised arrays are used again
        _DATA[key] = (dataclasses.replace(data, dataset=None), data.dataset.name)
    return _DATA[key]


def _digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


class Fingerprints(Callback):
    """Fingerprints of the initial weights fit starts from and of each epoch's batch order."""

    def __init__(self):
        self.init_params: dict | None = None
        self.batch_orders: list[str] = []

    def on_train_begin(self, params, model_state):
        self.init_params = {k: _digest(v) for k, v in sorted(params.items())}

    def on_epoch_order(self, epoch, order):
        self.batch_orders.append(_digest(order))


class Budget(Callback):
    """Records every evaluation row; stops training once the run has used ``seconds`` of training time."""

    def __init__(self, seconds: float | None, rows: list):
        self.seconds, self.rows, self.reached = seconds, rows, False

    def on_evaluation(self, row):
        self.rows.append(dict(row))
        self.reached = self.seconds is not None and row["time"] >= self.seconds
        return self.reached


def execute(task: RunTask) -> dict:
    """Train one (configuration, seed), write its ``result.json`` atomically and return the record."""
    cfg = TrainConfig.from_dict(task.config)
    data, dataset_name = _host_data(cfg)
    run = setup_run(cfg, data.n_in, data.n_out, data.n_train, threads=task.threads,
                    image_shape=data.image_shape)
    engine, spec = run.engine, run.spec
    X, y = engine.asarray(data.X_train), engine.put_labels(data.y_train)
    Xv, yv = engine.asarray(data.X_valid), data.y_valid
    options = fit_options(cfg)
    _, steps_per_epoch = batch_plan(options, data.n_train)

    # Row 0: the untrained network, so every curve starts from the same point.
    v_cost, v_error = evaluate(engine, spec, engine.put_tree(run.params), engine.put_tree(run.model_state), Xv, yv)
    rows = [{"epoch": 0.0, "step": 0, "time": 0.0, "lr": learning_rate_at(options, steps_per_epoch, 0),
             "train_cost": None, "valid_cost": v_cost, "valid_error": v_error}]
    fingerprints, budget = Fingerprints(), Budget(task.budget, rows)

    status, message = "ok", ""
    final = None
    started = time.perf_counter()
    try:
        result = fit(engine, spec, options, X, y, Xv, yv, params=run.params, model_state=run.model_state,
                     callbacks=[fingerprints, budget], image_shape=data.image_shape)
        # A budget stops the run where it is: its last weights, not the best ones.
        final = (result.final.params, result.final.model_state) if budget.reached else \
            (result.params, result.model_state)
    except DivergenceError as exc:
        status, message = "diverged", str(exc)
    wall = time.perf_counter() - started

    history = rows
    trained = history[1:]
    metrics = {"steps": trained[-1]["step"] if trained else 0,
               "epochs": trained[-1]["epoch"] if trained else 0.0,
               "train_seconds": trained[-1]["time"] if trained else 0.0,
               "wall_seconds": wall, "stopped_by_budget": budget.reached}
    if trained:
        errors = [r["valid_error"] for r in trained]
        best = int(np.argmin(errors))
        metrics.update(final_valid_error=trained[-1]["valid_error"], final_valid_cost=trained[-1]["valid_cost"],
                       best_valid_error=errors[best], best_epoch=trained[best]["epoch"],
                       best_step=trained[best]["step"])
    if final is not None and data.y_test is not None:
        logits = engine.logits(spec, engine.put_tree(final[0]), engine.put_tree(final[1]),
                               engine.asarray(data.X_test), batch_size=inference_rows(spec))
        metrics["test_cost"], metrics["test_error"] = cost_and_error(logits, data.y_test)
    record = {
        "version": RESULT_VERSION, "run_id": task.run_id, "index": task.index, "label": task.label,
        "seed": task.seed, "status": status, "message": message, "config": task.config, "budget": task.budget,
        "engine": engine.name, "device": engine.device, "threads": run.threads,
        "dataset": dataset_name, "metrics": metrics, "history": history,
        "fingerprint": {"init_params": fingerprints.init_params, "batch_orders": fingerprints.batch_orders,
                        "n_train": data.n_train},
        "versions": versions(),
    }
    write_json(task.path, record)
    return record
