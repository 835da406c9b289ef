"""descend compare --tune: the same trial budget per run, validation-only selection, resume, rerun identity,
bad input, tuned presets and the performance profile -- on a tiny synthetic NPZ with the NumPy engine."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from descend.cli.main import main
from descend.errors import ConfigError
from descend.experiments.compare import run_compare
from descend.experiments.compare import tune as tune_mod
from descend.experiments.compare.profile import performance_profile, profile_area
from descend.experiments.compare.build import build_study
from descend.experiments.compare.spec import PRESETS
from descend.experiments.compare.tune import Tuning, best_so_far
import test_compare


blobs = test_compare.blobs  # the tiny three-class NPZ fixture
BASE = {"hidden": (8,), "epochs": 2, "batch_size": 30, "engine": "numpy"}
RUNS = ("nesterov", "momentum momentum=0.9")
SPACE = "lr=log(1e-3,1) momentum=0.8,0.9"


def _study(blobs, runs=RUNS, seeds=2, **kw):
    return build_study(blobs, runs=runs, seeds=seeds, base={**BASE, **kw.pop("base", {})}, **kw)


def _quiet(_line):
    pass


def _table(result) -> list:
    return [(r["label"], r["final_valid_error"], r["test_error"]) for r in result.summary]


# --- what is tuned ------------------------------------------------------------------------------------------


def test_keys_a_run_fixes_are_not_tuned_for_it(blobs):
    study = _study(blobs, tune=SPACE, tune_budget=3)
    tuning = Tuning.from_dict(study.tune)
    assert tuning.spaces == ("lr=log(1e-3,1) momentum=0.8,0.9", "lr=log(1e-3,1)")
    assert (tuning.trials, tuning.method, tuning.folds) == (3, "tpe", None)


def test_a_study_file_tune_table(blobs, tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(f'dataset = "{blobs}"\nseeds = 1\n[base]\nhidden = [8]\nepochs = 1\nengine = "numpy"\n'
                    '[tune]\nspace = "lr=0.01,0.1"\nbudget = 2\nmethod = "grid"\nfolds = 2\n'
                    '[[run]]\nspec = "sgd"\n[[run]]\nspec = "adam"\ntune = "b1=0.8,0.9"\n')
    tuning = Tuning.from_dict(build_study(config_file=str(path)).tune)
    assert tuning.spaces == ("lr=0.01,0.1", "b1=0.8,0.9 lr=0.01,0.1")
    assert (tuning.trials, tuning.method, tuning.folds) == (2, "grid", 2)


@pytest.mark.parametrize("runs,space,budget,message", [
    (("sgd", "adam"), "momentum=0.8,0.9", 2, "`tune` names `momentum`, which run 'sgd' cannot take"),
    (("sgd",), "lr=log(1e-3,1) foo=1,2", 2, "`tune` 'foo' is not a searchable parameter"),
    (("sgd", "adam"), "lr=log(1e-3,1)", 0, "`budget` (tuning trials per run) must be an integer >= 1"),
    (("sgd lr=0.1", "adam lr=0.01"), "lr=log(1e-3,1)", 2, "`tune` has nothing left to tune for `lr`"),
    (("sgd",), "lr=log(1e-3,1)", 2.5, "Received: budget=2.5"),
])
def test_bad_tuning_requests(blobs, runs, space, budget, message):
    with pytest.raises(ConfigError, match=None) as info:
        _study(blobs, runs=runs, tune=space, tune_budget=budget)
    assert message in str(info.value)


@pytest.mark.parametrize("argv,message", [
    (["--run", "sgd", "--run", "adam", "--tune", "momentum=0.8,0.9"], "which run 'sgd' cannot take"),
    (["--run", "sgd", "--tune", "lr=log(1e-3,1)", "--budget", "0"], "must be an integer >= 1"),
    (["--run", "sgd lr=0.1", "--run", "adam lr=0.1", "--tune", "lr=log(1e-3,1)"], "nothing left to tune"),
])
def test_cli_bad_tuning_is_one_line_exit_2(blobs, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["compare", blobs, *argv, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_tuned_presets_check_on_build(blobs):
    for name in ("tuned-optimizers", "tuned-schedules"):
        study = build_study(blobs, preset=name, seeds=1, base=BASE)
        tuning = Tuning.from_dict(study.tune)
        assert len(tuning.spaces) == len(study.runs) == len(PRESETS[name].runs)
        assert all(s.startswith("lr=") for s in tuning.spaces)
    adamw = Tuning.from_dict(build_study(blobs, preset="tuned-optimizers", seeds=1, base=BASE).tune).spaces[-1]
    assert "weight_decay=" in adamw
    schedules = Tuning.from_dict(build_study(blobs, preset="tuned-schedules", seeds=1, base=BASE).tune).spaces
    assert schedules[0] == "lr=log(1e-3,1)"  # the constant run fixes its schedule
    assert "schedule=step:" in schedules[1]


# --- running it ---------------------------------------------------------------------------------------------


def test_tuned_compare_runs_every_run_at_its_best_and_reruns_identically(blobs, tmp_path):
    study = _study(blobs, tune=SPACE, tune_budget=3, target_error=0.3)
    first = run_compare(study, tmp_path / "a", workers=1, log=_quiet)
    rows = json.loads((tmp_path / "a" / "tuning.json").read_text())["runs"]
    assert [len(r["trials"]) for r in rows] == [3, 3]
    for row, run in zip(rows, first.study.runs):
        best = min(row["trials"], key=lambda t: (t["score"], t["ticket"]))
        assert row["best"]["ticket"] == best["ticket"]
        assert run.config.lr == pytest.approx(best["params"]["lr"])  # the comparison trains the best setting
    assert first.study.runs[1].config.momentum == 0.9  # fixed by its run spec
    for row, rid in zip(rows, ("00-nesterov", "01-momentum-momentum-0-9")):
        reused = json.loads((tmp_path / "a" / "runs" / f"{rid}-seed0" / "result.json").read_text())
        trial = json.loads((tmp_path / "a" / "tune" / rid / f"trial-{row['best']['ticket']:03d}" /
                            "result.json").read_text())
        assert reused["history"] == trial["history"] and reused["metrics"]["final_valid_error"] == row["best"]["score"]
        assert reused["metrics"]["wall_seconds"] == trial["metrics"]["wall_seconds"]  # reused, not trained again
    assert first.study.runs[0].config.momentum == rows[0]["values"]["momentum"]
    for name in ("tuning-curves.png", "lr-sensitivity.png", "tuning.csv"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    html = (tmp_path / "a" / "report.html").read_text()
    assert "tuned values" in html and "learning-rate sensitivity" in html
    assert "median" in (tmp_path / "a" / "summary.md").read_text()

    again = run_compare(study, tmp_path / "b", workers=2, log=_quiet)  # same seeds, other placement
    rows_b = json.loads((tmp_path / "b" / "tuning.json").read_text())["runs"]
    assert [r["values"] for r in rows_b] == [r["values"] for r in rows]
    assert _table(again) == _table(first)


class _Killed(Exception):
    """Stands for the coordinator being killed in the middle of a trial."""


def test_resume_redoes_no_finished_trial_or_run(blobs, tmp_path, monkeypatch):
    study = _study(blobs, tune="lr=log(1e-3,1)", tune_budget=3, runs=("sgd", "adam"), seeds=1)
    calls, killed = [], []
    real = tune_mod._score_validation

    def interrupted(task, run, ticket):
        calls.append((task.index, ticket))
        if task.index == 1 and ticket == 1 and not killed:
            killed.append(ticket)
            raise _Killed
        return real(task, run, ticket)

    monkeypatch.setattr(tune_mod, "_score_validation", interrupted)
    with pytest.raises(_Killed):
        run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    assert calls == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    calls.clear()
    resumed = run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    assert calls == [(1, 1), (1, 2)]  # run 0 was tuned; run 1 keeps its first trial
    calls.clear()
    fresh = run_compare(study, tmp_path / "d", workers=1, log=_quiet)
    assert _table(resumed) == _table(fresh)  # the per-trial seeding makes an interruption invisible
    calls.clear()
    run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    assert calls == []  # everything finished: nothing trained again


def test_kfold_and_grid_tuning(blobs, tmp_path):
    study = _study(blobs, tune="lr=0.01,0.3", tune_budget=5, tune_method="grid", folds=2, runs=("sgd",), seeds=1)
    result = run_compare(study, tmp_path / "g", workers=1, log=_quiet)
    rows = json.loads((tmp_path / "g" / "tuning.json").read_text())["runs"]
    trials = rows[0]["trials"]
    assert sorted(t["params"]["lr"] for t in trials) == [0.01, 0.3]  # both cells, once, within the budget
    assert all(0 <= t["score"] <= 1 for t in trials)
    assert result.study.runs[0].config.lr == min(trials, key=lambda t: (t["score"], t["ticket"]))["params"]["lr"]


def test_cli_tuned_compare(blobs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["compare", blobs, "--run", "sgd", "--run", "rmsprop", "--tune", "lr=log(1e-3,1e-1)", "--budget", "2",
                 "--tune-method", "random", "--seeds", "1", "--hidden", "8", "--epochs", "1", "--engine", "numpy",
                 "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Tuned values" in printed and "lr=" in printed
    stored = json.loads((out / "compare.json").read_text())["study"]["tune"]
    assert stored["method"] == "random" and stored["trials"] == 2


# --- the performance profile ----------------------------------------------------------------------------------


def test_performance_profile_on_hand_made_times():
    times = {"A": {"p1": 10.0, "p2": 30.0, "p3": None, "p4": None},
             "B": {"p1": 20.0, "p2": 10.0, "p3": 5.0, "p4": None},
             "C": {"p1": 50.0, "p2": None, "p3": 6.0, "p4": None}}
    prof = performance_profile(times, taus=(1.0, 1.2, 2.0, 3.0, 4.0))
    # best: p1 10 (A), p2 10 (B), p3 5 (B), p4 none -> ratios A (1, 3, inf, inf), B (2, 1, 1, inf), C (5, inf, 1.2, inf)
    assert prof["A"] == [0.25, 0.25, 0.25, 0.5, 0.5]
    assert prof["B"] == [0.5, 0.5, 0.75, 0.75, 0.75]
    assert prof["C"] == [0.0, 0.25, 0.25, 0.25, 0.25]
    assert profile_area([1.0, 1.0], (1.0, 4.0)) == 1.0
    assert profile_area(prof["B"], (1.0, 1.2, 2.0, 3.0, 4.0)) > profile_area(prof["A"], (1.0, 1.2, 2.0, 3.0, 4.0))
    assert performance_profile({"A": {}}, taus=(1.0,)) == {"A": [0.0]}


def test_best_so_far_is_monotone():
    trials = [{"ticket": 2, "score": 0.3}, {"ticket": 0, "score": 0.5}, {"ticket": 1, "score": 0.6}]
    assert best_so_far(trials) == [0.5, 0.5, 0.3]


def test_tuning_sessions_placed_on_dask_give_the_local_values(blobs, tmp_path, capsys, dask_cluster):
    argv = [blobs, "--run", "sgd", "--run", "adam", "--tune", "lr=log(1e-3,1e-1)", "--budget", "2", "--seeds", "1",
            "--hidden", "8", "--epochs", "1", "--engine", "numpy"]
    assert main(["compare", *argv, "--workers", "2", "--out", str(tmp_path / "local")]) == 0
    with dask_cluster() as (address, _workers):
        assert main(["compare", *argv, "--dask", address, "--out", str(tmp_path / "dask")]) == 0
    capsys.readouterr()
    values = [json.loads((tmp_path / d / "tuning.json").read_text())["runs"] for d in ("local", "dask")]
    assert [[t["params"] for t in r["trials"]] for r in values[0]] == [[t["params"] for t in r["trials"]]
                                                                       for r in values[1]]
    assert [r["values"] for r in values[0]] == [r["values"] for r in values[1]]
    assert (tmp_path / "dask" / "tune" / "00-sgd.json").is_file()  # what the coordinator keeps for --resume


def test_cli_profile_over_two_finished_comparisons(blobs, tmp_path, capsys):
    from descend.experiments.compare.profile import times_from_compares
    from descend.experiments.compare.report import first_reaching

    dirs = []
    for name, extra in (("p1", ["--hidden", "8"]), ("p2", ["--hidden", "4"])):
        dirs.append(str(tmp_path / name))
        assert main(["compare", blobs, "--run", "sgd lr=0.3", "--run", "adam lr=0.05", "--seeds", "2", "--epochs",
                     "2", "--batch-size", "30", "--engine", "numpy", "--eval-every", "2", "--target-error", "0.35",
                     "--workers", "1", "--out", dirs[-1], *extra]) == 0
    capsys.readouterr()
    assert main(["compare", "--profile", *dirs, "--out", str(tmp_path / "prof")]) == 0
    printed = capsys.readouterr().out
    assert "| sgd lr=0.3 |" in printed and "area (τ 1–4)" in printed
    assert (tmp_path / "prof" / "profile.png").stat().st_size > 0
    times, problems = times_from_compares(dirs)
    for d, problem in zip(dirs, problems):
        for label in ("sgd lr=0.3", "adam lr=0.05"):
            hits = []
            for path in sorted((tmp_path / d / "runs").glob("*/result.json")):
                r = json.loads(path.read_text())
                if r["label"] == label:
                    row = first_reaching(r["history"], 0.35)
                    hits.append(math.inf if row is None else row["time"])
            expected = float(np.median(hits))
            assert times[label][problem] == (None if math.isinf(expected) else pytest.approx(expected))
    assert main(["compare", "--profile", str(tmp_path / "nowhere")]) == 2
