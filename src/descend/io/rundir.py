"""Run directories and JSON files.

Every command that trains writes ``runs/<YYYYmmdd-HHMMSS>-<name>/``; two runs
started in the same second get ``-1``, ``-2``... suffixes instead of sharing a
directory (``mkdir`` without ``exist_ok`` is the race-free claim).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .atomic import atomic_write_text

__all__ = ["make_run_dir", "write_json", "read_json", "to_jsonable"]


def make_run_dir(root: str | os.PathLike = "runs", name: str = "train") -> Path:
    """Create and return a fresh ``<root>/<YYYYmmdd-HHMMSS>-<name>[-N]`` directory."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.") or "run"
    base = Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        candidate = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{base}: too many runs with this name in the same second")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, sets, Paths, enums and dataclasses to JSON types.

    Non-finite floats become None: config and metric files must stay valid
    JSON for tools other than Python (browsers, jq) that reject ``NaN``.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):  # bool is an int
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    raise TypeError(f"cannot store {type(obj).__name__} as JSON: {obj!r:.80}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as pretty, strict JSON (UTF-8, trailing newline), atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises InputError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
