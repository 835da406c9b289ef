"""Hyperparameter search: space parsing, folds, exact grid / random coverage with parallel
workers, hill-climbing, pruning, killed workers, resume, the final retrain, PostgreSQL and Dask.

Searches run on a tiny NPZ (300 training rows, 90 test rows) with the NumPy engine.
Where the test is about the coordination rather than the training, a test-only hook
(``DESCEND_SEARCH_TEST_HOOK``) stands in for a fold's training: it returns a score at
once, or sleeps so that the test can kill the worker mid-trial.
"""

from __future__ import annotations

import glob
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from conftest import free_port  # noqa: E402
from descend.cli.main import main  # noqa: E402
from descend.errors import ConfigError  # noqa: E402
from descend.experiments.search import SearchConfig, run_search, tickets  # noqa: E402
from descend.experiments.search.kfold import fold_digest, fold_rows, stratified_folds  # noqa: E402
from descend.experiments.search.sampler import neighbour, unit_distance  # noqa: E402
from descend.experiments.search.space import parse_space  # noqa: E402
from descend.experiments.search.worker import training_rows  # noqa: E402
from descend.train.config import TrainConfig  # noqa: E402


HOOKS = '''
import math, os, time
from pathlib import Path

def score(cfg, fold, trial):
    """A smooth bowl with its minimum at lr=1e-2, momentum=0.9; fold adds a little."""
    return (math.log10(cfg.lr) + 2.0) ** 2 + (cfg.momentum - 0.9) ** 2 + 0.001 * fold

def bad_large_lr(cfg, fold, trial):
    return 0.9 if cfg.lr >= 1.0 else 0.1 + 0.01 * fold

def _marked_sleep(trial, name):
    if trial.user_attrs.get("retry_of") is not None:
        return  # the retry runs normally
    marker = Path(os.environ["SEARCH_TEST_DIR"]) / name
    marker.write_text(f"{os.getpid()} {trial.number}")
    time.sleep(120)

def sleep_on_lr_01(cfg, fold, trial):
    if cfg.lr == 0.1:
        _marked_sleep(trial, "sleeping")
    return cfg.lr

def record_threads(cfg, fold, trial):
    """The worker's thread variables and BLAS / OpenMP pool sizes, in env-<pid>.json."""
    import json
    from threadpoolctl import threadpool_info
    from descend.placement import THREAD_VARIABLES
    seen = {k: os.environ.get(k) for k in (*THREAD_VARIABLES, "XLA_FLAGS")}
    seen["pools"] = sorted({p["num_threads"] for p in threadpool_info()})
    Path(os.environ["SEARCH_TEST_DIR"], f"env-{os.getpid()}.json").write_text(json.dumps(seen))
    return cfg.lr

def sleep_on_ticket_2(cfg, fold, trial):
    if trial.user_attrs.get("ticket") == 2:
        _marked_sleep(trial, "sleeping")
    return cfg.lr
'''

FAST = dict(hidden=(8,), epochs=2, batch_size=16, engine="numpy", early_stopping="none", schedule="constant")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Three separable classes, 20 features: 300 training rows, 90 test rows."""
    d = tmp_path_factory.mktemp("search-data")
    rng = np.random.default_rng(0)

    def rows(n):
        y = rng.integers(0, 3, n)
        X = rng.normal(size=(n, 20)).astype(np.float32)
        X[np.arange(n), y] += 3.0
        return X, y

    X, y = rows(300)
    Xt, yt = rows(90)
    path = d / "tiny.npz"
    np.savez(path, X=X, y=y, X_test=Xt, y_test=yt)
    return path


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    """Install the test hooks module; returns a function selecting one by name."""
    (tmp_path / "search_test_hooks.py").write_text(HOOKS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SEARCH_TEST_DIR", str(tmp_path))
    sys.path.insert(0, str(tmp_path))

    def use(name: str):
        monkeypatch.setenv("DESCEND_SEARCH_TEST_HOOK", f"search_test_hooks:{name}")

    yield use
    sys.path.remove(str(tmp_path))


def _config(data, space, **kw) -> SearchConfig:
    base = dict(FAST, dataset=str(data))
    base.update(kw.pop("base", {}))
    kw.setdefault("heartbeat", 1)
    kw.setdefault("retrain", False)  # the final retrain is tested where it matters
    return SearchConfig(space=space, base=TrainConfig(**base), **kw)


def _study(run_dir):
    import json

    saved = json.loads((Path(run_dir) / "search.json").read_text())
    return optuna.load_study(study_name=saved["study"], storage=saved["storage_url"])


def _ticket_trials(study):
    return [t for t in study.get_trials() if t.user_attrs.get("ticket") is not None]


def _complete_per_cell(study, names):
    return Counter(tuple(t.params[n] for n in names) for t in _ticket_trials(study)
                   if t.state == optuna.trial.TrialState.COMPLETE)


# --- space ------------------------------------------------------------------------------------------------
def test_space_parses_ranges_lists_and_tuple_choices():
    space = parse_space("lr=log(1e-4,1e-1) momentum=0.8,0.9,0.99 hidden=300|500,300|none l2=lin(0,1e-3) "
                        "optimizer=adam|nesterov batch-size=32,full epochs=lin(1,5) batchnorm=true,false")
    lr, momentum, hidden, l2, opt, batch, epochs, bn = space.params
    assert lr.is_range and lr.log and (lr.low, lr.high) == (1e-4, 1e-1)
    assert momentum.choices == (0.8, 0.9, 0.99)
    assert hidden.choices == ("300", "500,300", "none")
    assert l2.is_range and not l2.log
    assert opt.choices == ("adam", "nesterov")
    assert batch.name == "batch_size" and batch.choices == (32, 0)
    assert epochs.is_range and epochs.integer
    assert bn.choices == (True, False)
    cfg = space.config(TrainConfig(), {"lr": 0.01, "momentum": 0.9, "hidden": "500,300", "l2": 1e-4,
                                       "optimizer": "adam", "batch_size": 0, "epochs": 3, "batchnorm": True})
    assert cfg.hidden == (500, 300) and cfg.batch_size == 0 and cfg.epochs == 3 and cfg.batchnorm is True
    assert space.config(TrainConfig(), {"hidden": "none"}).hidden == ()
    grid = parse_space("lr=0.01,0.1,0.3 momentum=0.8,0.9,0.99 l2=0,1e-4").grid()
    assert len(grid) == 18 and len({tuple(c.values()) for c in grid}) == 18
    assert grid[0] == {"lr": 0.01, "momentum": 0.8, "l2": 0.0}


@pytest.mark.parametrize("spec, fragments", [
    ("lr=log(0,1)", ["lr=log(0,1)", "0 < low < high"]),
    ("lr=log(0.1,0.01)", ["lr", "low < high"]),
    ("momentum=0.5,1.5", ["momentum=0.5,1.5", "[0, 1)", "momentum=1.5"]),
    ("lr=fast", ["lr=fast", "'fast' is not a number"]),
    ("depth=1,2", ["depth=1,2", "not a searchable parameter"]),
    ("lr", ["lr", "name=values"]),
    ("optimizer=adam,adamax", ["optimizer=adam,adamax", "adamax"]),
    ("hidden=300|-5", ["hidden=300|-5", "positive"]),
    ("hidden=log(10,100)", ["hidden=log(10,100)", "not a range"]),
    ("lr=0.1,0.1", ["lr=0.1,0.1", "twice"]),
    ("lr=0.1 lr=0.2", ["lr=0.2", "given twice"]),
    ("lr=log(1e-3)", ["lr=log(1e-3)", "two bounds"]),
    ("dropout_keep=0.8,0.5", ["dropout_keep=0.8,0.5", "keep probabilities"]),
    ("", ["space", "Received"]),
])
def test_space_rejects_a_bad_item_naming_it(spec, fragments):
    with pytest.raises(ConfigError) as err:
        parse_space(spec, TrainConfig(hidden=(500, 300)))
    message = str(err.value)
    assert "Received" in message
    for fragment in fragments:
        assert fragment in message, message


def test_grid_takes_lists_only_and_no_trial_count(tiny):
    with pytest.raises(ConfigError, match=r"grid search takes lists.*lr=log\(1e-4,1e-1\)"):
        parse_space("lr=log(1e-4,1e-1) momentum=0.9").grid()
    with pytest.raises(ConfigError, match="trials"):
        _config(tiny, "lr=0.1,0.2", method="grid", trials=5)
    with pytest.raises(ConfigError, match="method"):
        _config(tiny, "lr=0.1,0.2", method="anneal")


def _one_line_error(capsys) -> str:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("descend: "), out.err
    assert "Traceback" not in out.err + out.out
    return lines[0]


def test_cli_bad_input_is_one_line_exit_2_and_leaves_no_run(tiny, tmp_path, capsys):
    out = tmp_path / "never"
    base = ["search", str(tiny), "--engine", "numpy", "--out", str(out)]
    assert main([*base, "--space", "lr=log(0,1)"]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("descend: `space` lr") and "Received: lr=log(0,1)" in line
    assert main([*base, "--space", "lr=0.1,0.2", "--method", "grid", "--storage", "study.db"]) == 2
    assert "`storage` must be a database URL" in _one_line_error(capsys)
    # a database server nobody listens for: refused at once, before anything is written
    assert main([*base, "--space", "lr=0.1,0.2", "--method", "grid", "--storage",
                 f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/nothing"]) == 2
    assert "cannot open it" in _one_line_error(capsys)
    assert main([*base, "--space", "lr=0.1,0.2", "--method", "grid", "--storage", "nosuchdb://x/y"]) == 2
    assert "nosuchdb" in _one_line_error(capsys)
    assert main([*base, "--space", "lr=0.1,0.2", "--method", "grid", "--dask", "tcp://bad:::"]) == 2
    assert "`dask` must be a scheduler address" in _one_line_error(capsys)
    assert not out.exists()  # no half-made run directory to trip over next time

    assert main(["search", "--resume", str(tmp_path / "missing")]) == 2
    assert "`resume` must be a search run directory" in _one_line_error(capsys)
    for text, expected in (("{bad", "invalid JSON"), ('{"a": 1}', "not a descend search record"),
                           ("[1]", "not a descend search record"),
                           ('{"search": {"x": 1}, "study": "s", "storage_url": "sqlite://"}',
                            "search settings cannot be read")):
        (tmp_path / "search.json").write_text(text)
        assert main(["search", "--resume", str(tmp_path)]) == 2
        assert expected in _one_line_error(capsys)
    assert main(["search", "--resume", str(tiny.parent), "--lr", "0.1"]) == 2
    assert "--lr" in _one_line_error(capsys)


def test_cli_pca_sets_the_base_configuration(tiny, capsys):
    from descend.cli.main import build_parser
    from descend.cli.search import build_search_config

    argv = ["search", str(tiny), "--space", "lr=0.1,0.2", "--pca", "5", "--engine", "numpy"]
    assert build_search_config(build_parser().parse_args(argv)).base.pca == 5
    assert build_search_config(build_parser().parse_args(argv[:-4] + ["--engine", "numpy"])).base.pca is None
    with pytest.raises(SystemExit) as exited:  # argparse's own exit, with descend's one-line message
        main([*argv[:-4], "--pca", "0"])
    assert exited.value.code == 2
    assert "argument --pca: expected a positive integer number of components, got '0'" in _one_line_error(capsys)


# --- folds ------------------------------------------------------------------------------------------------
def test_stratified_folds_partition_balance_and_identity():
    y = np.repeat([0, 1, 2], [50, 30, 7])
    np.random.default_rng(1).shuffle(y)
    folds = stratified_folds(y, 3, seed=4)
    assert np.array_equal(folds, stratified_folds(y, 3, seed=4))  # the same folds for every trial
    assert fold_digest(folds) == fold_digest(stratified_folds(y, 3, seed=4))
    assert fold_digest(folds) != fold_digest(stratified_folds(y, 3, seed=5))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(y)
    for c in range(3):
        per_fold = np.bincount(folds[y == c], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1
    held = [fold_rows(folds, k)[1] for k in range(3)]
    assert np.array_equal(np.sort(np.concatenate(held)), np.arange(len(y)))
    train, test = fold_rows(folds, 0)
    assert not np.intersect1d(train, test).size
    with pytest.raises(ConfigError, match="folds"):
        stratified_folds(y, 1, 0)


def test_search_data_is_the_training_rows_only(tiny):
    X, y, classes, _, task, n_out = training_rows(TrainConfig(dataset=str(tiny)))
    assert X.shape == (300, 20) and len(y) == 300 and classes == ("0", "1", "2")  # no X_test rows, no carving
    assert task == "classification" and n_out == 3


# --- grid, random -------------------------------------------------------------------------------------------
def test_grid_with_two_workers_runs_each_cell_exactly_once_then_retrains_and_tests_once(tiny, tmp_path,
                                                                                      monkeypatch):
    from descend.train import run as trainrun

    calls = []
    original = trainrun.final_metrics
    monkeypatch.setattr(trainrun, "final_metrics", lambda *a, **k: calls.append(1) or original(*a, **k))
    sc = _config(tiny, "lr=0.03,0.1,0.3 momentum=0.5,0.8,0.9 l2=0,1e-3", method="grid", folds=2, pruner="none",
                 retrain=True)
    result = run_search(sc, workers=2, out=tmp_path / "grid", progress=False)

    study = _study(result.run_dir)
    names = ("lr", "momentum", "l2")
    per_cell = _complete_per_cell(study, names)
    cells = {tuple(c[n] for n in names) for c in sc.parse_space().grid()}
    assert set(per_cell) == cells and set(per_cell.values()) == {1}  # 18 cells, each once
    assert len(_ticket_trials(study)) == 18
    assert sorted(t.user_attrs["ticket"] for t in _ticket_trials(study)) == list(range(18))
    assert len({t.user_attrs["folds"] for t in _ticket_trials(study)}) == 1  # same folds everywhere
    assert all(len(t.user_attrs["fold_scores"]) == 2 for t in _ticket_trials(study))
    assert all(t.user_attrs["worker"].split(":")[-1] != str(os.getpid()) for t in _ticket_trials(study))

    # outputs
    run_dir = result.run_dir
    for name in ("trials.csv", "best.json", "report.html", "score_vs_trial.png", "grid_heatmap.png",
                 "parallel_coordinates.png", "final/model.safetensors", "final/metrics.json"):
        assert (run_dir / name).is_file(), name
    assert len((run_dir / "trials.csv").read_text().strip().splitlines()) == 19
    best = min((t for t in _ticket_trials(study)), key=lambda t: (t.value, t.number))
    assert result.best["trial"] == best.number and result.best["score"] == pytest.approx(best.value)
    assert TrainConfig.from_dict(result.best["config"]).lr == best.params["lr"]
    # the test set: used once, by the final retrain on all 300 training rows, never by a trial
    assert len(calls) == 1
    assert result.final["test_size"] == 90 and result.final["train_rows"] == 300
    assert 0.0 <= result.final["test_error"] <= 1.0
    assert not any(k.startswith("test") for t in study.get_trials() for k in t.user_attrs)
    assert "grid_heatmap" in (run_dir / "report.html").read_text() or "Grid heatmap" in \
        (run_dir / "report.html").read_text()


def test_random_search_runs_exactly_n_trials_with_two_workers(tiny, tmp_path, hooks):
    hooks("score")
    sc = _config(tiny, "lr=log(1e-4,1e-1) momentum=lin(0.5,0.99)", method="random", trials=7, folds=2,
                 pruner="none")
    result = run_search(sc, workers=2, out=tmp_path / "random", progress=False)
    study = _study(result.run_dir)
    trials = _ticket_trials(study)
    assert len(trials) == 7 and all(t.state.name == "COMPLETE" for t in trials)
    expected = tickets(sc, sc.parse_space())  # the N points are drawn up front from the seed
    got = {t.user_attrs["ticket"]: t.params for t in trials}
    assert got == dict(enumerate(expected))
    assert all(1e-4 <= p["lr"] <= 1e-1 and 0.5 <= p["momentum"] <= 0.99 for p in got.values())
    assert (result.run_dir / "score_over_params.png").is_file()


def test_workers_are_processes_with_every_thread_variable_set_to_threads(tiny, tmp_path, hooks, monkeypatch):
    import json

    from descend.placement import THREAD_VARIABLES

    hooks("record_threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    sc = _config(tiny, "lr=0.1,0.2,0.3", method="grid", folds=2, pruner="none", threads=2)
    run_search(sc, workers=2, out=tmp_path / "threads", progress=False)
    seen = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in tmp_path.glob("env-*.json")}
    assert seen and os.getpid() not in seen
    for env in seen.values():
        assert all(env[k] == "2" for k in THREAD_VARIABLES), env
        assert "intra_op_parallelism_threads=2" in env["XLA_FLAGS"] and env["pools"] in ([], [2])
    assert os.environ["OMP_NUM_THREADS"] == "5"  # the coordinator's own environment is left alone


# --- hill-climbing ----------------------------------------------------------------------------------------
def test_hillclimb_moves_only_on_improvement_and_samples_in_the_log_space_ball(tiny, tmp_path, hooks):
    hooks("score")
    radius = 0.2
    sc = _config(tiny, "lr=log(1e-4,1e-1) momentum=lin(0.5,0.99)", method="hillclimb", trials=14, folds=2,
                 radius=radius, pruner="none", base={"lr": 0.05, "momentum": 0.6})
    result = run_search(sc, workers=1, out=tmp_path / "hc", progress=False)
    space = sc.parse_space()
    trials = sorted(_ticket_trials(_study(result.run_dir)), key=lambda t: t.number)
    assert len(trials) == 14 and all(t.state.name == "COMPLETE" for t in trials)
    assert trials[0].params == {"lr": 0.05, "momentum": 0.6}  # the start point: the base config
    centres = []
    for i, t in enumerate(trials[1:], start=1):
        before = trials[:i]
        best = min(before, key=lambda b: (b.value, b.number))
        assert t.user_attrs["hc_center"] == best.number  # the best so far, moved only by improvement
        centre = trials[best.number].params
        assert unit_distance(space, t.params, centre) <= radius + 1e-9
        centres.append(best.number)
    values = [trials[c].value for c in centres]
    assert values == sorted(values, reverse=True)  # the centre's score never gets worse
    assert len(set(centres)) > 1  # it did climb
    assert min(t.value for t in trials) < trials[0].value


def test_hillclimb_ball_is_uniform_in_log_space():
    space = parse_space("lr=log(1e-4,1e-1) l2=log(1e-6,1e-2)")
    centre = {"lr": 1e-2, "l2": 1e-4}
    rng = np.random.default_rng(0)
    steps = [neighbour(space, centre, 0.1, rng) for _ in range(400)]
    d = np.array([unit_distance(space, s, centre) for s in steps])
    assert d.max() <= 0.1 + 1e-12 and d.mean() > 0.05  # inside the ball, not only at its centre
    decades = np.array([math.log10(s["lr"] / centre["lr"]) for s in steps])
    assert abs(decades.max()) <= 0.3 + 1e-9 and (decades > 0).mean() == pytest.approx(0.5, abs=0.1)
    only_lists = parse_space("momentum=0.5,0.9,0.99 optimizer=adam,sgd")
    point = {"momentum": 0.9, "optimizer": "adam"}
    assert all(neighbour(only_lists, point, 0.1, rng) != point for _ in range(50))


# --- pruning ----------------------------------------------------------------------------------------------
def test_each_fold_is_reported_and_the_median_pruner_stops_hopeless_trials(tiny, tmp_path, hooks):
    hooks("bad_large_lr")
    space = "lr=0.001,0.002,0.003,0.004,0.005,0.006,2.0,3.0"
    result = run_search(_config(tiny, space, method="grid", folds=3, pruner="median"), workers=1,
                        out=tmp_path / "prune", progress=False)
    trials = {t.params["lr"]: t for t in _ticket_trials(_study(result.run_dir))}
    for lr in (0.001, 0.002, 0.003, 0.004, 0.005, 0.006):
        assert trials[lr].state.name == "COMPLETE" and sorted(trials[lr].intermediate_values) == [0, 1, 2]
    for lr in (2.0, 3.0):
        assert trials[lr].state.name == "PRUNED" and sorted(trials[lr].intermediate_values) == [0]
    assert len(trials) == 8
    rows = {r["lr"]: r for r in result.trials}
    assert rows[2.0]["folds_done"] == 1 and rows[0.001]["folds_done"] == 3


# --- killed worker, resume --------------------------------------------------------------------------------
def _wait_for(path: Path, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def _killer(marker: Path, killed: dict) -> threading.Thread:
    """SIGKILL the worker process that wrote ``marker`` (it sleeps mid-trial), by its PID."""

    def kill():
        pid, number = map(int, _wait_for(marker).split())
        killed.update(pid=pid, number=number)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _assert_exact_with_one_retry(study, names, cells, killed_number, killed_params):
    """Every cell COMPLETE exactly once; the killed trial FAIL, retried once with its parameters."""
    trials = _ticket_trials(study)
    per_cell = _complete_per_cell(study, names)
    assert set(per_cell) == cells and set(per_cell.values()) == {1}
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [killed_number] and failed[0].params == killed_params
    retries = [t for t in trials if t.system_attrs.get("failed_trial") is not None]
    assert len(retries) == 1 and retries[0].system_attrs["failed_trial"] == killed_number
    assert retries[0].state.name == "COMPLETE" and retries[0].params == killed_params
    assert retries[0].user_attrs["ticket"] == failed[0].user_attrs["ticket"]
    assert len(trials) == len(cells) + 1  # no duplicate, no surplus


def test_four_workers_one_sigkilled_grid_completes_each_cell_once_plus_one_retry(tiny, tmp_path, hooks):
    hooks("sleep_on_ticket_2")
    killed = {}
    thread = _killer(tmp_path / "sleeping", killed)
    sc = _config(tiny, "lr=0.01,0.1,0.2,0.3 momentum=0.8,0.9", method="grid", folds=2, pruner="none")
    result = run_search(sc, workers=4, out=tmp_path / "kill", progress=False)
    thread.join(5)
    study = _study(result.run_dir)
    by_number = {t.number: t for t in _ticket_trials(study)}
    assert by_number[killed["number"]].user_attrs["worker"].endswith(f":{killed['pid']}")
    retry = next(t for t in by_number.values() if t.system_attrs.get("failed_trial") == killed["number"])
    assert not retry.user_attrs["worker"].endswith(f":{killed['pid']}")  # taken by a live worker
    cells = {tuple(c.values()) for c in sc.parse_space().grid()}
    killed_params = sc.parse_space().grid()[2]
    _assert_exact_with_one_retry(study, ("lr", "momentum"), cells, killed["number"], killed_params)
    rows = {r["trial"]: r for r in result.trials}
    assert rows[killed["number"]]["state"] == "FAIL"
    csv_text = (result.run_dir / "trials.csv").read_text().splitlines()
    assert len(csv_text) == 1 + 9 and sum(",FAIL," in line for line in csv_text) == 1
    assert result.final is None and not (result.run_dir / "final").exists()  # retrain=False: test set untouched


def test_resume_after_killing_everything_keeps_finished_trials(tiny, tmp_path, hooks):
    hooks("sleep_on_ticket_2")
    run_dir = tmp_path / "resume"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "descend", "search", str(tiny), "--space", "lr=0.01,0.02,0.03,0.04,0.05",
           "--method", "grid", "--folds", "2", "--workers", "2", "--heartbeat", "1", "--quiet", "--out",
           str(run_dir), *sum(([f"--{k.replace('_', '-')}", str(v) if not isinstance(v, tuple) else
                                ",".join(map(str, v))] for k, v in FAST.items()), [])]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_for(tmp_path / "sleeping")
        deadline = time.monotonic() + 60  # the other worker finishes the 4 other cells meanwhile
        while sum(t.state.name == "COMPLETE" for t in _study(run_dir).get_trials()) < 4:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and both workers die; ticket 2 mid-trial
        proc.wait(30)
    before = {t.number: t for t in _study(run_dir).get_trials()}
    states = Counter(t.state.name for t in before.values())
    assert states == {"RUNNING": 1, "COMPLETE": 4} and before[2].state.name == "RUNNING"
    running = [n for n, t in before.items() if t.state.name == "RUNNING"]
    complete = [n for n, t in before.items() if t.state.name == "COMPLETE"]

    result = run_search(resume_dir=run_dir, workers=2, progress=False)
    study = _study(run_dir)
    after = {t.number: t for t in study.get_trials()}
    for n in complete:  # finished trials kept as they were, not run again
        assert after[n].state.name == "COMPLETE" and after[n].datetime_complete == before[n].datetime_complete
        assert after[n].value == before[n].value
    for n in running:  # the orphans: failed once before the workers started, and retried once
        assert after[n].state.name == "FAIL"
        retry = [t for t in after.values() if t.system_attrs.get("failed_trial") == n]
        assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == before[n].params
    per_cell = _complete_per_cell(study, ("lr",))
    assert len(per_cell) == 5 and set(per_cell.values()) == {1}
    assert len(after) == 5 + len(running)
    assert result.trials_run == 5 - len(complete) and result.final["test_size"] == 90
    # a second resume has nothing left to do and does not evaluate on the test set again
    stamp = (run_dir / "final" / "metrics.json").stat().st_mtime_ns
    again = run_search(resume_dir=run_dir, workers=1, progress=False)
    assert again.trials_run == 0 and len(_study(run_dir).get_trials()) == len(after)
    assert (run_dir / "final" / "metrics.json").stat().st_mtime_ns == stamp


# --- scale-out: PostgreSQL storage, Dask placement -----------------------------------------------------------
def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server: initdb + pg_ctl as the postgres user, 127.0.0.1 only, a free port.

    Stopped by its PID (postmaster.pid; SIGINT = fast shutdown). Not skipped where the binaries are
    missing: .ci/run installs Debian's postgresql so that this runs in CI.
    """
    bindir = _pg_bin()
    if bindir is None:
        pytest.fail("the scale-out tests need PostgreSQL's server binaries (initdb, pg_ctl): "
                    "apt-get install postgresql (.ci/run installs it)")
    base = Path(tempfile.mkdtemp(prefix="descend-pg-"))
    prefix = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
    port = free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    started = subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
                              "-o", options, "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=90)
    pid_file = data / "postmaster.pid"
    try:
        if started.returncode != 0:
            log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            raise AssertionError(f"pg_ctl start failed: {started.stdout}{started.stderr}{log}")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if pid_file.is_file():
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGINT)  # fast shutdown, by PID
            deadline = time.monotonic() + 60
            while pid_file.exists() and time.monotonic() < deadline:  # removed by the server when it is done
                time.sleep(0.1)
            if pid_file.exists():
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_storage_with_two_workers(tiny, tmp_path, hooks, postgres):
    hooks("score")
    sc = _config(tiny, "lr=log(1e-4,1e-1) momentum=0.8,0.9", method="tpe", trials=6, folds=2, storage=postgres,
                 pruner="none", retrain=True)
    result = run_search(sc, workers=2, out=tmp_path / "pg", progress=False)
    assert not (result.run_dir / "study.db").exists()
    study = _study(result.run_dir)
    trials = _ticket_trials(study)
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    assert result.best is not None and result.final["test_size"] == 90


def test_scale_out_postgresql_and_dask_workers_one_sigkilled_grid_stays_exact(tiny, tmp_path, hooks, postgres,
                                                                            dask_cluster):
    hooks("sleep_on_ticket_2")  # set before the Dask workers start: they inherit the environment
    sc = _config(tiny, "lr=0.001,0.01,0.1 momentum=0.8,0.9", method="grid", folds=2, pruner="none",
                 storage=postgres)
    with dask_cluster() as (address, workers):
        killed = {}
        thread = _killer(tmp_path / "sleeping", killed)
        result = run_search(sc, dask=address, out=tmp_path / "scale", progress=False)
        thread.join(5)
        assert killed["pid"] in workers and workers[killed["pid"]].wait(10) == -signal.SIGKILL
    assert not (result.run_dir / "study.db").exists()
    study = _study(result.run_dir)
    ran_on = {int(t.user_attrs["worker"].split(":")[-1]) for t in _ticket_trials(study) if "worker" in t.user_attrs}
    assert ran_on <= set(workers) and os.getpid() not in ran_on  # placed by Dask, on its worker processes
    cells = {tuple(c.values()) for c in sc.parse_space().grid()}
    _assert_exact_with_one_retry(study, ("lr", "momentum"), cells, killed["number"], sc.parse_space().grid()[2])


def test_pca_dimension_is_a_searchable_parameter_and_the_retrain_uses_it(tiny, tmp_path):
    """``pca`` in the space: each fold fits its own projection, the network is sized by it, and the
    final model file carries the projection of the best cell."""
    sc = _config(tiny, "pca=none,3,8", method="grid", folds=2, pruner="none", retrain=True)
    result = run_search(sc, workers=1, out=tmp_path / "pca", progress=False)
    per_cell = _complete_per_cell(_study(result.run_dir), ("pca",))
    assert per_cell == {(None,): 1, (3,): 1, (8,): 1}
    from descend.train.predict import load_trained

    model = load_trained(next(Path(result.run_dir).rglob("model.safetensors")))
    best = TrainConfig.from_dict(result.best["config"]).pca
    assert best in (None, 3, 8)
    assert model.normalizer.n_outputs == (best or model.n_features)


# --- regression ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def linear_csv(tmp_path_factory) -> Path:
    """y = 10 (3 x1 - 2 x2 + noise) + 50 in a CSV of 90 rows: no test split, regression targets."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((90, 2))
    y = 10 * (3 * X[:, 0] - 2 * X[:, 1] + 0.3 * rng.standard_normal(90)) + 50
    path = tmp_path_factory.mktemp("search-regression") / "linear.csv"
    path.write_text("x1,x2,y\n" + "".join(f"{a!r},{b!r},{t!r}\n" for (a, b), t in zip(X.tolist(), y.tolist())))
    return path


def test_regression_search_minimizes_the_mean_valid_rmse_over_folds(linear_csv, tmp_path):
    from descend.experiments.search.kfold import shuffled_folds
    from descend.train import run_training

    sc = _config(linear_csv, "lr=0.001,0.1", method="grid", folds=2, pruner="none", retrain=True,
                 base={"target": ("y",), "optimizer": "sgd", "epochs": 4})
    result = run_search(sc, workers=1, out=tmp_path / "reg", progress=False)
    assert result.config.metric == "valid_rmse"  # valid_error is the task's error measure: RMSE here
    rows = {r["lr"]: r for r in result.trials}
    assert set(rows) == {0.001, 0.1} and all(r["state"] == "COMPLETE" for r in rows.values())
    for r in rows.values():
        assert r["score"] == pytest.approx((r["fold_1"] + r["fold_2"]) / 2)
    assert rows[0.1]["score"] < rows[0.001]["score"]
    assert result.best["params"]["lr"] == 0.1 and result.best["metric"] == "valid_rmse"
    # each fold's score is the held-out RMSE in the targets' units: the same training run by `descend train`
    # on the fold's rows, scored on its held-out rows as a test set, gives the same number
    table = np.loadtxt(linear_csv, delimiter=",", skiprows=1)
    train = shuffled_folds(len(table), 2, 0) != 0
    np.savez(tmp_path / "fold0.npz", X=table[train, :2], y=table[train, 2], X_test=table[~train, :2],
             y_test=table[~train, 2])
    alone = run_training(TrainConfig(**{**FAST, "dataset": str(tmp_path / "fold0.npz"), "optimizer": "sgd",
                                        "epochs": 4, "lr": 0.1, "validation": 0}), out=tmp_path / "fold0",
                         progress=False)
    assert alone.metrics["test_rmse"] == pytest.approx(rows[0.1]["fold_1"], rel=1e-5)
    assert rows[0.1]["score"] < table[:, 2].std()  # in the targets' units (y spans tens), better than the mean
    header = (result.run_dir / "trials.csv").read_text().splitlines()[0].split(",")
    assert "valid_rmse" in header and "valid_error" not in header
    assert "valid_rmse" in (result.run_dir / "report.html").read_text()
    assert result.final["train_rows"] == 90  # retrained on every training row (the CSV has no test rows)
    assert (result.run_dir / "final" / "model.safetensors").is_file()


def test_a_metric_the_task_has_not_is_one_line(tiny, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["search", str(tiny), "--engine", "numpy", "--space", "lr=0.1,0.2", "--method", "grid",
                 "--metric", "valid_rmse", "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "`metric` 'valid_rmse' does not apply to classification data" in line
    assert "Received: metric='valid_rmse'" in line
    assert not out.exists()
