"""The frozen configuration of a training run: everything needed to rerun it.

``config.json`` in a run directory is ``TrainConfig.to_dict()``; ``--resume``
rebuilds the run from it.  Validation happens here, once, with messages that
name the option and quote the value received.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from descend.errors import ConfigError, require
from descend.model.augment import Augmentation
from descend.model.layers import INITS
from descend.optim import OPTIMIZERS, ScheduleSpec

EARLY_STOPPING = ("none", "patience", "geometric")
MONITORS = ("valid_error", "valid_cost", "valid_rmse")
TASKS = ("classification", "regression")
# What each monitor watches per task: valid_error (the default) is the task's error measure, RMSE for regression.
TASK_MONITORS = {"classification": {"valid_error": "valid_error", "valid_cost": "valid_cost"},
                 "regression": {"valid_error": "valid_rmse", "valid_rmse": "valid_rmse", "valid_cost": "valid_cost"}}
# Options that only mean something for class labels: their value under regression must be the one listed.
CLASSIFICATION_ONLY = {"balance": "none"}
NORMALIZATIONS = ("scale", "standardize", "none")
BALANCING = ("none", "oversample")
# How a step's rows are drawn: "shuffle" walks a fresh permutation each epoch (every row once per epoch);
# "replacement" draws every batch's rows independently, with replacement, so a batch may exceed the rows.
SAMPLINGS = ("shuffle", "replacement")


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``descend train``; defaults are the default recipe.

    ``batch_size=0`` means full-batch gradient descent, ``1`` stochastic.
    ``eval_every=0`` evaluates (and checkpoints) once per epoch, otherwise
    every that many optimizer steps.  Early-stopping ``patience`` counts
    evaluations.  ``validation=0`` trains on every training row, without
    validation, early stopping or choosing the best evaluation.  ``pca=K``
    feeds the network the first ``K`` principal components of the normalized
    inputs, each standardized (fitted on the training rows, stored with the
    normalization in the model file).  ``layers`` (the ``--layers`` text:
    convolution, pooling, dense...) replaces the ``hidden`` / ``dropout_keep``
    / ``batchnorm`` shorthand of a multilayer perceptron.  ``augment`` (the
    ``--augment`` text, e.g. ``shift:2,rotate:10``) transforms training rows,
    which must be images, inside each step; it is kept in canonical form.
    ``clip_norm=C``
    scales each step's gradient (all parameters together) to global L2 norm at
    most ``C`` before the optimizer's rule sees it (0 = off).
    ``label_smoothing=E`` trains on the targets ``(1-E)*onehot + E/K``; the
    validation and test costs stay the plain cross-entropy, so they compare
    across runs with and without it.
    ``init`` (``he``, ``glorot`` or ``normal``: N(0, 0.1^2) for weights and
    biases) replaces the initialisation that follows the activation (None).
    ``sampling="replacement"`` draws each batch's rows with replacement
    (``batch_size`` may then exceed the training rows; an epoch is
    ``max(1, rows // batch_size)`` steps) instead of a permutation per epoch.
    """

    dataset: str = "mnist"
    format: str | None = None
    hidden: tuple[int, ...] = (500, 300)
    layers: str | None = None
    activation: str = "relu"
    init: str | None = None
    optimizer: str = "nesterov"
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 100
    sampling: str = "shuffle"
    epochs: int = 20
    schedule: str = "exponential:0.1"
    schedule_unit: str = "epoch"
    l1: float = 0.0
    l2: float = 0.0
    dropout_keep: tuple[float, ...] = ()
    batchnorm: bool = False
    max_norm: float = 0.0
    augment: str | None = None
    clip_norm: float = 0.0
    label_smoothing: float = 0.0
    balance: str = "none"
    engine: str = "auto"
    device: str = "auto"
    dtype: str = "float32"
    threads: int | None = None
    seed: int = 0
    normalize: str = "scale"
    pca: int | None = None
    validation: float | None = None
    eval_every: int = 0
    early_stopping: str = "patience"
    patience: int = 10
    patience_increase: float = 2.0
    improvement_threshold: float = 0.995
    monitor: str = "valid_error"
    name: str | None = None
    recipe: str | None = None
    optimizer_options: dict = field(default_factory=dict)
    task: str | None = None
    target: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "dropout_keep", tuple(float(p) for p in self.dropout_keep))
        if self.layers is not None:
            from descend.model.parse import spatial_layers

            object.__setattr__(self, "layers", str(self.layers))
            spatial = spatial_layers(self.layers)  # validates every token
            require(not self.dropout_keep and not self.batchnorm, "layers",
                    "no dropout_keep or batchnorm beside it (write drop:KEEP and bn tokens instead)", self.layers)
            if spatial and self.max_norm:
                raise ConfigError(f"`max_norm` caps dense layers' weights only; it cannot be combined with "
                                  f"convolution layers yet. Received: max_norm={self.max_norm}, layers={self.layers!r}")
            if spatial and self.pca:
                raise ConfigError(f"`pca` cannot feed convolution or pooling layers: principal components have "
                                  f"no image shape. Received: pca={self.pca}, layers={self.layers!r}")
        require(len(self.dropout_keep) in (0, len(self.hidden) + 1), "dropout_keep",
                f"{len(self.hidden) + 1} keep probabilities for hidden={self.hidden} (input, then each hidden layer)",
                self.dropout_keep)
        require(all(0.0 < p <= 1.0 for p in self.dropout_keep), "dropout_keep", "probabilities in (0, 1]",
                self.dropout_keep)
        require(self.max_norm >= 0, "max_norm", ">= 0 (0 = off)", self.max_norm)
        augmentation = Augmentation.parse(self.augment)  # validates every token
        object.__setattr__(self, "augment", augmentation.text if augmentation else None)
        if augmentation and self.pca:
            raise ConfigError(f"`augment` transforms images; principal components have no image shape. "
                              f"Received: augment={self.augment!r}, pca={self.pca}")
        require(math.isfinite(self.clip_norm) and self.clip_norm >= 0, "clip_norm", "a finite number >= 0 (0 = off)",
                self.clip_norm)
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1) (0 = off)", self.label_smoothing)
        require(self.balance in BALANCING, "balance", f"one of {BALANCING}", self.balance)
        require(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)
        require(self.batch_size >= 0, "batch_size", ">= 0 (0 = full batch)", self.batch_size)
        require(self.sampling in SAMPLINGS, "sampling", f"one of {SAMPLINGS}", self.sampling)
        require(self.init is None or self.init in INITS, "init", f"one of {INITS} (or None: the activation's)",
                self.init)
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(self.l1 >= 0, "l1", ">= 0", self.l1)
        require(self.l2 >= 0, "l2", ">= 0", self.l2)
        require(self.eval_every >= 0, "eval_every", ">= 0 (0 = every epoch)", self.eval_every)
        require(self.early_stopping in EARLY_STOPPING, "early_stopping", f"one of {EARLY_STOPPING}", self.early_stopping)
        require(self.patience >= 1, "patience", ">= 1", self.patience)
        require(self.patience_increase >= 1, "patience_increase", ">= 1", self.patience_increase)
        require(0 < self.improvement_threshold <= 1, "improvement_threshold", "in (0, 1]", self.improvement_threshold)
        require(self.monitor in MONITORS, "monitor", f"one of {MONITORS}", self.monitor)
        require(self.normalize in NORMALIZATIONS, "normalize", f"one of {NORMALIZATIONS}", self.normalize)
        require(self.pca is None or (isinstance(self.pca, int) and not isinstance(self.pca, bool) and self.pca >= 1),
                "pca", "a positive integer (number of principal components) or None", self.pca)
        require(self.threads is None or self.threads >= 1, "threads", ">= 1", self.threads)
        if self.validation is not None:
            require(self.validation >= 0, "validation", ">= 0 (a fraction < 1, a row count, or 0 for none)",
                    self.validation)
        ScheduleSpec.parse(self.schedule, self.schedule_unit)  # validates
        object.__setattr__(self, "target", tuple(str(t) for t in self.target))
        require(self.task is None or self.task in TASKS, "task", f"one of {TASKS} (or None: decided by the data)",
                self.task)
        if self.task is not None:
            check_task_options(self, self.task)

    def task_monitor(self, task: str) -> str:
        return monitor_for(self.monitor, task)

    @property
    def schedule_spec(self) -> ScheduleSpec:
        return ScheduleSpec.parse(self.schedule, self.schedule_unit)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target"] = list(self.target)
        d["hidden"] = list(self.hidden)
        d["dropout_keep"] = list(self.dropout_keep)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config has unknown keys {unknown}")
        return cls(**{**d, "hidden": tuple(d.get("hidden", ())), "dropout_keep": tuple(d.get("dropout_keep", ())),
                      "target": tuple(d.get("target", ()))})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def monitor_for(monitor: str, task: str) -> str:
    """The history column ``monitor`` watches for ``task`` (see :data:`TASK_MONITORS`)."""
    known = TASK_MONITORS[task]
    if monitor not in known:
        raise ConfigError(f"`monitor` {monitor!r} is for regression; a {task} run monitors one of "
                          f"{tuple(known)}. Received: monitor={monitor!r}")
    return known[monitor]


def check_task_options(cfg, task: str) -> None:
    """One line for an option ``task`` cannot honour (a classification-only option under regression...)."""
    monitor_for(cfg.monitor, task)
    if task == "regression":
        for name, value in CLASSIFICATION_ONLY.items():
            if getattr(cfg, name) != value:
                raise ConfigError(f"`{name}` applies to class labels only; a regression run needs {name}="
                                  f"{value!r}. Received: {name}={getattr(cfg, name)!r}")
