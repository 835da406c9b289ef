"""Opening user files: gzip is recognised by its magic bytes, not its name."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

from descend.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"


def check_file(path: Path) -> None:
    """Fail early with one line, instead of an OSError traceback deep in a reader."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")


def open_binary(path: Path) -> BinaryIO:
    """A binary stream of the payload, decompressing transparently."""
    check_file(path)
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115


def head(path: Path, n: int = 4096) -> bytes:
    """The first bytes of the payload, for sniffing the format."""
    try:
        with open_binary(path) as f:
            return f.read(n)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def read_payload(path: Path) -> bytes:
    """The whole (decompressed) content; for formats that are small or binary."""
    try:
        with open_binary(path) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    if not data:
        raise InputError(f"{path}: file is empty")
    return data
