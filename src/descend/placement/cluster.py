"""Runs placed by an existing Dask cluster (``distributed.Client(address)``).

Each run is one Dask task.  Its compute threads are limited while it runs
(threadpoolctl, and XLA's flags when JAX is not loaded yet in that worker).
When a Dask worker dies in the middle of a run, the scheduler itself gives
the run to another worker (its ``distributed.scheduler.allowed-failures``);
a run the scheduler gives up on (``KilledWorker``) or that lost its worker's
connection is submitted again, up to ``retries`` times.  Data every run
needs (``shared``) is scattered once to every worker.  Stopping cancels the
runs not finished; a run already executing finishes on its worker, its
result dropped.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Callable

from descend.errors import ConfigError, DescendError
from descend.placement.pool import Outcome, WorkerLost

_LOST = ("KilledWorker", "CommClosedError", "FutureCancelledError")


def connect(address: str, timeout: str = "20s"):
    """A ``distributed.Client`` of the scheduler at ``address``; one clear line when that fails."""
    try:
        from distributed import Client
    except ImportError:
        raise DescendError('--dask needs Dask\'s distributed scheduler: pip install "descend[search]"') from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise DescendError(f"--dask {address}: cannot reach the Dask scheduler ({exc})") from None
    except ValueError as exc:  # a malformed address
        raise ConfigError(f"`dask` must be a scheduler address such as tcp://HOST:8786 ({exc}). "
                          f"Received: dask={address!r}") from None


def call_placed(fn: Callable, task, threads: int, *shared):
    """What a Dask worker runs: ``fn(task[, shared])`` with its compute threads limited."""
    from descend.placement.threads import limit_threads

    with limit_threads(threads):
        return fn(task, *shared)


@dataclass
class _Job:
    fn: Callable
    task: object
    attempts: int = 0


class DaskPool:
    """Runs on the Dask cluster at ``address``; see the module docstring."""

    def __init__(self, address: str, *, threads: int = 1, retries: int = 1, shared: dict | None = None,
                 log: Callable[[str], None] | None = None, name: str = "descend"):
        self.address = address
        self.client = connect(address)
        self.threads, self.retries = int(threads), int(retries)
        self.log = log or (lambda line: None)
        self.tag = f"{name}-{uuid.uuid4().hex[:8]}"
        self.keys = itertools.count()
        self.jobs: dict[int, _Job] = {}
        self.futures: dict = {}  # Dask future -> our key
        try:
            # One future holding the whole dict; every worker keeps a copy, so losing one loses no data.
            self.shared = (self.client.scatter([shared], broadcast=True, hash=False)[0],) if shared is not None else ()
        except BaseException:
            self.client.close()
            raise

    def slots(self) -> int:
        """The cluster's threads: how many runs it executes at once."""
        workers = self.client.scheduler_info().get("workers", {})
        return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    def submit(self, fn: Callable, task) -> int:
        key = next(self.keys)
        self.jobs[key] = _Job(fn, task)
        self._launch(key)
        return key

    def _launch(self, key: int) -> None:
        job = self.jobs[key]
        future = self.client.submit(call_placed, job.fn, job.task, self.threads, *self.shared,
                                    key=f"{self.tag}-{key}-{job.attempts}", pure=False)
        self.futures[future] = key

    def pending(self) -> int:
        return len(self.jobs)

    def poll(self, timeout: float | None = None) -> list[Outcome]:
        from distributed import wait

        if not self.futures:
            return []
        if timeout is not None and timeout <= 0:
            done = [f for f in self.futures if f.done()]
        else:
            try:
                done, _ = wait(list(self.futures), timeout=timeout, return_when="FIRST_COMPLETED")
            except TimeoutError:
                return []
        out = []
        for future in done:
            key = self.futures.pop(future)
            outcome = self._outcome(key, future)
            future.release()
            if outcome is not None:
                del self.jobs[key]
                out.append(outcome)
        return out

    def _outcome(self, key: int, future) -> Outcome | None:
        """The run's outcome, or None when it was submitted again."""
        if future.status == "finished":
            try:
                return Outcome(key, future.result())
            except Exception as exc:  # noqa: BLE001 - the value could not be fetched
                return Outcome(key, error=exc)
        if future.status == "cancelled":
            return Outcome(key, error=WorkerLost(f"Dask task {future.key} was cancelled"))
        exc = future.exception()
        if type(exc).__name__ not in _LOST:
            return Outcome(key, error=exc)
        job = self.jobs[key]
        job.attempts += 1
        reason = f"Dask task {future.key} lost its worker ({type(exc).__name__})"
        if job.attempts <= self.retries:
            self.log(f"descend: {reason}; submitting it again (retry {job.attempts} of {self.retries})")
            self._launch(key)
            return None
        return Outcome(key, error=WorkerLost(reason))

    def stop(self) -> None:
        if self.futures:
            try:
                self.client.cancel(list(self.futures), force=True)
            except Exception:  # noqa: BLE001 - the scheduler may be what failed
                pass
        self.futures.clear()
        self.jobs.clear()

    def close(self, grace: float = 0.0) -> None:
        """Let unfinished runs finish for up to ``grace`` seconds, cancel the rest, disconnect."""
        from distributed import wait

        if grace > 0 and self.futures:
            try:
                wait(list(self.futures), timeout=grace)
            except TimeoutError:
                pass
        self.stop()
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
