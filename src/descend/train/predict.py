"""Predictions from a saved model or ensemble file: labels, probabilities, a Kaggle submission,
a predictions file.

The model file is safetensors (no code can run on load); its metadata carries
the spec, the class names and the normalisation fitted on the training rows,
so inputs are preprocessed exactly as in training.  An ensemble file (written
by ``descend ensemble``) is recognised by its metadata and predicts by its
members' vote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descend.backend import numpy_ops
from descend.data.preprocess import Normalizer
from descend.errors import ConfigError, InputError
from descend.io.modelfile import load_model
from descend.model import MLP, predict_logits
from descend.train.inference import inference_rows, mc_dropout_proba, softmax


@dataclass
class LoadedModel:
    spec: MLP
    params: dict
    state: dict
    classes: tuple[str, ...]
    n_features: int
    normalizer: Normalizer
    metadata: dict
    target_scaler: object = None  # regression: the training targets' standardization, undone at prediction

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("targets", ()))

    @property
    def input_image_shape(self) -> tuple[int, ...] | None:
        """The image shape of the network's (normalised) input rows; None for feature vectors or principal
        components."""
        shape = self.metadata.get("image_shape")
        return None if not shape or self.normalizer.pca else tuple(int(v) for v in shape)

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            shape = "x".join(map(str, X.shape))
            raise InputError(f"input has shape {shape}; the model expects rows of {self.n_features} features")
        return self.normalizer.transform(X).astype(self.params["dense0.W"].dtype)

    def predict_values(self, X: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """A regression model's predictions for raw rows ``X``, in the targets' units: (rows, targets)."""
        if self.task != "regression":
            raise ConfigError("this model classifies; its predictions are labels and probabilities, not values")
        x = self._inputs(X)
        batch_size = batch_size or inference_rows(self.spec)
        out = [predict_logits(numpy_ops, self.spec, self.params, self.state, x[i:i + batch_size])
               for i in range(0, len(x), batch_size)]
        z = np.concatenate(out) if out else np.zeros((0, len(self.targets)))
        return self.target_scaler.inverse(z)

    def predict_proba(self, X: np.ndarray, *, mc_samples: int = 0, seed: int = 0,
                      batch_size: int | None = None, tta: str | None = None) -> np.ndarray:
        """Class probabilities for raw (un-normalised) rows ``X``.

        ``mc_samples=K > 0`` averages K Monte-Carlo dropout passes instead of
        the deterministic weight-scaling rule (a model without dropout ignores it).
        ``tta="flip"`` averages each image's probabilities with those of its
        left-right mirror image (mirrored after normalisation, as ``--augment flip``
        mirrors training rows).
        """
        from descend.model.augment import TTA, mirror_rows

        if self.task == "regression":
            raise ConfigError("this model is a regression model: it predicts values (predict_values), "
                              "not class probabilities")
        if tta not in (None, *TTA):
            raise ConfigError(f"`tta` must be one of {TTA}. Received: tta={tta!r}")
        x = self._inputs(X)
        if tta == "flip":
            shape = self.input_image_shape
            if shape is None:
                raise ConfigError("`tta` 'flip' mirrors images; this model's inputs are not images (no image "
                                  "shape, or principal components). Received: tta='flip'")
            return (self._proba(x, mc_samples, seed, batch_size)
                    + self._proba(mirror_rows(x, shape), mc_samples, seed, batch_size)) / 2
        return self._proba(x, mc_samples, seed, batch_size)

    def _proba(self, x: np.ndarray, mc_samples: int, seed: int, batch_size: int | None) -> np.ndarray:
        if mc_samples and self.spec.uses_dropout:
            return mc_dropout_proba(self.spec, self.params, self.state, x, samples=mc_samples, seed=seed)
        batch_size = batch_size or inference_rows(self.spec)
        out = [softmax(predict_logits(numpy_ops, self.spec, self.params, self.state, x[i:i + batch_size]))
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class indices for raw rows ``X``."""
        return np.argmax(self.predict_proba(X), axis=1)


def load_trained(path: str | Path) -> LoadedModel:
    """The single model in a ``model.safetensors`` written by ``descend train``."""
    return _loaded_model(load_model(path), path)


def _loaded_model(mf, path) -> LoadedModel:
    meta = mf.metadata
    try:
        spec = MLP.from_dict(meta["spec"])
        norm_arrays = {k[len("normalization."):]: v for k, v in mf.extra.items() if k.startswith("normalization.")}
        normalizer = Normalizer.from_dict(meta["normalization"], norm_arrays)
        classes, n_features = tuple(meta["classes"]), int(meta["n_features"])
        scaler = None
        if spec.task == "regression":
            from descend.data.targets import TargetScaler

            scaler = TargetScaler.from_arrays({k: mf.extra[f"targets.{k}"] for k in ("mean", "std")})
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a descend model file ({exc})") from None
    return LoadedModel(spec, mf.params, mf.state, classes, n_features, normalizer, meta, scaler)


def read_inputs(path: str | Path, *, format: str | None = None, classes=None):
    """Rows to predict, and their labels when the file has them (to report the error)."""
    from descend.data.csvfiles import read_csv, read_fer2013, read_header, read_kaggle
    from descend.data.loaders import encode_labels, sniff
    from descend.data.npz import read_npz

    path = Path(path)
    kind = format or sniff(path)
    if kind == "kaggle":
        table = read_kaggle(path)
    elif kind == "fer2013":
        table = read_fer2013(path)
    elif kind == "npz":
        table, _ = read_npz(path)
    elif kind == "csv":
        if "label" not in read_header(path):
            raise InputError(f"{path}: a generic CSV needs a 'label' column (use the Kaggle layout pixel0,... "
                             "for unlabelled rows)")
        table = read_csv(path)
    else:
        raise InputError(f"{path}: cannot predict from format {kind!r}; use a CSV or NPZ file")
    labels = table.labels
    if labels is not None and table.classes is None:
        labels = encode_labels([(labels, path)], tuple(classes) if classes else None)[0][0]
    return table.X, labels


def read_regression_inputs(path: str | Path, targets: tuple[str, ...], *, format: str | None = None):
    """Rows to predict with a regression model, and their targets when the file has every target column
    (a CSV) or a y (an NPZ)."""
    from descend.data.csvfiles import read_csv_features, read_csv_targets, read_header
    from descend.data.loaders import sniff
    from descend.data.npz import read_npz
    from descend.data.targets import as_targets

    path = Path(path)
    kind = format or sniff(path)
    if kind == "npz":
        table, _ = read_npz(path)
        return table.X, as_targets(path, table.labels, targets)
    if kind != "csv":
        raise InputError(f"{path}: a regression model predicts from a CSV or NPZ file, not {kind!r}")
    header = read_header(path)
    if all(t in header for t in targets):
        table = read_csv_targets(path, targets)
        return table.X, table.labels
    return read_csv_features(path, drop=targets).X, None


def load_classifier(path: str | Path):
    """A :class:`LoadedModel` or an :class:`~descend.train.ensemble_model.Ensemble`, whichever ``path`` holds.

    Both have ``classes``, ``n_features`` and ``predict_proba(X, mc_samples=K)``
    on raw rows; the file's metadata says which it is.
    """
    from descend.train.ensemble_model import FORMAT as ENSEMBLE_FORMAT, Ensemble

    mf = load_model(path)
    if mf.metadata.get("kind") == ENSEMBLE_FORMAT:
        return Ensemble.from_model_file(mf, path)
    return _loaded_model(mf, path)


@dataclass
class PredictResult:
    labels: np.ndarray
    probabilities: np.ndarray
    error: float | None
    submission: Path | None
    members: int | None = None  # an ensemble's size; None for a single model
    vote: str | None = None
    output: Path | None = None  # the predictions file (row, label, p_<class>...; regression: row, <target>...)
    values: np.ndarray | None = None  # a regression model's (or ensemble's) predictions, in the targets' units
    rmse: float | None = None  # against the file's targets, when it has them


def predict_file(model_path, input_path, *, format: str | None = None, submission=None,
                 mc_samples: int = 0, vote: str | None = None, output=None, tta: str | None = None) -> PredictResult:
    """Predict every row of ``input_path`` with a model or an ensemble file.

    Writes a Kaggle submission (``submission``) and a predictions file with
    every class's probability (``output``: the ensemble's combined ones) when
    asked.  ``vote`` ('soft' or 'hard') overrides an ensemble's own voting
    rule; a single model has no vote to override.  ``tta`` ('flip'): see
    :meth:`LoadedModel.predict_proba` (single image models).
    """
    from descend.train.ensemble_model import VOTES, Ensemble
    from descend.reports.predictions import write_predictions
    from descend.reports.submission import write_submission

    if vote is not None and vote not in VOTES:
        raise ConfigError(f"`vote` must be one of {VOTES}. Received: vote={vote!r}")
    model = load_classifier(model_path)
    ensemble = isinstance(model, Ensemble)
    tta = None if tta in (None, "none") else tta
    if tta is not None and (ensemble or getattr(model, "task", "classification") == "regression"):
        raise ConfigError(f"`tta` applies to a single classification model; {Path(model_path).name} holds "
                          f"{'an ensemble' if ensemble else 'a regression model'}. Received: tta={tta!r}")
    if getattr(model, "task", "classification") == "regression":
        return _predict_values(model, model_path, input_path, format=format, submission=submission,
                               mc_samples=mc_samples, vote=vote, output=output, ensemble=ensemble)
    if vote is not None and not ensemble:
        raise ConfigError(f"`vote` applies to ensemble files; {Path(model_path).name} holds a single model. "
                          f"Received: vote={vote!r}")
    X, y = read_inputs(input_path, format=format, classes=model.classes)
    if X.shape[1] != model.n_features:
        kind = "ensemble" if ensemble else "model"
        raise InputError(f"{input_path}: rows have {X.shape[1]} features; the {kind} "
                         f"{Path(model_path).name} expects {model.n_features}")
    if ensemble:
        vote = vote or model.vote
        proba = model.predict_proba(X, mc_samples=mc_samples, vote=vote)
    else:
        proba = model.predict_proba(X, mc_samples=mc_samples, tta=tta)
    labels = np.argmax(proba, axis=1)
    error = float(np.mean(labels != y)) if y is not None else None
    written = write_submission(submission, labels, list(model.classes)) if submission else None
    table = write_predictions(output, labels, proba, model.classes) if output else None
    return PredictResult(labels, proba, error, written, len(model.members) if ensemble else None,
                         vote if ensemble else None, table)


def _predict_values(model, model_path, input_path, *, format, submission, mc_samples, vote, output, ensemble):
    """:func:`predict_file` for a regression model or ensemble: values, their RMSE against the file's targets."""
    from descend.reports.predictions import write_values

    name = Path(model_path).name
    if submission:
        raise ConfigError(f"`submission` writes a Kaggle digits submission (class labels); {name} is a regression "
                          f"model. Use --output for its values. Received: submission={str(submission)!r}")
    for option, value in (("vote", vote), ("mc_samples", mc_samples)):
        if value:
            raise ConfigError(f"`{option}` applies to class probabilities; {name} is a regression model. "
                              f"Received: {option}={value!r}")
    X, y = read_regression_inputs(input_path, model.targets, format=format)
    if X.shape[1] != model.n_features:
        raise InputError(f"{input_path}: rows have {X.shape[1]} features; the "
                         f"{'ensemble' if ensemble else 'model'} {name} expects {model.n_features}")
    values = model.predict_values(X)
    rmse = float(np.sqrt(np.mean((values - y) ** 2))) if y is not None else None
    table = write_values(output, values, model.targets) if output else None
    return PredictResult(np.zeros(0, np.int64), np.zeros((0, 0)), None, None,
                         len(model.members) if ensemble else None, None, table, values, rmse)
