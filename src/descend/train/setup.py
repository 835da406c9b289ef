"""One place that turns a training configuration and its data into a run's starting point.

Every command that trains (train, compare, search, ensemble, bench) and the
scikit-learn estimator go through here, in two steps:

- :func:`prepare_data` (or :func:`prepare_rows` for rows already in hand):
  load and split the dataset, fit the normalization (and PCA) on the training
  rows only, oversample small classes when asked, and normalize every split;
- :func:`setup_run`: the network spec, the engine and its thread count, and
  the initial parameters and model state, all from the config's seed.

:func:`provenance` is what ``config.json`` records beside the config.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from dataclasses import dataclass

import numpy as np

from descend.data.preprocess import Normalizer
from descend.errors import ConfigError
from descend.model import MLP, init_params, init_state
from descend.train.config import TrainConfig


# --- data -----------------------------------------------------------------------------------------


def fit_normalizer(method: str, pca: int | None, X: np.ndarray) -> Normalizer:
    """The normalization fitted on training rows ``X``, followed by a ``pca``-component projection when asked."""
    normalizer = Normalizer(method).fit(X)
    if pca:
        from descend.pca.projection import fit_projection

        fit_projection(normalizer, X, pca)
    return normalizer


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


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Normalized NumPy splits ready for an engine; ``X_train`` holds the oversampled rows when asked.

    ``X_valid`` / ``X_test`` are None where the split is absent or unlabelled.
    ``dataset`` is the loaded :class:`~descend.data.Dataset` (None for rows
    handed to :func:`prepare_rows`).  ``image_shape`` is the rows' image
    shape when they have one (None after PCA, whose components are no image).
    """

    normalizer: Normalizer
    n_out: int
    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray | None = None
    y_valid: np.ndarray | None = None
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    dataset: object = None
    image_shape: tuple[int, ...] | None = None
    target_scaler: object = None  # regression: the training targets' standardization (y_* are standardized)

    @property
    def task(self) -> str:
        return "classification" if self.target_scaler is None else "regression"

    @property
    def target_std(self):
        """Per-target standard deviations that turn standardized errors back into the targets' units."""
        return None if self.target_scaler is None else self.target_scaler.std

    @property
    def n_in(self) -> int:
        """The network's input width: the number of features, or of principal components with ``pca``."""
        return int(self.normalizer.n_outputs)

    @property
    def n_train(self) -> int:
        return int(len(self.y_train))


def _labelled(split) -> bool:
    return split is not None and split.y is not None and len(split.y) > 0


def load_dataset(cfg: TrainConfig):
    """The dataset named by ``cfg``, split with ``cfg.validation`` (the dataset's default when None)."""
    from descend.data import load

    kwargs = {"seed": cfg.seed}
    if cfg.format:
        kwargs["format"] = cfg.format
    if cfg.validation is not None:
        kwargs["validation"] = int(cfg.validation) if cfg.validation >= 1 else cfg.validation
    if cfg.target or cfg.task is not None:
        kwargs.update(target=cfg.target, task=cfg.task)
    return load(cfg.dataset, **kwargs)


def prepare_rows(cfg: TrainConfig, X, y, n_out: int, X_valid=None, y_valid=None, X_test=None, y_test=None,
                 dataset=None, image_shape=None, task: str = "classification") -> PreparedData:
    """Fit the normalization on training rows ``X`` (before any oversampling), oversample, normalize all splits.

    ``image_shape`` ((height, width) or (height, width, channels)) is what
    convolution layers see each row as.  With ``task="regression"`` ``y`` are
    float targets (rows x targets), standardized with the training rows'
    statistics (kept in ``target_scaler``).
    """
    if task == "regression":
        from descend.data.targets import TargetScaler
        from descend.train.config import check_task_options

        check_task_options(cfg, task)
        scaler = TargetScaler.fit(y)
        z = lambda t: None if t is None else scaler.transform(np.reshape(t, (len(t), -1)), cfg.dtype)  # noqa: E731
        data = prepare_rows(cfg, X, np.zeros(len(y), np.int64), n_out, X_valid,
                            None if y_valid is None else np.zeros(len(y_valid), np.int64), X_test,
                            None if y_test is None else np.zeros(len(y_test), np.int64), dataset, image_shape)
        return dataclasses.replace(data, y_train=z(y), y_valid=z(y_valid) if data.y_valid is not None else None,
                                   y_test=z(y_test), target_scaler=scaler)
    normalizer = fit_normalizer(cfg.normalize, cfg.pca, X)
    rows = oversample(y, cfg.seed) if cfg.balance == "oversample" else slice(None)
    has_valid = y_valid is not None and len(y_valid) > 0
    return PreparedData(
        normalizer, int(n_out), normalizer.transform(X[rows]), y[rows],
        normalizer.transform(X_valid) if has_valid else None, y_valid if has_valid else None,
        normalizer.transform(X_test) if y_test is not None else None, y_test, dataset,
        None if cfg.pca else image_input_shape(image_shape))


def prepare_data(cfg: TrainConfig, dataset=None) -> PreparedData:
    """Load ``cfg``'s dataset (unless ``dataset`` is given), then :func:`prepare_rows` on its splits."""
    ds = dataset if dataset is not None else load_dataset(cfg)
    if ds.train.y is None:
        raise ConfigError(f"dataset {cfg.dataset!r} has no training labels")
    valid = ds.validation if _labelled(ds.validation) else None
    test = ds.test if _labelled(ds.test) else None
    task = getattr(ds, "task", "classification")
    if cfg.task is not None and cfg.task != task:
        raise ConfigError(f"`task` is {cfg.task!r} but dataset {cfg.dataset!r} holds {task} labels")
    return prepare_rows(cfg, ds.train.X, ds.train.y, ds.n_outputs if task == "regression" else len(ds.classes),
                        valid.X if valid else None, valid.y if valid else None,
                        test.X if test else None, test.y if test else None, dataset=ds,
                        image_shape=ds.image_shape, task=task)


# --- network, engine, initial state -----------------------------------------------------------------


def image_input_shape(image_shape) -> tuple[int, int, int] | None:
    """A dataset's image shape as a network input, (height, width, channels): grey images get one channel."""
    if not image_shape:
        return None
    shape = tuple(int(s) for s in image_shape)
    return (*shape, 1) if len(shape) == 2 else shape


def network_spec(cfg: TrainConfig, n_in: int | None = None, image_shape=None, task: str | None = None):
    """The network ``cfg`` describes, for rows of ``n_in`` features seen as ``image_shape`` when they are images.

    The multilayer-perceptron shorthand (``hidden``...) takes every size from
    the data later (see :func:`build_network`); a ``layers`` text needs the
    input's shape now: the image shape for convolution and pooling, else the
    feature count.
    """
    task = task or cfg.task or "classification"
    if cfg.layers is None:
        return MLP(hidden=cfg.hidden, activation=cfg.activation, dropout_keep=cfg.dropout_keep,
                   batchnorm=cfg.batchnorm, init=cfg.init, task=task)
    from descend.model.parse import parse_layers, spatial_layers

    shape = image_input_shape(image_shape)
    if spatial_layers(cfg.layers):
        if shape is None:
            arrays = cfg.dataset == "<array>"  # the scikit-learn estimator's rows
            source = "the rows have" if arrays else f"dataset {cfg.dataset!r} has"
            remedy = "pass image_shape=(height, width)" if arrays else \
                "use dense layers, or image data (IDX, a 3-D NPZ, MNIST, FER2013)"
            raise ConfigError(f"`layers` {cfg.layers!r} has convolution or pooling layers, but {source} no image "
                              f"shape (plain feature vectors); {remedy}")
    else:
        shape = None
    if shape is None:
        if n_in is None:
            raise ConfigError("`layers` needs the number of input features")
        shape = (int(n_in),)
    net = parse_layers(cfg.layers, shape, activation=cfg.activation)
    if cfg.init is not None:
        net = dataclasses.replace(net, layers=tuple(
            dataclasses.replace(layer, init_name=cfg.init) if hasattr(layer, "init_name") else layer
            for layer in net.layers))
    return net if task == net.task else dataclasses.replace(net, task=task)


def build_network(cfg: TrainConfig, n_in: int, n_out: int, image_shape=None, task: str | None = None):
    """``(spec, params, model_state)``: the network for ``n_in`` inputs (seen as ``image_shape`` by convolutions)
    and ``n_out`` classes, and its initial NumPy weights and state from ``cfg.seed`` in ``cfg.dtype``: the one
    place a network is built."""
    spec = network_spec(cfg, n_in, image_shape, task)
    params = init_params(spec, n_in, n_out, key=cfg.seed, dtype=cfg.dtype)
    return spec, params, init_state(spec, n_in, n_out, dtype=cfg.dtype)


def network_label(cfg: TrainConfig, spec) -> str:
    """How the progress line names the network: the ``layers`` text, or the hidden sizes and activation."""
    if cfg.layers is not None:
        return f"layers {cfg.layers}"
    bare = "linear regression" if spec.task == "regression" else "logistic regression"
    return f"{spec.hidden or bare} {cfg.activation}"


def macs_per_row(spec, n_in: int, n_out: int) -> int:
    """Multiply-adds of one row's forward pass (what decides whether a second thread pays off)."""
    if spec.image_input:
        return spec.resolve(n_in, n_out).macs()
    sizes = (int(n_in), *spec.hidden, int(n_out))
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def run_threads(cfg: TrainConfig, spec, n_in: int, n_out: int, n_train: int) -> int:
    """``cfg.threads``, else the engine's default for this network and batch size."""
    from descend.engines import default_threads

    if cfg.threads:
        return cfg.threads
    return default_threads(cfg.engine, min(cfg.batch_size or n_train, n_train), macs_per_row(spec, n_in, n_out))


def make_engine(cfg: TrainConfig, threads: int | None):
    """The engine ``cfg`` names, on its device and dtype, with ``threads`` compute threads."""
    from descend.engines import get_engine

    return get_engine(cfg.engine, device=cfg.device, dtype=cfg.dtype, threads=threads)


@dataclass(frozen=True, eq=False)
class RunSetup:
    """A run's starting point: network spec, engine (with its thread count), initial NumPy params and state."""

    spec: object
    engine: object
    threads: int | None
    params: dict
    model_state: dict


def setup_run(cfg: TrainConfig, n_in: int, n_out: int, n_train: int, *, threads: int | None = None,
              engine=None, image_shape=None, task: str | None = None) -> RunSetup:
    """Network, engine and initial state for training ``cfg`` on ``n_train`` rows of ``n_in`` inputs.

    ``image_shape`` is what convolution layers see each row as;
    ``threads`` overrides the thread rule; an ``engine`` already built (say,
    reused across the folds of a search) is used as is.  ``task`` (the data's:
    :attr:`PreparedData.task`) overrides ``cfg.task``.
    """
    spec, params, model_state = build_network(cfg, n_in, n_out, image_shape, task)
    if cfg.augment:
        from descend.model.augment import Augmentation

        Augmentation.parse(cfg.augment).bind(image_shape)  # rows without an image shape fail here, before training
    if engine is None:
        threads = threads or run_threads(cfg, spec, n_in, n_out, n_train)
        engine = make_engine(cfg, threads)
    else:
        threads = engine.threads
    return RunSetup(spec, engine, threads, params, model_state)


def versions() -> dict:
    """Versions of descend, NumPy and Python: what a rerun needs to reproduce a run."""
    import descend

    return {"descend": descend.__version__, "numpy": np.__version__, "python": platform.python_version()}


def provenance(cfg: TrainConfig, engine) -> dict:
    """What ``config.json`` records: the config, where it ran, the versions and the command line."""
    return {"config": cfg.to_dict(), "engine": engine.name, "device": engine.device, **versions(),
            "command": " ".join(sys.argv)}
