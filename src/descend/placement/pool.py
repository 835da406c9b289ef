"""Where a list of independent runs executes, and :func:`run_tasks`, which runs them there.

A run is a picklable task object and a top-level function; a pool takes
them with ``submit(fn, task)`` and hands back :class:`Outcome` objects as the
runs finish, in any order.  Three pools share that interface: this process
(one run after another), worker processes on this machine
(:class:`~descend.placement.local.LocalPool`) and an existing Dask cluster
(:class:`~descend.placement.cluster.DaskPool`).  A run whose worker died is
run again (``retries`` times); an exception raised by a run is its outcome,
never retried.
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
    one run after another).  With Dask, ``workers`` bounds the runs in flight
    (None = all of them).  ``threads``: compute threads of each worker's run.
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

    @property
    def local(self) -> bool:
        return self.dask is None

    def where(self) -> str:
        """Where the runs execute, for a progress line."""
        if self.dask:
            return f"the Dask cluster at {self.dask}"
        if self.workers == 1:
            return "this process"
        return f"{self.workers} worker processes, {self.threads} thread{'s' if self.threads > 1 else ''} each"


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


def open_pool(placement: Placement, *, shared: dict | None = None, log: Callable[[str], None] | None = None,
              name: str = "descend"):
    """The pool ``placement`` describes.

    ``shared``: NumPy arrays (or None) every run receives as ``fn(task,
    shared)``: memory-mapped ``.npy`` files for local workers, scattered once
    to every Dask worker.  ``log`` receives a line when a worker is lost.
    """
    if placement.dask:
        from descend.placement.cluster import DaskPool

        return DaskPool(placement.dask, threads=placement.threads, retries=placement.retries, shared=shared,
                        log=log, name=name)
    if placement.workers == 1:
        return InProcess(shared)
    from descend.placement.local import LocalPool

    return LocalPool(placement.workers, threads=placement.threads, retries=placement.retries,
                     heartbeat=placement.heartbeat, stale=placement.stale, shared=shared, log=log)


def run_tasks(fn: Callable, tasks: list, placement: Placement, *, shared: dict | None = None,
              on_result: Callable | None = None, log: Callable[[str], None] | None = None,
              name: str = "descend") -> list:
    """Run ``fn(task)`` (``fn(task, shared)`` with ``shared``) for every task where ``placement`` says.

    ``on_result(task, value)`` is called in this process as each run finishes;
    the values are returned in the order of ``tasks``.  The first run that
    raises stops the others and its exception propagates here, as does Ctrl-C:
    every worker process this call started is stopped by its PID before it
    returns.
    """
    with open_pool(placement, shared=shared, log=log, name=name) as pool:
        return run_in(pool, fn, tasks, limit=placement.workers, on_result=on_result)


def run_in(pool, fn: Callable, tasks: list, *, limit: int | None = None, on_result: Callable | None = None) -> list:
    """:func:`run_tasks` on a pool already open (the caller closes it), at most ``limit`` runs in flight."""
    tasks = list(tasks)
    results: list = [None] * len(tasks)
    index = {}
    waiting = iter(range(len(tasks)))
    for i in itertools.islice(waiting, limit or len(tasks)):
        index[pool.submit(fn, tasks[i])] = i
    while index:
        for outcome in pool.poll(None):
            i = index.pop(outcome.key)
            if outcome.error is not None:
                raise outcome.error
            results[i] = outcome.value
            if on_result is not None:
                on_result(tasks[i], outcome.value)
            for j in itertools.islice(waiting, 1):
                index[pool.submit(fn, tasks[j])] = j
    return results
