"""IDX files (MNIST, Fashion-MNIST): a big-endian header, then one raw array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from descend.errors import InputError
from descend.data.files import read_payload

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def looks_like_idx(head: bytes) -> bool:
    """True when the first four bytes are a plausible IDX magic number."""
    return len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _DTYPES and 1 <= head[3] <= 4


def parse_idx(buf: bytes, name: str, ndim: int | None = None) -> np.ndarray:
    """Decode an IDX payload, refusing anything whose size disagrees with its header.

    ``ndim`` is what the caller needs (3 for images, 1 for labels): a labels
    file handed over as images would otherwise fail much later and obscurely.
    """
    if len(buf) < 4:
        raise InputError(f"{name}: truncated IDX file ({len(buf)} bytes, no header)")
    magic = int.from_bytes(buf[:4], "big")
    if not looks_like_idx(buf):
        raise InputError(f"{name}: not an IDX file (magic number 0x{magic:08X})")
    if ndim is not None and buf[3] != ndim:
        what = {1: "labels", 3: "images"}.get(ndim, f"{ndim}-D")
        raise InputError(
            f"{name}: wrong magic number 0x{magic:08X} for an IDX {what} file "
            f"(expected 0x{(buf[2] << 8) | ndim:08X}, a {ndim}-D array)"
        )
    n_dims = buf[3]
    header = 4 + 4 * n_dims
    if len(buf) < header:
        raise InputError(f"{name}: truncated IDX file (header needs {header} bytes, "
                         f"found {len(buf)})")
    shape = tuple(int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    dtype = np.dtype(_DTYPES[buf[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(buf) != expected:
        problem = "truncated IDX file" if len(buf) < expected else "IDX file has trailing bytes"
        raise InputError(
            f"{name}: {problem}: shape {shape} needs {expected} bytes, found {len(buf)}"
        )
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a copy: writeable, not tied to ``buf``


def read_idx_pair(images: bytes, labels: bytes, images_name: str, labels_name: str,
                  n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Images (n, h*w) and int64 labels, checked against each other."""
    X = parse_idx(images, images_name, ndim=3)
    y = parse_idx(labels, labels_name, ndim=1)
    if X.shape[0] != y.shape[0]:
        raise InputError(
            f"{labels_name}: {y.shape[0]} labels but {images_name} has {X.shape[0]} images"
        )
    if X.dtype != np.uint8:
        raise InputError(f"{images_name}: IDX images must be unsigned bytes, found {X.dtype}")
    y = y.astype(np.int64)
    if n_classes is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
        row = int(np.flatnonzero((y < 0) | (y >= n_classes))[0])
        raise InputError(
            f"{labels_name}: item {row + 1}: label {y[row]} out of range [0, {n_classes - 1}]"
        )
    n, h, w = X.shape
    return X.reshape(n, h * w), y, (h, w)


def _beside(path: Path, name: str) -> Path | None:
    """``name`` next to ``path``, compressed or not."""
    stem = name.removesuffix(".gz")
    for candidate in (path.with_name(name), path.with_name(stem), path.with_name(stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _partner(images: Path) -> Path:
    """The labels file that sits beside an images file, by MNIST naming."""
    name = images.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    if name == images.name:
        raise InputError(f"{images}: cannot find its labels file "
                         f"(expected a name containing 'images-idx3')")
    found = _beside(images, name)
    if found is None:
        raise InputError(f"{images}: labels file not found: {images.with_name(name)}")
    return found


def find_idx_files(path: Path) -> tuple[tuple[Path, Path], tuple[Path, Path] | None]:
    """(train images, labels) and optionally (test images, labels) for a path.

    A directory or a train-images file gives MNIST's layout; the t10k files are
    the official test set and are picked up when present.
    """
    if path.is_dir():
        train = sorted(p for p in path.iterdir()
                       if p.name.startswith("train") and "images" in p.name and "idx3" in p.name)
        if not train:
            raise InputError(f"{path}: no train-images-idx3-ubyte[.gz] file in this directory")
        path = train[0]
    test = None
    if path.name.startswith("train"):
        test = _beside(path, path.name.replace("train", "t10k", 1))
    return (path, _partner(path)), ((test, _partner(test)) if test else None)


def load_idx_files(images: Path, labels: Path, n_classes: int | None = None):
    """Read an images/labels pair from disk."""
    return read_idx_pair(read_payload(images), read_payload(labels), str(images), str(labels),
                         n_classes)
