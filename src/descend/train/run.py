"""One training run end to end: data -> engine -> fit -> model file, plots, report.

``run_training(config)`` is what ``descend train`` calls.  The run directory
(DESIGN §5) holds ``config.json`` (enough to rerun or resume), ``history.csv``,
``checkpoint.safetensors`` (while training), ``model.safetensors``, PNG plots
and ``report.html``.  The official test set is used once, after training.
"""

from __future__ import annotations

import csv
import io
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import descend
from descend.engines import default_threads, get_engine
from descend.errors import ConfigError
from descend.io.atomic import atomic_write_text
from descend.io.modelfile import save_model
from descend.io.rundir import make_run_dir, read_json, write_json
from descend.model import MLP, init_params, init_state
from descend.train.config import TrainConfig
from descend.train.loop import FitResult, cost_and_error, evaluate, fit
from descend.train.progress import Progress

MC_SAMPLES = 20
HISTORY_COLUMNS = ("epoch", "step", "time", "lr", "train_cost", "valid_cost", "valid_error")


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    fit: FitResult
    metrics: dict


def write_history_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in HISTORY_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def prepare_data(cfg: TrainConfig):
    """Load, split and normalise the dataset (then PCA when ``cfg.pca``); the normaliser sees training rows only."""
    from descend.data import load
    from descend.train.setup import fit_normalizer

    kwargs = {"seed": cfg.seed}
    if cfg.format:
        kwargs["format"] = cfg.format
    if cfg.validation is not None:
        kwargs["validation"] = int(cfg.validation) if cfg.validation >= 1 else cfg.validation
    ds = load(cfg.dataset, **kwargs)
    normalizer = fit_normalizer(cfg.normalize, cfg.pca, ds.train.X)
    return ds, normalizer


def _metadata(cfg, spec, ds, normalizer_meta, engine, metrics) -> dict:
    return {
        "spec": spec.to_dict(),
        "classes": list(ds.classes),
        "n_features": int(ds.n_features),
        "image_shape": list(ds.image_shape) if ds.image_shape else None,
        "normalization": normalizer_meta,
        "dataset": {"name": ds.name, "source": ds.source},
        "training": {"config": cfg.to_dict(), "engine": engine.name, "device": engine.device},
        "metrics": metrics,
    }


def run_training(cfg: TrainConfig, *, out: str | Path | None = None, root: str | Path = "runs",
                 resume_dir: str | Path | None = None, progress: bool = True, stream=None) -> RunResult:
    """Train per ``cfg`` (or resume the run in ``resume_dir``) and write the run directory."""
    stream = stream or sys.stderr
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"`resume` must be a run directory with config.json. Received: resume={str(run_dir)!r}")
        cfg = TrainConfig.from_dict(read_json(run_dir / "config.json")["config"])
    ds, normalizer = prepare_data(cfg)
    n_in = normalizer.n_outputs  # the number of features, or of principal components with --pca
    sizes = (n_in, *cfg.hidden, len(ds.classes))
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    threads = cfg.threads or default_threads(cfg.engine, min(cfg.batch_size or len(ds.train.y), len(ds.train.y)), macs)
    engine = get_engine(cfg.engine, device=cfg.device, dtype=cfg.dtype, threads=threads)
    if ds.train.y is None:
        raise ConfigError(f"dataset {cfg.dataset!r} has no training labels")
    if resume_dir is None:
        run_dir = Path(out) if out else make_run_dir(root, cfg.name or _run_name(cfg))
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", {
            "config": cfg.to_dict(), "engine": engine.name, "device": engine.device,
            "descend": descend.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "command": " ".join(sys.argv)})

    spec = MLP(hidden=cfg.hidden, activation=cfg.activation, dropout_keep=cfg.dropout_keep, batchnorm=cfg.batchnorm)
    n_out = len(ds.classes)
    params = init_params(spec, n_in, n_out, key=cfg.seed, dtype=cfg.dtype)
    model_state = init_state(spec, n_in, n_out, dtype=cfg.dtype)

    rows = oversample(ds.train.y, cfg.seed) if cfg.balance == "oversample" else slice(None)
    X_train = engine.asarray(normalizer.transform(ds.train.X[rows]))
    y_train = engine.put_labels(ds.train.y[rows])
    X_valid = y_valid = None
    if ds.validation is not None and ds.validation.y is not None:
        X_valid = engine.asarray(normalizer.transform(ds.validation.X))
        y_valid = ds.validation.y

    n_train = int(len(y_train))
    batch = min(cfg.batch_size or n_train, n_train)
    if progress:
        print(f"descend: training {spec.hidden or 'logistic regression'} {cfg.activation} on {ds.name} "
              f"({n_train:,} train / {0 if y_valid is None else len(y_valid):,} validation) with {cfg.optimizer} "
              f"lr={cfg.lr:g}, batch {batch}, {cfg.epochs} epochs, engine {engine.name} ({engine.device}); "
              f"run directory {run_dir}", file=stream, flush=True)
        if cfg.pca:
            print(f"descend: inputs are the first {cfg.pca} principal components of the {ds.n_features} features "
                  f"(explaining {normalizer.pca_info['explained_variance_ratio']:.2%} of the variance), "
                  "standardized", file=stream, flush=True)
    bar = Progress(epochs=cfg.epochs, total_steps=(n_train // batch) * cfg.epochs, batch_size=batch,
                   stream=stream, enabled=progress)
    history_path = run_dir / "history.csv"
    result = fit(engine, spec, cfg, X_train, y_train, X_valid, y_valid, params=params, model_state=model_state,
                 checkpoint=run_dir / "checkpoint.safetensors", resume=resume_dir is not None, progress=bar,
                 on_evaluation=lambda row: None)
    write_history_csv(history_path, result.history)

    metrics, test_predictions = _final_metrics(engine, spec, result, ds, normalizer, X_valid, y_valid)
    norm_meta, norm_arrays = normalizer.to_dict()
    save_model(run_dir / "model.safetensors", result.params, state=result.model_state,
               extra_arrays={f"normalization.{k}": v for k, v in norm_arrays.items()},
               metadata=_metadata(cfg, spec, ds, norm_meta, engine, metrics))
    write_json(run_dir / "metrics.json", metrics)
    _write_reports(run_dir, cfg, result, metrics, ds, test_predictions)
    summary = (f"descend: done in {result.elapsed:.1f} s; best validation error "
               f"{_pct(metrics.get('valid_error'))}")
    if metrics.get("test_error") is not None:
        summary += f"; test error {_pct(metrics['test_error'])} on {metrics['test_size']:,} test images"
    print(summary + f"; wrote {run_dir}", file=stream, flush=True)
    return RunResult(run_dir, cfg, result, metrics)


def oversample(y: np.ndarray, seed: int) -> np.ndarray:
    """Row indices in which every class smaller than the median class is repeated up to the median size.

    The curriculum repeats FER2013's rare Disgust class; the extra rows are
    drawn without replacement where possible, seeded, and appended.
    """
    counts = np.bincount(y)
    target = int(np.median(counts[counts > 0]))
    rng = np.random.default_rng([seed, 0xBA1])
    extra = []
    for c, n in enumerate(counts):
        if 0 < n < target:
            members = np.flatnonzero(y == c)
            reps, rest = divmod(target - n, n)
            extra += [members] * reps + [rng.choice(members, rest, replace=False)]
    return np.concatenate([np.arange(len(y)), *extra]) if extra else np.arange(len(y))


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _run_name(cfg: TrainConfig) -> str:
    stem = Path(cfg.dataset).name.split(".")[0] or "data"
    return f"{stem}-{cfg.optimizer.replace('+', '-')}"


def _final_metrics(engine, spec, result: FitResult, ds, normalizer, X_valid, y_valid) -> dict:
    params = engine.put_tree(result.params)
    state = engine.put_tree(result.model_state)
    metrics = {"steps": result.steps, "epochs": result.steps / result.steps_per_epoch,
               "best_step": result.best_step, "stopped_early": result.stopped_early,
               "train_seconds": result.elapsed}
    predictions = None
    if y_valid is not None:
        metrics["valid_cost"], metrics["valid_error"] = evaluate(engine, spec, params, state, X_valid, y_valid)
    if ds.test is not None and ds.test.y is not None:
        X_test = engine.asarray(normalizer.transform(ds.test.X))
        logits = engine.logits(spec, params, state, X_test)
        metrics["test_cost"], metrics["test_error"] = cost_and_error(logits, ds.test.y)
        metrics["test_size"] = int(len(ds.test.y))
        predictions = np.argmax(logits, axis=1)
        if spec.uses_dropout:
            # Dropout as an ensemble: Monte-Carlo averaging beside the weight-scaling rule.
            from descend.train.predict import mc_dropout_proba

            proba = mc_dropout_proba(spec, result.params, result.model_state, normalizer.transform(ds.test.X),
                                     samples=MC_SAMPLES, seed=0)
            metrics["test_error_mc_dropout"] = float(np.mean(np.argmax(proba, axis=1) != ds.test.y))
            metrics["mc_dropout_samples"] = MC_SAMPLES
    return metrics, predictions


def _write_reports(run_dir: Path, cfg: TrainConfig, result: FitResult, metrics: dict, ds, predictions) -> None:
    from descend.reports.html import write_report
    from descend.reports.metrics import confusion_matrix, per_class_precision_recall
    from descend.reports.plots import plot_confusion, plot_history

    images = {}
    if result.history:
        cost, error = plot_history(result.history, run_dir / "cost.png", run_dir / "error.png")
        images = {"Cost per epoch": cost, "Error per epoch": error}
    cm = per_class = None
    if predictions is not None:
        cm = confusion_matrix(ds.test.y, predictions, len(ds.classes))
        per_class = per_class_precision_recall(cm)
        images["Confusion matrix (test set)"] = plot_confusion(cm, ds.classes, run_dir / "confusion.png")
    write_report(run_dir / "report.html", title=f"descend run: {run_dir.name}", config=cfg.to_dict(),
                 metrics=metrics, images=images, confusion=cm, classes=list(ds.classes), per_class=per_class,
                 history_tail=result.history[-10:])
