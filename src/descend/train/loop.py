"""The fit loop: epochs of seeded batches, evaluation, early stopping, checkpoints.

The loop is engine-agnostic: it decides the batch order (a NumPy permutation
per epoch, derived from the seed and the epoch number) and when to evaluate;
the engine's :class:`~descend.engines.Trainer` runs the optimizer steps in
between, as one compiled call where it can.  After every evaluation the full
training state is written atomically to a checkpoint, so ``--resume`` after
Ctrl-C or ``kill -9`` continues exactly where the last evaluation left off and
ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from descend.backend import numpy_ops
from descend.errors import DivergenceError
from descend.io.modelfile import load_checkpoint, save_checkpoint
from descend.io.tree import flatten_with_paths, unflatten_from_paths
from descend.model import softmax_cross_entropy
from descend.optim import ReduceOnPlateau, chain, make_optimizer, max_norm
from descend.train.config import TrainConfig
from descend.train.early_stopping import EarlyStopping
from descend.train.progress import Progress

CHECKPOINT_VERSION = 1


@dataclass
class FitResult:
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
    final_params: dict = field(repr=False, default_factory=dict)


def batch_plan(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """``(batch_size, steps_per_epoch)``; a partial last batch is dropped (new order each epoch)."""
    batch_size = min(cfg.batch_size or n_train, n_train)
    return batch_size, n_train // batch_size


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch), so resume replays it."""
    return np.random.default_rng([seed, 0x5EED, epoch]).permutation(n)


def build_optimizer(cfg: TrainConfig, steps_per_epoch: int):
    lr = cfg.schedule_spec.build(cfg.lr, steps_per_epoch)
    options = dict(cfg.optimizer_options)
    if cfg.optimizer not in ("sgd", "adam", "adagrad", "rmsprop"):
        options["momentum"] = cfg.momentum
    optimizer = make_optimizer(cfg.optimizer, lr, **options)
    return chain(optimizer, max_norm(cfg.max_norm)) if cfg.max_norm else optimizer


def learning_rate_at(cfg: TrainConfig, steps_per_epoch: int, step: int, scale: float = 1.0) -> float:
    lr = cfg.schedule_spec.build(cfg.lr, steps_per_epoch)
    return float(lr(np.float64(step)) if callable(lr) else lr) * scale


def cost_and_error(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(mean cross-entropy, error rate)`` of NumPy logits."""
    cost = float(softmax_cross_entropy(numpy_ops, logits.astype(np.float64), y))
    return cost, float(np.mean(np.argmax(logits, axis=1) != y))


def evaluate(engine, spec, params, model_state, X, y) -> tuple[float, float]:
    """``(mean cross-entropy, error rate)`` in inference mode."""
    return cost_and_error(engine.logits(spec, params, model_state, X), y)


def fit(engine, spec, cfg: TrainConfig, X_train, y_train, X_valid=None, y_valid=None, *,
        params, model_state, checkpoint: Path | None = None, resume: bool = False,
        progress: Progress | None = None, on_evaluation=None) -> FitResult:
    """Train ``params`` on the engine's device arrays; return the best (or final) weights.

    ``y_train`` is on the device, ``y_valid`` is NumPy.  With ``resume`` the
    state saved in ``checkpoint`` is restored first.
    """
    n_train = int(len(y_train))
    batch_size, steps_per_epoch = batch_plan(cfg, n_train)
    total = steps_per_epoch * cfg.epochs
    eval_every = cfg.eval_every or steps_per_epoch
    trainer = engine.trainer(spec, build_optimizer(cfg, steps_per_epoch), l1=cfg.l1, l2=cfg.l2)
    has_valid = X_valid is not None and len(y_valid) > 0
    stopper = EarlyStopping(cfg.early_stopping if has_valid else "none", cfg.patience,
                            cfg.patience_increase, cfg.improvement_threshold)
    plateau = cfg.schedule_spec.plateau()

    step, elapsed, history, best, best_step = 0, 0.0, [], None, None
    loss_sum, loss_count = 0.0, 0
    ts = trainer.init(params, model_state)
    if resume and checkpoint is not None and checkpoint.exists():
        arrays, meta = load_checkpoint(checkpoint)
        step, elapsed, history = meta["step"], meta["elapsed"], meta["history"]
        loss_sum, loss_count = meta["loss_sum"], meta["loss_count"]
        stopper = EarlyStopping.from_dict(meta["early_stopping"])
        plateau = ReduceOnPlateau.from_dict(meta["plateau"]) if meta["plateau"] else None
        best_step = meta["best_step"]
        parts = {p: {k[len(p) + 1:]: v for k, v in arrays.items() if k.startswith(p + "/")}
                 for p in ("params", "state", "opt", "best")}
        template = trainer.to_numpy(ts).opt_state
        ts = trainer.init(parts["params"], parts["state"], unflatten_from_paths(template, parts["opt"]))
        best = parts["best"] or None
    if plateau is not None:
        ts = trainer.with_lr_scale(ts, plateau.scale)

    def save(ts_now, step_now):
        if checkpoint is None:
            return
        host = trainer.to_numpy(ts_now)
        arrays = {f"params/{k}": v for k, v in host.params.items()}
        arrays.update({f"state/{k}": v for k, v in host.model_state.items()})
        arrays.update({f"opt/{k}": np.asarray(v) for k, v in flatten_with_paths(host.opt_state).items()})
        arrays.update({f"best/{k}": v for k, v in (best or {}).items()})
        save_checkpoint(checkpoint, arrays, {
            "version": CHECKPOINT_VERSION, "step": step_now, "elapsed": elapsed, "history": history,
            "loss_sum": loss_sum, "loss_count": loss_count, "early_stopping": stopper.to_dict(),
            "plateau": plateau.to_dict() if plateau else None, "best_step": best_step,
            "finished": step_now >= total})

    progress = progress or Progress(epochs=cfg.epochs, total_steps=total, batch_size=batch_size, enabled=False)
    progress.start(step)
    stopped = bool(history) and _should_stop(stopper, history)
    order_epoch, order = -1, None
    try:
        while step < total and not stopped:
            epoch, within = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, epoch_order(cfg.seed, epoch, n_train)
            count = min(eval_every - step % eval_every, steps_per_epoch - within, total - step)
            started = time.perf_counter()
            new_ts, losses = trainer.run(ts, X_train, y_train, order, batch_size, within, count, step, cfg.seed)
            elapsed += time.perf_counter() - started
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                at = step + int(bad[0])
                lr = learning_rate_at(cfg, steps_per_epoch, at, plateau.scale if plateau else 1.0)
                raise DivergenceError(
                    f"training diverged: the loss became {losses[bad[0]]} at step {at + 1} "
                    f"(epoch {at // steps_per_epoch + 1}) with learning rate {lr:.4g}; no weights from "
                    f"this point were saved. Try a smaller --lr (e.g. {lr / 10:.2g}), a decaying --schedule "
                    f"or --optimizer adam")
            ts, step = new_ts, step + count
            loss_sum, loss_count = loss_sum + float(losses.sum()), loss_count + count
            progress.advance(step)
            if step % eval_every and step != total:
                continue
            started = time.perf_counter()
            row = {"epoch": step / steps_per_epoch, "step": step, "time": 0.0,
                   "train_cost": loss_sum / loss_count,
                   "lr": learning_rate_at(cfg, steps_per_epoch, step - 1, plateau.scale if plateau else 1.0)}
            loss_sum, loss_count = 0.0, 0
            host_params = trainer.to_numpy(ts).params if has_valid else None
            if has_valid:
                row["valid_cost"], row["valid_error"] = evaluate(engine, spec, ts.params, ts.model_state,
                                                                 X_valid, y_valid)
                metric = row[cfg.monitor]
                improved, stopped = stopper.observe(metric)
                if improved:
                    best, best_step = {k: np.array(v) for k, v in host_params.items()}, step
            if plateau is not None:
                plateau.observe(row.get(cfg.monitor, row["train_cost"]))
                ts = trainer.with_lr_scale(ts, plateau.scale)
            elapsed += time.perf_counter() - started
            row["time"] = elapsed
            history.append(row)
            progress.evaluation(row)
            if on_evaluation is not None:
                on_evaluation(row)
            save(ts, step)
    except KeyboardInterrupt:
        # ``ts`` and ``step`` only change together after a completed run of steps,
        # so they are a consistent state to checkpoint.
        save(ts, step)
        progress.close()
        if checkpoint is not None:
            progress.message(f"interrupted at step {step:,}; checkpoint saved in {checkpoint.parent} "
                             f"(continue with: descend train --resume {checkpoint.parent})")
        raise
    progress.close()
    host = trainer.to_numpy(ts)
    use_best = cfg.early_stopping != "none" and best is not None
    return FitResult(
        params=best if use_best else host.params, model_state=host.model_state, history=history,
        steps=step, steps_per_epoch=steps_per_epoch, batch_size=batch_size, best_step=best_step,
        best_metric=None if math.isinf(stopper.best) else stopper.best,
        stopped_early=step < total, elapsed=elapsed, final_params=host.params)


def _should_stop(stopper: EarlyStopping, history) -> bool:
    """Whether a restored run had already met its stopping rule."""
    if stopper.rule == "geometric":
        return stopper.horizon <= stopper.evaluations
    if stopper.rule == "patience":
        return stopper.evaluations - stopper.best_evaluation >= stopper.patience
    return False
