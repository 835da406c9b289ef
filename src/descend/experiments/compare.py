"""``descend compare``: reproducible, multi-seed comparisons of training configurations.

A :class:`~descend.experiments.compare_spec.Study` is a list of configurations
(run specs, a preset or a TOML file) crossed with seeds.  Every configuration
of one seed starts from the *same* initial weights (``init_params(spec, n_in,
n_out, key=seed)``) and sees the *same* batch order (``epoch_order(seed, epoch,
n)``), so the differences between curves are the optimizers', not the luck of
the draw; the seeds then show how large that luck is.  Each run records a
fingerprint (SHA-256) of the weights its trainer received and of every epoch's
batch order, and the report checks them.

Layout of a compare directory::

    compare.json                 the study (enough to resume: --resume DIR)
    runs/<run-id>/result.json    one finished run: config, history, metrics, fingerprints
    runs.csv, summary.csv        per run / per configuration
    summary.md                   the table and findings (printed by the command)
    curves-epoch.png, curves-step.png, curves-time.png
    report.html                  self-contained: table, findings, plots, configurations

Runs are independent: ``workers > 1`` runs them in spawned processes with one
compute thread each; a finished run's ``result.json`` is written atomically, so
an interrupted compare continues where it stopped without redoing finished runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import descend
from descend.engines import default_engine, default_threads, get_engine
from descend.errors import ConfigError, DivergenceError
from descend.experiments.compare_spec import Study
from descend.io.rundir import make_run_dir, read_json, write_json
from descend.model import MLP, init_params, init_state
from descend.train.config import TrainConfig
from descend.train.loop import batch_plan, cost_and_error, evaluate, fit, learning_rate_at

RESULT_FILE = "result.json"
RESULT_VERSION = 1
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS")


@dataclass(frozen=True)
class RunTask:
    """One (configuration, seed) pair, as sent to a worker (plain data, picklable)."""

    run_id: str
    index: int
    label: str
    seed: int
    config: dict
    budget: float | None
    path: str
    threads: int | None = None


@dataclass
class CompareResult:
    out_dir: Path
    study: Study
    records: dict  # (config index, seed) -> result record
    summary: list
    skipped: int = 0
    same_start: list = field(default_factory=list)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "run"


def plan(study: Study, out_dir: Path) -> list[RunTask]:
    """All (configuration, seed) tasks, seed-major: a finished seed compares every configuration."""
    tasks = []
    for seed in study.seeds:
        for i, run in enumerate(study.runs):
            run_id = f"{i:02d}-{_slug(run.label)}-seed{seed}"
            cfg = run.config.replace(seed=seed)
            tasks.append(RunTask(run_id, i, run.label, seed, cfg.to_dict(), run.budget,
                                 str(out_dir / "runs" / run_id / RESULT_FILE)))
    return tasks


def _finished(task: RunTask) -> dict | None:
    """The stored result of ``task`` if it exists and was produced by the same configuration."""
    path = Path(task.path)
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except Exception:  # a damaged file is redone, never trusted
        return None
    if record.get("config") != task.config or record.get("budget") != task.budget:
        return None
    return record


# --- one run -----------------------------------------------------------------------------------

_DATA: dict = {}
_DATA_KEPT = 2  # prepared datasets kept per process: runs that alternate two preprocessings (say pca=50 and none) reuse both


def _host_data(cfg: TrainConfig):
    """Normalised NumPy splits, cached per (dataset, split seed, preprocessing): every configuration of
    a seed reuses them."""
    from descend.train.run import oversample, prepare_data

    key = (cfg.dataset, cfg.format, cfg.validation, cfg.seed, cfg.normalize, cfg.pca, cfg.balance)
    if key in _DATA:
        _DATA[key] = _DATA.pop(key)  # most recently used last
    else:
        while len(_DATA) >= _DATA_KEPT:
            _DATA.pop(next(iter(_DATA)))
        ds, normalizer = prepare_data(cfg)
        if ds.train.y is None:
            raise ConfigError(f"dataset {cfg.dataset!r} has no training labels")
        if ds.validation is None or ds.validation.y is None or len(ds.validation.y) == 0:
            raise ConfigError(f"compare needs validation rows; dataset {cfg.dataset!r} has none "
                              f"(set validation=0.1 in the base options)")
        rows = oversample(ds.train.y, cfg.seed) if cfg.balance == "oversample" else slice(None)
        test = None
        if ds.test is not None and ds.test.y is not None:
            test = (normalizer.transform(ds.test.X), ds.test.y)
        _DATA[key] = {"X": normalizer.transform(ds.train.X[rows]), "y": ds.train.y[rows],
                      "Xv": normalizer.transform(ds.validation.X), "yv": ds.validation.y, "test": test,
                      "n_in": int(normalizer.n_outputs), "n_out": len(ds.classes), "name": ds.name}
    return _DATA[key]


def _digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


class _RecordingTrainer:
    """Wraps an engine's Trainer: fingerprints the initial weights and each epoch's batch order it is
    given, and keeps the latest training state (the weights when a budget stops the run)."""

    def __init__(self, trainer):
        self._trainer = trainer
        self.init_digest: dict | None = None
        self.orders: list[str] = []
        self._last_order = None
        self.last_ts = None

    def __getattr__(self, name):
        return getattr(self._trainer, name)

    def init(self, params, model_state, opt_state=None):
        if self.init_digest is None:
            self.init_digest = {k: _digest(v) for k, v in sorted(params.items())}
        self.last_ts = self._trainer.init(params, model_state, opt_state)
        return self.last_ts

    def run(self, ts, X, y, order, *args, **kwargs):
        if order is not self._last_order:
            self._last_order = order
            self.orders.append(_digest(order))
        new_ts, losses = self._trainer.run(ts, X, y, order, *args, **kwargs)
        self.last_ts = new_ts
        return new_ts, losses


class _RecordingEngine:
    """The engine with :class:`_RecordingTrainer` trainers; everything else passes through."""

    def __init__(self, engine):
        self._engine = engine
        self.trainer_record: _RecordingTrainer | None = None

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def trainer(self, *args, **kwargs):
        self.trainer_record = _RecordingTrainer(self._engine.trainer(*args, **kwargs))
        return self.trainer_record


class _BudgetReached(Exception):
    """Raised from the evaluation callback when a run has used its wall-clock budget."""


def execute(task: RunTask) -> dict:
    """Train one (configuration, seed), write its ``result.json`` atomically and return the record."""
    cfg = TrainConfig.from_dict(task.config)
    data = _host_data(cfg)
    batch = min(cfg.batch_size or len(data["y"]), len(data["y"]))
    sizes = (data["n_in"], *cfg.hidden, data["n_out"])
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    threads = task.threads or cfg.threads or default_threads(cfg.engine, batch, macs)
    engine = _RecordingEngine(get_engine(cfg.engine, device=cfg.device, dtype=cfg.dtype, threads=threads))
    spec = MLP(hidden=cfg.hidden, activation=cfg.activation, dropout_keep=cfg.dropout_keep, batchnorm=cfg.batchnorm)
    params = init_params(spec, data["n_in"], data["n_out"], key=cfg.seed, dtype=cfg.dtype)
    model_state = init_state(spec, data["n_in"], data["n_out"], dtype=cfg.dtype)
    X, y = engine.asarray(data["X"]), engine.put_labels(data["y"])
    Xv, yv = engine.asarray(data["Xv"]), data["yv"]
    _, steps_per_epoch = batch_plan(cfg, len(data["y"]))

    # Row 0: the untrained network, so every curve starts from the same point.
    v_cost, v_error = evaluate(engine, spec, engine.put_tree(params), engine.put_tree(model_state), Xv, yv)
    rows = [{"epoch": 0.0, "step": 0, "time": 0.0, "lr": learning_rate_at(cfg, steps_per_epoch, 0),
             "train_cost": None, "valid_cost": v_cost, "valid_error": v_error}]

    def on_evaluation(row):
        rows.append(dict(row))
        if task.budget is not None and row["time"] >= task.budget:
            raise _BudgetReached

    status, message, stopped_by_budget = "ok", "", False
    final = None
    started = time.perf_counter()
    try:
        result = fit(engine, spec, cfg, X, y, Xv, yv, params=params, model_state=model_state,
                     on_evaluation=on_evaluation)
        final = (result.params, result.model_state)
    except _BudgetReached:
        stopped_by_budget = True
        host = engine.trainer_record.to_numpy(engine.trainer_record.last_ts)
        final = (host.params, host.model_state)
    except DivergenceError as exc:
        status, message = "diverged", str(exc)
    wall = time.perf_counter() - started
    recorder = engine.trainer_record

    history = rows
    trained = history[1:]
    metrics = {"steps": trained[-1]["step"] if trained else 0,
               "epochs": trained[-1]["epoch"] if trained else 0.0,
               "train_seconds": trained[-1]["time"] if trained else 0.0,
               "wall_seconds": wall, "stopped_by_budget": stopped_by_budget}
    if trained:
        errors = [r["valid_error"] for r in trained]
        best = int(np.argmin(errors))
        metrics.update(final_valid_error=trained[-1]["valid_error"], final_valid_cost=trained[-1]["valid_cost"],
                       best_valid_error=errors[best], best_epoch=trained[best]["epoch"],
                       best_step=trained[best]["step"])
    if final is not None and data["test"] is not None:
        Xt, yt = data["test"]
        logits = engine.logits(spec, engine.put_tree(final[0]), engine.put_tree(final[1]), engine.asarray(Xt))
        metrics["test_cost"], metrics["test_error"] = cost_and_error(logits, yt)
    record = {
        "version": RESULT_VERSION, "run_id": task.run_id, "index": task.index, "label": task.label,
        "seed": task.seed, "status": status, "message": message, "config": task.config, "budget": task.budget,
        "engine": engine.name, "device": engine.device, "threads": threads, "dataset": data["name"],
        "metrics": metrics, "history": history,
        "fingerprint": {"init_params": recorder.init_digest if recorder else None,
                        "batch_orders": recorder.orders if recorder else [],
                        "n_train": int(len(data["y"]))},
        "versions": {"descend": descend.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    write_json(task.path, record)
    return record


# --- workers -------------------------------------------------------------------------------------


def _worker_init():
    """In each spawned worker: one compute thread, and Ctrl-C handled by the parent alone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl is a dependency
        pass


class _single_thread_environment:
    """Spawned children inherit the environment: set one thread per library while they start."""

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
        for k in THREAD_VARIABLES:
            os.environ[k] = "1"
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        return False


def _run_pool(tasks: list[RunTask], workers: int, on_done) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    with _single_thread_environment():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
        try:
            futures = {pool.submit(execute, t): t for t in tasks}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(futures[fut], fut.result())  # a worker's exception aborts the study
        except BaseException:
            # Ctrl-C, SIGTERM or a failed run: stop the workers we started; finished results stay on disk.
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(timeout=5)
            raise
        pool.shutdown(wait=True)


# --- the study -----------------------------------------------------------------------------------


def default_workers(study: Study, pending: int) -> int:
    """One process per core for independent runs; one at a time when wall-clock time is the measure."""
    if study.timing_sensitive or study.budget is not None:
        return 1
    return max(1, min(os.cpu_count() or 1, pending))


def run_compare(study: Study, out_dir: str | Path | None = None, *, workers: int | None = None,
                log=None, root: str | Path = "runs") -> CompareResult:
    """Run every (configuration, seed) of ``study`` not finished yet in ``out_dir``; write the reports.

    ``out_dir`` may hold an earlier, interrupted compare of the same study: its
    finished runs are kept.  A different study there is refused.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if out_dir is None:
        out_dir = make_run_dir(root, f"compare-{study.preset or _slug(Path(study.dataset).name)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored_path = out_dir / "compare.json"
    if stored_path.is_file():
        stored = Study.from_dict(read_json(stored_path)["study"])
        if not stored.same_plan(study):
            raise ConfigError(f"{out_dir} holds a different comparison (compare.json); continue it with "
                              f"--resume {out_dir} or choose another --out")
        # The runs are the stored ones; what only shapes the report may change on a rerun.
        study = dataclasses.replace(stored, target_error=study.target_error, title=study.title or stored.title)
    else:
        write_json(stored_path, {"study": study.to_dict(), "descend": descend.__version__,
                                 "command": " ".join(sys.argv), "created": time.strftime("%Y-%m-%d %H:%M:%S")})

    tasks = plan(study, out_dir)
    records, pending = {}, []
    for t in tasks:
        record = _finished(t)
        if record is None:
            pending.append(t)
        else:
            records[(t.index, t.seed)] = record
    n_workers = workers or default_workers(study, len(pending))
    if n_workers < 1:
        raise ConfigError(f"`workers` must be >= 1. Received: workers={n_workers}")
    n_workers = min(n_workers, max(len(pending), 1))
    engines = sorted({t.config["engine"] if t.config["engine"] != "auto" else default_engine() for t in tasks})
    log(f"descend: comparing {len(study.runs)} configurations x {len(study.seeds)} seeds on {study.dataset} "
        f"(engine {', '.join(engines)}, {n_workers} worker{'s' if n_workers > 1 else ''}"
        f"{', one thread each' if n_workers > 1 else ''}); {len(records)} of {len(tasks)} runs already done; "
        f"writing {out_dir}")
    count = [len(records)]

    def on_done(task: RunTask, record: dict) -> None:
        records[(task.index, task.seed)] = record
        count[0] += 1
        log(f"[{count[0]}/{len(tasks)}] {_run_line(record)}")

    try:
        if n_workers == 1:
            for t in pending:
                on_done(t, execute(t))
        elif pending:
            _run_pool([RunTask(**{**t.__dict__, "threads": 1}) for t in pending], n_workers, on_done)
    except KeyboardInterrupt:
        _DATA.clear()
        log(f"descend: interrupted; {count[0]} of {len(tasks)} runs are finished and kept in {out_dir} "
            f"(continue with: descend compare --resume {out_dir})")
        raise
    _DATA.clear()  # the datasets cached for this study's runs
    from descend.experiments.compare_report import write_outputs

    summary, same_start = write_outputs(study, records, out_dir)
    return CompareResult(out_dir, study, records, summary, skipped=len(tasks) - len(pending),
                         same_start=same_start)


def _run_line(record: dict) -> str:
    m = record["metrics"]
    head = f"{record['label']} (seed {record['seed']})"
    if record["status"] != "ok":
        return f"{head}: {record['message'].split(';')[0] or record['status']}"
    text = f"{head}: valid error {100 * m['final_valid_error']:.2f}%"
    if m.get("test_error") is not None:
        text += f", test {100 * m['test_error']:.2f}%"
    text += f" after {m['epochs']:.3g} epochs in {m['train_seconds']:.1f} s"
    if m.get("stopped_by_budget"):
        text += " (budget)"
    return text


def load_study(directory: str | Path) -> Study:
    """The study stored in a compare directory (for ``--resume``)."""
    path = Path(directory) / "compare.json"
    if not path.is_file():
        raise ConfigError(f"`resume` must be a compare directory with compare.json. Received: resume={str(directory)!r}")
    return Study.from_dict(read_json(path)["study"])
