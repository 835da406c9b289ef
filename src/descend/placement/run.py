"""Running a list of tasks where a :class:`~descend.placement.pool.Placement` says."""

from __future__ import annotations

import itertools
import os
from typing import Callable

from descend.placement.pool import InProcess, Placement


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
    workers = placement.workers or os.cpu_count() or 1
    if workers == 1:
        return InProcess(shared)
    from descend.placement.local import LocalPool

    return LocalPool(workers, threads=placement.threads, retries=placement.retries,
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
