"""Where a list of independent runs executes (:class:`Placement`), and what a pool hands back.

A run is a picklable task object and a top-level function; a pool takes
them with ``submit(fn, task)`` and hands back :class:`Outcome` objects as the
runs finish, in any order (``poll``).  Three pools share that interface: this
process (:class:`InProcess`, one run after another), worker processes on
this machine (:class:`~descend.placement.local.LocalPool`) and an existing
Dask cluster (:class:`~descend.placement.cluster.DaskPool`).  A run whose
worker died is run again (``retries`` times); an exception raised by a run
is its outcome, never retried.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from descend.errors import DescendError, require


class WorkerLost(DescendError):
    """A run's worker died (killed, crashed, or silent past its heartbeat) more often than retries allow."""


@dataclass(frozen=True)
class Placement:
    """Where runs execute.

    ``dask``: the address of an existing Dask scheduler (``tcp://HOST:8786``);
    without it, ``workers`` processes on this machine (1 = in this process,
    one run after another; None = one per core).  With Dask, ``workers``
    bounds the runs in flight (None = all of them).  ``threads``: compute threads of each worker's run.
    ``retries``: how many times a run is started again after its worker died.
    ``heartbeat``: seconds between a local worker's signs of life; one silent
    for ``stale`` seconds while running is taken for hung, killed and its run
    retried.
    """

    workers: int | None = 1
    threads: int = 1
    dask: str | None = None
    retries: int = 1
    heartbeat: float = 5.0
    stale: float = 60.0

    def __post_init__(self):
        require(self.workers is None or (int(self.workers) == self.workers and self.workers >= 1), "workers",
                "an integer >= 1", self.workers)
        require(int(self.threads) == self.threads and self.threads >= 1, "threads", "an integer >= 1", self.threads)
        require(int(self.retries) == self.retries and self.retries >= 0, "retries", "an integer >= 0", self.retries)
        require(self.heartbeat > 0, "heartbeat", "a positive number of seconds", self.heartbeat)
        require(self.stale > self.heartbeat, "stale", f"more seconds than heartbeat={self.heartbeat}", self.stale)


@dataclass(frozen=True)
class Outcome:
    """A finished run: its ``value``, or the ``error`` it raised (WorkerLost when its worker kept dying)."""

    key: int
    value: Any = None
    error: BaseException | None = None


class InProcess:
    """This process, one run after another: what ``workers=1`` means."""

    def __init__(self, shared: dict | None = None):
        self.shared = shared
        self.queue: deque = deque()
        self.keys = itertools.count()

    def submit(self, fn: Callable, task) -> int:
        key = next(self.keys)
        self.queue.append((key, fn, task))
        return key

    def pending(self) -> int:
        return len(self.queue)

    def poll(self, timeout: float | None = None) -> list[Outcome]:
        if not self.queue:
            return []
        key, fn, task = self.queue.popleft()
        try:
            value = fn(task) if self.shared is None else fn(task, self.shared)
        except Exception as exc:  # noqa: BLE001 - the run's error is its outcome; Ctrl-C propagates
            return [Outcome(key, error=exc)]
        return [Outcome(key, value)]

    def stop(self) -> None:
        self.queue.clear()

    def close(self, grace: float = 0.0) -> None:
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
