"""The learning-rate range test (Smith, 2017): what ``descend lr-find`` and ``descend train --lr auto`` run.

From the run's initial weights, with the run's optimizer (its momentum,
options, gradient clip and max-norm cap), penalties, label smoothing and batch
order, the learning rate grows exponentially from ``lr_min`` to ``lr_max``
over ``steps`` optimizer steps: step ``t`` (from 0) uses
``lr_min * (lr_max / lr_min) ** (t / (steps - 1))``.  The per-step training
loss is smoothed with an exponential moving average (``beta`` 0.98) divided by
``1 - beta ** (t + 1)`` (bias correction: the first values are not pulled
towards 0), and the sweep stops once the smoothed loss exceeds
``stop_factor`` (4) times its minimum so far, or the loss stops being finite.

The suggestion is the rate one tenth of the one where the smoothed loss is
lowest: the minimum sits where the steps already start to overshoot, and a
tenth of it is the largest rate still safely on the descending part of the
curve.  On MNIST's default network that lands within a factor of 3 of the
best rate of a grid of 2-epoch runs, for Adam and for momentum alike.  The
rate of the steepest descent of the smoothed loss (the most negative slope
against log lr, before the minimum) is reported beside it.

``lr-find.csv`` (step, lr, loss, smoothed loss) and ``lr-find.png`` (smoothed
loss against lr, log scale, the suggestion marked) go into the run directory,
each written atomically, with ``lr-find.json`` (range, steps, suggestion).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descend.errors import require
from descend.optim import exponential
from descend.train.config import TrainConfig

LR_MIN, LR_MAX, STEPS = 1e-6, 1.0, 200
BETA, STOP_FACTOR = 0.98, 4.0
SUGGESTION_DIVISOR = 10.0
RULE = "one tenth of the learning rate with the lowest smoothed loss"
# Steps run per engine call: a compiled engine compiles one program per run length, and the
# stopping rule is checked between calls.
CHUNK = 10


@dataclass(frozen=True, eq=False)
class LRFindResult:
    """One range test: per-step ``lrs``, raw ``losses`` and ``smoothed`` losses, up to where it stopped.

    ``suggestion`` is the suggested rate, ``min_loss_lr`` the rate at the
    lowest smoothed loss, ``steepest_lr`` the rate at its steepest descent;
    ``stopped`` says why the sweep ended (``"completed"``, ``"loss > 4x
    minimum"`` or ``"non-finite loss"``).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    min_loss_lr: float
    steepest_lr: float | None
    stopped: str
    lr_min: float
    lr_max: float
    steps: int

    def summary(self) -> dict:
        return {"suggestion": self.suggestion, "rule": RULE, "min_loss_lr": self.min_loss_lr,
                "steepest_lr": self.steepest_lr, "lr_min": self.lr_min, "lr_max": self.lr_max,
                "steps": self.steps, "steps_run": int(len(self.lrs)), "stopped": self.stopped}


def sweep_rates(lr_min: float, lr_max: float, steps: int) -> np.ndarray:
    """The rate of each of the ``steps`` steps (what the sweep's schedule computes, in float64)."""
    return lr_min * (lr_max / lr_min) ** (np.arange(steps) / max(steps - 1, 1))


def smooth(losses, beta: float = BETA) -> np.ndarray:
    """Exponential moving average of ``losses`` with bias correction."""
    out, avg = np.empty(len(losses)), 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1.0 - beta) * float(loss)
        out[i] = avg / (1.0 - beta ** (i + 1))
    return out


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, float, float | None]:
    """``(suggestion, rate at the lowest smoothed loss, rate at the steepest descent before it)``."""
    best = int(np.argmin(smoothed))
    min_lr = float(lrs[best])
    steepest = None
    if best >= 2:
        slopes = np.gradient(smoothed[: best + 1], np.log(lrs[: best + 1]))
        steepest = float(lrs[int(np.argmin(slopes))])
    return min_lr / SUGGESTION_DIVISOR, min_lr, steepest


def _check_range(lr_min: float, lr_max: float, steps: int) -> None:
    require(math.isfinite(lr_min) and lr_min > 0, "lr_min", "a finite number > 0", lr_min)
    require(math.isfinite(lr_max) and lr_max > lr_min, "lr_max", f"a finite number > lr_min={lr_min!r}", lr_max)
    require(isinstance(steps, int) and steps >= 10, "steps", "an integer >= 10", steps)


def lr_range_test(cfg: TrainConfig, *, data=None, lr_min: float = LR_MIN, lr_max: float = LR_MAX,
                  steps: int = STEPS, stop_factor: float = STOP_FACTOR, beta: float = BETA,
                  stream=None) -> LRFindResult:
    """Sweep the learning rate over ``steps`` steps of training ``cfg`` (on ``data``, a
    :class:`~descend.train.setup.PreparedData`, else ``cfg``'s dataset prepared as training does)."""
    from descend.train.loop import batch_order, batch_plan, fit_options, make_trainer
    from descend.train.setup import prepare_data, setup_run

    _check_range(lr_min, lr_max, steps)
    require(stop_factor > 1, "stop_factor", "> 1", stop_factor)
    require(0 <= beta < 1, "beta", "in [0, 1)", beta)
    data = data if data is not None else prepare_data(cfg)
    run = setup_run(cfg, data.n_in, data.n_out, data.n_train, image_shape=data.image_shape)
    engine = run.engine
    options = fit_options(cfg, schedule="constant")
    batch_size, steps_per_epoch = batch_plan(options, data.n_train)
    growth = math.log(lr_max / lr_min) / max(steps - 1, 1)
    trainer = make_trainer(engine, run.spec, options, steps_per_epoch, data.image_shape,
                           learning_rate=exponential(lr_min, -growth))
    X, y = engine.asarray(data.X_train), engine.put_labels(data.y_train)
    ts = trainer.init(run.params, run.model_state)
    if stream is not None:
        print(f"descend: learning-rate range test, {lr_min:g} to {lr_max:g} over {steps} steps of batch "
              f"{batch_size} with {cfg.optimizer}, engine {engine.name} ({engine.device})", file=stream, flush=True)

    losses: list[float] = []
    avg, best, stopped = 0.0, math.inf, "completed"
    done = 0
    while done < steps and stopped == "completed":
        epoch, within = divmod(done, steps_per_epoch)
        order = batch_order(options, epoch, data.n_train)
        count = min(CHUNK, steps - done, steps_per_epoch - within)
        ts, chunk = trainer.run(ts, X, y, order, batch_size, within, count, done, cfg.seed)
        for loss in np.asarray(chunk, dtype=np.float64):
            if not math.isfinite(loss):
                stopped = "non-finite loss"
                break
            losses.append(float(loss))
            avg = beta * avg + (1.0 - beta) * loss
            value = avg / (1.0 - beta ** len(losses))
            best = min(best, value)
            if value > stop_factor * best:
                stopped = f"loss > {stop_factor:g}x minimum"
                break
        else:
            if len(chunk) < count:  # an engine that stops at a non-finite loss returns fewer
                stopped = "non-finite loss"
        done += count
    require(len(losses) >= 2, "lr_min", "small enough that the first steps have a finite loss", lr_min)
    lrs = sweep_rates(lr_min, lr_max, steps)[: len(losses)]
    smoothed = smooth(losses, beta)
    suggestion, min_lr, steepest = suggest(lrs, smoothed)
    return LRFindResult(lrs, np.asarray(losses), smoothed, suggestion, min_lr, steepest, stopped, lr_min, lr_max,
                        steps)


def write_lr_find(run_dir: str | Path, result: LRFindResult, cfg: TrainConfig | None = None) -> None:
    """``lr-find.csv``, ``lr-find.png`` and ``lr-find.json`` in ``run_dir``, each written atomically."""
    from descend.io.atomic import atomic_write_csv
    from descend.io.rundir import write_json

    run_dir = Path(run_dir)
    rows = [{"step": i, "lr": f"{lr:.6g}", "loss": f"{loss:.6g}", "smoothed_loss": f"{s:.6g}"}
            for i, (lr, loss, s) in enumerate(zip(result.lrs, result.losses, result.smoothed))]
    atomic_write_csv(run_dir / "lr-find.csv", ("step", "lr", "loss", "smoothed_loss"), rows)
    plot_lr_find(result, run_dir / "lr-find.png")
    summary = result.summary()
    if cfg is not None:
        summary["config"] = cfg.to_dict()
    write_json(run_dir / "lr-find.json", summary)


def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    """Smoothed loss against the learning rate (log scale), the suggestion and the minimum marked."""
    from descend.reports.plots import new_figure, save_figure

    fig, ax = new_figure()
    ax.plot(result.lrs, result.losses, color="0.8", linewidth=0.8, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="C0", linewidth=1.8, label="smoothed loss")
    ax.axvline(result.suggestion, color="C3", linestyle="--", label=f"suggested lr {result.suggestion:.3g}")
    ax.axvline(result.min_loss_lr, color="0.5", linestyle=":", label=f"lowest smoothed loss {result.min_loss_lr:.3g}")
    ax.set_xscale("log")
    top = float(np.max(result.smoothed[: max(3, len(result.smoothed) // 10)]))
    low = float(np.min(result.smoothed))
    ax.set_ylim(low - 0.1 * (top - low + 1e-12), top + 0.5 * (top - low + 1e-12))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test ({len(result.lrs)} of {result.steps} steps; {result.stopped})")
    ax.legend(loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)


def run_lr_find(cfg: TrainConfig, *, out: str | Path | None = None, root: str | Path = "runs",
                lr_min: float = LR_MIN, lr_max: float = LR_MAX, steps: int = STEPS, progress: bool = True,
                stream=None) -> tuple[LRFindResult, Path]:
    """``descend lr-find``: the range test of ``cfg``, written to ``out`` (else ``runs/<date>-<name>-lr-find``)."""
    from descend.io.rundir import make_run_dir

    stream = stream or sys.stderr
    _check_range(lr_min, lr_max, steps)
    result = lr_range_test(cfg, lr_min=lr_min, lr_max=lr_max, steps=steps, stream=stream if progress else None)
    if out:
        run_dir = Path(out)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        stem = Path(cfg.dataset).name.split(".")[0] or "data"
        run_dir = make_run_dir(root, f"{cfg.name or stem + '-' + cfg.optimizer.replace('+', '-')}-lr-find")
    write_lr_find(run_dir, result, cfg)
    print(f"descend: suggested lr {result.suggestion:.3g} ({RULE}: {result.min_loss_lr:.3g}); "
          f"{len(result.lrs)} steps, {result.stopped}; wrote {run_dir}", file=stream, flush=True)
    return result, run_dir
