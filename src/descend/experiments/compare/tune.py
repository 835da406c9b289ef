"""Tuning before a comparison: every configuration searched with the same budget of trials.

``descend compare --tune "lr=log(1e-4,1) momentum=0.8,0.9,0.99" --budget 16``
gives every run of the study the same number of trials over the keys it does
not fix itself (a key written in a run spec is that run's, not tuned), using
the search machinery: the space syntax of ``descend search``, its samplers
(TPE by default; grid and random points fixed in advance) and its stratified
folds.  Trials are scored on validation data only -- the validation split
(one run of the compare trainer, its final validation error) or, with
``folds``, the mean held-out error over K stratified folds of the training
rows -- and train with the study's first seed.  A run that diverges scores
1.0 (every example wrong).

Each run's trials form one Optuna study in ``tune/<run-id>.db`` inside the
compare directory, filled by one tuning session (:func:`tune_session`) that
the placement layer runs like any other task: sessions of different runs run
in parallel.  A session skips the trials already finished there, so an
interrupted tuned comparison resumes without redoing them.  The TPE sampler
of trial ``t`` is seeded with ``(seed, t)`` and sees the finished trials
only, so a rerun -- interrupted or not -- proposes the same points and picks
the same tuned values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descend.errors import ConfigError, DescendError
from descend.experiments.compare.spec import RunDef, Study, build_run, parse_run_spec
from descend.experiments.search.space import Space, parse_space

TUNE_METHODS = ("tpe", "grid", "random")
#: Optimizer options a tuning space may name besides the TrainConfig fields of ``descend search``.
OPTION_TYPES = {k: "float" for k in ("eps", "rho", "b1", "b2", "initial_accumulator", "weight_decay")}
#: Keys of a run spec that say how the comparison treats the run, not how it trains.
NOT_SETTINGS = ("optimizer", "label", "convention", "budget")
DIVERGED_SCORE = 1.0


@dataclass(frozen=True)
class Tuning:
    """How the study's runs are tuned: ``spaces[i]`` is run i's space ("" = nothing to tune)."""

    trials: int
    method: str = "tpe"
    folds: int | None = None
    space: str = ""
    spaces: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"trials": self.trials, "method": self.method, "folds": self.folds, "space": self.space,
                "spaces": list(self.spaces)}

    @classmethod
    def from_dict(cls, d: dict) -> Tuning:
        return cls(int(d["trials"]), d["method"], d.get("folds"), d.get("space", ""), tuple(d["spaces"]))


def _tune_error(exc: DescendError) -> ConfigError:
    return ConfigError(str(exc).replace("`space`", "`tune`"))


def parse_tune_space(text: str, run: RunDef | None = None) -> Space:
    try:
        return parse_space(text, run.config if run is not None else None, extra=OPTION_TYPES)
    except DescendError as exc:
        raise _tune_error(exc) from None


def run_values(run: RunDef) -> dict:
    """The keys the run spec wrote itself (what tuning leaves alone), with the optimizer."""
    return parse_run_spec(run.spec)


def trial_run(study: Study, run: RunDef, params: dict, where: str) -> RunDef:
    """``run`` with the tuned keys set to ``params`` (decoded values)."""
    return build_run({**run_values(run), **params}, study.base, dataset=study.dataset, convention=run.convention,
                     budget=run.budget, where=where, label=run.label)


def _representative(param) -> object:
    return param.decode(param.choices[0]) if not param.is_range else param.decode(param.low)


def resolve_tuning(study: Study, space: str | None, trials, *, method: str = "tpe", folds=None,
                   per_run: dict[str, str] | None = None) -> Tuning:
    """Check the tuning request against every run; each run's space without the keys it fixes.

    ``per_run``: label -> a space of that run's own (a preset's), which ``space`` extends or overrides.
    """
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ConfigError(f"`budget` (tuning trials per run) must be an integer >= 1. Received: budget={trials!r}")
    if method not in TUNE_METHODS:
        raise ConfigError(f"`tune_method` must be one of {', '.join(TUNE_METHODS)}. Received: tune_method={method!r}")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2):
        raise ConfigError(f"`folds` must be an integer >= 2 (leave it out to tune on the validation split). "
                          f"Received: folds={folds!r}")
    space = " ".join((space or "").split())
    common = parse_tune_space(space).params if space else ()
    per_run = per_run or {}
    spaces, tuned_somewhere = [], set()
    for run in study.runs:
        items = {p.name: p for p in (parse_tune_space(per_run[run.label]).params if per_run.get(run.label) else ())}
        items.update({p.name: p for p in common})
        fixed = set(run_values(run)) - set(NOT_SETTINGS)
        own = [p for name, p in items.items() if name not in fixed]
        for p in own:
            try:
                trial_run(study, run, {p.name: _representative(p)}, f"run {run.label!r}")
            except DescendError as exc:
                raise ConfigError(f"`tune` names `{p.name}`, which run {run.label!r} cannot take: "
                                  f"{str(exc).split(': ', 1)[-1]}") from None
        text = " ".join(p.item for p in own)
        if text and method == "grid":
            try:
                parse_tune_space(text, run).grid()
            except ConfigError as exc:
                raise ConfigError(f"{exc} (run {run.label!r})") from None
        spaces.append(text)
        tuned_somewhere.update(p.name for p in own)
    untouched = [p.name for p in common if p.name not in tuned_somewhere]
    if untouched:
        raise ConfigError(f"`tune` has nothing left to tune for {', '.join(f'`{n}`' for n in untouched)}: every run "
                          f"fixes it in its run spec (leave it out of the run specs or out of --tune). "
                          f"Received: tune={space!r}")
    if not any(spaces):
        raise ConfigError("`tune` leaves nothing to tune: give --tune \"lr=log(1e-4,1)\" or a preset with spaces")
    return Tuning(int(trials), method, None if folds is None else int(folds), space, tuple(spaces))


# --- one run's tuning session (what a worker runs) --------------------------------------------------------


@dataclass(frozen=True)
class TuneTask:
    """One run's trials, as sent to a worker (plain data)."""

    index: int
    run_id: str
    study: dict
    tuning: dict
    seed: int
    db: str
    trial_dir: str
    threads: int | None = None


def fixed_points(method: str, space: Space, trials: int, seed: int) -> list[dict]:
    """The points of grid and random tuning, fixed in advance ([] for TPE, which proposes as it goes).

    Grid tuning takes every cell when the budget allows, else ``trials`` cells chosen with the seed.
    """
    if method == "grid":
        cells = space.grid()
        if len(cells) <= trials:
            return cells
        pick = np.random.default_rng([int(seed), 0x6121D]).choice(len(cells), trials, replace=False)
        return [cells[i] for i in sorted(pick)]
    if method == "random":
        rng = np.random.default_rng([int(seed), 0x7E5A])
        return [space.sample(rng) for _ in range(trials)]
    return []


def n_trials(tuning: Tuning, space: Space) -> int:
    return min(tuning.trials, len(space.grid())) if tuning.method == "grid" else tuning.trials


def _score_validation(task: TuneTask, run: RunDef, ticket: int) -> dict:
    from descend.experiments.compare.run import RunTask, execute

    cfg = run.config.replace(seed=task.seed)
    path = Path(task.trial_dir) / f"trial-{ticket:03d}" / "result.json"
    record = execute(RunTask(f"{task.run_id}-trial{ticket}", task.index, run.label, task.seed, cfg.to_dict(),
                             run.budget, str(path), task.threads))
    if record.get("metric", "valid_error") != "valid_error":
        from descend.errors import ConfigError

        raise ConfigError(f"tuning scores the classification error of validation rows; dataset {cfg.dataset!r} "
                          f"gives {record['metric']} ({record['task']}): compare it without tuning")
    m = record["metrics"]
    error = m.get("final_valid_error") if record["status"] == "ok" else None
    return {"score": error, "steps": int(m.get("steps", 0)), "seconds": float(m.get("train_seconds", 0.0)),
            "status": record["status"]}


def _score_folds(task: TuneTask, run: RunDef, contexts: dict) -> dict:
    from descend.experiments.search.worker import CVContext

    cfg = run.config.replace(seed=task.seed)
    key = (cfg.dataset, cfg.format, cfg.seed)
    if key not in contexts:
        # CVContext parses a space of its own; tuned optimizer options are outside it, so give it a fixed one.
        contexts[key] = CVContext({"config": cfg.to_dict(), "space": f"epochs={cfg.epochs}",
                                   "folds": task.tuning["folds"], "metric": "valid_error",
                                   "threads": task.threads or 1})
    ctx = contexts[key]
    scores, steps, seconds = [], 0, 0.0
    try:
        for fold in range(ctx.k):
            result = ctx.fold_score(cfg, fold)
            scores.append(result["score"])
            steps += int(result.get("steps", 0))
            seconds += float(result.get("seconds", 0.0))
    except DescendError:
        return {"score": None, "steps": steps, "seconds": seconds, "status": "diverged"}
    return {"score": float(np.mean(scores)), "steps": steps, "seconds": seconds, "status": "ok",
            "fold_scores": scores}


def _clean(score) -> float:
    return DIVERGED_SCORE if score is None or not math.isfinite(score) else min(float(score), DIVERGED_SCORE)


def tune_session(task: TuneTask) -> dict:
    """Run the trials of one configuration not finished yet in its Optuna study; every trial of it."""
    from optuna.trial import TrialState, create_trial

    from descend.experiments.search.storage import import_optuna
    from descend.experiments.search.worker import make_sampler

    optuna = import_optuna()
    study = Study.from_dict(task.study)
    tuning = Tuning.from_dict(task.tuning)
    run = study.runs[task.index]
    space = parse_tune_space(tuning.spaces[task.index], run)
    Path(task.db).parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{Path(task.db).resolve()}"
    store = optuna.create_study(storage=url, study_name="tune", direction="minimize", load_if_exists=True)
    for t in store.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        store.tell(t.number, state=TrialState.FAIL)  # its session was interrupted: run that ticket again
    done = {t.user_attrs["ticket"] for t in store.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    total = n_trials(tuning, space)
    points = fixed_points(tuning.method, space, total, task.seed)
    contexts: dict = {}
    for ticket in range(total):
        if ticket in done:
            continue
        if points:
            params, trial = points[ticket], None
        else:
            store.sampler = make_sampler({"config": {"seed": task.seed}, "method": "tpe", "trials": total},
                                         worker_index=ticket)
            trial = store.ask({p.name: p.distribution() for p in space.params})
            params = dict(trial.params)
        decoded = {p.name: p.decode(params[p.name]) for p in space.params}
        candidate = trial_run(study, run, decoded, f"run {run.label!r} trial {ticket}")
        info = (_score_folds(task, candidate, contexts) if tuning.folds else
                _score_validation(task, candidate, ticket))
        score = _clean(info.pop("score"))
        attrs = {"ticket": ticket, **info}
        if trial is None:
            store.add_trial(create_trial(params=params, distributions={p.name: p.distribution() for p in space.params},
                                         value=score, user_attrs=attrs))
        else:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            store.tell(trial, score)
    trials = [{"ticket": t.user_attrs["ticket"], "params": dict(t.params), "score": t.value,
               **{k: t.user_attrs.get(k) for k in ("status", "steps", "seconds")}}
              for t in store.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return {"index": task.index, "trials": sorted(trials, key=lambda t: t["ticket"])}


def best_trial(trials: list[dict]) -> dict | None:
    """The lowest validation error; the earliest trial among equals."""
    return min(trials, key=lambda t: (t["score"], t["ticket"])) if trials else None


def best_so_far(trials: list[dict]) -> list[float]:
    out, best = [], math.inf
    for t in sorted(trials, key=lambda t: t["ticket"]):
        best = min(best, t["score"])
        out.append(best)
    return out


def tuned_study(study: Study, tuning: Tuning, sessions: dict[int, dict]) -> tuple[Study, list[dict]]:
    """The study with each run at its best trial's values, and per run what was tuned (for the report)."""
    runs, rows = [], []
    for i, run in enumerate(study.runs):
        text = tuning.spaces[i]
        trials = sessions.get(i, {}).get("trials", []) if text else []
        best = best_trial(trials)
        if best is None:
            runs.append(run)
            rows.append({"label": run.label, "space": text, "trials": [], "best": None, "values": {}})
            continue
        space = parse_tune_space(text, run)
        values = {p.name: p.decode(best["params"][p.name]) for p in space.params}
        tuned = trial_run(study, run, values, f"run {run.label!r}")
        runs.append(dataclasses.replace(tuned, label=run.label))
        rows.append({"label": run.label, "space": text, "trials": trials, "best": best,
                     "values": {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}})
    return dataclasses.replace(study, runs=tuple(runs)), rows


def session_tasks(study: Study, tuning: Tuning, out_dir: Path, run_ids: list[str], threads: int | None) -> list:
    d, t = study.to_dict(), tuning.to_dict()
    return [TuneTask(i, run_ids[i], d, t, study.seeds[0], str(out_dir / "tune" / f"{run_ids[i]}.db"),
                     str(out_dir / "tune" / run_ids[i]), threads)
            for i in range(len(study.runs)) if tuning.spaces[i]]
