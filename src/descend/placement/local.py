"""Worker processes on this machine: spawned, one compute thread each by default, watched by heartbeats.

Each worker is a ``spawn``-ed process (safe with threads and GPU runtimes)
started with every library's thread count in its environment, connected to
this process by a pipe.  It takes one run at a time, and while it lives it
sends a heartbeat every ``heartbeat`` seconds from a thread of its own.  A
worker that dies (killed, crashed) or falls silent for ``stale`` seconds
while running (hung: it is then killed by its PID) loses its run, which is
given to a fresh worker, up to ``retries`` times.  A worker whose parent is
gone exits at its next heartbeat.  Workers ignore Ctrl-C: the parent stops
them, by PID, when it is interrupted.
"""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from descend.placement.pool import Outcome, WorkerLost
from descend.placement.threads import environment, limit_threads, thread_settings

_STOP = None  # the message that tells an idle worker to exit


def _load_shared(files: dict | None) -> dict | None:
    if files is None:
        return None
    import numpy as np

    return {k: (None if v is None else np.load(v, mmap_mode="r", allow_pickle=False)) for k, v in files.items()}


def _worker_main(conn, threads: int, heartbeat: float, files: dict | None) -> None:
    """The worker process: run what the pipe brings, send back values or errors, beat meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(threads)
    shared = _load_shared(files)
    lock = threading.Lock()
    done = threading.Event()

    def beat():
        while not done.wait(heartbeat):
            try:
                with lock:
                    conn.send(("beat",))
            except (OSError, ValueError):  # the parent is gone: nobody wants the result
                os._exit(3)

    threading.Thread(target=beat, name="descend-heartbeat", daemon=True).start()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is _STOP:
            break
        key, fn, task = message
        try:
            reply = ("ok", key, fn(task) if shared is None else fn(task, shared))
        except BaseException as exc:  # noqa: BLE001 - sent to the parent, which decides
            reply = ("error", key, exc, traceback.format_exc())
        with lock:
            try:
                conn.send(reply)
            except Exception as exc:  # noqa: BLE001 - a value or an exception that does not pickle
                conn.send(("error", key, RuntimeError(f"the run's result could not be sent back: {exc!r}"),
                           traceback.format_exc()))
    done.set()


@dataclass
class _Job:
    fn: Callable
    task: object
    attempts: int = 0


@dataclass(eq=False)
class _Worker:
    process: object
    conn: object
    key: int | None = None
    last: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid


def _exit_text(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class LocalPool:
    """``workers`` spawned processes; see the module docstring."""

    def __init__(self, workers: int, *, threads: int = 1, retries: int = 1, heartbeat: float = 5.0,
                 stale: float = 60.0, shared: dict | None = None, log: Callable[[str], None] | None = None):
        import multiprocessing

        self.size, self.threads, self.retries = int(workers), int(threads), int(retries)
        self.heartbeat, self.stale = float(heartbeat), float(stale)
        self.log = log or (lambda line: None)
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []
        self.jobs: dict[int, _Job] = {}
        self.queue: deque[int] = deque()
        self.outcomes: deque[Outcome] = deque()
        self.keys = itertools.count()
        self.tmp = None
        self.files = None
        if shared is not None:
            self.files = self._save_shared(shared)

    def _save_shared(self, shared: dict) -> dict:
        import numpy as np

        self.tmp = tempfile.TemporaryDirectory(prefix="descend-placement-")
        files = {}
        for name, value in shared.items():
            if value is None:
                files[name] = None
                continue
            files[name] = os.path.join(self.tmp.name, f"{name}.npy")
            np.save(files[name], np.ascontiguousarray(value), allow_pickle=False)
        return files

    # --- the interface ---------------------------------------------------------------------------

    def submit(self, fn: Callable, task) -> int:
        key = next(self.keys)
        self.jobs[key] = _Job(fn, task)
        self.queue.append(key)
        self._dispatch()
        return key

    def pending(self) -> int:
        """Runs submitted whose outcome has not been handed out yet."""
        return len(self.jobs) + len(self.outcomes)

    def poll(self, timeout: float | None = None) -> list[Outcome]:
        """The outcomes of runs finished since the last call; waits up to ``timeout`` seconds for one."""
        from multiprocessing.connection import wait

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._collect()
            self._dispatch()
            left = None if deadline is None else deadline - time.monotonic()
            if self.outcomes or not self.jobs or (left is not None and left <= 0):
                break
            tick = self.heartbeat if left is None else min(left, self.heartbeat)
            wait([w.conn for w in self.workers] + [w.process.sentinel for w in self.workers], timeout=tick)
        out = list(self.outcomes)
        self.outcomes.clear()
        return out

    def stop(self) -> None:
        """Stop every worker now, by its PID (SIGTERM, then SIGKILL after 5 s); unfinished runs are dropped."""
        for w in self.workers:
            if w.process.is_alive():
                w.process.terminate()
        deadline = time.monotonic() + 5
        for w in self.workers:
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self.workers.clear()
        self.jobs.clear()
        self.queue.clear()
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def close(self, grace: float = 0.0) -> None:
        """Let running runs finish for up to ``grace`` seconds, ask idle workers to exit, stop the rest."""
        deadline = time.monotonic() + grace
        self.queue.clear()
        while any(w.key is not None for w in self.workers) and time.monotonic() < deadline:
            self.poll(deadline - time.monotonic())
        for w in self.workers:
            if w.key is None:
                try:
                    w.conn.send(_STOP)
                except OSError:
                    pass
        end = time.monotonic() + 5
        for w in self.workers:
            if w.key is None:
                w.process.join(max(0.0, end - time.monotonic()))
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.stop()
        return False

    # --- inside ----------------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent, child = self.context.Pipe(duplex=True)
        process = self.context.Process(target=_worker_main, args=(child, self.threads, self.heartbeat, self.files),
                                       name="descend-worker", daemon=True)
        # A spawned child reads its thread counts from the environment before importing anything.
        with environment(thread_settings(self.threads)):
            process.start()
        child.close()
        worker = _Worker(process, parent)
        self.workers.append(worker)
        return worker

    def _dispatch(self) -> None:
        while self.queue:
            idle = next((w for w in self.workers if w.key is None), None)
            if idle is None:
                if len(self.workers) >= self.size:
                    return
                idle = self._start_worker()
            key = self.queue.popleft()
            job = self.jobs[key]
            try:
                idle.conn.send((key, job.fn, job.task))
            except (OSError, ValueError):
                self.queue.appendleft(key)
                self._lost(idle, f"worker process {idle.pid} {_exit_text(idle.process.exitcode)}")
                continue
            idle.key, idle.last = key, time.monotonic()

    def _collect(self) -> None:
        now = time.monotonic()
        for w in list(self.workers):
            broken = False
            try:
                while w.conn.poll():
                    self._receive(w, w.conn.recv())
            except (EOFError, OSError):
                broken = True
            except Exception as exc:  # noqa: BLE001 - a value that cannot be unpickled here
                if w.key is not None:
                    self._finish(w, Outcome(w.key, error=exc))
            if broken or not w.process.is_alive():
                w.process.join(1)
                self._lost(w, f"worker process {w.pid} {_exit_text(w.process.exitcode)}")
            elif w.key is not None and now - w.last > self.stale:
                os.kill(w.pid, signal.SIGKILL)
                w.process.join(5)
                self._lost(w, f"worker process {w.pid} sent no heartbeat for {now - w.last:.0f} s and was killed")

    def _receive(self, w: _Worker, message) -> None:
        w.last = time.monotonic()
        if message[0] == "beat":
            return
        if message[0] == "ok":
            self._finish(w, Outcome(message[1], message[2]))
        else:
            _, key, exc, text = message
            if hasattr(exc, "add_note"):
                exc.add_note(f"in worker process {w.pid}:\n{text}")
            self._finish(w, Outcome(key, error=exc))

    def _finish(self, w: _Worker, outcome: Outcome) -> None:
        self.jobs.pop(outcome.key, None)
        w.key = None
        self.outcomes.append(outcome)

    def _lost(self, w: _Worker, reason: str) -> None:
        self.workers.remove(w)
        w.conn.close()
        key = w.key
        if key is None or key not in self.jobs:
            return
        job = self.jobs[key]
        job.attempts += 1
        if job.attempts <= self.retries:
            self.log(f"descend: {reason} in the middle of a run; running it again "
                     f"(retry {job.attempts} of {self.retries})")
            self.queue.appendleft(key)
        else:
            del self.jobs[key]
            self.outcomes.append(Outcome(key, error=WorkerLost(
                f"{reason} in the middle of a run" + (f", after {self.retries} retr{'y' if self.retries == 1 else 'ies'}"
                                                 if self.retries else ""))))
