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


def trained_on_mirrors(cfg: TrainConfig, data) -> bool:
    """Whether the run's augmentation mirrors training images (``flip``), so mirrored inputs are in-distribution."""
    from descend.model.augment import Augmentation

    aug = Augmentation.parse(cfg.augment)
    return bool(aug is not None and aug.flip and data.image_shape)


def mirror_averaged_proba(engine, spec, params, state, X, image_shape, logits=None) -> np.ndarray:
    """Test-time augmentation: the mean softmax of each row and its left-right mirror image (``logits``:
    the rows' own, when already computed)."""
    from descend.model.augment import mirror_rows
    from descend.train.inference import softmax

    rows = inference_rows(spec)
    if logits is None:
        logits = engine.logits(spec, params, state, engine.asarray(X), batch_size=rows)
    return (softmax(logits) + softmax(engine.logits(spec, params, state, engine.asarray(mirror_rows(X, image_shape)),
                                                    batch_size=rows))) / 2


def final_metrics(engine, spec, result: FitResult, data, *, flip_tta: bool = False) -> tuple[dict, np.ndarray | None]:
    """``(metrics, test predictions)`` of the fitted weights: validation once more, the test set once.

    ``data`` is the run's :class:`~descend.train.setup.PreparedData`.  With ``flip_tta`` (a network trained
    on mirrored images) the validation and test errors of :func:`mirror_averaged_proba` are added.
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
    if flip_tta:
        for split, X, y, own in (("valid", data.X_valid, data.y_valid, None),
                                 ("test", data.X_test, data.y_test, logits if data.y_test is not None else None)):
            if y is not None:
                proba = mirror_averaged_proba(engine, spec, params, state, X, data.image_shape, own)
                metrics[f"{split}_error_flip_tta"] = float(np.mean(np.argmax(proba, axis=1) != y))
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


AUGMENTED_GRID = 64


def first_augmented_batch(cfg: TrainConfig, data, rows: int = AUGMENTED_GRID) -> np.ndarray | None:
    """The first training step's rows (up to ``rows``) as the network saw them: augmented, ``(n, h, w, c)``.

    The NumPy reference's transform of step 0's batch, which every engine
    reproduces exactly; None when the run has no augmentation.
    """
    from descend.backend import numpy_ops
    from descend.model.augment import augment_rows
    from descend.train.loop import augmentation, batch_plan, epoch_order, fit_options

    aug = augmentation(cfg, data.image_shape) if cfg.augment else None
    if aug is None:
        return None
    batch_size, _ = batch_plan(fit_options(cfg), data.n_train)
    batch = np.asarray(data.X_train)[epoch_order(cfg.seed, 0, data.n_train)[:batch_size]]
    return augment_rows(numpy_ops, aug, batch, cfg.seed, 0)[:rows].reshape(-1, *aug.image_shape)


def write_reports(run_dir: Path, cfg: TrainConfig, result: FitResult, metrics: dict, ds, predictions,
                  network=None, *, engine=None, data=None, augmented=None) -> None:
    """PNG plots (cost, error, confusion matrix, the ``augmented`` training images when given) and
    ``report.html`` (with the architecture of ``network``, the resolved network spec, when given).  With
    ``engine`` and ``data`` (the run's :class:`~descend.train.setup.PreparedData`) too, the pictures of what
    the model learned (see :func:`learned_pictures`)."""
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
    if augmented is not None:
        from descend.reports.grids import plot_image_grid

        caption = f"The first training batch after --augment {cfg.augment} ({len(augmented)} rows)"
        images[caption] = plot_image_grid(augmented, run_dir / "augmented.png")
    cm = per_class = None
    if predictions is not None:
        cm = confusion_matrix(ds.test.y, predictions, len(ds.classes))
        per_class = per_class_precision_recall(cm)
        images["Confusion matrix (test set)"] = plot_confusion(cm, ds.classes, run_dir / "confusion.png")
    learned = None
    if network is not None and engine is not None and data is not None:
        learned = learned_pictures(run_dir, engine, network, result, data)
    write_report(run_dir / "report.html", title=f"descend run: {run_dir.name}", config=cfg.to_dict(),
                 metrics=metrics, images=images, confusion=cm, classes=list(ds.classes), per_class=per_class,
                 history_tail=result.history[-10:],
                 architecture=architecture_rows(network.summary()) if network is not None else None,
                 learned=learned)


def _gallery_split(data):
    """("test" or "validation", raw images, labels, normalized rows) of the split the gallery shows, or None."""
    ds = data.dataset
    if ds is None or not ds.image_shape:
        return None
    for name, split, X in (("test", ds.test, data.X_test), ("validation", ds.validation, data.X_valid)):
        if X is not None and split is not None and split.y is not None and len(split.y) == len(X):
            return name, np.asarray(split.X).reshape(-1, *ds.image_shape), np.asarray(split.y), X
    return None


def learned_pictures(run_dir: Path, engine, network, result: FitResult, data) -> dict[str, Path]:
    """``first-layer.png`` (the first layer's weights as images) and ``mistakes.png`` (the most confident
    wrong predictions on the test images, or the validation images without a labelled test split), as
    {caption: path}; neither for data without an image shape."""
    from descend.reports.learned import (
        MAX_MISTAKES,
        confident_mistakes,
        first_layer_tiles,
        plot_first_layer,
        plot_mistakes,
    )
    from descend.train.inference import softmax

    ds = data.dataset
    classes = [str(c) for c in ds.classes] if ds is not None else None
    out: dict[str, Path] = {}
    tiles = first_layer_tiles(network, result.params, ds.image_shape if ds is not None else None,
                              normalizer=data.normalizer, classes=classes)
    if tiles is not None:
        shown = f"{len(tiles.images)} of {tiles.total}" if len(tiles.images) < tiles.total else f"all {tiles.total}"
        caption = (f"First-layer weights ({tiles.layer}, {shown}): {tiles.what}; red positive, blue negative, "
                   f"one scale symmetric around 0")
        out[caption] = plot_first_layer(tiles, run_dir / "first-layer.png")
    split = _gallery_split(data)
    if split is not None:
        name, images, y, X = split
        logits = engine.logits(network, engine.put_tree(result.params), engine.put_tree(result.model_state),
                               engine.asarray(X), batch_size=inference_rows(network))
        proba = softmax(np.asarray(logits, np.float64))
        rows = confident_mistakes(proba, y, MAX_MISTAKES)
        wrong = int(np.sum(np.argmax(proba, axis=1) != y))
        if len(rows):
            caption = (f"The {len(rows)} most confident wrong predictions on the {name} images ({wrong:,} of "
                       f"{len(y):,} wrong): true label, predicted label and its probability under each")
            out[caption] = plot_mistakes(images, y, proba, rows, classes, name, run_dir / "mistakes.png")
    return out
