"""The in-memory form every loader produces, whatever the file format was."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Split:
    """Rows of one split: features ``X`` (n, d) and class ids ``y`` (n,).

    ``X`` keeps the file's dtype (uint8 for images) so that normalization is an
    explicit, recorded step fitted on training data only.  ``y`` is None when
    the file carries no labels (Kaggle's ``test.csv``).
    """

    X: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def class_counts(self, n_classes: int) -> np.ndarray | None:
        """Rows per class id; None for unlabeled rows."""
        return None if self.y is None else np.bincount(self.y, minlength=n_classes)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test splits plus what is needed to read predictions."""

    name: str
    train: Split
    validation: Split | None
    test: Split | None
    classes: tuple[str, ...]
    image_shape: tuple[int, int] | None
    source: str
    targets: tuple[str, ...] = ()  # regression: the target names (``y`` is then float, rows x targets)

    @property
    def task(self) -> str:
        return "regression" if self.targets else "classification"

    @property
    def n_outputs(self) -> int:
        """The network's output width: one unit per class, or per regression target."""
        return len(self.targets) if self.targets else len(self.classes)

    @property
    def n_features(self) -> int:
        return int(self.train.X.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def splits(self) -> dict[str, Split]:
        """The splits present, in train / validation / test order."""
        named = {"train": self.train, "validation": self.validation, "test": self.test}
        return {k: v for k, v in named.items() if v is not None}


@dataclass(frozen=True, eq=False)
class Table:
    """What a file reader returns, before splitting.

    ``labels`` are class ids when ``classes`` is known (fixed-schema formats),
    else the raw labels (text or numbers) for :func:`encode_labels`.  ``usage``
    is FER2013's official split per row (0 Training, 1 PublicTest, 2 PrivateTest).
    """

    X: np.ndarray
    labels: np.ndarray | None
    classes: tuple[str, ...] | None
    image_shape: tuple[int, int] | None
    usage: np.ndarray | None = None


def dataset_info(ds: Dataset) -> str:
    """A human-readable summary, so a user can check a file before training on it."""
    shape = "x".join(map(str, ds.image_shape)) if ds.image_shape else "none"
    lines = [
        f"dataset:     {ds.name}",
        f"source:      {ds.source}",
        (f"targets:     {len(ds.targets)} ({', '.join(ds.targets)}), regression" if ds.targets else
         f"classes:     {ds.n_classes} ({', '.join(ds.classes)})"),
        f"features:    {ds.n_features} (image shape {shape})",
    ]
    for name, split in ds.splits().items():
        X = split.X
        lo, hi = (X.min(), X.max()) if X.size else ("-", "-")
        lines.append(f"{name + ':':<12} {X.shape[0]} rows x {X.shape[1]} features, "
                     f"dtype {X.dtype}, min {lo}, max {hi}")
        counts = None if ds.targets else split.class_counts(ds.n_classes)
        if ds.targets and split.y is not None:
            lines.append(f"{'':<12} targets: " + ", ".join(
                f"{t} mean {m:.4g} std {sd:.4g}" for t, m, sd in zip(ds.targets, split.y.mean(0), split.y.std(0))))
        elif counts is None:
            lines.append(f"{'':<12} unlabeled")
        else:
            lines.append(f"{'':<12} per class: "
                         + ", ".join(f"{c} {k}" for c, k in zip(ds.classes, counts)))
    return "\n".join(lines)
