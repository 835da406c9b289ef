"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Every file descend produces (model files, checkpoints, JSON, CSV, PNG, HTML) is
written to a temporary file in the *same directory* (so ``os.replace`` is a
rename on one filesystem, atomic on POSIX and Windows), fsynced, then renamed
over the destination.  A Ctrl-C or an exception mid-write leaves the previous
file (or no file) and no temporary behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


def _reserve_temp(path: Path) -> Path:
    """Create an empty, exclusive temp file next to `path`.

    ``os.open(..., 0o666)`` lets the umask decide permissions, as a plain
    ``open(path, "w")`` would (``mkstemp`` would force 0600).  The original
    suffix is kept last so writers that infer a format from it (savefig) work.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort (not possible on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform dependent
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - platform dependent
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path to write to; it replaces `path` only if the block succeeds.

    For writers that want a file name rather than bytes (``Figure.savefig``,
    ``safetensors.numpy.save_file``).  The parent directory is created if needed.
    """
    path = Path(path)
    tmp = _reserve_temp(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (UTF-8, newlines as given) and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_csv(path: str | os.PathLike, columns, rows) -> Path:
    """Write mappings ``rows`` as CSV with a header of ``columns`` (missing or None values empty), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in columns})
    return atomic_write_text(path, buf.getvalue())
