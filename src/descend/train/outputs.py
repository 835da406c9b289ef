"""What a training run leaves behind: history, metrics, the model file, plots and the HTML report.

``descend train`` and the retraining at the end of ``descend search`` write
their run directories with these same functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from descend.io.atomic import atomic_write_csv
from descend.io.modelfile import save_model, spec_format_version
from descend.train.config import TrainConfig
from descend.train.inference import inference_rows
from descend.train.loop import FitResult, cost_and_error, evaluate, output_metrics

MC_SAMPLES = 20
HISTORY_COLUMNS = ("epoch", "step", "time", "lr", "train_cost", "valid_cost", "valid_error")
REGRESSION_HISTORY_COLUMNS = ("epoch", "step", "time", "lr", "train_cost", "valid_cost", "valid_rmse", "valid_mae",
                              "valid_r2")


def write_history_csv(path: Path, history: list[dict], task: str = "classification") -> None:
    atomic_write_csv(path, REGRESSION_HISTORY_COLUMNS if task == "regression" else HISTORY_COLUMNS, history)


def _regression_metrics(engine, spec, params, state, data) -> tuple[dict, np.ndarray | None]:
    """Validation and test RMSE / MAE / R^2 (targets' units), and the test predictions (targets' units)."""
    metrics, predictions = {}, None
    for split, X, y in (("valid", data.X_valid, data.y_valid), ("test", data.X_test, data.y_test)):
        if y is None:
            continue
        outputs = engine.logits(spec, params, state, engine.asarray(X), batch_size=inference_rows(spec))
        metrics.update({f"{split}_{k}": v for k, v in output_metrics(spec, outputs, y, data.target_std).items()})
        if split == "test":
            metrics["test_size"] = int(len(y))
            predictions = data.target_scaler.inverse(outputs)
    return metrics, predictions


def final_metrics(engine, spec, result: FitResult, data) -> tuple[dict, np.ndarray | None]:
    """``(metrics, test predictions)`` of the fitted weights: validation once more, the test set once.

    ``data`` is the run's :class:`~descend.train.setup.PreparedData`.
    """
    params = engine.put_tree(result.params)
    state = engine.put_tree(result.model_state)
    metrics = {"steps": result.steps, "epochs": result.steps / result.steps_per_epoch,
               "best_step": result.best_step, "stopped_early": result.stopped_early,
               "train_seconds": result.elapsed}
    predictions = None
    if spec.task == "regression":
        measured, predictions = _regression_metrics(engine, spec, params, state, data)
        return {**metrics, **measured}, predictions
    if data.y_valid is not None:
        metrics["valid_cost"], metrics["valid_error"] = evaluate(engine, spec, params, state,
                                                                 engine.asarray(data.X_valid), data.y_valid)
    if data.y_test is not None:
        logits = engine.logits(spec, params, state, engine.asarray(data.X_test), batch_size=inference_rows(spec))
        metrics["test_cost"], metrics["test_error"] = cost_and_error(logits, data.y_test)
        metrics["test_size"] = int(len(data.y_test))
        predictions = np.argmax(logits, axis=1)
        if spec.uses_dropout:
            # Dropout as an ensemble: Monte-Carlo averaging beside the weight-scaling rule.
            from descend.train.inference import mc_dropout_proba

            proba = mc_dropout_proba(spec, result.params, result.model_state, data.X_test,
                                     samples=MC_SAMPLES, seed=0)
            metrics["test_error_mc_dropout"] = float(np.mean(np.argmax(proba, axis=1) != data.y_test))
            metrics["mc_dropout_samples"] = MC_SAMPLES
    return metrics, predictions


def model_metadata(cfg: TrainConfig, spec, ds, normalizer_meta: dict, engine, metrics: dict) -> dict:
    """The JSON metadata of ``model.safetensors``: spec, classes (regression: task and target names),
    normalization, provenance, metrics."""
    meta = _classifier_metadata(cfg, spec, ds, normalizer_meta, engine, metrics)
    if spec.task == "regression":
        # the targets' standardization is stored as the arrays targets.mean / targets.std
        return {"task": "regression", "targets": list(ds.targets), **meta}
    return meta


def _classifier_metadata(cfg: TrainConfig, spec, ds, normalizer_meta: dict, engine, metrics: dict) -> dict:
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


def save_run_model(path: Path, cfg: TrainConfig, spec, engine, result: FitResult, data, metrics: dict) -> None:
    """``model.safetensors``: the fitted weights and state, the normalization, the metadata."""
    norm_meta, norm_arrays = data.normalizer.to_dict()
    metadata = model_metadata(cfg, spec, data.dataset, norm_meta, engine, metrics)
    extra = {f"normalization.{k}": v for k, v in norm_arrays.items()}
    if data.target_scaler is not None:
        extra.update({f"targets.{k}": v for k, v in data.target_scaler.arrays().items()})
    save_model(path, result.params, state=result.model_state, extra_arrays=extra,
               metadata=metadata, format_version=spec_format_version(metadata["spec"]))


def write_reports(run_dir: Path, cfg: TrainConfig, result: FitResult, metrics: dict, ds, predictions,
                  network=None) -> None:
    """PNG plots (cost, error, confusion matrix) and ``report.html`` (with the architecture of ``network``,
    the resolved network spec, when given)."""
    from descend.reports.html import architecture_rows, write_report
    from descend.reports.metrics import confusion_matrix, per_class_precision_recall
    from descend.reports.plots import plot_confusion, plot_history

    images = {}
    if network is not None and network.task == "regression":
        from descend.reports.plots import plot_regression_history

        if result.history:
            cost, rmse = plot_regression_history(result.history, run_dir / "cost.png", run_dir / "rmse.png")
            images = {"Cost per epoch": cost, "Validation RMSE per epoch": rmse}
        write_report(run_dir / "report.html", title=f"descend run: {run_dir.name}", config=cfg.to_dict(),
                     metrics=metrics, images=images, history_tail=result.history[-10:],
                     architecture=architecture_rows(network.summary()))
        return
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
                 history_tail=result.history[-10:],
                 architecture=architecture_rows(network.summary()) if network is not None else None)
