"""Model files and checkpoints: safetensors tensors + JSON metadata, never pickle.

A model file is ONE ``.safetensors`` file: tensors under ``params/<name>``,
``state/<name>`` (batch-norm running statistics) and ``extra/<name>``
(normalization mean/std...), and in the safetensors ``__metadata__`` (a
str -> str map) a single key ``"descend"`` holding JSON: the format, its
version, library versions and the caller's metadata (model spec, classes,
normalization, metrics, data description).  safetensors only parses a JSON
header and copies raw bytes, so loading a file can never execute code.
Checkpoints use the same container with flat tensor names.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..errors import InputError
from .atomic import atomic_path
from .rundir import to_jsonable

__all__ = ["FORMAT_VERSION", "LAYERS_FORMAT_VERSION", "ModelFile", "save_model", "load_model", "save_checkpoint",
           "load_checkpoint"]

#: The newest format this descend reads.  Version 1 files hold a network the
#: multilayer-perceptron shorthand describes; version 2 ones may hold any
#: sequence of layers (convolution, pooling...), which releases that read only
#: version 1 would misread, so they refuse it and ask for an upgrade instead.
FORMAT_VERSION = 2
LAYERS_FORMAT_VERSION = 2
MLP_FORMAT_VERSION = 1
CHECKPOINT_FORMAT_VERSION = 1  # a checkpoint's arrays and meta are the same for every network
_KEY = "descend"
_MODEL, _CHECKPOINT = "descend-model", "descend-checkpoint"
_GROUPS = ("params", "state", "extra")


@dataclass(frozen=True)
class ModelFile:
    """What :func:`load_model` returns: the three tensor groups and the metadata."""

    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]
    metadata: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = MLP_FORMAT_VERSION


def _versions() -> dict[str, str]:
    import safetensors

    from .. import __version__

    return {
        "descend": __version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _tensor(name: str, a: Any) -> np.ndarray:
    """C-contiguous little-endian array (safetensors' layout), copying only when needed."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"tensor {name!r}: dtype {a.dtype} cannot be stored (numeric or bool only)")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a if a.flags.c_contiguous else a.copy(order="C")  # ascontiguousarray turns 0-d into 1-d


def _write(path: str | os.PathLike, tensors: dict[str, np.ndarray], header: dict) -> Path:
    meta = {_KEY: json.dumps(to_jsonable(header), ensure_ascii=False, allow_nan=False)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def _read(path: str | os.PathLike, kind: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read all tensors and the descend header; every failure is one InputError line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        with safe_open(str(path), framework="np") as f:
            raw = (f.metadata() or {}).get(_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a valid safetensors file ({e})") from None
    if raw is None:
        raise InputError(f"{path}: safetensors file has no descend metadata (not written by descend)")
    try:
        header = json.loads(raw)
        fmt, version = header["format"], int(header["format_version"])
    except (ValueError, TypeError, KeyError):
        raise InputError(f"{path}: corrupt descend metadata") from None
    if fmt != kind:
        want = "model file" if kind == _MODEL else "checkpoint"
        raise InputError(f"{path}: is a {fmt.removeprefix('descend-')}, not a {want}")
    if version > FORMAT_VERSION:
        raise InputError(
            f"{path}: format_version {version} is newer than this descend supports "
            f"({FORMAT_VERSION}); upgrade descend"
        )
    return tensors, header


def save_model(
    path: str | os.PathLike,
    params: dict[str, np.ndarray],
    *,
    state: dict[str, np.ndarray] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
    metadata: dict[str, Any],
    format_version: int = MLP_FORMAT_VERSION,
) -> Path:
    """Write weights, state, extra arrays and JSON-able `metadata` to one file, atomically.

    ``format_version`` is :data:`LAYERS_FORMAT_VERSION` for a network the
    multilayer-perceptron shorthand cannot describe (see :func:`spec_format_version`).
    """
    tensors = {}
    for group, arrays in zip(_GROUPS, (params, state or {}, extra_arrays or {})):
        for name, a in arrays.items():
            tensors[f"{group}/{name}"] = _tensor(f"{group}/{name}", a)
    header = {"format": _MODEL, "format_version": int(format_version), "versions": _versions(), "metadata": metadata}
    return _write(path, tensors, header)


def spec_format_version(spec_dict: dict) -> int:
    """The format version a file holding the network spec ``spec_dict`` (``Network.to_dict()``) needs."""
    return MLP_FORMAT_VERSION if spec_dict.get("type", "MLP") == "MLP" else LAYERS_FORMAT_VERSION


def load_model(path: str | os.PathLike) -> ModelFile:
    """Read a file written by :func:`save_model`; bad files raise InputError naming them."""
    tensors, header = _read(path, _MODEL)
    groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in _GROUPS}
    for key, a in tensors.items():
        group, _, name = key.partition("/")
        if group not in groups or not name:
            raise InputError(f"{path}: unexpected tensor {key!r}")
        groups[group][name] = a
    return ModelFile(
        params=groups["params"],
        state=groups["state"],
        extra=groups["extra"],
        metadata=header.get("metadata") or {},
        versions=header.get("versions") or {},
        format_version=int(header["format_version"]),
    )


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write a resumable training state (arrays by path + JSON-able `meta`), atomically.

    Atomicity is what makes Ctrl-C safe: the previous checkpoint stays intact
    until the new one is complete on disk.
    """
    tensors = {name: _tensor(name, a) for name, a in arrays.items()}
    header = {"format": _CHECKPOINT, "format_version": CHECKPOINT_FORMAT_VERSION, "versions": _versions(), "meta": meta}
    return _write(path, tensors, header)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_checkpoint`: ``(arrays, meta)``."""
    tensors, header = _read(path, _CHECKPOINT)
    return tensors, header.get("meta") or {}
