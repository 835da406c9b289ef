"""The fit loop: epochs of seeded batches, evaluation, early stopping, checkpoints, callbacks.

The loop is engine-agnostic: it decides the batch order (a NumPy permutation
per epoch, derived from the seed and the epoch number) and when to evaluate;
the engine's :class:`~descend.engines.Trainer` runs the optimizer steps in
between, as one compiled call where it can.  After every evaluation the full
training state is written atomically to a checkpoint, so ``--resume`` after
Ctrl-C or ``kill -9`` continues exactly where the last evaluation left off and
ends with the same weights as an uninterrupted run.

:func:`fit` takes its options as a :class:`FitOptions` (:func:`fit_options`
builds them from a :class:`~descend.train.TrainConfig`), may start from a
:class:`FitState` (a warm start: weights, optimizer state, step and epoch
counters) and calls :class:`Callback` hooks: at the start, with each epoch's
batch order, after each evaluation (returning True stops training) and at the
end.  With ``restore_best`` the weights *and* the model state (batch-norm
running statistics) of the best evaluation are returned.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from descend.backend import numpy_ops
from descend.errors import DivergenceError, require
from descend.io.modelfile import load_checkpoint, save_checkpoint
from descend.io.tree import flatten_with_paths, unflatten_from_paths
from descend.model import softmax_cross_entropy
from descend.model.augment import Augmentation
from descend.optim import ReduceOnPlateau, ScheduleSpec, chain, make_optimizer, max_norm
from descend.train.config import EARLY_STOPPING, MONITORS, SAMPLINGS, monitor_for
from descend.train.early_stopping import EarlyStopping
from descend.train.inference import inference_rows
from descend.train.progress import Progress

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class FitOptions:
    """What :func:`fit` needs to know: batching, optimizer and schedule, evaluation, stopping, seed.

    ``batch_size=0`` is full batch.  The rows of an epoch are split into
    ``n // batch_size`` batches of ``batch_size`` rows (a partial last batch
    sits out; the order changes every epoch), or with ``equal_batches`` into
    ``ceil(n / batch_size)`` batches of ``n // ceil(n / batch_size)`` rows.
    ``eval_every=0`` evaluates once per epoch, otherwise every that many steps.
    ``patience`` counts evaluations.  ``restore_best`` returns the weights and
    model state of the best evaluation of ``monitor`` instead of the last.
    ``augment`` (``shift:2,flip,rotate:10``...) transforms the training batches
    inside each step; :func:`fit` then needs the rows' ``image_shape``.
    ``sampling="replacement"`` draws every batch's rows with replacement
    (see :func:`batch_order`) instead of a permutation per epoch.
    """

    epochs: int = 1
    batch_size: int = 100
    sampling: str = "shuffle"
    equal_batches: bool = False
    seed: int = 0
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    optimizer_options: dict = field(default_factory=dict)
    schedule: str = "constant"
    schedule_unit: str = "epoch"
    max_norm: float = 0.0
    augment: str | None = None
    clip_norm: float = 0.0
    label_smoothing: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    eval_every: int = 0
    early_stopping: str = "none"
    patience: int = 10
    patience_increase: float = 2.0
    improvement_threshold: float = 0.995
    monitor: str = "valid_error"
    restore_best: bool = False

    def __post_init__(self):
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(self.batch_size >= 0, "batch_size", ">= 0 (0 = full batch)", self.batch_size)
        require(self.sampling in SAMPLINGS, "sampling", f"one of {SAMPLINGS}", self.sampling)
        require(self.eval_every >= 0, "eval_every", ">= 0 (0 = every epoch)", self.eval_every)
        require(self.early_stopping in EARLY_STOPPING, "early_stopping", f"one of {EARLY_STOPPING}",
                self.early_stopping)
        require(self.monitor in MONITORS, "monitor", f"one of {MONITORS}", self.monitor)

    @property
    def schedule_spec(self) -> ScheduleSpec:
        return ScheduleSpec.parse(self.schedule, self.schedule_unit)

    def replace(self, **changes) -> FitOptions:
        return dataclasses.replace(self, **changes)


def fit_options(cfg, **overrides) -> FitOptions:
    """The fit options of a :class:`~descend.train.TrainConfig` (the best weights kept when it stops early)."""
    names = {f.name for f in dataclasses.fields(FitOptions)} - {"equal_batches", "restore_best"}
    values = {name: getattr(cfg, name) for name in names}
    values["restore_best"] = cfg.early_stopping != "none"
    return FitOptions(**{**values, **overrides})


@dataclass(frozen=True)
class FitState:
    """Where training stands, as NumPy: enough to continue it (a warm start).

    ``opt_state`` None is the optimizer's initial state; ``step`` counts
    optimizer steps taken (it drives the schedule and seeds dropout);
    ``epoch`` counts epochs begun before (it seeds the next batch order);
    ``plateau`` is the reduce-on-plateau controller's state, if any.
    """

    params: dict
    model_state: dict = field(default_factory=dict)
    opt_state: Any = None
    step: int = 0
    epoch: int = 0
    plateau: dict | None = None


@dataclass
class FitResult:
    """``params``/``model_state``: the best evaluation's with ``restore_best``, else the last; ``final``: the last."""

    params: dict
    model_state: dict
    history: list[dict]
    steps: int
    steps_per_epoch: int
    batch_size: int
    best_step: int | None
    best_metric: float | None
    stopped_early: bool
    elapsed: float
    final: FitState = field(repr=False, default=None)
    stopped_by_callback: bool = False

    @property
    def final_params(self) -> dict:
        return self.final.params


class Callback:
    """Hooks into :func:`fit`; override the ones you need.

    ``on_train_begin(params, model_state)`` sees the NumPy weights training
    starts from; ``on_epoch_order(epoch, order)`` each epoch's batch order;
    ``on_evaluation(row)`` each history row (returning True stops training,
    after the checkpoint of that evaluation is written, and a resumed run
    stays stopped); ``on_train_end(result)`` the :class:`FitResult`.
    """

    def on_train_begin(self, params: dict, model_state: dict) -> None:
        pass

    def on_epoch_order(self, epoch: int, order: np.ndarray) -> None:
        pass

    def on_evaluation(self, row: dict) -> bool:
        return False

    def on_train_end(self, result: FitResult) -> None:
        pass


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_evaluation=lambda row: row["step"] >= 100)``."""

    def __init__(self, *, on_train_begin=None, on_epoch_order=None, on_evaluation=None, on_train_end=None):
        for name, fn in (("on_train_begin", on_train_begin), ("on_epoch_order", on_epoch_order),
                         ("on_evaluation", on_evaluation), ("on_train_end", on_train_end)):
            if fn is not None:
                setattr(self, name, fn)


def equal_batch_layout(n: int, batch_size: int) -> tuple[int, int]:
    """``(rows per batch, batches per epoch)``: ``ceil(n / batch_size)`` equal batches (``0`` = full batch)."""
    limit = min(batch_size or n, n)
    batches = math.ceil(n / limit)
    return n // batches, batches


def batch_plan(options: FitOptions, n_train: int) -> tuple[int, int]:
    """``(batch_size, steps_per_epoch)`` of ``n_train`` rows."""
    if options.sampling == "replacement":
        # Rows drawn with replacement need not fit in the data: ten points still give batches of 50.
        batch_size = options.batch_size or n_train
        return batch_size, max(1, n_train // batch_size)
    if options.equal_batches:
        return equal_batch_layout(n_train, options.batch_size)
    batch_size = min(options.batch_size or n_train, n_train)
    return batch_size, n_train // batch_size


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch), so resume replays it."""
    return np.random.default_rng([seed, 0x5EED, epoch]).permutation(n)


def batch_order(options: FitOptions, epoch: int, n: int) -> np.ndarray:
    """The row indices one epoch's steps take, batch after batch: :func:`epoch_order` (a permutation), or with
    ``sampling="replacement"`` ``steps x batch_size`` indices drawn uniformly with replacement; a pure
    function of (seed, epoch) either way, so resume replays it."""
    if options.sampling != "replacement":
        return epoch_order(options.seed, epoch, n)
    batch_size, steps = batch_plan(options, n)
    return np.random.default_rng([options.seed, 0x5EED, 0x4E91, epoch]).integers(0, n, steps * batch_size)


def _learning_rate(options, steps_per_epoch: int):
    """The schedule's ``step -> lr`` (or a constant); a cosine schedule ends with the run's last step."""
    return options.schedule_spec.build(options.lr, steps_per_epoch, total_steps=steps_per_epoch * options.epochs)


def build_optimizer(options, steps_per_epoch: int, learning_rate=None):
    """The optimizer (with its schedule, gradient clip and max-norm cap) of ``options`` (FitOptions or TrainConfig).

    ``learning_rate`` (a number or a ``step -> lr`` function) replaces the
    options' rate and schedule, as the learning-rate range test does.
    """
    lr = _learning_rate(options, steps_per_epoch) if learning_rate is None else learning_rate
    kwargs = dict(options.optimizer_options)
    if options.optimizer in ("momentum", "nesterov") or "+" in options.optimizer:  # the ones with momentum
        kwargs["momentum"] = options.momentum
    optimizer = make_optimizer(options.optimizer, lr, clip_norm=options.clip_norm or None, **kwargs)
    return chain(optimizer, max_norm(options.max_norm)) if options.max_norm else optimizer


def augmentation(options, image_shape):
    """``options.augment`` bound to rows of ``image_shape`` (None when off); a ConfigError without an image shape."""
    aug = Augmentation.parse(getattr(options, "augment", None))
    return None if aug is None else aug.bind(image_shape)


def make_trainer(engine, spec, options: FitOptions, steps_per_epoch: int, image_shape=None, learning_rate=None):
    """The engine's trainer for ``options`` (what :func:`fit` builds unless handed one); ``image_shape`` is
    the rows' image shape, which augmentation needs."""
    return engine.trainer(spec, build_optimizer(options, steps_per_epoch, learning_rate), l1=options.l1,
                          l2=options.l2, augment=augmentation(options, image_shape),
                          label_smoothing=options.label_smoothing)


def learning_rate_at(options, steps_per_epoch: int, step: int, scale: float = 1.0) -> float:
    lr = _learning_rate(options, steps_per_epoch)
    return float(lr(np.float64(step)) if callable(lr) else lr) * scale


def progress_bar(options: FitOptions, n_train: int, *, stream=None, enabled: bool = True) -> Progress:
    """The progress display of a fit on ``n_train`` rows."""
    batch_size, steps_per_epoch = batch_plan(options, n_train)
    return Progress(epochs=options.epochs, total_steps=steps_per_epoch * options.epochs, batch_size=batch_size,
                    stream=stream, enabled=enabled)


def cost_and_error(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(mean cross-entropy, error rate)`` of NumPy logits.

    The plain cross-entropy even when training smooths its labels: a
    validation cost that compares across runs with any smoothing.
    """
    cost = float(softmax_cross_entropy(numpy_ops, logits.astype(np.float64), y))
    return cost, float(np.mean(np.argmax(logits, axis=1) != y))


def evaluate(engine, spec, params, model_state, X, y) -> tuple[float, float]:
    """``(mean cross-entropy, error rate)`` in inference mode."""
    return cost_and_error(engine.logits(spec, params, model_state, X, batch_size=inference_rows(spec)), y)


def output_metrics(spec, outputs: np.ndarray, y: np.ndarray, target_std=None) -> dict[str, float]:
    """The task's metrics of NumPy outputs: ``cost`` and ``error`` (classification), or ``cost`` (standardized
    mean squared error), ``rmse``, ``mae`` (in the targets' units, via ``target_std``) and ``r2`` (regression)."""
    if spec.task == "regression":
        from descend.data.targets import regression_metrics

        return regression_metrics(outputs, y, target_std)
    cost, error = cost_and_error(outputs, y)
    return {"cost": cost, "error": error}


def evaluate_metrics(engine, spec, params, model_state, X, y, target_std=None) -> dict[str, float]:
    """:func:`output_metrics` of the network in inference mode on device rows ``X``."""
    outputs = engine.logits(spec, params, model_state, X, batch_size=inference_rows(spec))
    return output_metrics(spec, outputs, y, target_std)


def fit(engine, spec, options: FitOptions, X_train, y_train, X_valid=None, y_valid=None, *,
        params: dict | None = None, model_state: dict | None = None, start: FitState | None = None,
        trainer=None, checkpoint: Path | None = None, resume: bool = False, progress: Progress | None = None,
        callbacks=(), target_std=None, image_shape=None) -> FitResult:
    """Train for ``options.epochs`` epochs on the engine's device arrays; return the best (or final) weights.

    Training starts from ``params``/``model_state`` (NumPy), or from ``start``
    to continue earlier training.  ``y_train`` is on the device, ``y_valid``
    is NumPy.  With ``resume`` the state saved in ``checkpoint`` is restored
    first.  ``trainer`` (from :func:`make_trainer` with these options) saves
    rebuilding, and recompiling, one across calls.  ``image_shape`` is the
    training rows' image shape (what ``options.augment`` needs).  A diverging loss raises
    :class:`~descend.errors.DivergenceError` whose ``result`` holds the state
    before the steps that diverged.  A regression network's ``y`` are
    standardized targets; ``target_std`` (per target) puts the validation
    RMSE and MAE back in the targets' units.
    """
    if start is None:
        if params is None:
            raise TypeError("fit() needs `params` (and `model_state`) or `start`")
        start = FitState(params, model_state or {})
    callbacks = tuple(callbacks)
    n_train = int(len(y_train))
    batch_size, steps_per_epoch = batch_plan(options, n_train)
    total = steps_per_epoch * options.epochs
    eval_every = options.eval_every or steps_per_epoch
    trainer = trainer or make_trainer(engine, spec, options, steps_per_epoch, image_shape)
    has_valid = X_valid is not None and len(y_valid) > 0
    stopper = EarlyStopping(options.early_stopping if has_valid else "none", options.patience,
                            options.patience_increase, options.improvement_threshold)
    monitor = monitor_for(options.monitor, spec.task)
    plateau = options.schedule_spec.plateau()
    if plateau is not None and start.plateau is not None:
        plateau = ReduceOnPlateau.from_dict(start.plateau)
    step0, epoch0 = start.step, start.epoch

    # ``done`` counts the steps of this call; the step and epoch counters continue from ``start``.
    done, elapsed, history, best, best_step = 0, 0.0, [], None, None
    loss_sum, loss_count, stopped_by_callback = 0.0, 0, False
    begin_params, begin_state = start.params, start.model_state
    ts = trainer.init(start.params, start.model_state, start.opt_state)
    if resume and checkpoint is not None and checkpoint.exists():
        arrays, meta = load_checkpoint(checkpoint)
        done, elapsed, history = meta["step"], meta["elapsed"], meta["history"]
        loss_sum, loss_count = meta["loss_sum"], meta["loss_count"]
        stopper = EarlyStopping.from_dict(meta["early_stopping"])
        plateau = ReduceOnPlateau.from_dict(meta["plateau"]) if meta["plateau"] else None
        best_step = meta["best_step"]
        stopped_by_callback = bool(meta.get("stopped_by_callback", False))
        parts = {p: {k[len(p) + 1:]: v for k, v in arrays.items() if k.startswith(p + "/")}
                 for p in ("params", "state", "opt", "best", "best_state")}
        template = trainer.to_numpy(ts).opt_state
        ts = trainer.init(parts["params"], parts["state"], unflatten_from_paths(template, parts["opt"]))
        begin_params, begin_state = parts["params"], parts["state"]
        if parts["best"]:
            # checkpoints written before the best model state was kept hold the best params only
            best = {"params": parts["best"], "state": parts["best_state"] if "best_state_saved" in meta
                    else None}
    if plateau is not None:
        ts = trainer.with_lr_scale(ts, plateau.scale)

    def save(ts_now, done_now):
        if checkpoint is None:
            return
        host = trainer.to_numpy(ts_now)
        arrays = {f"params/{k}": v for k, v in host.params.items()}
        arrays.update({f"state/{k}": v for k, v in host.model_state.items()})
        arrays.update({f"opt/{k}": np.asarray(v) for k, v in flatten_with_paths(host.opt_state).items()})
        if best is not None:
            arrays.update({f"best/{k}": v for k, v in best["params"].items()})
            arrays.update({f"best_state/{k}": v for k, v in (best["state"] or {}).items()})
        save_checkpoint(checkpoint, arrays, {
            "version": CHECKPOINT_VERSION, "step": done_now, "elapsed": elapsed, "history": history,
            "loss_sum": loss_sum, "loss_count": loss_count, "early_stopping": stopper.to_dict(),
            "plateau": plateau.to_dict() if plateau else None, "best_step": best_step, "best_state_saved": True,
            "stopped_by_callback": stopped_by_callback, "finished": done_now >= total})

    def result_at(ts_now, done_now) -> FitResult:
        host = trainer.to_numpy(ts_now)
        final = FitState(host.params, host.model_state, host.opt_state, step0 + done_now,
                         epoch0 + done_now // steps_per_epoch,
                         plateau.to_dict() if plateau else None)
        use_best = options.restore_best and best is not None
        return FitResult(
            params=best["params"] if use_best else host.params,
            model_state=best["state"] if use_best and best["state"] is not None else host.model_state,
            history=history, steps=step0 + done_now, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
            best_step=best_step, best_metric=None if math.isinf(stopper.best) else stopper.best,
            stopped_early=done_now < total, elapsed=elapsed, final=final, stopped_by_callback=stopped_by_callback)

    for cb in callbacks:
        cb.on_train_begin(begin_params, begin_state)
    progress = progress or Progress(epochs=options.epochs, total_steps=total, batch_size=batch_size, enabled=False)
    progress.start(step0 + done)
    stopped = stopped_by_callback or (bool(history) and _should_stop(stopper, history))
    order_epoch, order = -1, None
    try:
        while done < total and not stopped:
            epoch, within = divmod(done, steps_per_epoch)
            if options.sampling == "replacement":
                # Independent batches: a span may cross epochs, so a compiled engine runs it in one call.
                count = min(eval_every - done % eval_every, total - done)
                last = (done + count - 1) // steps_per_epoch
                orders = [batch_order(options, epoch0 + e, n_train) for e in range(epoch, last + 1)]
                for e, o in zip(range(epoch, last + 1), orders):
                    for cb in callbacks:
                        cb.on_epoch_order(epoch0 + e, o)
                order = orders[0] if len(orders) == 1 else np.concatenate(orders)
            else:
                if epoch != order_epoch:
                    order_epoch, order = epoch, batch_order(options, epoch0 + epoch, n_train)
                    for cb in callbacks:
                        cb.on_epoch_order(epoch0 + epoch, order)
                count = min(eval_every - done % eval_every, steps_per_epoch - within, total - done)
            started = time.perf_counter()
            new_ts, losses = trainer.run(ts, X_train, y_train, order, batch_size, within, count, step0 + done,
                                         options.seed)
            elapsed += time.perf_counter() - started
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                at = step0 + done + int(bad[0])
                lr = learning_rate_at(options, steps_per_epoch, at, plateau.scale if plateau else 1.0)
                progress.close()
                raise DivergenceError(
                    f"training diverged: the loss became {losses[bad[0]]} at step {at + 1} "
                    f"(epoch {at // steps_per_epoch + 1}) with learning rate {lr:.4g}; no weights from "
                    f"this point were saved. Try a smaller --lr (e.g. {lr / 10:.2g}), a decaying --schedule "
                    f"or --optimizer adam", step=at, loss=float(losses[bad[0]]), result=result_at(ts, done))
            ts, done = new_ts, done + count
            loss_sum, loss_count = loss_sum + float(losses.sum()), loss_count + count
            progress.advance(step0 + done)
            if done % eval_every and done != total:
                continue
            started = time.perf_counter()
            row = {"epoch": epoch0 + done / steps_per_epoch, "step": step0 + done, "time": 0.0,
                   "train_cost": loss_sum / loss_count,
                   "lr": learning_rate_at(options, steps_per_epoch, step0 + done - 1,
                                          plateau.scale if plateau else 1.0)}
            loss_sum, loss_count = 0.0, 0
            if has_valid:
                measured = evaluate_metrics(engine, spec, ts.params, ts.model_state, X_valid, y_valid, target_std)
                row.update({f"valid_{k}": v for k, v in measured.items()})
                improved, stopped = stopper.observe(row[monitor])
                if improved and options.restore_best:
                    host = trainer.to_numpy(ts)
                    best = {"params": {k: np.array(v) for k, v in host.params.items()},
                            "state": {k: np.array(v) for k, v in host.model_state.items()}}
                if improved:
                    best_step = step0 + done
            if plateau is not None:
                plateau.observe(row.get(monitor, row["train_cost"]))
                ts = trainer.with_lr_scale(ts, plateau.scale)
            elapsed += time.perf_counter() - started
            row["time"] = elapsed
            history.append(row)
            progress.evaluation(row)
            if any([bool(cb.on_evaluation(row)) for cb in callbacks]):  # a list: every callback sees the row
                stopped = stopped_by_callback = True
            save(ts, done)
    except KeyboardInterrupt:
        # ``ts`` and ``done`` only change together after a completed run of steps,
        # so they are a consistent state to checkpoint.
        save(ts, done)
        progress.close()
        if checkpoint is not None:
            progress.message(f"interrupted at step {step0 + done:,}; checkpoint saved in {checkpoint.parent} "
                             f"(continue with: descend train --resume {checkpoint.parent})")
        raise
    progress.close()
    result = result_at(ts, done)
    for cb in callbacks:
        cb.on_train_end(result)
    return result


def _should_stop(stopper: EarlyStopping, history) -> bool:
    """Whether a restored run had already met its stopping rule."""
    if stopper.rule == "geometric":
        return stopper.horizon <= stopper.evaluations
    if stopper.rule == "patience":
        return stopper.evaluations - stopper.best_evaluation >= stopper.patience
    return False
