"""Getting named datasets into a local cache, from mirrors first, verified by hash.

Every copy lands in a temporary file beside its final name and is renamed
only once verified, so an interrupted or corrupt download never looks cached
and concurrent workers never see a half-written file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

from descend import __version__
from descend.errors import DownloadError

ENV_CACHE = "DESCEND_CACHE"
ENV_MIRROR = "DESCEND_MIRROR"
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_OS = (TimeoutError, ConnectionResetError, ConnectionAbortedError,
                http.client.IncompleteRead, http.client.RemoteDisconnected)
PROGRESS_MIN_BYTES = 1 << 20
_BLOCK = 1 << 20


class _Failed(Exception):
    """One source could not provide the file; the message is the reason."""


def cache_dir() -> Path:
    """``$DESCEND_CACHE`` or ``~/.cache/descend``, read at call time (no global state)."""
    return Path(os.environ.get(ENV_CACHE) or "~/.cache/descend").expanduser()


def mirror_list(value: str | None = None) -> list[str]:
    """Split ``$DESCEND_MIRROR`` on colons, keeping ``http://host:port/path`` whole."""
    value = os.environ.get(ENV_MIRROR, "") if value is None else value
    return re.findall(r"https?://[^/:]*(?::\d+)?[^:]*|[^:]+", value)


def sources(dataset: str, filename: str, urls: Iterable[str] = (),
            mirrors: Iterable[str] = ()) -> list[str]:
    """Where to look, in order: each mirror (``<mirror>/<dataset>/<file>``), then public URLs."""
    found = [f"{m.rstrip('/')}/{dataset}/{filename}" for m in mirrors]
    return found + [u.rstrip("/") + "/" + filename for u in urls]


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def verify(path: Path, sha256: str | None) -> str | None:
    """None when ``path`` holds the expected payload, else the reason it does not.

    The hash covers the decompressed bytes, read in blocks so that a large
    file is never held in memory twice.
    """
    if sha256 is None:
        return None if path.stat().st_size > 0 else "empty file"
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            while block := f.read(_BLOCK):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as exc:
        return f"corrupt gzip data: {exc}"
    got = digest.hexdigest()
    if got != sha256:
        return f"SHA-256 mismatch: got {got[:16]}..., expected {sha256[:16]}..."
    return None


def _stream(src: BinaryIO, dst: BinaryIO, total: int, label: str) -> None:
    """Copy, drawing a progress line only for big files on an interactive terminal."""
    show = total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
    done = 0
    while block := src.read(_BLOCK):
        dst.write(block)
        done += len(block)
        if show:
            print(f"\rdownloading {label}: {min(100, 100 * done // total):3d}% "
                  f"of {total / 1e6:.1f} MB", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    if total and done < total:
        raise http.client.IncompleteRead(b"", total - done)


def _http_get(url: str, dst: BinaryIO, label: str, retries: int, backoff: float,
              timeout: float) -> None:
    """Download with a few retries of errors that may pass (5xx, 429, timeouts, resets)."""
    request = urllib.request.Request(url, headers={"User-Agent": f"descend/{__version__}"})
    for attempt in range(retries + 1):
        try:
            dst.seek(0)
            dst.truncate()
            with urllib.request.urlopen(request, timeout=timeout) as response:
                _stream(response, dst, int(response.headers.get("Content-Length") or 0), label)
            return
        except urllib.error.HTTPError as exc:
            reason, transient = f"HTTP {exc.code} {exc.reason}", exc.code in TRANSIENT_HTTP
        except urllib.error.URLError as exc:
            reason, transient = str(exc.reason), isinstance(exc.reason, TRANSIENT_OS)
        except TRANSIENT_OS as exc:
            reason, transient = f"{type(exc).__name__}: {exc}", True
        except OSError as exc:
            reason, transient = f"{type(exc).__name__}: {exc}", False
        if not transient or attempt == retries:
            raise _Failed(reason + (f" after {attempt + 1} attempts" if attempt else ""))
        time.sleep(backoff * 2**attempt)


def _get(location: str, dst: BinaryIO, label: str, retries: int, backoff: float,
         timeout: float) -> None:
    if _is_url(location):
        _http_get(location, dst, label, retries, backoff, timeout)
        return
    path = Path(location).expanduser()
    if not path.is_file():
        raise _Failed("not found")
    try:
        with open(path, "rb") as src:
            shutil.copyfileobj(src, dst, _BLOCK)
    except OSError as exc:
        raise _Failed(f"{type(exc).__name__}: {exc}") from None


def fetch(dataset: str, filename: str, sha256: str | None = None, urls: Sequence[str] = (),
          *, mirrors: Sequence[str] | None = None, cache: str | Path | None = None,
          retries: int = 2, backoff: float = 0.5, timeout: float = 30.0) -> Path:
    """Path of a verified local copy of ``<dataset>/<filename>``, fetching it if needed.

    A cached copy is used when it verifies, else re-fetched.  Sources are the
    mirrors (``$DESCEND_MIRROR`` unless given) then ``urls``; a source that
    fails or serves a wrong file is skipped for the next one.  When all fail,
    DownloadError lists every source tried with its reason, on one line.
    """
    target = (Path(cache) if cache is not None else cache_dir()).expanduser() / dataset / filename
    label = f"{dataset}/{filename}"
    tried: list[str] = []
    if target.is_file():
        reason = verify(target, sha256)
        if reason is None:
            return target
        tried.append(f"cache {target} ({reason})")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create cache directory {target.parent}: {exc}") from None
    mirrors = mirror_list() if mirrors is None else list(mirrors)
    for location in sources(dataset, filename, urls, mirrors):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as dst:
                _get(location, dst, label, retries, backoff, timeout)
            reason = verify(tmp, sha256)
            if reason is not None:
                raise _Failed(reason)
            os.replace(tmp, target)
            return target
        except _Failed as exc:
            tried.append(f"{location} ({exc})")
        finally:
            tmp.unlink(missing_ok=True)
    if not tried:
        tried.append(f"no source to try: set {ENV_MIRROR} to a directory holding {label}")
    raise DownloadError(f"could not get {label}: " + "; ".join(tried))
