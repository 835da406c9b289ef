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
from descend.train.loop import (Callback, batch_plan, cost_and_error, evaluate_metrics, fit, fit_options,
                                learning_rate_at, output_metrics)
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
    configuration of a seed reuses it.  Also the raw training rows of a one-feature regression (its fitted
    curve is drawn over them), else None."""
    key = (cfg.dataset, cfg.format, cfg.validation, cfg.seed, cfg.normalize, cfg.pca, cfg.balance, cfg.target,
           cfg.task)
    if key in _DATA:
        _DATA[key] = _DATA.pop(key)  # most recently used last
    else:
        while len(_DATA) >= _DATA_KEPT:
            _DATA.pop(next(iter(_DATA)))
        data = prepare_data(cfg)
        train = data.dataset.train
        points = None
        if data.task == "regression" and train.X.shape[1] == 1 and data.n_out == 1:
            points = (np.asarray(train.X, np.float64)[:, 0], np.asarray(train.y, np.float64).reshape(-1))
        # the raw dataset is not kept: only the normalised arrays are used again
        _DATA[key] = (dataclasses.replace(data, dataset=None), data.dataset.name, points)
    return _DATA[key]


#: Points of a one-feature regression's fitted curve in the report.
CURVE_POINTS = 200


def measured_split(has_valid: bool) -> str:
    """Which rows the curves measure: validation rows, or the training rows themselves when there are none."""
    return "valid" if has_valid else "train"


def metric_key(task: str, split: str) -> str:
    """The history column a compare ranks and plots: the error rate, or the RMSE in the targets' units."""
    return f"{split}_{'rmse' if task == 'regression' else 'error'}"


def cost_column(task: str, split: str) -> str:
    """The history column of the measured rows' cost: a regression's MSE in the targets' units, else the
    cross-entropy (``train_eval_cost`` on training rows, beside ``train_cost``, the mini-batch loss)."""
    if task == "regression":
        return f"{split}_mse"
    return "valid_cost" if split == "valid" else "train_eval_cost"


def columns(measured: dict, task: str, split: str) -> dict:
    """``evaluate_metrics``' values (``cost``, ``error`` / ``rmse``, ``mae``, ``r2``) as history columns."""
    out = {}
    for k, v in measured.items():
        if k == "cost":
            if task == "regression":
                continue  # the standardized loss; the MSE below is in the targets' units
            out[cost_column(task, split)] = v
        else:
            out[f"{split}_{k}"] = v
    if task == "regression":
        out[cost_column(task, split)] = measured["rmse"] ** 2
    return out


def _measure(engine, spec, params, model_state, X, y, target_std, split: str) -> dict:
    """The task's metrics of ``split`` rows in inference mode, as history :func:`columns`."""
    return columns(evaluate_metrics(engine, spec, params, model_state, X, y, target_std), spec.task, split)


def _fitted_curve(engine, spec, params, model_state, normalizer, scaler, points) -> dict:
    """The network's prediction over a dense grid spanning the training points, in the targets' units."""
    xs, ys = points
    grid = np.linspace(float(xs.min()), float(xs.max()), CURVE_POINTS)
    X = engine.asarray(normalizer.transform(grid.reshape(-1, 1)))
    z = engine.logits(spec, engine.put_tree(params), engine.put_tree(model_state), X, batch_size=CURVE_POINTS)
    pred = scaler.inverse(np.asarray(z).reshape(-1, 1))[:, 0]
    return {"x": grid.tolist(), "y": pred.tolist(), "points_x": xs.tolist(), "points_y": ys.tolist()}


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
    """Records every evaluation row; stops training once the run has used ``seconds`` of training time.

    With ``split="train"`` the rows' ``valid_*`` columns measured the training rows: they are recorded as
    ``train_*`` (see :func:`_measure`)."""

    def __init__(self, seconds: float | None, rows: list, split: str = "valid", task: str = "classification"):
        self.seconds, self.rows, self.reached, self.split, self.task = seconds, rows, False, split, task

    def on_evaluation(self, row):
        measured = {k[6:]: v for k, v in row.items() if k.startswith("valid_")}
        kept = {k: v for k, v in row.items() if not k.startswith("valid_")}
        self.rows.append({**kept, **(columns(measured, self.task, self.split) if measured else {})})
        self.reached = self.seconds is not None and row["time"] >= self.seconds
        return self.reached


def execute(task: RunTask) -> dict:
    """Train one (configuration, seed), write its ``result.json`` atomically and return the record.

    Without validation rows the curves measure the training rows (in inference mode: dropout off, batch
    norm on its running statistics), and nothing is selected on them.
    """
    cfg = TrainConfig.from_dict(task.config)
    data, dataset_name, points = _host_data(cfg)
    run = setup_run(cfg, data.n_in, data.n_out, data.n_train, threads=task.threads,
                    image_shape=data.image_shape, task=data.task)
    engine, spec = run.engine, run.spec
    X, y = engine.asarray(data.X_train), engine.put_labels(data.y_train)
    has_valid = data.y_valid is not None
    split = measured_split(has_valid)
    if has_valid:
        Xv, yv = engine.asarray(data.X_valid), data.y_valid
    else:
        if cfg.early_stopping != "none":
            raise ConfigError(f"`early_stopping` chooses on validation rows; dataset {cfg.dataset!r} has none here "
                              f"(set validation=0.1, or early_stopping=none). "
                              f"Received: early_stopping={cfg.early_stopping!r}")
        Xv, yv = X, data.y_train
    key = metric_key(data.task, split)
    options = fit_options(cfg)
    _, steps_per_epoch = batch_plan(options, data.n_train)

    def measure(params, model_state):
        return _measure(engine, spec, engine.put_tree(params), engine.put_tree(model_state), Xv, yv,
                        data.target_std, split)

    # Row 0: the untrained network, so every curve starts from the same point.
    rows = [{"epoch": 0.0, "step": 0, "time": 0.0, "lr": learning_rate_at(options, steps_per_epoch, 0),
             "train_cost": None, **measure(run.params, run.model_state)}]
    fingerprints, budget = Fingerprints(), Budget(task.budget, rows, split, data.task)

    status, message = "ok", ""
    final = None
    started = time.perf_counter()
    try:
        result = fit(engine, spec, options, X, y, Xv, yv, params=run.params, model_state=run.model_state,
                     callbacks=[fingerprints, budget], image_shape=data.image_shape, target_std=data.target_std)
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
        values = [r[key] for r in trained]
        best = int(np.argmin(values))
        metrics.update({f"final_{key}": trained[-1][key], f"best_{key}": values[best],
                        "best_epoch": trained[best]["epoch"], "best_step": trained[best]["step"]})
        cost = cost_column(data.task, split)
        metrics[f"final_{cost}"] = trained[-1][cost]
        if data.task == "regression" and split == "train":
            metrics["final_train_loss"] = trained[-1]["train_cost"]  # the standardized mini-batch loss
    curve = None
    if final is not None and data.y_test is not None:
        logits = engine.logits(spec, engine.put_tree(final[0]), engine.put_tree(final[1]),
                               engine.asarray(data.X_test), batch_size=inference_rows(spec))
        if data.task == "regression":
            measured = output_metrics(spec, logits, data.y_test, data.target_std)
            metrics.update(test_mse=measured["rmse"] ** 2, test_rmse=measured["rmse"], test_mae=measured["mae"],
                           test_r2=measured["r2"])
        else:
            metrics["test_cost"], metrics["test_error"] = cost_and_error(logits, data.y_test)
    if final is not None and points is not None:
        curve = _fitted_curve(engine, spec, final[0], final[1], data.normalizer, data.target_scaler, points)
    record = {
        "version": RESULT_VERSION, "run_id": task.run_id, "index": task.index, "label": task.label,
        "seed": task.seed, "status": status, "message": message, "config": task.config, "budget": task.budget,
        "engine": engine.name, "device": engine.device, "threads": run.threads,
        "dataset": dataset_name, "task": data.task, "metric": key, "metrics": metrics, "history": history,
        "fingerprint": {"init_params": fingerprints.init_params, "batch_orders": fingerprints.batch_orders,
                        "n_train": data.n_train},
        "versions": versions(),
    }
    if curve is not None:
        record["fitted_curve"] = curve
    write_json(task.path, record)
    return record
