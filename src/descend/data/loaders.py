"""``load``: one entry point from a dataset name or a file to train/validation/test splits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from descend.data.builtin import BUILTIN, load_builtin
from descend.data.csvfiles import read_csv, read_csv_targets, read_fer2013, read_kaggle
from descend.data.dataset import Dataset, Split, Table
from descend.data.download import fetch
from descend.data.files import check_file, head
from descend.data.idx import find_idx_files, load_idx_files, looks_like_idx
from descend.data.npz import read_npz
from descend.data.registry import REGISTRY
from descend.data.splits import carve, validation_count
from descend.data.targets import TASKS, as_targets, continuous
from descend.errors import ConfigError, InputError

FORMATS = ("idx", "kaggle", "fer2013", "csv", "npz")
NAMED_VALIDATION = 10_000
FILE_VALIDATION = 0.1


def sniff(path: Path) -> str:
    """Guess a file's format from its first bytes and header, never from its name alone."""
    if path.is_dir():
        return "idx"
    check_file(path)
    first = head(path, 1 << 16)
    if not first.strip():
        raise InputError(f"{path}: file is empty")
    if first.startswith(b"PK\x03\x04") or path.suffix == ".npz":
        return "npz"
    if looks_like_idx(first):
        return "idx"
    line = first.split(b"\n", 1)[0]
    if b"\0" not in line:
        try:
            fields = [f.strip().strip('"').strip().lower()
                      for f in line.decode("utf-8-sig").split(",")]
        except UnicodeDecodeError:
            fields = []
        if fields[:2] == ["label", "pixel0"] or fields[:1] == ["pixel0"]:
            return "kaggle"
        if "emotion" in fields and "pixels" in fields:
            return "fer2013"
        if len(fields) > 1:
            return "csv"
    raise InputError(f"{path}: unknown format: not IDX, NPZ or CSV with a header; "
                     f"give the format explicitly (one of {', '.join(FORMATS)})")


def encode_labels(parts: Sequence[tuple[np.ndarray, Path]], classes: tuple[str, ...] | None = None
                  ) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Class ids for raw labels of train (first) and test files, and the class names.

    Numbers that are exactly 0..k-1 are ids already; any other numbers or text
    map to their sorted unique values, whose names ``classes`` keeps, so a
    prediction always translates back to the original label.  Text labels of a
    test file must occur in training, else predictions could never match them.
    """
    arrays = [y for y, _ in parts]
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        out = []
        for y, path in parts:
            if y.dtype.kind == "U":
                known = np.isin(y, classes)
                if not known.all():
                    row = int(np.flatnonzero(~known)[0])
                    raise InputError(f"{path}: row {row + 1}: label {str(y[row])!r} is not one "
                                     f"of the classes")
                out.append(np.array([index[v] for v in y], dtype=np.int64))
                continue
            bad = (y % 1 != 0) | (y < 0) | (y >= len(classes))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InputError(f"{path}: row {row + 1}: label {y[row]} out of range "
                                 f"[0, {len(classes) - 1}]")
            out.append(y.astype(np.int64))
        return out, classes
    kinds = {y.dtype.kind == "U" for y in arrays}
    if kinds == {True}:
        try:
            arrays = [y.astype(np.float64) for y in arrays]
        except ValueError:
            return _encode_text(parts)
    elif len(kinds) > 1:
        return _encode_text([(y.astype(str), p) for y, p in parts])
    uniq = np.unique(np.concatenate(arrays))
    if np.array_equal(uniq, np.arange(len(uniq))):
        return [y.astype(np.int64) for y in arrays], tuple(str(i) for i in range(len(uniq)))
    return ([np.searchsorted(uniq, y).astype(np.int64) for y in arrays],
            tuple(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in uniq))


def _encode_text(parts: Sequence[tuple[np.ndarray, Path]]):
    uniq = np.unique(parts[0][0])
    out = []
    for y, path in parts:
        ids = np.searchsorted(uniq, y)
        missing = (ids >= len(uniq)) | (uniq[np.minimum(ids, len(uniq) - 1)] != y)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise InputError(f"{path}: row {row + 1}: label {str(y[row])!r} does not occur in "
                             f"the training data")
        out.append(ids.astype(np.int64))
    return out, tuple(str(c) for c in uniq)


def _split(X: np.ndarray, y: np.ndarray | None, validation, default, seed: int):
    """(train, validation or None), validation carved per class from these rows."""
    count = validation_count(default if validation is None else validation, len(X))
    if count == 0:
        return Split(X, y), None
    tr, va = carve(y, len(X), count, seed)
    return (Split(X[tr], None if y is None else y[tr]),
            Split(X[va], None if y is None else y[va]))


def _assemble(name: str, source: str, train: Table, train_path: Path, test: Table | None,
              test_path: Path | None, validation, default, seed: int) -> Dataset:
    """Labels encoded across files, validation carved; the test set is never touched."""
    if test is not None and test.X.shape[1] != train.X.shape[1]:
        raise InputError(f"{test_path}: {test.X.shape[1]} features per row, but the training "
                         f"data {train_path} has {train.X.shape[1]}")
    labeled = [(t.labels, p) for t, p in ((train, train_path), (test, test_path))
               if t is not None and t.labels is not None]
    ids, classes = encode_labels(labeled, train.classes) if labeled else ([], train.classes)
    found = iter(ids)
    y_train = next(found) if train.labels is not None else None
    y_test = next(found) if test is not None and test.labels is not None else None
    if y_train is None:
        default = 0  # nothing to validate against
    tr, va = _split(train.X, y_train, validation, default, seed)
    te = Split(test.X, y_test) if test is not None else None
    return Dataset(name, tr, va, te, classes or (), train.image_shape, source)


def _fer_dataset(name: str, source: str, table: Table, validation, seed: int,
                 test: Table | None = None) -> Dataset:
    """Official FER2013 splits: Training / PublicTest / PrivateTest.

    PublicTest is the validation set unless ``validation`` is given, in which
    case it is carved from Training (PublicTest is then left out, so a carved
    run never trains on the official validation rows).
    """
    usage = table.usage if table.usage is not None else np.zeros(len(table.X), np.int8)
    X, y = table.X, table.labels
    rows = [np.flatnonzero(usage == k) for k in range(3)]
    if validation is None and rows[1].size:
        tr, va = Split(X[rows[0]], y[rows[0]]), Split(X[rows[1]], y[rows[1]])
    else:
        tr, va = _split(X[rows[0]], y[rows[0]], validation, FILE_VALIDATION, seed)
    te = Split(X[rows[2]], y[rows[2]]) if rows[2].size else None
    if test is not None:
        te = Split(test.X, test.labels)
    return Dataset(name, tr, va, te, table.classes, table.image_shape, source)


def _load_named(name: str, validation, seed: int) -> Dataset:
    spec = REGISTRY[name]
    paths = [fetch(name, file, sha, spec.urls) for file, sha in spec.files.items()]
    source = str(paths[0].parent)
    if spec.format == "fer2013":
        return _fer_dataset(name, source, read_fer2013(paths[0]), validation, seed)
    k = len(spec.classes)
    X, y, shape = load_idx_files(paths[0], paths[1], k)
    Xt, yt, _ = load_idx_files(paths[2], paths[3], k)
    return _assemble(name, source, Table(X, y, spec.classes, shape), paths[0],
                     Table(Xt, yt, spec.classes, shape), paths[2], validation,
                     NAMED_VALIDATION, seed)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".npz", ".npy"):
        name = name.removesuffix(suffix)
    return name or path.resolve().name


def _read(path: Path, fmt: str, label_column: str) -> tuple[Table, Table | None, Path | None]:
    """(train table, test table found inside or beside it, that test path)."""
    if fmt == "npz":
        train, test = read_npz(path)
        return train, test, path if test is not None else None
    if fmt == "idx":
        (images, labels), test_pair = find_idx_files(path)
        X, y, shape = load_idx_files(images, labels)
        test = None
        if test_pair is not None:
            Xt, yt, _ = load_idx_files(*test_pair)
            test = Table(Xt, yt, None, shape)
        return Table(X, y, None, shape), test, test_pair[0] if test_pair else None
    if fmt == "kaggle":
        train = read_kaggle(path)
        if train.labels is not None and path.name.startswith("train"):
            for name in ("test.csv", "test.csv.gz"):
                beside = path.with_name(name)
                if beside.is_file():
                    return train, read_kaggle(beside), beside
        return train, None, None
    if fmt == "fer2013":
        return read_fer2013(path), None, None
    return read_csv(path, label_column), None, None


def _require_labels(path: Path, fmt: str, table: Table) -> None:
    if table.labels is None:
        hint = (": this looks like a Kaggle test file, which is for `descend predict`"
                if fmt == "kaggle" else "")
        raise InputError(f"{path}: no label column, so nothing to train on{hint}")


def _require_two_classes(path: Path, ds: Dataset) -> None:
    """One class leaves nothing to learn (every error would read 0%)."""
    labeled = [s.y for s in (ds.train, ds.validation) if s is not None]
    seen = np.unique(np.concatenate(labeled))
    if seen.size == 0:
        raise InputError(f"{path}: no training rows")
    if seen.size == 1:
        raise InputError(f"{path}: every label is {ds.classes[seen[0]]!r}: training needs "
                         f"at least two classes")


def _regression_table(path: Path, fmt: str, table: Table, names: tuple[str, ...]) -> Table:
    """``table`` with its labels as float regression targets (rows x targets)."""
    if table.labels is None:
        raise InputError(f"{path}: no target values, so nothing to train on")
    if table.labels.dtype.kind == "U" and fmt == "npz":
        raise InputError(f"{path}: y holds text labels ({str(table.labels[0])!r}...); regression needs numbers "
                         "(text labels are classes: --task classification)")
    return Table(table.X, as_targets(path, table.labels, names), None, table.image_shape)


def _target_names(fmt: str, targets: tuple[str, ...], table: Table) -> tuple[str, ...]:
    if targets:
        return targets
    width = 1 if table.labels is None or table.labels.ndim == 1 else table.labels.shape[1]
    return ("y",) if width == 1 else tuple(f"y{j}" for j in range(width))


def _read_task(path: Path, fmt: str, label_column: str, targets: tuple[str, ...], task: str | None):
    """``(table, regression?)`` of a training or test file under the task rule."""
    if task not in (None, *TASKS):
        raise ConfigError(f"`task` must be one of {', '.join(TASKS)} (or None: decided by the data). "
                          f"Received: task={task!r}")
    if targets and fmt != "csv":
        raise ConfigError(f"`target` names columns of a CSV file; {path} is {fmt} (an NPZ's targets are its y). "
                          f"Received: target={','.join(targets)!r}")
    if len(targets) > 1 and task == "classification":
        raise ConfigError(f"classification takes one label column; several targets are regression. Received: "
                          f"target={','.join(targets)!r}, task='classification'")
    if task == "regression" and fmt not in ("csv", "npz"):
        raise ConfigError(f"regression needs numeric targets: a CSV with --target COLUMN or an NPZ with numeric "
                          f"y; {path} is {fmt} (class labels only)")
    if fmt == "csv" and (task == "regression" or len(targets) > 1):
        return read_csv_targets(path, targets or (label_column,)), True
    table, test_table, test_path = _read(path, fmt, targets[0] if targets else label_column)
    regression = task == "regression" or (
        task is None and table.labels is not None and (fmt == "npz" or targets) and continuous(table.labels))
    if fmt == "npz" and not regression and table.labels is not None and table.labels.ndim == 2:
        raise InputError(f"{path}: y is 2-D {table.labels.shape}: several targets are regression, not classes")
    if regression and fmt == "npz":
        names = _target_names(fmt, targets, table)
        table = _regression_table(path, fmt, table, names)
        if test_table is not None:
            test_table = _regression_table(path, fmt, test_table, names) if test_table.labels is not None \
                else test_table
    elif regression:
        table = _regression_table(path, fmt, table, _target_names(fmt, targets, table))
    return (table, test_table, test_path), regression


def _assemble_regression(name: str, source: str, train: Table, train_path: Path, test: Table | None,
                         test_path: Path | None, validation, seed: int, names: tuple[str, ...]) -> Dataset:
    """Regression splits: validation rows drawn uniformly (there are no classes to stratify by)."""
    if test is not None and test.X.shape[1] != train.X.shape[1]:
        raise InputError(f"{test_path}: {test.X.shape[1]} features per row, but the training "
                         f"data {train_path} has {train.X.shape[1]}")
    if len(train.X) < 2:
        raise InputError(f"{train_path}: {len(train.X)} training row(s): regression needs at least two")
    y = train.labels
    count = validation_count(FILE_VALIDATION if validation is None else validation, len(train.X))
    tr, va = carve(None, len(train.X), count, seed)
    te = Split(test.X, test.labels) if test is not None else None
    return Dataset(name, Split(train.X[tr], y[tr]), Split(train.X[va], y[va]) if count else None, te, (),
                   train.image_shape, source, targets=names)


def load(source: str | os.PathLike, *, format: str | None = None, label_column: str = "label",
         validation: int | float | None = None, seed: int = 0,
         test: str | os.PathLike | None = None, require_labels: bool = True,
         target: Sequence[str] = (), task: str | None = None) -> Dataset:
    """Load a named dataset (``mnist``, ``fashion-mnist``, ``fer2013``) or a file.

    Files are recognised by content: IDX (a file or a directory in MNIST's
    layout), Kaggle digits CSV, FER2013 CSV, any CSV with a ``label_column``,
    NPZ with ``X`` and ``y``; gzip is undone transparently.  ``validation`` is
    a row count (int) or a fraction (float) carved per class from training
    rows with ``seed``; None means the default: 10000 for named MNIST-style
    datasets, FER2013's PublicTest rows, 10% otherwise.  ``test`` names a
    file with the official test rows; the test set is never used for carving.
    ``require_labels`` (what training needs) refuses a file without labels
    (Kaggle's ``test.csv``) or whose labels hold a single class; describing
    or projecting a file (``descend data info``, PCA) needs neither.

    ``target`` names a CSV's target column(s) (instead of ``label_column``);
    ``task`` is ``classification``, ``regression`` or None, decided by
    :data:`~descend.data.targets.TASK_RULE`.  Regression targets are float
    ``(rows, targets)`` and the dataset's ``targets`` holds their names.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"`format` must be one of {', '.join(FORMATS)}. "
                          f"Received: format={format!r}")
    target = tuple(target or ())
    if isinstance(source, str) and source in BUILTIN and test is None:
        if task == "classification":
            raise ConfigError(f"`task` must be 'regression' for dataset {source!r} (one target, y). "
                              f"Received: task={task!r}")
        if target not in ((), ("y",)):
            raise ConfigError(f"`target` must be y for dataset {source!r}. Received: target={','.join(target)!r}")
        return load_builtin(source, validation, seed)
    if isinstance(source, str) and source in REGISTRY and test is None:
        if task == "regression" or target:
            raise ConfigError(f"dataset {source!r} has class labels only; regression needs a CSV with "
                              "--target COLUMN or an NPZ with numeric y")
        return _load_named(source, validation, seed)
    path = Path(source).expanduser()
    if not path.exists():
        known = "" if os.sep in str(source) else f" (known datasets: {', '.join((*REGISTRY, *BUILTIN))})"
        raise InputError(f"{source}: file not found{known}")
    fmt = format or sniff(path)
    if target or task is not None:
        return _load_task(path, fmt, label_column, target, task, validation, seed, test)
    table, test_table, test_path = _read(path, fmt, label_column)
    if fmt == "npz" and table.labels is not None and continuous(table.labels):
        return _load_task(path, fmt, label_column, (), "regression", validation, seed, test)
    if require_labels:
        _require_labels(path, fmt, table)
    if test is not None:
        test_path = Path(test).expanduser()
        if not test_path.exists():
            raise InputError(f"{test}: file not found")
        test_table = _read(test_path, format or sniff(test_path), label_column)[0]
    name = _stem(path)
    sources = str(path) + (f", {test_path}" if test_path is not None and test_path != path else "")
    if fmt == "fer2013":
        ds = _fer_dataset(name, sources, table, validation, seed, test_table)
    else:
        ds = _assemble(name, sources, table, path, test_table, test_path, validation,
                       FILE_VALIDATION, seed)
    if require_labels:
        _require_two_classes(path, ds)
    return ds


def _load_task(path: Path, fmt: str, label_column: str, target: tuple[str, ...], task: str | None, validation,
               seed: int, test) -> Dataset:
    """:func:`load` of a file with an explicit task or target columns."""
    read, regression = _read_task(path, fmt, label_column, target, task)
    if not regression:
        table, test_table, test_path = read
        label = target[0] if target else label_column
        _require_labels(path, fmt, table)
        if test is not None:
            test_path = Path(test).expanduser()
            if not test_path.exists():
                raise InputError(f"{test}: file not found")
            test_table = _read(test_path, format_of(test_path, fmt), label)[0]
        sources = str(path) + (f", {test_path}" if test_path is not None and test_path != path else "")
        if fmt == "fer2013":
            ds = _fer_dataset(_stem(path), sources, table, validation, seed, test_table)
        else:
            ds = _assemble(_stem(path), sources, table, path, test_table, test_path, validation, FILE_VALIDATION,
                           seed)
        _require_two_classes(path, ds)
        return ds
    if isinstance(read, Table):  # a CSV read with its target columns
        table, test_table, test_path = read, None, None
    else:
        table, test_table, test_path = read
    names = _target_names(fmt, target, table) if fmt == "npz" else (target or (label_column,))
    if test is not None:
        test_path = Path(test).expanduser()
        if not test_path.exists():
            raise InputError(f"{test}: file not found")
        test_fmt = format_of(test_path, fmt)
        if test_fmt == "csv":
            test_table = read_csv_targets(test_path, names)
        else:
            (test_table, _, _), _ = _read_task(test_path, test_fmt, label_column, (), "regression")
    sources = str(path) + (f", {test_path}" if test_path is not None and test_path != path else "")
    return _assemble_regression(_stem(path), sources, table, path, test_table, test_path, validation, seed,
                                tuple(names))


def format_of(path: Path, fallback: str) -> str:
    """A test file's format: sniffed, the training file's when it cannot be told."""
    try:
        return sniff(path)
    except InputError:
        return fallback
