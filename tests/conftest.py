"""Shared fixtures."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _dataset_cache(tmp_path_factory):
    """Downloads and cached copies go to a per-session folder, never to ~/.cache."""
    old = os.environ.get("DESCEND_CACHE")
    os.environ["DESCEND_CACHE"] = str(tmp_path_factory.mktemp("descend-cache"))
    yield
    if old is None:
        os.environ.pop("DESCEND_CACHE", None)
    else:
        os.environ["DESCEND_CACHE"] = old


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The DESCEND_MIRROR folder with real data (``mnist/``, ``fer2013/``); CI sets it."""
    from descend.data.download import mirror_list

    for entry in mirror_list():
        path = Path(entry).expanduser()
        if not entry.startswith(("http://", "https://")) and path.is_dir():
            return path.resolve()
    pytest.fail("real-data tests need DESCEND_MIRROR set to a folder holding mnist/ and "
                "fer2013/ (a local copy of the files: <mirror>/mnist/..., <mirror>/fer2013/fer2013.csv.gz)")


def ctrl_c_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child a test will Ctrl-C: SIGINT at its default action.

    A shell without job control (how CI runners and ``cmd &`` in a script start
    their jobs) starts background jobs with SIGINT ignored, every descendant
    inherits that, and Python keeps an inherited SIG_IGN, so such a child would
    never see the SIGINT the test sends.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- servers a test starts: 127.0.0.1 only, a free port, stopped by PID ----------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_command(*args) -> list[str]:
    import sys

    script = Path(sys.executable).with_name("dask")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "dask", *args]


@contextlib.contextmanager
def _dask_cluster(directory: Path, workers: int = 2):
    """`dask scheduler` and ``workers`` `dask worker` processes (one thread each, no nanny) on 127.0.0.1.

    Yields (scheduler address, {pid: Popen} of the workers); everything is stopped by its PID.  The
    workers inherit this process's environment as it is when the block starts, with tests/ on their
    PYTHONPATH so that they can import the tasks a test module defines.
    """
    import subprocess

    distributed = pytest.importorskip("distributed")  # in the search extra: runs in CI
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)}
    log = open(directory / "dask.log", "wb")
    procs = [subprocess.Popen(_dask_command("scheduler", "--host", "127.0.0.1", "--port", str(port),
                                            "--no-dashboard"),
                              stdout=log, stderr=subprocess.STDOUT, cwd=directory, env=env)]
    try:
        for i in range(workers):
            procs.append(subprocess.Popen(
                _dask_command("worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                              "--no-dashboard", "--name", f"w{i}", "--local-directory", str(directory / f"dask-w{i}")),
                stdout=log, stderr=subprocess.STDOUT, cwd=directory, env=env))
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=90)
            pids = set(client.run(os.getpid).values())
        running = {p.pid: p for p in procs[1:]}
        assert pids == set(running)
        yield address, running
    finally:
        for group in (procs[1:], procs[:1]):  # the workers, then the scheduler they report to
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        log.close()


@pytest.fixture
def dask_cluster(tmp_path):
    """Starts a local Dask cluster when called: ``with dask_cluster() as (address, {pid: Popen}):``."""
    return lambda workers=2: _dask_cluster(tmp_path, workers)
