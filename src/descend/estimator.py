"""``descend.MLPClassifier`` and ``descend.MLPRegressor``: descend's training as scikit-learn estimators.

They work wherever scikit-learn expects a classifier or a regressor
(``Pipeline``, ``cross_val_score``, ``GridSearchCV``, ``clone``, pickling in
the user's own process) and pass scikit-learn's own estimator checks.
Underneath both is the same run setup and fit loop as ``descend train``
(:func:`descend.train.fit`, one evaluation per epoch, scikit-learn's stopping
rule as a callback); a warm start continues from the weights, optimizer state
and step and epoch counters, so ``partial_fit`` is exactly one more epoch with
the optimizer state (momentum, Adam moments, step count of a schedule)
carried over.  The two share one base class and differ only in their targets
(class indices and cross-entropy; standardized values and mean squared error)
and in what early stopping scores (accuracy; R²).

Differences from ``descend train`` worth knowing:

- Inputs are used as given: no 0-255 scaling or standardisation happens
  inside.  Put a ``StandardScaler`` (or any scaling you choose) in front, in a
  ``Pipeline``.  (``MLPRegressor`` does standardize its *targets*.)
- Stopping follows scikit-learn's ``MLPClassifier`` / ``MLPRegressor``: after
  each epoch the training loss (or, with ``early_stopping=True``, the accuracy
  or R² on a held-out ``validation_fraction``) must improve by ``tol`` at least
  once in every ``n_iter_no_change`` epochs; with early stopping the best
  weights are kept.
- An epoch is split into ``ceil(n / batch_size)`` batches of equal size
  ``n // n_batches``: at most ``n_batches - 1`` rows sit out an epoch (others
  every epoch, the order being reshuffled), none for full-batch training.
- Default engine ``numpy`` (deterministic, no compilation: right for the
  small data of a typical scikit-learn workflow); ``engine="auto"``, ``"jax"``,
  ``"torch"``... train on the named engine, prediction is always NumPy.
- ``dtype=None`` computes in float32 for float32 input and float64 otherwise.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError('descend.MLPClassifier and descend.MLPRegressor need scikit-learn: '
                      'pip install "descend[sklearn]"') from exc

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6
    def validate_data(estimator, X="no_validation", y="no_validation", **kwargs):
        return estimator._validate_data(X, y, **kwargs)

from descend.backend import numpy_ops
from descend.data.targets import TargetScaler
from descend.errors import DivergenceError, require
from descend.model import predict_logits
from descend.train.config import TrainConfig
from descend.train.inference import softmax
from descend.train.loop import Callback, FitState, batch_plan, equal_batch_layout, fit, fit_options, make_trainer
from descend.train.setup import build_network, make_engine, network_spec

__all__ = ["MLPClassifier", "MLPRegressor"]

PREDICT_CHUNK = 10_000


def _as_tuple(value, kind=int) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (kind(value),)
    return tuple(kind(v) for v in value)


def batch_layout(n: int, batch_size: int) -> tuple[int, int]:
    """``(rows per batch, batches per epoch)``: ``ceil(n / batch_size)`` equal batches.

    ``batch_size=0`` is full-batch gradient descent.
    """
    return equal_batch_layout(n, batch_size)


class _NoChange(Callback):
    """scikit-learn's stopping rule, and the per-epoch record of loss and held-out score.

    After each epoch the watched quantity (the training loss, or with early
    stopping the held-out score that ``score`` reads off the history row) must
    improve on its best by ``tol``; more than ``n_iter_no_change`` epochs in a
    row without that stop training (never in ``partial_fit``).
    """

    def __init__(self, tol: float, n_iter_no_change: int, score, stops: bool, verbose: bool):
        self.tol, self.n_iter_no_change, self.score, self.stops, self.verbose = (
            tol, n_iter_no_change, score, stops, verbose)
        self.losses, self.scores = [], []
        self.best_loss, self.best_score, self.stale = math.inf, -math.inf, 0
        self.converged = False

    def on_evaluation(self, row) -> bool:
        loss = row["train_cost"]
        self.losses.append(loss)
        if self.score is not None:
            score = self.score(row)
            self.scores.append(score)
            self.stale = self.stale + 1 if score < self.best_score + self.tol else 0
            self.best_score = max(self.best_score, score)
        else:
            self.stale = self.stale + 1 if loss > self.best_loss - self.tol else 0
        self.best_loss = min(self.best_loss, loss)
        if self.verbose:
            extra = f", validation score {self.scores[-1]:.4f}" if self.scores else ""
            print(f"epoch {round(row['epoch'])}: loss {loss:.6f}{extra}", file=sys.stderr, flush=True)
        self.converged = self.stops and self.stale > self.n_iter_no_change
        return self.converged


_PARAMETERS = """
    Parameters
    ----------
    hidden : tuple of int, default=(100,)
        Hidden layer sizes; ``()`` is {linear_model}.
    activation : {{"relu", "tanh", "sigmoid"}}, default="relu"
        Hidden-layer activation (He initialisation for ReLU, Glorot otherwise).
    init : {{"he", "glorot", "normal"}} or None, default=None
        Weight initialisation; None follows the activation (He-normal for
        ReLU, Glorot-uniform otherwise), ``"glorot"`` is scikit-learn's MLP
        initialisation, ``"normal"`` draws weights and biases from N(0, 0.1²).
    optimizer : str, default="adam"
        One of descend's optimizers: sgd, momentum, nesterov, adagrad, rmsprop,
        adam and their combinations (see ``descend.optim.OPTIMIZERS``).
    lr : float, default=0.001
        (Initial) learning rate.
    momentum : float, default=0.9
        Momentum of momentum / nesterov / ``+nesterov`` optimizers.
    batch_size : int, default=200
        Largest mini-batch; ``0`` means full batch, ``1`` stochastic.
    epochs : int, default=200
        Most passes over the data per ``fit`` (``partial_fit`` runs one).
    schedule : str, default="constant"
        ``constant | step:FACTOR:EVERY | exponential:K | inverse:K | plateau[:FACTOR[:PATIENCE]] |
        cosine[:WARMUP[:LR_MIN]]``; cosine decays over the epochs of one call (a warm start or a
        later ``partial_fit`` continues at LR_MIN).
    schedule_unit : {{"epoch", "step"}}, default="epoch"
        What ``t`` counts in the schedule.
    l1, l2 : float, default=0.0
        ``l1 * sum|W| + l2/2 * sum W**2`` over weight matrices (not biases).
    dropout_keep : tuple of float or None, default=None
        Keep probabilities of the input and of each hidden layer's output
        (``len(hidden) + 1`` values); None means no dropout.  Inference uses
        the weight-scaling rule (inverted dropout).
    batchnorm : bool, default=False
        Batch normalisation before each hidden activation.
    max_norm : float, default=0.0
        Cap on each unit's incoming weight norm (0 = off).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows ({split}) and stop when
        their {score} has not improved by ``tol`` for ``n_iter_no_change``
        epochs, keeping the best weights.  Without it the training loss is
        watched instead.  ``partial_fit`` never stops early.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    tol : float, default=1e-4
    engine : str, default="numpy"
        Training engine: numpy, jax, torch, tensorflow, pytensor or auto.
    device : {{"auto", "cpu", "gpu"}}, default="auto"
    dtype : {{None, "float32", "float64"}}, default=None
        Compute precision; None follows the input (float32 stays float32,
        anything else is float64).
    threads : int or None, default=None
        Compute threads of the engine (None: the library's default).  On a
        busy machine or for small data, ``threads=1`` is often much faster
        than a BLAS thread per core.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the batch order, dropout and the
        validation split.
    warm_start : bool, default=False
        ``fit`` continues from the previous weights and optimizer state
        (``loss_curve_`` and ``n_iter_`` keep counting) instead of starting over.
    verbose : bool, default=False
        Print the loss after each epoch (to stderr).
    layers : str or None, default=None
        The network as ``descend train --layers`` tokens instead of
        ``hidden`` (e.g. ``"conv:8:3,pool:2,dense:64"``): convolution,
        pooling, batch norm (``bn``), dropout (``drop:KEEP``) and dense
        layers; the output layer is added.  ``dropout_keep`` and
        ``batchnorm`` must then be unset.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)``: how each row
        of ``X`` (flattened row-major, channels last) is seen by convolution
        and pooling layers; required by them.
"""

_TRAINING_ATTRIBUTES = """    n_features_in_ : int
    feature_names_in_ : ndarray, only when X had string column names
    loss_curve_ : list of float
        Mean training loss ({loss} + penalties) of each epoch.
    n_iter_ : int
        Epochs run so far (all ``fit`` calls of a warm start, all ``partial_fit`` calls).
    t_ : int
        Optimizer steps taken so far.
    best_loss_ : float or None
        Lowest epoch loss seen (None with early stopping).
    validation_scores_ : list of float or None
        Held-out {score} of each epoch, with ``early_stopping=True``.
    best_validation_score_ : float or None
    spec_ : descend.model.Network
        The network description.
    params_ : dict of str to ndarray
        Weights, by descend's names (``dense0.W``, ``dense0.b``, ``bn0.gamma``...).
    model_state_ : dict of str to ndarray
        Batch-norm running statistics (empty without batch norm).
"""


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: options, validation, the fit loop, warm starts.

    A subclass says what its targets are (:meth:`_targets`: the array the
    engine trains on, after setting the fitted attributes that describe them)
    and how early stopping scores a history row (:meth:`_score_of`).
    """

    _task = None  # the network's task (None: classification, the library's default)

    def __init__(self, hidden=(100,), activation="relu", *, init=None, optimizer="adam", lr=0.001, momentum=0.9,
                 batch_size=200, epochs=200, schedule="constant", schedule_unit="epoch", l1=0.0, l2=0.0,
                 dropout_keep=None, batchnorm=False, max_norm=0.0, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, engine="numpy", device="auto",
                 dtype=None, threads=None, random_state=None, warm_start=False, verbose=False, layers=None,
                 image_shape=None):
        self.hidden = hidden
        self.activation = activation
        self.init = init
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.schedule = schedule
        self.schedule_unit = schedule_unit
        self.l1 = l1
        self.l2 = l2
        self.dropout_keep = dropout_keep
        self.batchnorm = batchnorm
        self.max_norm = max_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.engine = engine
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.layers = layers
        self.image_shape = image_shape

    def fit(self, X, y):
        """Train on ``(X, y)`` for up to ``epochs`` epochs; returns self.

        Starts from fresh weights unless ``warm_start`` is set and the
        estimator is already fitted.
        """
        return self._fit(X, y, incremental=False)

    # hooks of the subclasses -----------------------------------------------------
    def _validate(self, X, y, reset: bool):
        return validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32))

    def _targets(self, y, classes, first: bool, incremental: bool) -> np.ndarray:
        raise NotImplementedError

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _score_of(self, y_valid):
        """``row -> held-out score`` (higher is better) for the stopping rule, and the ``target_std`` that
        makes :func:`~descend.train.fit` keep the weights of the best such score."""
        raise NotImplementedError

    # internals ------------------------------------------------------------------
    def _network_outputs(self, X) -> np.ndarray:
        """The network's outputs (NumPy, inference mode) for the rows of ``X``, as a list of chunks."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        x = np.asarray(X, dtype=self._dtype)
        return [predict_logits(numpy_ops, self.spec_, self.params_, self.model_state_, x[i:i + PREDICT_CHUNK])
                for i in range(0, len(x), PREDICT_CHUNK)]

    def _config(self, seed: int, dtype: str) -> TrainConfig:
        """The options as a validated TrainConfig (bad values raise ValueError naming them)."""
        require(isinstance(self.batch_size, (int, np.integer)) and not isinstance(self.batch_size, bool),
                "batch_size", "an integer (0 = full batch)", self.batch_size)
        require(isinstance(self.epochs, (int, np.integer)) and not isinstance(self.epochs, bool),
                "epochs", "an integer >= 1", self.epochs)
        require(self.dtype in (None, "float32", "float64"), "dtype", "None, 'float32' or 'float64'", self.dtype)
        require(0.0 < self.validation_fraction < 1.0, "validation_fraction", "in (0, 1)", self.validation_fraction)
        require(self.n_iter_no_change >= 1, "n_iter_no_change", ">= 1", self.n_iter_no_change)
        require(self.tol >= 0, "tol", ">= 0", self.tol)
        cfg = TrainConfig(
            dataset="<array>", hidden=() if self.layers is not None else _as_tuple(self.hidden), layers=self.layers,
            activation=self.activation, init=self.init, optimizer=self.optimizer,
            lr=float(self.lr), momentum=float(self.momentum), batch_size=int(self.batch_size),
            epochs=int(self.epochs), schedule=self.schedule, schedule_unit=self.schedule_unit,
            l1=float(self.l1), l2=float(self.l2), dropout_keep=_as_tuple(self.dropout_keep, float),
            batchnorm=bool(self.batchnorm), max_norm=float(self.max_norm), engine=self.engine,
            device=self.device, dtype=dtype, threads=self.threads, seed=seed, normalize="none",
            early_stopping="none", task=self._task)
        if cfg.layers is None:
            network_spec(cfg)  # validates hidden and activation
        return cfg

    def _fit(self, X, y, *, classes=None, incremental: bool):
        fitted = hasattr(self, "params_")
        first = not fitted or (not incremental and not self.warm_start)
        X, y = self._validate(X, y, first)
        if first:
            self._dtype = self.dtype or ("float32" if X.dtype == np.float32 else "float64")
            self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        cfg = self._config(self._seed, self._dtype)
        targets = self._targets(y, classes, first, incremental)
        if first:
            self.spec_, self.params_, self.model_state_ = build_network(cfg, X.shape[1], self._n_outputs(),
                                                                        self._image_shape(X.shape[1]))
            self._opt_state, self._opt_key, self._plateau = None, None, None
            self.n_iter_, self.t_, self.loss_curve_ = 0, 0, []
            self.best_loss_ = None
            self.validation_scores_ = [] if self.early_stopping and not incremental else None
            self.best_validation_score_ = None
        else:
            spec = network_spec(cfg, X.shape[1], self._image_shape(X.shape[1]))
            if cfg.layers is not None and spec != self.spec_:
                raise ValueError(f"`layers` and `image_shape` cannot change while continuing training (fitted: "
                                 f"{list(self.spec_.layers)}); set warm_start=False to start over")
            if (spec.hidden, spec.batchnorm) != (self.spec_.hidden, self.spec_.batchnorm):
                raise ValueError(f"`hidden` and `batchnorm` cannot change while continuing training "
                                 f"(fitted: hidden={self.spec_.hidden}, batchnorm={self.spec_.batchnorm}; now "
                                 f"hidden={spec.hidden}, batchnorm={spec.batchnorm}); set warm_start=False to "
                                 f"start over")
            self.spec_ = spec

        early = bool(self.early_stopping) and not incremental
        X_valid = y_valid = score = target_std = None
        if early:
            X, targets, X_valid, y_valid = self._validation_split(X, targets)
            score, target_std = self._score_of(y_valid)
            if self.validation_scores_ is None:
                self.validation_scores_ = []
        options = fit_options(cfg, epochs=1 if incremental else cfg.epochs, equal_batches=True, restore_best=early)
        opt_key = (cfg.optimizer, cfg.momentum, cfg.max_norm > 0)
        engine, trainer = self._trainer(cfg, options, len(targets))
        start = FitState(self.params_, self.model_state_, self._opt_state if opt_key == self._opt_key else None,
                         self.t_, self.n_iter_, self._plateau)
        record = _NoChange(self.tol, self.n_iter_no_change, score, stops=not incremental, verbose=self.verbose)
        try:
            result = fit(engine, self.spec_, options, engine.asarray(X), engine.put_labels(targets),
                         engine.asarray(X_valid) if early else None, y_valid, start=start, trainer=trainer,
                         callbacks=[record], target_std=target_std)
        except DivergenceError as exc:
            self._keep(exc.result, record, opt_key, early, incremental)
            raise DivergenceError(
                f"training diverged: the loss became {exc.loss} in epoch {exc.result.final.epoch + 1} with "
                f"lr={cfg.lr:g}; the estimator keeps the weights from before that epoch. Try a smaller "
                f"lr, scaled inputs (e.g. StandardScaler) or optimizer='adam'") from None
        self._keep(result, record, opt_key, early, incremental)
        if not incremental and not record.converged:
            warnings.warn(f"descend {type(self).__name__}: stopped after epochs={cfg.epochs} before the "
                          f"{'validation score' if early else 'training loss'} stopped improving by tol={self.tol}; "
                          f"raise `epochs` to train longer.", ConvergenceWarning, stacklevel=3)
        return self

    def _keep(self, result, record: _NoChange, opt_key, early: bool, incremental: bool):
        """Store the training state (NumPy) as fitted attributes; the best validation weights with early stopping."""
        final = result.final
        self.params_ = {k: np.asarray(v) for k, v in result.params.items()}
        self.model_state_ = {k: np.asarray(v) for k, v in result.model_state.items()}
        self._opt_state, self._opt_key, self._plateau = final.opt_state, opt_key, final.plateau
        self.n_iter_, self.t_ = final.epoch, final.step
        self.loss_curve_ += record.losses
        if early:
            self.validation_scores_ += record.scores
            if record.scores:
                self.best_validation_score_ = record.best_score
        else:
            previous = self.best_loss_ if incremental and self.best_loss_ is not None else math.inf
            best = min(previous, record.best_loss)
            self.best_loss_ = None if math.isinf(best) else best

    def _image_shape(self, n_features: int):
        """``image_shape`` checked against the rows' width (None when not given)."""
        if self.image_shape is None:
            return None
        shape = _as_tuple(self.image_shape)
        require(len(shape) in (2, 3) and all(s > 0 for s in shape) and math.prod(shape) == n_features,
                "image_shape", f"(height, width[, channels]) of positive sizes holding the {n_features} features "
                               "of a row", self.image_shape)
        return shape

    def _trainer(self, cfg: TrainConfig, options, n_rows: int):
        """The engine and its trainer, reused across ``partial_fit`` calls while nothing they depend on changes.

        Compiled engines (JAX, TensorFlow, PyTensor) then compile once, not once per call.
        """
        batches = batch_plan(options, n_rows)[1]
        key = (cfg.engine, cfg.device, self._dtype, cfg.threads, self.spec_, cfg.optimizer, cfg.lr, cfg.momentum,
               cfg.schedule, cfg.schedule_unit, cfg.max_norm, cfg.l1, cfg.l2, batches)
        cache = getattr(self, "_trainer_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1], cache[2]
        engine = make_engine(cfg, cfg.threads)
        trainer = make_trainer(engine, self.spec_, options, batches)
        self._trainer_cache = (key, engine, trainer)
        return engine, trainer

    def __getstate__(self):
        # engines hold compiled functions and device handles: never pickled, rebuilt on the next fit
        state = super().__getstate__()
        state.pop("_trainer_cache", None)
        return state

    def _check_split(self, n: int) -> int:
        """The number of validation rows of ``n``; a ValueError when either side would be empty."""
        n_valid = int(round(self.validation_fraction * n))
        if n_valid < 1 or n - n_valid < 1:
            raise ValueError(f"early_stopping needs at least one training and one validation row: "
                             f"{n} samples with validation_fraction={self.validation_fraction}")
        return n_valid

    def _split_rng(self):
        return np.random.default_rng([self._seed, 0x7A11D])

    def _validation_split(self, X, targets):
        """A plain random split (the classifier stratifies)."""
        n = len(targets)
        valid = self._split_rng().permutation(n)[:self._check_split(n)]
        mask = np.zeros(n, dtype=bool)
        mask[valid] = True
        return X[~mask], targets[~mask], X[mask], targets[mask]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier trained by descend, with the scikit-learn API.
{parameters}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
{attributes}"""

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``(X, y)``, continuing from the current weights and optimizer state.

        ``classes`` (every label that will ever occur) is required on the first call.
        """
        return self._fit(X, y, classes=classes, incremental=True)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        out = [softmax(z) for z in self._network_outputs(X)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

    def predict(self, X):
        """The most probable label of each row (labels as given to ``fit``)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _score_of(self, y_valid):
        n_valid = len(y_valid)
        # the exact accuracy: the error is a count of wrong rows over n_valid
        return (lambda row: (n_valid - round(row["valid_error"] * n_valid)) / n_valid), None

    def _targets(self, y, classes, first: bool, incremental: bool) -> np.ndarray:
        """Set ``classes_`` on a first call and return ``y`` as class indices."""
        check_classification_targets(y)
        if first:
            if incremental:
                if classes is None:
                    raise ValueError("classes must be passed on the first call to partial_fit.")
                self.classes_ = unique_labels(np.asarray(classes))
            else:
                self.classes_ = unique_labels(y)
        elif incremental and classes is not None and not np.array_equal(unique_labels(np.asarray(classes)),
                                                                         self.classes_):
            raise ValueError(f"`classes={list(classes)!r}` is not the same as on the first call to "
                             f"partial_fit ({list(self.classes_)!r}).")
        elif not incremental and not np.array_equal(unique_labels(y), self.classes_):
            raise ValueError(f"warm_start can only be used where `y` has the same classes as in the previous "
                             f"call to fit. Previously got {self.classes_}, `y` has {unique_labels(y)}.")
        if not np.all(np.isin(y, self.classes_)):
            unknown = np.setdiff1d(unique_labels(y), self.classes_)
            raise ValueError(f"`y` has classes not in `self.classes_`: {unknown}; pass every class to the "
                             f"first partial_fit call with `classes=`.")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _validation_split(self, X, y_idx):
        """Stratified when every class has 2 rows or more, else a plain random split."""
        n = len(y_idx)
        n_valid = self._check_split(n)
        counts = np.bincount(y_idx)
        if not (np.all(counts[counts > 0] >= 2) and n_valid >= np.count_nonzero(counts)):
            return super()._validation_split(X, y_idx)
        rng = self._split_rng()
        # per-class share of the validation rows, largest remainders first
        share = counts * n_valid / n
        take = np.floor(share).astype(int)
        extra = np.argsort(-(share - take), kind="stable")[: n_valid - take.sum()]
        take[extra] += 1
        take = np.minimum(take, counts - 1)
        valid = np.concatenate([rng.permutation(np.flatnonzero(y_idx == c))[:k]
                                for c, k in enumerate(take) if k > 0])
        mask = np.zeros(n, dtype=bool)
        mask[valid] = True
        return X[~mask], y_idx[~mask], X[mask], y_idx[mask]


MLPClassifier.__doc__ = MLPClassifier.__doc__.format(
    parameters=_PARAMETERS.format(linear_model="multinomial logistic regression", split="stratified",
                                  score="accuracy"),
    attributes=_TRAINING_ATTRIBUTES.format(loss="cross-entropy", score="accuracy"))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor trained by descend, with the scikit-learn API.

    The output layer is linear, one unit per target, and the loss is the mean
    squared error on *standardized* targets: ``fit`` standardizes ``y`` with
    the mean and standard deviation of the rows of the first ``fit`` (or
    ``partial_fit``) call, stored as ``target_mean_`` and ``target_scale_``,
    and ``predict`` undoes it, so predictions are in ``y``'s units.  ``y`` may
    be 1-D (one target) or 2-D (several targets, ``n_outputs_`` columns);
    predictions have the same number of dimensions.  ``score`` is R²
    (averaged uniformly over the targets).

    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from descend import MLPRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), MLPRegressor(hidden=(32,), epochs=100, random_state=0))
    >>> model.fit(X, y).predict(X[:2]).shape
    (2,)

    Differences from scikit-learn's ``MLPRegressor``:

    - Targets are standardized inside (scikit-learn fits ``y`` as given): the
      counterpart is scikit-learn's regressor wrapped in
      ``TransformedTargetRegressor(regressor, transformer=StandardScaler())``.
      With ``partial_fit`` the first call's rows fix the standardization.
    - The loss is the mean squared error, not half of it, in standardized
      units: ``loss_curve_`` and ``best_loss_`` are twice scikit-learn's
      (wrapped as above), and so is a ``tol`` on the training loss.  ``l2``
      adds ``l2/2 * sum W**2`` to each batch's mean loss, where scikit-learn's
      ``alpha`` adds ``alpha/(2 * batch rows) * sum W**2`` to half of it:
      ``l2 = 2 * alpha / batch_size`` is the same objective.
    - Names: ``hidden`` (``hidden_layer_sizes``), ``optimizer``
      (``solver``; no ``lbfgs``), ``lr`` (``learning_rate_init``),
      ``epochs`` (``max_iter``), ``l2`` (``alpha``), ``schedule``
      (``learning_rate``), activation ``"sigmoid"`` (``"logistic"``; no
      ``"identity"``: ``hidden=()`` is linear regression).
    - Equal batches (see the module notes) rather than full batches and a
      smaller last one.
    - A 2-D ``y`` of one column gives 2-D predictions (scikit-learn's
      flattens them).
    - Early stopping scores the validation rows by R², as scikit-learn does,
      on a plain random split seeded by ``random_state``.
{parameters}
    Attributes
    ----------
    n_outputs_ : int
        Number of targets.
    target_mean_, target_scale_ : ndarray of shape (n_outputs_,)
        The standardization of the targets (a constant target gets scale 1).
{attributes}"""

    _task = "regression"

    def partial_fit(self, X, y):
        """One epoch over ``(X, y)``, continuing from the current weights and optimizer state.

        The first call's targets set the standardization kept for every later call.
        """
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predicted targets in ``y``'s units: shape ``(n,)`` when ``fit`` saw a 1-D ``y``, else ``(n, n_outputs_)``."""
        out = self._network_outputs(X)
        z = np.concatenate(out) if out else np.zeros((0, self.n_outputs_))
        values = TargetScaler(self.target_mean_, self.target_scale_).inverse(z)
        return values[:, 0] if self._y_1d else values

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def _validate(self, X, y, reset: bool):
        return validate_data(self, X, y, reset=reset, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=True)

    def _n_outputs(self) -> int:
        return self.n_outputs_

    def _targets(self, y, classes, first: bool, incremental: bool) -> np.ndarray:
        """Set the standardization on a first call and return ``y`` standardized, (rows, outputs)."""
        values = np.asarray(y, dtype=np.float64)
        table = values.reshape(len(values), -1)
        if first:
            scaler = TargetScaler.fit(table)
            self.n_outputs_, self.target_mean_, self.target_scale_ = table.shape[1], scaler.mean, scaler.std
        elif table.shape[1] != self.n_outputs_:
            raise ValueError(f"`y` has {table.shape[1]} target columns but the estimator was fitted on "
                             f"n_outputs_={self.n_outputs_}; set warm_start=False to start over")
        self._y_1d = values.ndim == 1
        return TargetScaler(self.target_mean_, self.target_scale_).transform(table, self._dtype)

    def _score_of(self, y_valid):
        # fit keeps the weights of the lowest validation RMSE; per-target scales of 1/sqrt(SST) make that
        # RMSE sqrt((1 - R²) / n_valid), so the weights kept are those of the best R², as in scikit-learn
        # (a constant validation target has R² 0 whatever the weights: scale 0).
        t = np.asarray(y_valid, dtype=np.float64)
        sst = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
        scale = np.where(sst > 0, 1.0 / np.sqrt(np.where(sst > 0, sst, 1.0)), 0.0)
        return (lambda row: row["valid_r2"]), scale


MLPRegressor.__doc__ = MLPRegressor.__doc__.format(
    parameters=_PARAMETERS.format(linear_model="linear regression", split="a random split", score="R²"),
    attributes=_TRAINING_ATTRIBUTES.format(loss="mean squared error of the standardized targets", score="R²"))
