"""One training run end to end: data -> engine -> fit -> model file, plots, report.

``run_training(config)`` is what ``descend train`` calls.  The run directory
holds ``config.json`` (enough to rerun or resume), ``history.csv``,
``checkpoint.safetensors`` (while training), ``model.safetensors``, PNG plots
and ``report.html``.  The official test set is used once, after training.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from descend.errors import ConfigError
from descend.io.rundir import make_run_dir, read_json, write_json
from descend.train.config import TrainConfig
from descend.train.loop import FitResult, fit, fit_options, progress_bar
from descend.train.outputs import (
    first_augmented_batch,
    final_metrics,
    save_run_model,
    trained_on_mirrors,
    write_history_csv,
    write_reports,
)
from descend.train.setup import network_label, oversample, prepare_data, provenance, setup_run

__all__ = ["RunResult", "oversample", "prepare_data", "run_training"]


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    fit: FitResult
    metrics: dict


def run_training(cfg: TrainConfig, *, out: str | Path | None = None, root: str | Path = "runs",
                 resume_dir: str | Path | None = None, progress: bool = True, stream=None,
                 auto_lr: bool = False) -> RunResult:
    """Train per ``cfg`` (or resume the run in ``resume_dir``) and write the run directory.

    With ``auto_lr`` (``--lr auto``) the learning-rate range test runs first
    and training uses its suggestion: config.json records that rate as ``lr``
    and the test under ``lr_find`` (``auto: true``), and the run directory
    gets its ``lr-find.png`` / ``.csv`` / ``.json``.  A resumed run reads its
    rate from config.json and never reruns the test.
    """
    stream = stream or sys.stderr
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"`resume` must be a run directory with config.json. Received: resume={str(run_dir)!r}")
        cfg = TrainConfig.from_dict(read_json(run_dir / "config.json")["config"])
    data = prepare_data(cfg)
    ds = data.dataset
    if data.task == "regression" and cfg.task is None:
        cfg = cfg.replace(task="regression")  # config.json names the task the data called for
    found = None
    if auto_lr and resume_dir is None:
        from descend.train.lr_find import lr_range_test

        found = lr_range_test(cfg, data=data, stream=stream if progress else None)
        cfg = cfg.replace(lr=found.suggestion)
    run = setup_run(cfg, data.n_in, data.n_out, data.n_train, image_shape=data.image_shape, task=data.task)
    engine, spec = run.engine, run.spec
    if resume_dir is None:
        run_dir = Path(out) if out else make_run_dir(root, cfg.name or _run_name(cfg))
        run_dir.mkdir(parents=True, exist_ok=True)
        record = provenance(cfg, engine)
        if found is not None:
            from descend.train.lr_find import write_lr_find

            write_lr_find(run_dir, found)
            record["lr_find"] = {"auto": True, **found.summary()}
        write_json(run_dir / "config.json", record)

    X_train = engine.asarray(data.X_train)
    y_train = engine.put_labels(data.y_train)
    X_valid = None if data.X_valid is None else engine.asarray(data.X_valid)
    y_valid = data.y_valid

    options = fit_options(cfg)
    n_train = data.n_train
    batch = min(cfg.batch_size or n_train, n_train)
    if progress:
        if y_valid is None:
            rows = (f"{n_train:,} train, no validation rows: trains on every training row, without early "
                    f"stopping or choosing the best epoch")
        else:
            rows = f"{n_train:,} train / {len(y_valid):,} validation"
        print(f"descend: training {network_label(cfg, spec)} on {ds.name} "
              f"({rows}) with {cfg.optimizer} "
              f"lr={cfg.lr:g}, batch {batch}, {cfg.epochs} epochs, engine {engine.name} ({engine.device}); "
              f"run directory {run_dir}", file=stream, flush=True)
        if cfg.pca:
            print(f"descend: inputs are the first {cfg.pca} principal components of the {ds.n_features} features "
                  f"(explaining {data.normalizer.pca_info['explained_variance_ratio']:.2%} of the variance), "
                  "standardized", file=stream, flush=True)
    bar = progress_bar(options, n_train, stream=stream, enabled=progress)
    result = fit(engine, spec, options, X_train, y_train, X_valid, y_valid, params=run.params,
                 model_state=run.model_state, checkpoint=run_dir / "checkpoint.safetensors",
                 resume=resume_dir is not None, progress=bar, target_std=data.target_std, image_shape=data.image_shape)
    metrics = write_run_outputs(run_dir, cfg, run, data, result)
    summary = f"descend: done in {result.elapsed:.1f} s; " + (
        "no validation rows" if y_valid is None else
        f"validation RMSE {metrics['valid_rmse']:.4g}, R^2 {metrics['valid_r2']:.4f}" if data.task == "regression"
        else f"best validation error {_pct(metrics.get('valid_error'))}")
    if metrics.get("test_rmse") is not None:
        summary += f"; test RMSE {metrics['test_rmse']:.4g}, R^2 {metrics['test_r2']:.4f} on {metrics['test_size']:,} rows"
    if metrics.get("test_error") is not None:
        summary += f"; test error {_pct(metrics['test_error'])} on {metrics['test_size']:,} test images"
    if metrics.get("test_error_flip_tta") is not None:
        summary += f" ({_pct(metrics['test_error_flip_tta'])} averaged with their mirror images)"
    print(summary + f"; wrote {run_dir}", file=stream, flush=True)
    return RunResult(run_dir, cfg, result, metrics)


def write_run_outputs(run_dir: Path, cfg: TrainConfig, run, data, result: FitResult, *,
                      extra_metrics: dict | None = None, config_in_metrics: bool = False) -> dict:
    """After fit: ``history.csv``, the final metrics, ``model.safetensors``, ``metrics.json``, plots, report.

    ``extra_metrics`` are recorded with the metrics (model file and ``metrics.json``), and with
    ``config_in_metrics`` the config too (so a rerun can tell the run is already done); returns the metrics.
    """
    write_history_csv(run_dir / "history.csv", result.history, run.spec.task)
    metrics, test_predictions = final_metrics(run.engine, run.spec, result, data,
                                              flip_tta=trained_on_mirrors(cfg, data))
    metrics.update(extra_metrics or {})
    save_run_model(run_dir / "model.safetensors", cfg, run.spec, run.engine, result, data, metrics)
    write_json(run_dir / "metrics.json", {**metrics, "config": cfg.to_dict()} if config_in_metrics else metrics)
    write_reports(run_dir, cfg, result, metrics, data.dataset, test_predictions,
                  network=run.spec.resolve(data.n_in, data.n_out), engine=run.engine, data=data,
                  augmented=first_augmented_batch(cfg, data))
    return metrics


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _run_name(cfg: TrainConfig) -> str:
    stem = Path(cfg.dataset).name.split(".")[0] or "data"
    return f"{stem}-{cfg.optimizer.replace('+', '-')}"
