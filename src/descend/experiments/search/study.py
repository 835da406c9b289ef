"""Hyperparameter search: grid, random, hill-climbing and TPE, with K-fold cross-validation.

``run_search(SearchConfig(...))`` is what ``descend search`` calls.  It is the
coordinator of an Optuna study:

1. The space is parsed and checked, the dataset's training rows loaded (the
   official test set is not used until step 5) and the stratified folds
   fixed by the seed: every trial uses the same folds.
2. Every unit of work becomes a queued ("WAITING") trial with a ``ticket``
   number, enqueued once by this process: each grid cell, each of the N
   random points (drawn here, with the seed), or N empty tickets whose
   parameters the hill-climbing or TPE sampler chooses when a worker takes
   them.  Workers only take queued trials, so a grid cell is evaluated once
   and a random search runs exactly N trials, whatever the number of workers
   (Optuna's GridSampler alone re-samples cells at the tail when workers race).
3. Workers -- processes on this machine (one thread each), or tasks on an
   existing Dask cluster (``dask``) -- run ``study.optimize`` against the
   shared storage: a SQLite file in the run directory by default, or any
   SQLAlchemy URL (``postgresql+psycopg2://...``).  Running trials send
   heartbeats; a killed worker's trial goes stale, is marked FAIL and is
   queued again once.  This process replaces lost workers while work remains.
4. ``trials.csv``, ``best.json``, plots and ``report.html`` are written.
5. The best configuration is retrained on all training rows and evaluated
   once on the test set (``final/``: model file, history, metrics, report).

``resume_dir`` continues a search: finished tickets are kept, trials left
RUNNING by a crash are failed once (and re-queued) before any worker starts,
and only the remaining tickets are queued.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import descend
from descend.errors import ConfigError, DescendError, require
from descend.experiments.search.kfold import make_folds
from descend.experiments.search.report import best_row, trial_rows, write_search_report, write_trials_csv
from descend.experiments.search.space import Space, parse_space
from descend.experiments.search.worker import TASK_METRICS, run_worker, search_dataset
from descend.experiments.search.storage import (fail_orphans, fail_stale, has_password, import_optuna,
                                                make_storage, safe_url, state_counts, ticket_status,
                                                ticket_trials)
from descend.io.rundir import make_run_dir, read_json, write_json
from descend.placement import Placement, WorkerLost, open_pool
from descend.train.config import TrainConfig

METHODS = ("grid", "random", "hillclimb", "tpe")
METRICS = ("valid_error", "valid_cost", "valid_rmse")
PRUNERS = ("median", "none")
DEFAULT_TRIALS = 20
POLL_SECONDS = 1.0
WORKERS_LOCK = ".workers.lock"


@dataclass(frozen=True)
class SearchConfig:
    """Options of ``descend search`` that decide its result (placement -- workers, Dask -- is separate).

    ``trials`` is the number of trials of random, hill-climbing and TPE
    search (default 20); grid search evaluates every cell once and takes no
    ``trials``.  ``threads`` is per worker.  ``heartbeat`` is in seconds; a
    worker silent for 3 heartbeats is taken for dead.  ``retrain=False``
    stops after the search: no final training, the test set left untouched.
    """

    space: str
    base: TrainConfig = field(default_factory=TrainConfig)
    method: str = "tpe"
    trials: int | None = None
    folds: int = 3
    metric: str = "valid_error"
    pruner: str = "median"
    radius: float = 0.15
    threads: int = 1
    heartbeat: int = 10
    storage: str | None = None
    retrain: bool = True

    def __post_init__(self):
        require(self.method in METHODS, "method", f"one of {METHODS}", self.method)
        require(self.metric in METRICS, "metric", f"one of {METRICS}", self.metric)
        require(self.pruner in PRUNERS, "pruner", f"one of {PRUNERS}", self.pruner)
        require(isinstance(self.folds, int) and self.folds >= 2, "folds", "an integer >= 2", self.folds)
        require(self.trials is None or (isinstance(self.trials, int) and self.trials >= 1), "trials", ">= 1",
                self.trials)
        if self.method == "grid" and self.trials is not None:
            raise ConfigError(f"`trials` does not apply to grid search, which evaluates every cell once "
                              f"(leave --trials out). Received: trials={self.trials}")
        require(0 < self.radius <= 1, "radius", "in (0, 1] (a fraction of each range, in log space for log "
                "ranges)", self.radius)
        require(isinstance(self.threads, int) and self.threads >= 1, "threads", ">= 1", self.threads)
        require(isinstance(self.heartbeat, int) and self.heartbeat >= 1, "heartbeat", "an integer >= 1 (seconds)",
                self.heartbeat)
        if self.storage is not None and "://" not in self.storage:
            raise ConfigError(f"`storage` must be a database URL such as sqlite:///study.db or "
                              f"postgresql+psycopg2://user@host/db. Received: storage={self.storage!r}")

    def for_task(self, task: str) -> SearchConfig:
        """This search with ``metric`` resolved for ``task`` (see :data:`TASK_METRICS`); a metric the task has
        not is one line naming it."""
        known = TASK_METRICS[task]
        if self.metric not in known:
            raise ConfigError(f"`metric` {self.metric!r} does not apply to {task} data, which is searched on one of "
                              f"{tuple(known)}. Received: metric={self.metric!r}")
        return self if known[self.metric] == self.metric else dataclasses.replace(self, metric=known[self.metric])

    def parse_space(self) -> Space:
        return parse_space(self.space, self.base)

    def n_trials(self, space: Space) -> int:
        return len(space.grid()) if self.method == "grid" else (self.trials or DEFAULT_TRIALS)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "base"}
        d["storage"] = safe_url(self.storage) if self.storage else None
        d["config"] = self.base.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        d = dict(d)
        base = TrainConfig.from_dict(d.pop("config"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"search.json has unknown keys {unknown}")
        return cls(base=base, **d)


@dataclass
class SearchResult:
    run_dir: Path
    config: SearchConfig
    best: dict | None
    final: dict | None
    trials: list[dict]
    search_seconds: float
    trials_run: int

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.trials_run / self.search_seconds if self.search_seconds > 0 else 0.0


def tickets(sc: SearchConfig, space: Space) -> list[dict]:
    """The parameters fixed in advance for each ticket ({} where the sampler chooses)."""
    if sc.method == "grid":
        return space.grid()
    n = sc.n_trials(space)
    if sc.method == "random":
        rng = np.random.default_rng([sc.base.seed, 0x5EA4C])
        return [space.sample(rng) for _ in range(n)]
    return [{} for _ in range(n)]


# --- workers -----------------------------------------------------------------------------------------------
class Workers:
    """Search workers placed by :mod:`descend.placement`: each one a session of :func:`run_worker`.

    On this machine the sessions run in worker processes started with
    ``threads`` threads each and stopped by their PIDs; each process holds a
    shared lock on ``.workers.lock`` in the run directory while it lives, so
    that a resume after a crash waits for survivors before failing the trials
    they left running.  On Dask each session is one task.  A session whose
    worker dies is not run again by the placement layer: the coordinator
    starts another while work remains, and the dead worker's trial is queued
    again once its heartbeat goes stale.
    """

    def __init__(self, pool, spec: dict):
        self.pool, self.spec = pool, spec

    def slots(self) -> int:
        return self.pool.slots()

    def start(self, index: int) -> None:
        self.pool.submit(run_worker, {**self.spec, "worker_index": index})

    def live(self) -> int:
        return self.pool.pending()

    def reap(self) -> list[tuple[str, str]]:
        """(kind, description) of sessions that ended since the last call: "done", "killed" or "error"."""
        out = []
        for outcome in self.pool.poll(0):
            error = outcome.error
            if error is None:
                out.append(("done", f"a search worker ran {outcome.value} trial(s)"))
            elif isinstance(error, WorkerLost):
                out.append(("killed", str(error)))
            elif isinstance(error, DescendError):
                out.append(("error", f"search worker: {error}"))
            else:
                raise error  # a bug: its traceback, from the worker, is wanted
        return out

    def stop(self) -> None:
        self.pool.stop()

    def close(self, grace: float = 10.0) -> None:
        """Let sessions finish on their own (up to ``grace`` seconds), then stop the rest."""
        self.pool.close(grace)


# --- the coordinator ---------------------------------------------------------------------------------------
class _RunLock:
    """One coordinator per run directory (an advisory lock held while it runs)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".search.lock"
        self.fd = None

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX
            return
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise ConfigError(f"the search in {self.path.parent} is still running (another `descend search` "
                              f"holds it); wait for it or stop it first") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _wait_for_old_workers(run_dir: Path, progress: bool, stream) -> None:
    """Block until no worker of an earlier session of this search is alive (they hold ``.workers.lock``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    fd = os.open(run_dir / WORKERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if progress:
                print("descend: waiting for the workers of the interrupted search to finish their trials",
                      file=stream, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class _Reporter:
    def __init__(self, stream, enabled: bool, metric: str, total: int, names):
        self.stream, self.enabled, self.metric, self.total, self.names = stream, enabled, metric, total, names
        self.seen: set[int] = set()

    def line(self, text: str) -> None:
        if self.enabled:
            print(f"descend: {text}", file=self.stream, flush=True)

    def trials(self, trials) -> None:
        from descend.experiments.search.storage import is_done

        done = len({t.user_attrs["ticket"] for t in trials if is_done(t)})
        for t in sorted(trials, key=lambda t: t.number):
            if t.number in self.seen or not t.state.is_finished():
                continue
            self.seen.add(t.number)
            params = " ".join(f"{k}={_fmt(t.params[k])}" for k in self.names if k in t.params)
            folds = t.user_attrs.get("fold_scores") or []
            head = f"[{done}/{self.total}] trial {t.number}"
            if t.state.name == "COMPLETE":
                self.line(f"{head} {self.metric} {t.value:.4g} (folds {' '.join(f'{s:.4g}' for s in folds)}) "
                          f"{params}")
            elif t.state.name == "PRUNED":
                self.line(f"{head} pruned after {len(folds)} fold(s) {params}")
            elif t.user_attrs.get("error"):
                self.line(f"{head} failed: {t.user_attrs['error']} ({params})")
            else:
                self.line(f"{head} failed: its worker stopped (no heartbeat or interrupted); it is queued "
                          f"again once {params}")


def _drive(study, workers, n_workers: int, sc: SearchConfig, reporter: _Reporter) -> int:
    """Keep ``n_workers`` workers busy until no ticket is queued or running; returns trials finished."""
    index = killed = 0
    last_stale = time.monotonic()
    max_killed = 3 * n_workers + 10
    while True:
        for kind, text in workers.reap():
            if kind == "error":
                raise DescendError(text)
            if kind == "killed":
                killed += 1
                reporter.line(f"{text}; its trial is failed and queued again once its heartbeat goes stale "
                              f"(~{sc.heartbeat * 3} s)")
                if killed > max_killed:
                    raise DescendError(f"search workers keep getting killed ({killed} so far); last: {text}")
        trials = ticket_trials(study)
        reporter.trials(trials)
        counts = Counter(t.state.name for t in trials)
        waiting, running = counts.get("WAITING", 0), counts.get("RUNNING", 0)
        live = workers.live()
        target = min(n_workers, live + waiting)
        while live < target:
            workers.start(index)
            index += 1
            live += 1
        if waiting == 0 and running == 0:
            return index  # every ticket is finished; idle workers are exiting on their own
        if time.monotonic() - last_stale >= sc.heartbeat:
            fail_stale(study)
            last_stale = time.monotonic()
        time.sleep(POLL_SECONDS)


def _worker_spec(sc: SearchConfig, url: str, study_name: str, n_tickets: int) -> dict:
    return {"storage": url, "study": study_name, "heartbeat": sc.heartbeat, "method": sc.method,
            "space": sc.space, "config": sc.base.to_dict(), "folds": sc.folds, "metric": sc.metric,
            "pruner": sc.pruner, "radius": sc.radius, "trials": n_tickets, "threads": sc.threads}


def run_search(sc: SearchConfig | None = None, *, workers: int | None = None, dask: str | None = None,
               out: str | Path | None = None, root: str | Path = "runs", resume_dir: str | Path | None = None,
               storage: str | None = None, progress: bool = True, stream=None) -> SearchResult:
    """Run (or resume) a search and write its run directory; see the module docstring.

    ``workers``: how many search workers (default: this machine's cores, or
    the Dask cluster's threads).  ``storage`` on resume supplies the URL of a
    study whose password was not stored in ``search.json``.
    """
    stream = stream or sys.stderr
    optuna = import_optuna()
    require(workers is None or (isinstance(workers, int) and workers >= 1), "workers", ">= 1", workers)
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "search.json").is_file():
            raise ConfigError(f"`resume` must be a search run directory with search.json. "
                              f"Received: resume={str(run_dir)!r}")
        saved = read_json(run_dir / "search.json")
        missing = [k for k in ("search", "study", "storage_url") if not isinstance(saved, dict) or k not in saved]
        if missing:
            raise ConfigError(f"{run_dir / 'search.json'} is not a descend search record (no {', '.join(missing)}); "
                              f"`resume` needs the run directory of a `descend search`")
        try:
            sc = SearchConfig.from_dict(saved["search"])
        except (TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"{run_dir / 'search.json'}: its search settings cannot be read ({exc!r})") from None
        study_name = saved["study"]
        url = storage or saved["storage_url"]
        if "***" in url and storage is None:
            raise ConfigError(f"the search in {run_dir} keeps its study in {url}, whose password was not "
                              f"stored: give the full URL again with --storage (or use PGPASSWORD / ~/.pgpass)")
    elif sc is None:
        raise ConfigError("run_search needs a SearchConfig or a resume directory")
    space = sc.parse_space()
    work = tickets(sc, space)
    ds = search_dataset(sc.base)
    task = ds.task
    sc = sc.for_task(task)
    make_folds(ds.train.y, sc.folds, sc.base.seed, task)  # validates K against the rows

    # What can fail on the user's input -- the Dask scheduler, a database server -- is reached before
    # anything is written, so that a bad --dask or --storage leaves no half-made run directory.
    dask_pool = open_pool(Placement(dask=dask, workers=None, threads=sc.threads, retries=0),
                          name="descend-search") if dask else None
    launcher = None
    db = None
    try:
        if resume_dir is None:
            if sc.storage:
                db = make_storage(sc.storage, sc.heartbeat)
            if out and (Path(out) / "search.json").exists():
                raise ConfigError(f"`out` already holds a search ({out}/search.json): continue it with "
                                  f"--resume {out}, or choose another directory")
            run_dir = Path(out) if out else make_run_dir(root, _run_name(sc))
            run_dir.mkdir(parents=True, exist_ok=True)
            url = sc.storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"
            study_name = (f"descend-{run_dir.resolve().name}-{uuid.uuid4().hex[:6]}" if sc.storage
                          else "descend-search")
        lock = _RunLock(run_dir)
        lock.acquire()
    except BaseException:
        if dask_pool is not None:
            dask_pool.close()
        raise
    try:
        db = db or make_storage(url, sc.heartbeat)
        if resume_dir is None:
            write_json(run_dir / "search.json", {
                "search": sc.to_dict(), "study": study_name,
                "storage_url": safe_url(url) if has_password(url) else url,
                "space": space.to_dict(), "tickets": len(work), "descend": descend.__version__,
                "optuna": optuna.__version__, "python": platform.python_version(), "command": " ".join(sys.argv)})
            study = optuna.create_study(study_name=study_name, storage=db, direction="minimize")
            study.set_user_attr("descend_search", sc.to_dict())
        else:
            try:
                study = optuna.load_study(study_name=study_name, storage=db)
            except KeyError:
                raise ConfigError(f"study {study_name!r} not found in {safe_url(url)}") from None
            orphans = []
            if study.user_attrs.get("placement", "local") == "local":
                # Its workers ran here: once none survives, what is still RUNNING was left by the crash.
                _wait_for_old_workers(run_dir, progress, stream)
                orphans = fail_orphans(study)
            fail_stale(study)  # Dask-placed trials: only those whose heartbeat went stale
            study.set_user_attr("stop", False)
            if orphans and progress:
                print(f"descend: trial(s) {', '.join(map(str, orphans))} were left running by the interrupted "
                      f"search: marked failed and queued again once", file=stream, flush=True)
        study.set_user_attr("placement", "dask" if dask else "local")
        status = ticket_status(study)
        queued = 0
        for i, params in enumerate(work):
            if status.get(i) in ("done", "pending"):
                continue
            study.enqueue_trial(params, user_attrs={"ticket": i})
            queued += 1
        already = sum(s == "done" for s in status.values())

        spec = _worker_spec(sc, url, study_name, len(work))
        n_workers = workers or (dask_pool.slots() if dask else (os.cpu_count() or 1))
        n_workers = max(1, min(n_workers, len(work)))
        if dask:
            launcher = Workers(dask_pool, spec)
        else:
            from descend.placement.local import LocalPool

            spec = {**spec, "local": True, "worker_lock": str((run_dir / WORKERS_LOCK).resolve())}
            launcher = Workers(LocalPool(n_workers, threads=sc.threads, retries=0), spec)
        reporter = _Reporter(stream, progress, sc.metric, len(work), space.names)
        reporter.seen.update(t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished())
        engine = sc.base.engine
        if engine == "auto":
            from descend.engines import default_engine

            engine = default_engine()
        where = f"the Dask cluster at {dask}" if dask else "this machine"
        if dask and url.startswith("sqlite"):
            reporter.line(f"note: every Dask worker must reach {safe_url(url)}; for workers on other machines "
                          f"give --storage postgresql+psycopg2://...")
        reporter.line(f"{sc.method} search: {len(work)} trial(s) over {space.describe()}, {sc.folds}-fold "
                      f"cross-validation on {sc.base.dataset} ({len(ds.train.y):,} training rows), "
                      f"{n_workers} worker(s) on {where} ({sc.threads} thread(s) each), engine {engine}; "
                      f"storage {safe_url(url)}; run directory {run_dir}"
                      + (f"; resuming: {already} done, {queued} queued" if resume_dir is not None else ""))
        started = time.perf_counter()
        try:
            _drive(study, launcher, n_workers, sc, reporter)
        except (KeyboardInterrupt, DescendError):
            try:
                study.set_user_attr("stop", True)
            except Exception:  # noqa: BLE001 - the storage may be what failed
                pass
            launcher.stop()
            if not dask:
                try:  # our workers are gone: their trials are failed and queued again once, for --resume
                    fail_orphans(study)
                except Exception:  # noqa: BLE001
                    pass
            if progress:
                print(f"descend: search stopped; continue it with: descend search --resume {run_dir}",
                      file=stream, flush=True)
            raise
        search_seconds = time.perf_counter() - started
        reporter.trials(ticket_trials(study))
        finished_now = sum(1 for s in ticket_status(study).values() if s == "done") - already
        return _finish(run_dir, sc, space, study, ds, search_seconds, max(0, finished_now), n_workers, url,
                       progress, stream)
    finally:
        if launcher is not None:
            launcher.close()
        elif dask_pool is not None:
            dask_pool.close()
        lock.release()


def _run_name(sc: SearchConfig) -> str:
    stem = Path(sc.base.dataset).name.split(".")[0] or "data"
    return f"{stem}-search-{sc.method}"


def _finish(run_dir: Path, sc: SearchConfig, space: Space, study, ds, search_seconds: float, trials_run: int,
            n_workers: int, url: str, progress: bool, stream) -> SearchResult:
    from descend.experiments.search.plots import search_plots

    rows = trial_rows(study, space, sc.folds)
    write_trials_csv(run_dir / "trials.csv", rows, space, sc.folds, sc.metric)
    top = best_row(rows)
    best = None
    if top is not None:
        params = {p.name: top[p.name] for p in space.params}
        cfg = space.config(sc.base, params)
        best = {"trial": top["trial"], "metric": sc.metric, "score": top["score"],
                "fold_scores": [top[f"fold_{k + 1}"] for k in range(sc.folds)], "params": params,
                "config": cfg.to_dict()}
        write_json(run_dir / "best.json", best)
    counts = state_counts(study)
    status = ticket_status(study)
    summary = {"method": sc.method, "dataset": sc.base.dataset, "training rows": len(ds.train.y),
               "folds": sc.folds, "metric": sc.metric, "pruner": sc.pruner, "tickets": len(status),
               "done": sum(s == "done" for s in status.values()),
               "lost (killed twice)": sum(s == "lost" for s in status.values()),
               "trials": dict(counts), "workers": n_workers, "storage": safe_url(url),
               "search seconds (this session)": round(search_seconds, 2),
               "trials per minute (this session)": round(60 * trials_run / search_seconds, 3)
               if search_seconds > 0 else None}
    images = search_plots(rows, space, sc.method, sc.metric, run_dir)
    final = None
    if best is not None and sc.retrain:
        if progress:
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
            print(f"descend: search done in {search_seconds:.1f} s; best {sc.metric} {best['score']:.4g} "
                  f"(trial {best['trial']}: {shown}); retraining it on all {len(ds.train.y):,} training rows",
                  file=stream, flush=True)
        final = _retrain(run_dir / "final", TrainConfig.from_dict(best["config"]), ds, progress, stream)
    elif progress and best is None:
        print("descend: no trial completed; nothing to retrain", file=stream, flush=True)
    elif progress:
        print(f"descend: search done in {search_seconds:.1f} s; best {sc.metric} {best['score']:.4g} "
              f"(trial {best['trial']}); not retrained (--no-retrain)", file=stream, flush=True)
    write_json(run_dir / "summary.json", {**summary, "best": best, "final": final})
    write_search_report(run_dir / "report.html", title=f"descend search: {run_dir.name}", summary=summary,
                        best=best, final=final, images=images, rows=rows, space=space, metric=sc.metric,
                        base_config=sc.base.to_dict())
    if progress and final is not None and final.get("test_error") is not None:
        print(f"descend: test error {100 * final['test_error']:.2f}% on {final['test_size']:,} test images "
              f"(evaluated once); wrote {run_dir}", file=stream, flush=True)
    elif progress and final is not None and final.get("test_rmse") is not None:
        print(f"descend: test RMSE {final['test_rmse']:.4g}, R^2 {final['test_r2']:.4f} on {final['test_size']:,} "
              f"test rows (evaluated once); wrote {run_dir}", file=stream, flush=True)
    elif progress:
        print(f"descend: wrote {run_dir}", file=stream, flush=True)
    return SearchResult(run_dir, sc, best, final, rows, search_seconds, trials_run)


def _retrain(final_dir: Path, cfg: TrainConfig, ds, progress: bool, stream) -> dict:
    """Train the best configuration on every training row; the one evaluation on the test set."""
    from descend.train.loop import fit, fit_options, progress_bar
    from descend.train.run import write_run_outputs
    from descend.train.setup import prepare_data, provenance, setup_run

    if (final_dir / "metrics.json").is_file() and (final_dir / "model.safetensors").is_file():
        previous = read_json(final_dir / "metrics.json")
        if previous.pop("config", None) == cfg.to_dict():
            return previous  # a resumed search whose retrain already ran: the test set is not used again
    final_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg, ds)
    run = setup_run(cfg, data.n_in, data.n_out, int(len(ds.train.y)), image_shape=data.image_shape, task=data.task)
    engine = run.engine
    options = fit_options(cfg)
    bar = progress_bar(options, data.n_train, stream=stream, enabled=progress)
    write_json(final_dir / "config.json", provenance(cfg, engine))
    result = fit(engine, run.spec, options, engine.asarray(data.X_train), engine.put_labels(data.y_train), None, None,
                 params=run.params, model_state=run.model_state, progress=bar, target_std=data.target_std,
                 image_shape=data.image_shape)
    return write_run_outputs(final_dir, cfg, run, data, result, extra_metrics={"train_rows": len(ds.train.y)},
                             config_in_metrics=True)


__all__ = ["METHODS", "METRICS", "PRUNERS", "TASK_METRICS", "SearchConfig", "SearchResult", "parse_space",
           "run_search", "tickets"]
