"""Text tables: Kaggle digits, FER2013, and any CSV with a header and a label column.

Rows are read in chunks of a few MB and each chunk's numbers are parsed by one
NumPy call; only when that call fails is the chunk re-read field by field, to
name the line and column at fault.  FER2013 (300 MB of text) thus loads in
seconds and in a few hundred MB.  Fields are split on commas: quoted fields
containing commas are not supported (no image format needs them).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from descend.data.dataset import Table
from descend.data.files import open_binary
from descend.data.registry import DIGITS, FER2013
from descend.errors import InputError

CHUNK_BYTES = 1 << 24
KAGGLE_PIXELS = tuple(f"pixel{i}" for i in range(784))
FER_SIDE = 48
USAGE = {b"Training": 0, b"PublicTest": 1, b"PrivateTest": 2}
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def nonfinite(value: float) -> str:
    """How to name a bad float in a message: NaN, inf or -inf."""
    return "NaN" if np.isnan(value) else "inf" if value > 0 else "-inf"


def _is_number(text: str | bytes) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_header(path: Path) -> list[str]:
    """Column names of line 1, stripped of spaces and quotes."""
    try:
        with open_binary(path) as f:
            line = f.readline(1 << 20)
    except _GZIP_ERRORS as exc:
        raise InputError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    if not line.strip():
        raise InputError(f"{path}: file is empty")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: line 1: not a text file (not UTF-8)") from None
    return [f.strip().strip('"').strip() for f in text.rstrip("\r\n").split(",")]


def _require_header(path: Path, header: list[str], expected: str) -> None:
    if all(_is_number(h) for h in header if h):
        raise InputError(f"{path}: line 1: header missing: found data where column names "
                         f"were expected ({expected})")


def _chunks(path: Path, size: int = CHUNK_BYTES) -> Iterator[tuple[list[int], list[bytes]]]:
    """Non-blank data lines after the header, in chunks, with their 1-based line numbers."""
    found = False
    with open_binary(path) as f:
        lineno = 1
        try:
            f.readline()
            while block := f.readlines(size):
                numbers, lines = [], []
                for raw in block:
                    lineno += 1
                    line = raw.strip()
                    if line:
                        numbers.append(lineno)
                        lines.append(line)
                if lines:
                    found = True
                    yield numbers, lines
        except _GZIP_ERRORS as exc:
            raise InputError(f"{path}: corrupt or truncated gzip data after line {lineno} "
                             f"({exc})") from None
    if not found:
        raise InputError(f"{path}: no data rows after the header")


def _fast(blob: bytes, sep: str, dtype: type, count: int) -> np.ndarray | None:
    """One C-speed parse of a whole chunk; None if anything is off."""
    try:
        values = np.fromstring(blob, dtype=dtype, sep=sep)
    except ValueError:
        return None
    return values if values.size == count else None


def _slow(path: Path, numbers: list[int], rows: Iterator[list[bytes]],
          name: Callable[[int], str], integer: bool) -> np.ndarray:
    """Field-by-field parse of a chunk the fast path refused: finds the culprit."""
    convert = int if integer else float
    out: list = []
    for line, fields in zip(numbers, rows):
        for j, token in enumerate(fields):
            try:
                out.append(convert(token))
            except ValueError:
                text = token.strip().decode("utf-8", "replace")
                problem = ("empty value" if not text else
                           f"non-integer value {text!r}" if _is_number(text) else
                           f"non-numeric value {text!r}")
                raise InputError(f"{path}: line {line}: {problem} in {name(j)}") from None
    return np.array(out, dtype=np.int64 if integer else np.float64)


def _check_range(path: Path, values: np.ndarray, numbers: list[int], lo: int, hi: int,
                 what: Callable[[int, object], str]) -> None:
    """Name the first value of a (rows, cols) block outside [lo, hi]: ``what(col, value)``."""
    if values.size and (values.min() < lo or values.max() > hi):
        r, c = np.argwhere((values < lo) | (values > hi))[0]
        raise InputError(f"{path}: line {numbers[r]}: {what(c, values[r, c])} "
                         f"out of range [{lo}, {hi}]")


def _count_columns(path: Path, numbers: list[int], lines: list[bytes], n: int) -> None:
    for line, text in zip(numbers, lines):
        if text.count(b",") != n - 1:
            raise InputError(f"{path}: line {line}: expected {n} columns, "
                             f"found {text.count(b',') + 1}")


def _square(n: int) -> tuple[int, int] | None:
    side = math.isqrt(n)
    return (side, side) if side * side == n and n > 1 else None


def read_kaggle(path: Path) -> Table:
    """Kaggle digit recognizer: ``label,pixel0..pixel783`` (train) or ``pixel0..`` (test)."""
    header = read_header(path)
    _require_header(path, header, "label,pixel0,...,pixel783")
    labeled = header[:1] == ["label"]
    expected = (["label"] if labeled else []) + list(KAGGLE_PIXELS)
    if header != expected:
        raise InputError(f"{path}: line 1: not a Kaggle digits header: expected "
                         f"label,pixel0,...,pixel783 or pixel0,...,pixel783, found "
                         f"{len(header)} columns starting {','.join(header[:3])}")
    n = len(expected)
    name = (lambda j: "column " + repr(expected[j]))
    X, y = [], []
    for numbers, lines in _chunks(path):
        _count_columns(path, numbers, lines, n)
        values = _fast(b",".join(lines), ",", np.int32, len(lines) * n)
        if values is None:
            values = _slow(path, numbers, (t.split(b",") for t in lines), name, integer=True)
        values = values.reshape(len(lines), n)
        if labeled:
            _check_range(path, values[:, :1], numbers, 0, 9, lambda c, v: f"label {v}")
            y.append(values[:, 0].astype(np.int64))
        pixels = values[:, int(labeled):]
        _check_range(path, pixels, numbers, 0, 255,
                     lambda c, v: f"{KAGGLE_PIXELS[c]} value {v}")
        X.append(pixels.astype(np.uint8))
    return Table(np.concatenate(X), np.concatenate(y) if labeled else None, DIGITS, (28, 28))


def _emotion(path: Path, line: int, token: bytes) -> int:
    try:
        value = int(token)
    except ValueError:
        raise InputError(f"{path}: line {line}: non-numeric emotion "
                         f"{token.decode('utf-8', 'replace')!r}") from None
    if not 0 <= value < len(FER2013):
        raise InputError(f"{path}: line {line}: label {value} out of range "
                         f"[0, {len(FER2013) - 1}]")
    return value


def _pixel_rows(path: Path, numbers: list[int], pixels: list[bytes],
                n_pix: int) -> Iterator[list[bytes]]:
    for line, p in zip(numbers, pixels):
        tokens = p.split()
        if len(tokens) != n_pix:
            raise InputError(f"{path}: line {line}: expected {n_pix} pixels, found {len(tokens)}")
        yield tokens


def read_fer2013(path: Path) -> Table:
    """FER2013: ``emotion,pixels,Usage`` with space-separated 48x48 grayscale pixels.

    Columns are found by name (some copies reorder them or pad names with
    spaces); without a Usage column every row counts as Training.  Every row
    must hold 2304 pixels: other images are an ordinary CSV's job.
    """
    header = read_header(path)
    _require_header(path, header, "emotion,pixels,Usage")
    where = {h.lower(): i for i, h in enumerate(header)}
    if "emotion" not in where or "pixels" not in where:
        raise InputError(f"{path}: line 1: not a FER2013 header: expected emotion,pixels,Usage, "
                         f"found {','.join(header[:5])}")
    ie, ip, iu, n_cols = where["emotion"], where["pixels"], where.get("usage"), len(header)
    n_pix = FER_SIDE * FER_SIDE
    X, y, usage = [], [], []
    for numbers, lines in _chunks(path):
        pixels = []
        for line, text in zip(numbers, lines):
            fields = text.split(b",")
            if len(fields) != n_cols:
                raise InputError(f"{path}: line {line}: expected {n_cols} columns, "
                                 f"found {len(fields)}")
            y.append(_emotion(path, line, fields[ie].strip(b' "')))
            p = fields[ip].strip(b' "')
            if p.count(b" ") != n_pix - 1 and len(p.split()) != n_pix:
                raise InputError(f"{path}: line {line}: expected {n_pix} pixels, found "
                                 f"{len(p.split())} (FER2013 images are {FER_SIDE}x{FER_SIDE})")
            pixels.append(p)
            if iu is not None:
                u = fields[iu].strip(b' "')
                if u not in USAGE:
                    raise InputError(f"{path}: line {line}: unknown Usage "
                                     f"{u.decode('utf-8', 'replace')!r} (expected Training, "
                                     f"PublicTest or PrivateTest)")
                usage.append(USAGE[u])
        values = _fast(b" ".join(pixels), " ", np.int32, len(pixels) * n_pix)
        if values is None:
            values = _slow(path, numbers, _pixel_rows(path, numbers, pixels, n_pix),
                           lambda j: f"pixels (pixel {j + 1})", integer=True)
        values = values.reshape(len(pixels), n_pix)
        _check_range(path, values, numbers, 0, 255, lambda c, v: f"pixel {c + 1} value {v}")
        X.append(values.astype(np.uint8))
    return Table(np.concatenate(X), np.array(y, dtype=np.int64), FER2013, (FER_SIDE, FER_SIDE),
                 np.array(usage, dtype=np.int8) if iu is not None else None)


def read_csv(path: Path, label_column: str = "label") -> Table:
    """Any CSV with a header naming a label column; every other column is a feature.

    Features become uint8 when every value is an integer in [0, 255] (images,
    scaled by 255 later), else float32.  Labels stay raw text here: whether
    they are numbers or names is decided across train and test files together.
    """
    header = read_header(path)
    _require_header(path, header, f"a {label_column!r} column")
    if label_column not in header:
        shown = ", ".join(header[:6]) + (", ..." if len(header) > 6 else "")
        raise InputError(f"{path}: line 1: no column {label_column!r} in header ({shown})")
    j, n = header.index(label_column), len(header)
    features = header[:j] + header[j + 1:]
    if not features:
        raise InputError(f"{path}: line 1: no feature columns besides {label_column!r}")
    name = (lambda k: "column " + repr(features[k]))
    X, labels = [], []
    for numbers, lines in _chunks(path):
        _count_columns(path, numbers, lines, n)
        rows = []
        for line, text in zip(numbers, lines):
            if j < n - 1:
                fields = text.split(b",", j + 1)
                label = fields.pop(j)
            else:
                fields = text.rsplit(b",", 1)
                label = fields.pop()
            label = label.strip(b' "')
            if not label:
                raise InputError(f"{path}: line {line}: empty label")
            if _is_number(label) and not math.isfinite(float(label)):
                raise InputError(f"{path}: line {line}: label {label.decode()!r} is not a "
                                 "finite number")
            labels.append(label.decode("utf-8", "replace"))
            rows.append(b",".join(fields))
        X.append(_feature_chunk(path, numbers, rows, len(features), name))
    return _feature_table(X, np.array(labels))


def _feature_chunk(path: Path, numbers: list[int], rows: list[bytes], width: int,
                   name: Callable[[int], str]) -> np.ndarray:
    """One chunk's feature fields (comma-joined per row) as uint8 when they are all bytes, else float32."""
    blob, count = b",".join(rows), len(rows) * width
    values = _fast(blob, ",", np.int64, count)  # ~10x faster than floats: try first
    if values is None:
        values = _fast(blob, ",", np.float64, count)
    if values is None:
        values = _slow(path, numbers, (r.split(b",") for r in rows), name, integer=False)
    values = values.reshape(len(rows), width)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise InputError(f"{path}: line {numbers[r]}: {nonfinite(values[r, c])} in {name(c)}")
    is_byte = values.min() >= 0 and values.max() <= 255 and (
        values.dtype.kind == "i" or not np.any(values % 1))
    return values.astype(np.uint8 if is_byte else np.float32)


def _feature_table(X: list[np.ndarray], labels: np.ndarray) -> Table:
    if all(x.dtype == np.uint8 for x in X):
        data = np.concatenate(X)
        return Table(data, labels, None, _square(data.shape[1]))
    return Table(np.concatenate(X, dtype=np.float32), labels, None, None)


def read_csv_targets(path: Path, targets: tuple[str, ...]) -> Table:
    """A CSV whose ``targets`` columns are numeric regression targets; every other column is a feature.

    ``labels`` are float64 ``(n, len(targets))``; a target that is empty, not
    a number or not finite is one line naming the line and the column.
    """
    header = read_header(path)
    _require_header(path, header, ", ".join(repr(t) for t in targets) + " column(s)")
    for t in targets:
        if t not in header:
            shown = ", ".join(header[:6]) + (", ..." if len(header) > 6 else "")
            raise InputError(f"{path}: line 1: no column {t!r} in header ({shown})")
    where = [header.index(t) for t in targets]
    keep = [j for j in range(len(header)) if j not in where]
    features = [header[j] for j in keep]
    if not features:
        raise InputError(f"{path}: line 1: no feature columns besides the targets {', '.join(targets)}")
    name = (lambda k: "column " + repr(features[k]))
    X, y = [], []
    for numbers, lines in _chunks(path):
        _count_columns(path, numbers, lines, len(header))
        rows = []
        for line, text in zip(numbers, lines):
            fields = text.split(b",")
            values = []
            for t, j in zip(targets, where):
                token = fields[j].strip(b' "').decode("utf-8", "replace")
                try:
                    value = float(token)
                except ValueError:
                    what = "is empty" if not token else f"is {token!r}, not a number"
                    raise InputError(f"{path}: line {line}: target {t!r} {what} (regression needs numeric "
                                     "targets; text labels are classes: --task classification)") from None
                if not math.isfinite(value):
                    raise InputError(f"{path}: line {line}: target {t!r} is {nonfinite(value)}, not a finite "
                                     "number")
                values.append(value)
            y.append(values)
            rows.append(b",".join(fields[j] for j in keep))
        X.append(_feature_chunk(path, numbers, rows, len(features), name))
    return _feature_table(X, np.array(y, dtype=np.float64))


def read_csv_features(path: Path, drop: tuple[str, ...] = ()) -> Table:
    """A CSV's columns (header required) as features, without the columns named in ``drop``; no labels."""
    header = read_header(path)
    _require_header(path, header, "column names")
    keep = [j for j, h in enumerate(header) if h not in drop]
    features = [header[j] for j in keep]
    if not features:
        raise InputError(f"{path}: line 1: no feature columns")
    name = (lambda k: "column " + repr(features[k]))
    X = []
    for numbers, lines in _chunks(path):
        _count_columns(path, numbers, lines, len(header))
        rows = lines if len(keep) == len(header) else [
            b",".join(f for j, f in enumerate(t.split(b",")) if j in set(keep)) for t in lines]
        X.append(_feature_chunk(path, numbers, rows, len(features), name))
    return _feature_table(X, None)
