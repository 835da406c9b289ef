"""Keeping freed memory in the C heap while the NumPy engine trains (glibc only; elsewhere a no-op).

A training step of a convolutional network allocates and frees the same
large arrays (feature maps, their gradients) every step.  By default glibc
hands the top of the heap back to the kernel as soon as more than a few
hundred KB of it are free, and serves arrays above a threshold it adjusts as
it goes with fresh mappings of their own, so every step faults its pages in
again; on the benchmark network that costs more than a tenth of the step.
While a trainer runs, :func:`freed_memory_kept` sets the threshold to its
largest value (32 MiB on 64-bit glibc, where glibc's own adjustment ends up)
and the trim threshold out of reach; on leaving, the trim threshold goes to
twice the mapping threshold, glibc's own rule, and the heap's free top is
returned.  ``mallopt`` settings are the process's: nested and concurrent
scopes are counted, and only the outermost one sets and restores them.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
_KEEP = 2**31 - 1  # the largest value mallopt takes: 2 GiB free at the top before a trim

_lock = threading.Lock()
_depth = 0


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - musl and others have mallopt with other semantics
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


@contextlib.contextmanager
def freed_memory_kept():
    """Freed heap memory stays in the process for reuse while the block runs."""
    global _depth
    if _LIBC is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _KEEP)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
                _LIBC.malloc_trim(0)
