"""``descend compare``: reproducible, multi-seed comparisons of training configurations.

A :class:`~descend.experiments.compare.spec.Study` is a list of configurations
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
compute thread each (:mod:`descend.placement`: a killed worker's run is run
again), ``dask`` on an existing Dask cluster; a finished run's
``result.json`` is written atomically, so an interrupted compare continues
where it stopped without redoing finished runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import descend
from descend.engines import default_engine
from descend.errors import ConfigError
from descend.experiments.compare.run import _DATA, RESULT_FILE, RunTask, execute
from descend.experiments.compare.spec import Study
from descend.experiments.compare.tune import Tuning, best_trial, session_tasks, tune_session, tuned_study
from descend.io.rundir import make_run_dir, read_json, write_json
from descend.placement import Placement, open_pool, run_in

@dataclass
class CompareResult:
    out_dir: Path
    study: Study
    records: dict  # (config index, seed) -> result record
    summary: list
    skipped: int = 0
    same_start: list = field(default_factory=list)
    tuning: list | None = None  # per run, what tuning chose (tuning.json's rows)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "run"


def run_ids(study: Study) -> list[str]:
    return [f"{i:02d}-{_slug(run.label)}" for i, run in enumerate(study.runs)]


def plan(study: Study, out_dir: Path) -> list[RunTask]:
    """All (configuration, seed) tasks, seed-major: a finished seed compares every configuration."""
    tasks = []
    ids = run_ids(study)
    for seed in study.seeds:
        for i, run in enumerate(study.runs):
            run_id = f"{ids[i]}-seed{seed}"
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
    if record.get("budget") != task.budget or _config(record.get("config")) != task.config:
        return None
    return record


def _config(stored) -> dict | None:
    """A stored run's config with the options added since it was written at their defaults (a run is
    not redone because the config learned a new option)."""
    from descend.train.config import TrainConfig

    try:
        return TrainConfig.from_dict(stored).to_dict()
    except Exception:  # a config this version cannot read is redone
        return None


# --- placement ----------------------------------------------------------------------------------


def execute_placed(task: RunTask) -> dict:
    """:func:`execute` on a worker that may not see this machine's files: the caller writes the record."""
    with tempfile.TemporaryDirectory(prefix="descend-compare-") as tmp:
        return execute(dataclasses.replace(task, path=str(Path(tmp) / RESULT_FILE)))


def tune_placed(task):
    """A tuning session on a worker that may not see this machine's files: its trials live in a scratch
    study there, and the caller writes the session's result."""
    with tempfile.TemporaryDirectory(prefix="descend-tune-") as tmp:
        return tune_session(dataclasses.replace(task, db=str(Path(tmp) / "tune.db"), trial_dir=tmp))


def _place(pool, local_fn, placed_fn, tasks: list, in_flight: int | None, on_done, log, interrupted) -> None:
    """Run ``tasks`` on the Dask ``pool``, or on local workers (one in this process, more with one thread each);
    on Ctrl-C, log ``interrupted()`` and re-raise."""
    one_thread = [dataclasses.replace(t, threads=1) for t in tasks]
    try:
        if pool is not None:
            run_in(pool, placed_fn, one_thread, limit=in_flight, on_result=on_done)
        else:
            with open_pool(Placement(workers=in_flight, threads=1), log=log) as local:
                run_in(local, local_fn, tasks if in_flight == 1 else one_thread, on_result=on_done)
    except KeyboardInterrupt:
        _DATA.clear()
        log(interrupted())
        raise


# --- the study -----------------------------------------------------------------------------------


def default_workers(study: Study, pending: int) -> int:
    """One process per core for independent runs; one at a time when wall-clock time is the measure."""
    if study.timing_sensitive or study.budget is not None:
        return 1
    return max(1, min(os.cpu_count() or 1, pending))


def run_compare(study: Study, out_dir: str | Path | None = None, *, workers: int | None = None,
                dask: str | None = None, log=None, root: str | Path = "runs") -> CompareResult:
    """Run every (configuration, seed) of ``study`` not finished yet in ``out_dir``; write the reports.

    ``out_dir`` may hold an earlier, interrupted compare of the same study: its
    finished runs are kept.  A different study there is refused.  ``dask``:
    the address of an existing Dask scheduler that places the runs (one
    thread each; ``workers`` then bounds the runs in flight, by default all
    of them, or one when wall-clock time is measured).
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if workers is not None and workers < 1:
        raise ConfigError(f"`workers` must be >= 1. Received: workers={workers}")
    _check_data(study)
    if dask:  # reached before anything is written: a bad address leaves no half-made directory
        with open_pool(Placement(dask=dask, workers=None), log=log, name="descend-compare") as pool:
            return _run_compare(study, out_dir, workers, pool, log, root)
    return _run_compare(study, out_dir, workers, None, log, root)


def _check_data(study: Study) -> None:
    """Load each dataset the runs read, once, before anything is written: a malformed file, a missing
    ``target`` column or a wrong ``task`` is one line and leaves no half-made directory."""
    from descend.train.setup import load_dataset

    seen = set()
    for run in study.runs:
        c = run.config
        key = (c.dataset, c.format, c.validation, c.target, c.task)
        if key not in seen:
            seen.add(key)
            load_dataset(c)


def _run_compare(study: Study, out_dir, workers: int | None, pool, log, root) -> CompareResult:
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

    if study.tune:
        study = _tune(study, out_dir, workers, pool, log)
    tasks = plan(study, out_dir)
    records, pending = {}, []
    for t in tasks:
        record = _finished(t)
        if record is None:
            pending.append(t)
        else:
            records[(t.index, t.seed)] = record
    engines = sorted({t.config["engine"] if t.config["engine"] != "auto" else default_engine() for t in tasks})
    if pool is not None:
        in_flight = workers or (1 if study.timing_sensitive or study.budget is not None else None)
        where = (f"on the Dask cluster at {pool.address}, one thread per run"
                 + (f", at most {in_flight} at a time" if in_flight else ""))
    else:
        n_workers = min(workers or default_workers(study, len(pending)), max(len(pending), 1))
        in_flight = n_workers
        where = f"{n_workers} worker{'s' if n_workers > 1 else ''}{', one thread each' if n_workers > 1 else ''}"
    log(f"descend: comparing {len(study.runs)} configurations x {len(study.seeds)} seeds on {study.dataset} "
        f"(engine {', '.join(engines)}, {where}); {len(records)} of {len(tasks)} runs already done; "
        f"writing {out_dir}")
    count = [len(records)]

    def on_done(task: RunTask, record: dict) -> None:
        if pool is not None:
            write_json(task.path, record)  # the worker wrote it on its own machine
        records[(task.index, task.seed)] = record
        count[0] += 1
        log(f"[{count[0]}/{len(tasks)}] {_run_line(record)}")

    _place(pool, execute, execute_placed, pending, in_flight, on_done, log,
           lambda: f"descend: interrupted; {count[0]} of {len(tasks)} runs are finished and kept in {out_dir} "
                   f"(continue with: descend compare --resume {out_dir})")
    _DATA.clear()  # the datasets cached for this study's runs
    from descend.experiments.compare.report import write_outputs

    tuning = _tuning_rows(study, out_dir)
    summary, same_start = write_outputs(study, records, out_dir, tuning=tuning)
    return CompareResult(out_dir, study, records, summary, skipped=len(tasks) - len(pending),
                         same_start=same_start, tuning=tuning)


def _session_file(out_dir: Path, run_id: str) -> Path:
    return out_dir / "tune" / f"{run_id}.json"


def _finished_session(path: Path, tuning: dict, space: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        stored = read_json(path)
    except Exception:  # a damaged file is redone from the trials its study kept
        return None
    return stored if stored.get("tuning") == tuning and stored.get("space") == space else None


def _tune(study: Study, out_dir: Path, workers: int | None, pool, log) -> Study:
    """Tune every run with the study's budget (sessions placed like runs); the study at the tuned values."""
    tuning = Tuning.from_dict(study.tune)
    ids = run_ids(study)
    tasks = session_tasks(study, tuning, out_dir, ids, None)
    sessions, pending = {}, []
    for t in tasks:
        done = _finished_session(_session_file(out_dir, t.run_id), study.tune, tuning.spaces[t.index])
        if done is None:
            pending.append(t)
        else:
            sessions[t.index] = done
    if pending:
        in_flight = workers or (None if pool is not None else default_workers(study, len(pending)))
        if pool is None:
            in_flight = min(in_flight, len(pending))
        how = f"{tuning.folds}-fold cross-validation" if tuning.folds else "the validation split"
        log(f"descend: tuning {len(tasks)} configurations, {tuning.trials} {tuning.method} trials each on {how} "
            f"(seed {study.seeds[0]}); {len(tasks) - len(pending)} already tuned")

    def on_done(task, result: dict) -> None:
        stored = {"tuning": study.tune, "space": tuning.spaces[task.index], "label": study.runs[task.index].label,
                  **result}
        write_json(_session_file(out_dir, task.run_id), stored)
        sessions[task.index] = stored
        best = best_trial(result["trials"])
        if best is not None:
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
            log(f"tuned {study.runs[task.index].label}: valid error {100 * best['score']:.2f}% at {shown} "
                f"(best of {len(result['trials'])} trials)")

    if pending:
        _place(pool, tune_session, tune_placed, pending, in_flight, on_done, log,
               lambda: f"descend: interrupted while tuning; the finished trials are kept in {out_dir / 'tune'} "
                       f"(continue with: descend compare --resume {out_dir})")
    tuned, rows = tuned_study(study, tuning, sessions)
    write_json(out_dir / "tuning.json", {"tuning": study.tune, "runs": rows})
    if not tuning.folds:
        _reuse_best_trials(tuned, rows, tasks, out_dir)
    return tuned


def _reuse_best_trials(tuned: Study, rows: list[dict], sessions: list, out_dir: Path) -> None:
    """The first seed's run of a configuration tuned on the validation split is its best trial, already
    trained (same configuration, same seed): its record becomes that run's instead of training it again."""
    by_index = {t.index: t for t in sessions}
    for task in plan(tuned, out_dir):
        session = by_index.get(task.index)
        best = rows[task.index]["best"]
        if task.seed != tuned.seeds[0] or session is None or best is None or _finished(task) is not None:
            continue
        source = Path(session.trial_dir) / f"trial-{best['ticket']:03d}" / RESULT_FILE
        try:
            record = read_json(source)
        except Exception:  # gone (a Dask worker's scratch) or damaged: the run is trained as usual
            continue
        if record.get("config") == task.config and record.get("budget") == task.budget:
            write_json(task.path, {**record, "run_id": task.run_id})


def _tuning_rows(study: Study, out_dir: Path) -> list[dict] | None:
    path = out_dir / "tuning.json"
    return read_json(path)["runs"] if study.tune and path.is_file() else None


def _run_line(record: dict) -> str:
    m = record["metrics"]
    head = f"{record['label']} (seed {record['seed']})"
    if record["status"] != "ok":
        return f"{head}: {record['message'].split(';')[0] or record['status']}"
    key = record.get("metric", "valid_error")
    if key.endswith("_rmse"):
        text = f"{head}: {key.replace('_', ' ').replace('rmse', 'RMSE')} {m.get('final_' + key, float('nan')):.4g}"
        if m.get("test_rmse") is not None:
            text += f", test {m['test_rmse']:.4g}"
    else:
        text = f"{head}: {key.replace('_', ' ')} {100 * m.get('final_' + key, float('nan')):.2f}%"
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
