"""Row sources for PCA: in-memory arrays, NumPy memmaps and ``.npy`` files, read in row chunks.

The PCA solvers only ever see a :class:`RowSource`: ``n`` rows of ``d``
features handed out ``rows`` at a time.  Nothing here holds more than one
chunk (``rows x d``) of the data at once, except :class:`ArraySource`, whose
array the caller already holds.

A memmap (``np.load(path, mmap_mode="r")`` or ``np.memmap``) is *not* read by
touching its mapping: every page of a mapped file that is touched counts in
the process's resident memory until the mapping goes away, so one pass over
an 8 GB memmap would show an 8 GB peak RSS.  A C-contiguous memmap is read
instead with ``readinto`` at its byte offset into one reused chunk buffer: the
bytes go through the page cache (which the kernel may drop at will), never
into the process.  Other memmaps (column slices, Fortran order) fall back to
slicing.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descend.errors import InputError

__all__ = ["RowSource", "ArraySource", "FileSource", "as_source", "open_npy", "Stats", "column_stats",
           "default_chunk_rows"]

#: Bytes of one chunk of compute-dtype rows when the caller does not choose ``chunk_rows``.
CHUNK_BYTES = 64 << 20


def default_chunk_rows(d: int, itemsize: int = 4, budget: int = CHUNK_BYTES) -> int:
    """Rows per chunk so that one chunk of ``d`` features takes about ``budget`` bytes."""
    return max(1, int(budget // max(1, d * itemsize)))


class RowSource:
    """``n`` rows of ``d`` numeric features, handed out in row chunks (raw dtype)."""

    n: int
    d: int
    dtype: np.dtype
    name: str
    in_memory: bool = False

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, chunk)`` pairs; a chunk may be reused by the next iteration."""
        raise NotImplementedError

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows at sorted ``index`` (a copy), for plots of a sample."""
        raise NotImplementedError


class ArraySource(RowSource):
    """An array already in memory: chunks are views, never copies."""

    in_memory = True

    def __init__(self, X: np.ndarray, name: str = "X"):
        self.X, self.name = X, name
        self.n, self.d = (int(s) for s in X.shape)
        self.dtype = X.dtype

    def chunks(self, rows: int):
        for a in range(0, self.n, rows):
            yield a, self.X[a:a + rows]

    def take(self, index):
        return np.asarray(self.X[np.asarray(index)])


class FileSource(RowSource):
    """A C-order 2-D array stored at byte ``offset`` of file ``path``, read with ``readinto``."""

    def __init__(self, path: str | os.PathLike, offset: int, shape: tuple[int, int], dtype, name: str | None = None):
        self.path, self.offset = Path(path), int(offset)
        self.n, self.d = (int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.name = name or str(path)
        self.row_bytes = self.d * self.dtype.itemsize

    def chunks(self, rows: int):
        rows = max(1, min(rows, self.n))
        buf = np.empty((rows, self.d), dtype=self.dtype)
        view = memoryview(buf.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as f:
            for a in range(0, self.n, rows):
                count = min(rows, self.n - a)
                f.seek(self.offset + a * self.row_bytes)
                want, got = count * self.row_bytes, 0
                while got < want:
                    r = f.readinto(view[got:want])
                    if not r:
                        raise InputError(f"{self.name}: file is truncated (row {a + got // self.row_bytes + 1} "
                                         f"of {self.n} could not be read)")
                    got += r
                yield a, buf[:count]

    def take(self, index):
        index = np.asarray(index)
        out = np.empty((len(index), self.d), dtype=self.dtype)
        with open(self.path, "rb") as f:
            for j, i in enumerate(index):
                f.seek(self.offset + int(i) * self.row_bytes)
                data = f.read(self.row_bytes)
                if len(data) != self.row_bytes:
                    raise InputError(f"{self.name}: file is truncated (row {int(i) + 1})")
                out[j] = np.frombuffer(data, dtype=self.dtype)
        return out


def _memmap_file_offset(X: np.memmap) -> int | None:
    """Byte offset in ``X.filename`` of ``X[0, 0]``, or None when it cannot be known safely."""
    mm = getattr(X, "_mmap", None)
    if mm is None or X.filename is None or not X.flags.c_contiguous:
        return None
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError, BufferError):
        return None
    # np.memmap maps from `offset` rounded down to the allocation granularity; slices inherit `offset`.
    start = int(X.offset) - int(X.offset) % mmap.ALLOCATIONGRANULARITY
    return start + (X.ctypes.data - base)


def open_npy(path: str | os.PathLike) -> np.memmap:
    """Open a ``.npy`` file as a read-only memmap (no pickle); bad files raise InputError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{path}: not a readable .npy array ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(X, np.ndarray):
        raise InputError(f"{path}: not a .npy array")
    return X


def as_source(X, name: str | None = None) -> RowSource:
    """A :class:`RowSource` for an array, a memmap, a ``.npy`` path or a RowSource; validates shape and dtype."""
    if isinstance(X, RowSource):
        return X
    if isinstance(X, (str, os.PathLike)):
        name = name or str(X)
        X = open_npy(X)
    name = name or "X"
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except (TypeError, ValueError) as e:
            raise InputError(f"{name}: not an array ({e})") from None
    if X.ndim != 2:
        raise InputError(f"{name}: must be a 2-D array (rows, features), got shape {X.shape}")
    if X.dtype.kind not in "buif":
        raise InputError(f"{name}: dtype {X.dtype} is not a real number type")
    if X.shape[0] < 2:
        raise InputError(f"{name}: PCA needs at least 2 rows, got {X.shape[0]}")
    if X.shape[1] < 1:
        raise InputError(f"{name}: has no features (shape {X.shape})")
    if isinstance(X, np.memmap):
        offset = _memmap_file_offset(X)
        if offset is not None:
            return FileSource(X.filename, offset, X.shape, X.dtype, name=name)
    return ArraySource(X, name)


@dataclass(frozen=True)
class Stats:
    """One pass's per-feature statistics (float64): mean and variance (N-1 denominator) after ``scale``."""

    n: int
    mean: np.ndarray
    variance: np.ndarray

    @property
    def total_variance(self) -> float:
        return float(self.variance.sum())


def _first_bad_row(chunk: np.ndarray) -> int:
    bad = ~np.isfinite(chunk).all(axis=1)
    return int(np.flatnonzero(bad)[0])


def column_stats(source: RowSource, scale: float = 1.0, rows: int | None = None) -> Stats:
    """Mean and variance of every feature of ``scale * X`` in one pass, in float64.

    Sums are of values shifted by the first row (the "shifted data" algorithm),
    so a large common offset does not cancel away the variance.  A NaN or an
    infinity raises InputError naming its row.
    """
    rows = rows or default_chunk_rows(source.d, 8, CHUNK_BYTES // 2)
    shift = None
    s1 = np.zeros(source.d)
    s2 = np.zeros(source.d)
    for a, raw in source.chunks(rows):
        c = np.array(raw, dtype=np.float64)  # a copy: the caller's rows are never modified
        if scale != 1.0:
            c *= scale
        if source.dtype.kind == "f":
            total = c.sum()
            if not np.isfinite(total):
                raise InputError(f"{source.name}: row {a + _first_bad_row(c) + 1}: NaN or infinite value")
        if shift is None:
            shift = c[0].copy()
        c -= shift
        s1 += c.sum(axis=0)
        c *= c
        s2 += c.sum(axis=0)
    n = source.n
    mean = shift + s1 / n
    variance = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)
    if not (np.isfinite(mean).all() and np.isfinite(variance).all()):
        raise InputError(f"{source.name}: values too large: the variance overflows float64")
    return Stats(n, mean, variance)
