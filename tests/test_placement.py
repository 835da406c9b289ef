"""The placement layer: results in task order, thread limits in workers, a SIGKILLed or hung worker's run
retried with the result of an uninterrupted run, errors and Ctrl-C stopping every worker by PID, and the
same on a real Dask cluster (a scheduler and two workers on 127.0.0.1).

The tasks are tiny functions of this module: spawned workers import it by name (the Dask workers find it
on the PYTHONPATH the cluster fixture gives them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import ctrl_c_as_in_a_terminal
from descend.errors import ConfigError
from descend.placement import THREAD_VARIABLES, Placement, WorkerLost, open_pool, run_tasks


@dataclass(frozen=True)
class Job:
    seed: int
    sleep: float = 0.0
    marker: str | None = None  # the first attempt writes "pid" here, then sleeps until it is killed
    stop_self: bool = False  # ... or stops itself (SIGSTOP): a hung worker


def compute(job: Job) -> dict:
    if job.marker is not None and not os.path.exists(job.marker):
        Path(job.marker).write_text(str(os.getpid()))
        if job.stop_self:
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(120)
    time.sleep(job.sleep)
    x = np.random.default_rng(job.seed).standard_normal((50, 50))
    return {"seed": job.seed, "value": float(np.linalg.norm(x @ x.T)), "pid": os.getpid()}


def with_shared(job: Job, shared: dict) -> float:
    return float(shared["X"][job.seed].sum()) + (0.0 if shared["none"] is None else 1.0)


def environment_and_pools(job: Job) -> dict:
    from threadpoolctl import threadpool_info

    return {"env": {k: os.environ.get(k) for k in (*THREAD_VARIABLES, "XLA_FLAGS")},
            "pools": sorted({p["num_threads"] for p in threadpool_info()}), "pid": os.getpid()}


def fail_on_three(job: Job) -> int:
    if job.seed == 3:
        raise ValueError(f"run {job.seed} failed")
    time.sleep(job.sleep)
    return os.getpid()


def _values(results):
    return [(r["seed"], r["value"]) for r in results]


def _wait_for(path: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


JOBS = [Job(seed, sleep=0.4 if seed == 0 else 0.0) for seed in range(6)]


def test_results_in_task_order_delivered_as_they_finish():
    reference = run_tasks(compute, JOBS, Placement(workers=1))
    assert {r["pid"] for r in reference} == {os.getpid()}  # workers=1: in this process
    order = []
    results = run_tasks(compute, JOBS, Placement(workers=2), on_result=lambda job, r: order.append(job.seed))
    assert _values(results) == _values(reference)  # same numbers in a worker as in this process
    assert sorted(order) == list(range(6)) and order[0] != 0  # the slow first run finished later
    pids = {r["pid"] for r in results}
    assert len(pids) == 2 and os.getpid() not in pids
    assert not any(_alive(pid) for pid in pids)  # stopped when the call returns


def test_shared_arrays_reach_every_run_memory_mapped_in_workers():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    shared = {"X": X, "none": None}
    expected = [float(row.sum()) for row in X]
    assert run_tasks(with_shared, [Job(i) for i in range(4)], Placement(workers=1), shared=shared) == expected
    assert run_tasks(with_shared, [Job(i) for i in range(4)], Placement(workers=2), shared=shared) == expected


def test_workers_start_with_one_thread_per_library_and_leave_this_environment_alone(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/nowhere")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    before = dict(os.environ)
    results = run_tasks(environment_and_pools, [Job(0), Job(1)], Placement(workers=2, threads=1))
    for r in results:
        assert all(r["env"][k] == "1" for k in THREAD_VARIABLES)
        assert r["env"]["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/nowhere ")  # the user's flags kept
        assert "intra_op_parallelism_threads=1" in r["env"]["XLA_FLAGS"]
        assert r["pools"] in ([], [1])  # every BLAS / OpenMP pool loaded holds one thread
    three = run_tasks(environment_and_pools, [Job(0)], Placement(workers=2, threads=3))[0]
    assert three["env"]["OMP_NUM_THREADS"] == "3" and "intra_op_parallelism_threads=3" in three["env"]["XLA_FLAGS"]
    assert dict(os.environ) == before


def _kill_when_written(marker: Path, sig=signal.SIGKILL) -> threading.Thread:
    thread = threading.Thread(target=lambda: os.kill(_wait_for(marker), sig), daemon=True)
    thread.start()
    return thread


def test_a_sigkilled_worker_run_is_retried_and_gives_the_uninterrupted_result(tmp_path):
    marker = tmp_path / "running"
    jobs = [Job(0), Job(1, marker=str(marker)), Job(2), Job(3)]
    reference = run_tasks(compute, [Job(j.seed) for j in jobs], Placement(workers=1))
    lines = []
    thread = _kill_when_written(marker)
    results = run_tasks(compute, jobs, Placement(workers=2, heartbeat=0.2, stale=30), log=lines.append)
    thread.join(5)
    killed = int(marker.read_text())
    assert _values(results) == _values(reference)
    assert results[1]["pid"] != killed
    assert len(lines) == 1 and f"worker process {killed} was killed by signal 9 (SIGKILL)" in lines[0]
    assert "running it again (retry 1 of 1)" in lines[0]


def test_without_retries_a_killed_worker_is_an_error(tmp_path):
    marker = tmp_path / "running"
    thread = _kill_when_written(marker)
    with pytest.raises(WorkerLost, match="was killed by signal 9"):
        run_tasks(compute, [Job(0, marker=str(marker)), Job(1)], Placement(workers=2, retries=0))
    thread.join(5)


def test_a_hung_worker_is_found_by_its_silent_heartbeat_killed_and_its_run_retried(tmp_path):
    marker = tmp_path / "running"
    jobs = [Job(0, marker=str(marker), stop_self=True), Job(1)]
    lines = []
    results = run_tasks(compute, jobs, Placement(workers=2, heartbeat=0.1, stale=1.0), log=lines.append)
    hung = int(marker.read_text())
    assert _values(results) == _values(run_tasks(compute, [Job(0), Job(1)], Placement(workers=1)))
    assert len(lines) == 1 and f"worker process {hung} sent no heartbeat" in lines[0]
    assert not _alive(hung)


def test_a_failing_run_raises_here_and_stops_every_worker():
    pids = []
    jobs = [Job(0, sleep=5.0), Job(1), Job(2), Job(3), Job(4, sleep=5.0)]
    with pytest.raises(ValueError, match="run 3 failed") as info:
        run_tasks(fail_on_three, jobs, Placement(workers=2), on_result=lambda job, pid: pids.append(pid))
    assert any("in worker process" in note for note in getattr(info.value, "__notes__", []))
    assert pids and not any(_alive(pid) for pid in pids)


def test_placement_options_are_checked():
    for bad, name in (({"workers": 0}, "workers"), ({"threads": 0}, "threads"), ({"retries": -1}, "retries"),
                      ({"heartbeat": 5, "stale": 2}, "stale")):
        with pytest.raises(ConfigError, match=f"`{name}`"):
            Placement(**bad)


SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from test_placement import Job, compute
from descend.placement import Placement, run_tasks
markers = [os.path.join({tmp!r}, f"m{{i}}") for i in range(2)]
run_tasks(compute, [Job(i, marker=m) for i, m in enumerate(markers)], Placement(workers=2, heartbeat=0.2, stale=60))
"""


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_interrupting_the_parent_stops_its_workers(tmp_path, how):
    """Ctrl-C: the parent stops its workers by PID; a parent killed outright: they exit at their next heartbeat."""
    code = textwrap.dedent(SCRIPT).format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_as_in_a_terminal)
    try:
        workers = [_wait_for(tmp_path / f"m{i}") for i in range(2)]
        assert all(_alive(pid) for pid in workers)
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
        proc.wait(30)
        if how == "ctrl-c":
            assert b"KeyboardInterrupt" in proc.stderr.read()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_placement_imports_nothing_above_it():
    from test_architecture import import_graph

    above = ("descend.experiments", "descend.cli", "descend.train", "descend.serve", "descend.engines")
    for module, imported in import_graph().items():
        if module.startswith("descend.placement"):
            assert not [m for m in imported if m.startswith(above)], module


# --- a real Dask cluster ---------------------------------------------------------------------------------------
def test_dask_runs_give_the_local_results_with_limited_threads(dask_cluster):
    reference = run_tasks(compute, JOBS, Placement(workers=1))
    with dask_cluster() as (address, workers):
        order = []
        results = run_tasks(compute, JOBS, Placement(dask=address), on_result=lambda job, r: order.append(job.seed))
        assert _values(results) == _values(reference) and sorted(order) == list(range(6))
        assert {r["pid"] for r in results} <= set(workers)
        shared = {"X": np.arange(12.0).reshape(4, 3), "none": None}
        assert run_tasks(with_shared, [Job(i) for i in range(4)], Placement(dask=address), shared=shared) == \
            [3.0, 12.0, 21.0, 30.0]
        pools = run_tasks(environment_and_pools, [Job(0)], Placement(dask=address, threads=1))[0]["pools"]
        assert pools in ([], [1])
        with pytest.raises(ValueError, match="run 3 failed"):
            run_tasks(fail_on_three, [Job(3)], Placement(dask=address))
        with open_pool(Placement(dask=address)) as pool:
            assert pool.slots() == 2


def test_dask_worker_sigkilled_mid_run_the_run_is_placed_again(tmp_path, dask_cluster):
    marker = tmp_path / "running"
    jobs = [Job(0, marker=str(marker)), Job(1), Job(2)]
    reference = run_tasks(compute, [Job(j.seed) for j in jobs], Placement(workers=1))
    with dask_cluster() as (address, workers):
        thread = _kill_when_written(marker)
        results = run_tasks(compute, jobs, Placement(dask=address))
        thread.join(5)
        killed = int(marker.read_text())
        assert killed in workers and workers[killed].wait(10) == -signal.SIGKILL
        assert _values(results) == _values(reference)
        assert results[0]["pid"] in set(workers) - {killed}


def test_a_malformed_dask_address_is_one_line():
    pytest.importorskip("distributed")
    with pytest.raises(ConfigError, match="`dask` must be a scheduler address"):
        run_tasks(compute, [Job(0)], Placement(dask="tcp://bad:::"))
