"""descend compare: run specs, conventions (torch.optim parity, Keras formulas), same start per seed,
resume, budgets, workers, reports and the CLI, on a tiny synthetic NPZ with the NumPy engine."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from descend.cli.main import main
from descend.errors import ConfigError
from descend.experiments.compare import study as compare_study
from descend.experiments.compare import load_study, run_compare
from descend.experiments.compare.report import first_reaching, same_start, summarize
from descend.experiments.compare.build import build_study
from descend.experiments.compare.spec import PRESETS, build_run, parse_run_spec
from descend.optim import apply_updates
from descend.optim.conventions import CONVENTIONS, convention_options, resolve
from descend.train import loop as loop_mod
from descend.train import setup as setup_mod
from descend.train.loop import build_optimizer

# --- data --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 6)) * 2.5
    y = rng.integers(0, 3, 300)
    yt = rng.integers(0, 3, 90)
    X = (centers[y] + rng.standard_normal((300, 6))).astype(np.float32)
    Xt = (centers[yt] + rng.standard_normal((90, 6))).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, X=X, y=y, X_test=Xt, y_test=yt)
    return str(path)


BASE = {"hidden": (8,), "epochs": 2, "batch_size": 30, "engine": "numpy"}


def _study(blobs, runs=("sgd lr=0.1", "nesterov lr=0.05 momentum=0.9"), seeds=2, **kw):
    return build_study(blobs, runs=runs, seeds=seeds, base={**BASE, **kw.pop("base", {})}, **kw)


def _quiet(_line):
    pass


# --- run specs ---------------------------------------------------------------------------------------


def test_run_spec_maps_to_config_and_optimizer_options():
    values = parse_run_spec("rmsprop+nesterov lr=1e-3 momentum=0.95 rho=0.99 eps=1e-6 batch=full "
                            "hidden=500,300 dropout_keep=0.8,0.5,0.5 batchnorm label='my run'")
    assert values == {"optimizer": "rmsprop+nesterov", "lr": 1e-3, "momentum": 0.95, "rho": 0.99, "eps": 1e-6,
                      "batch_size": 0, "hidden": (500, 300), "dropout_keep": (0.8, 0.5, 0.5), "batchnorm": True,
                      "label": "my run"}
    run = build_run(values, {}, dataset="d", convention="descend", budget=None, where="t")
    assert run.label == "my run"
    cfg = run.config
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size, cfg.hidden) == ("rmsprop+nesterov", 1e-3, 0.95, 0,
                                                                                 (500, 300))
    assert cfg.optimizer_options == {"rho": 0.99, "eps": 1e-6, "initial_scale": 0.0, "eps_in_sqrt": False,
                                     "lr_inside": True}
    assert cfg.early_stopping == "none" and cfg.schedule == "constant"  # compare's defaults


@pytest.mark.parametrize("spec,message", [
    ("sgd lr=0.1 foo=1", "unknown key `foo`"),
    ("sgd lr=fast", "`lr` must be a number. Received: lr='fast'"),
    ("sgd lr=-1", "`lr` must be > 0"),
    ("sgd momentum=0.9", "`momentum` does not apply to optimizer='sgd'"),
    ("sgd rho=0.9", "`rho` does not apply to optimizer='sgd'"),
    ("adam lr_inside=false", "`lr_inside` does not apply to optimizer='adam'"),
    ("adam bias_correction=weird", "`bias_correction` must be one of"),
    ("nesterov hidden=5,x", "`hidden` must be a comma-separated list"),
    ("sgd batch_size=-3", "`batch_size` must be a positive integer or 'full'"),
    ("lbfgs lr=1", "the first word must be an optimizer"),
    ("sgd lr=0.1 lr=0.2", "given twice"),
    ("sgd convention=jax", "`convention` must be one of"),
    ("sgd batchnorm=maybe", "`batchnorm` must be true or false"),
])
def test_bad_run_specs_name_the_key_and_value(spec, message):
    with pytest.raises(ConfigError, match=None) as info:
        build_run(parse_run_spec(spec), {}, dataset="d", convention="descend", budget=None, where=f"run {spec!r}")
    assert message in str(info.value)
    assert spec in str(info.value)


def test_toml_study_file(tmp_path, blobs):
    path = tmp_path / "study.toml"
    path.write_text(f"""
dataset = "{blobs}"
seeds = 2
convention = "torch"
target_error = 0.2
[base]
hidden = [8]
epochs = 2
engine = "numpy"
[[run]]
spec = "sgd lr=0.1"
label = "plain"
[[run]]
optimizer = "rmsprop"
lr = 0.01
eps_in_sqrt = true
""")
    study = build_study(config_file=path)
    assert study.dataset == blobs and study.seeds == (0, 1) and study.target_error == 0.2
    assert [r.label for r in study.runs] == ["plain", "rmsprop lr=0.01 eps_in_sqrt=true"]
    rms = study.runs[1].config
    assert rms.hidden == (8,) and rms.optimizer_options["rho"] == 0.99 and rms.optimizer_options["eps_in_sqrt"]
    path.write_text('[[run]]\nspec = "sgd"\nwhat = 1\n')
    with pytest.raises(ConfigError, match="unknown key `what`"):
        build_study(config_file=path)


def test_every_preset_builds():
    for name, preset in PRESETS.items():
        study = build_study("mnist", preset=name, seeds=1)
        assert study.preset == name and study.runs or name == "engines"
        assert study.target_error == preset.target_error and study.budget == preset.budget
    gd = build_study("mnist", preset="gd-variants")
    assert [r.config.batch_size for r in gd.runs] == [0, 100, 1] and gd.runs[0].config.hidden == ()
    assert gd.budget and all(r.budget == gd.budget for r in gd.runs)
    momentum = build_study("mnist", preset="momentum", base={"epochs": 3})
    assert [r.config.optimizer for r in momentum.runs] == ["sgd", "momentum", "nesterov"]
    assert {r.config.lr for r in momentum.runs} == {0.01} and {r.config.epochs for r in momentum.runs} == {3}
    assert build_study("mnist", preset="regularization").runs[3].config.batchnorm


# --- conventions -------------------------------------------------------------------------------------


def _problem(seed=0, n=16, d=4, k=3):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.integers(0, k, size=n)
    return x, y, {"W": rng.normal(scale=0.5, size=(d, k)), "b": rng.normal(scale=0.1, size=k)}


def _grads(params, x, y):
    """Gradient of the mean softmax cross-entropy (the params change, so the rules' states matter)."""
    z = x @ params["W"] + params["b"]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    return {"W": x.T @ p, "b": p.sum(axis=0)}


def _descend_trajectory(spec: str, convention: str, steps: int) -> list[dict]:
    cfg = build_run(parse_run_spec(spec), {}, dataset="d", convention=convention, budget=None, where="t").config
    optimizer = build_optimizer(cfg, 100)
    x, y, params = _problem()
    state, out = optimizer.init(params), []
    for _ in range(steps):
        updates, state = optimizer.update(_grads(params, x, y), state, params)
        params = apply_updates(params, updates)
        out.append(params)
    return out


TORCH_CASES = [
    ("sgd lr=0.1", lambda p: torch.optim.SGD(p, lr=0.1)),
    ("momentum lr=0.05 momentum=0.9", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    ("nesterov lr=0.05 momentum=0.9", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    ("rmsprop lr=0.01", lambda p: torch.optim.RMSprop(p, lr=0.01)),
    ("rmsprop+momentum lr=0.01 momentum=0.9", lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9)),
    ("adagrad lr=0.1", lambda p: torch.optim.Adagrad(p, lr=0.1)),
    ("adam lr=0.01", lambda p: torch.optim.Adam(p, lr=0.01)),
]


@pytest.mark.parametrize("spec,make", TORCH_CASES, ids=[c[0].split()[0] for c in TORCH_CASES])
def test_torch_convention_reproduces_torch_optim_defaults(spec, make):
    """--convention torch with only lr (and momentum) given = torch.optim with its defaults, step for step."""
    steps = 12
    ours = _descend_trajectory(spec, "torch", steps)
    x, y, params = _problem()
    tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    opt = make(list(tparams.values()))
    for step in range(steps):
        opt.zero_grad()
        host = {k: v.detach().numpy() for k, v in tparams.items()}
        for k, g in _grads(host, x, y).items():
            tparams[k].grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        for k in params:
            np.testing.assert_allclose(ours[step][k], tparams[k].detach().numpy(), rtol=1e-6, atol=1e-12,
                                       err_msg=f"{spec}, step {step + 1}, {k}")


def _keras_reference(name: str, lr: float, mu: float, steps: int) -> list[dict]:
    """Keras 3's update_step formulas (keras/src/optimizers/*.py), hand-coded with Keras' defaults."""
    x, y, params = _problem()
    params = {k: v.copy() for k, v in params.items()}
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    m, v = dict(zeros), dict(zeros)
    acc = {k: np.full_like(p, 0.1) for k, p in params.items()}  # Adagrad initial_accumulator_value=0.1
    out = []
    for t in range(1, steps + 1):
        g = _grads(params, x, y)
        for k in params:
            if name == "momentum":      # SGD(momentum): m = mu*m - lr*g; w += m
                m[k] = m[k] * mu - g[k] * lr
                params[k] = params[k] + m[k]
            elif name == "nesterov":    # SGD(nesterov=True): m = mu*m - lr*g; w += mu*m - lr*g
                m[k] = m[k] * mu - g[k] * lr
                params[k] = params[k] + (m[k] * mu - g[k] * lr)
            elif name == "rmsprop":     # v = rho*v + (1-rho)*g^2; w -= lr*g / sqrt(v + eps)
                v[k] = 0.9 * v[k] + (1 - 0.9) * g[k] ** 2
                params[k] = params[k] - (lr * g[k]) / np.sqrt(v[k] + 1e-7)
            elif name == "rmsprop+momentum":  # m = mu*m + lr*g/sqrt(v + eps); w -= m
                v[k] = 0.9 * v[k] + (1 - 0.9) * g[k] ** 2
                m[k] = mu * m[k] + (lr * g[k]) / np.sqrt(v[k] + 1e-7)
                params[k] = params[k] - m[k]
            elif name == "adagrad":     # c += g^2 (from 0.1); w -= lr*g / sqrt(c + eps)
                acc[k] = acc[k] + g[k] ** 2
                params[k] = params[k] - (lr * g[k]) / np.sqrt(acc[k] + 1e-7)
            elif name == "adam":        # alpha = lr*sqrt(1-b2^t)/(1-b1^t); w -= alpha*m / (sqrt(v) + eps)
                alpha = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
                m[k] = m[k] + (g[k] - m[k]) * (1 - 0.9)
                v[k] = v[k] + (g[k] ** 2 - v[k]) * (1 - 0.999)
                params[k] = params[k] - (m[k] * alpha) / (np.sqrt(v[k]) + 1e-7)
        out.append({k: p.copy() for k, p in params.items()})
    return out


@pytest.mark.parametrize("name,lr", [("momentum", 0.05), ("nesterov", 0.05), ("rmsprop", 0.01),
                                     ("rmsprop+momentum", 0.01), ("adagrad", 0.1), ("adam", 0.01)])
def test_keras_convention_reproduces_hand_coded_keras_formulas(name, lr):
    spec = f"{name} lr={lr}" + (" momentum=0.9" if name in ("momentum", "nesterov", "rmsprop+momentum") else "")
    ours = _descend_trajectory(spec, "keras", 10)
    reference = _keras_reference(name, lr, 0.9, 10)
    for step, (a, b) in enumerate(zip(ours, reference)):
        for k in a:  # the same formula up to the order of float64 roundings
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-15, err_msg=f"{name}, step {step + 1}")


def test_curriculum_rmsprop_starts_its_cache_at_one():
    """The course code: cache = 1; cache = 0.999*cache + 0.001*g^2; w -= lr*g/(sqrt(cache) + 1e-10)."""
    ours = _descend_trajectory("rmsprop lr=0.001", "curriculum", 5)
    x, y, params = _problem()
    cache = {k: np.ones_like(v) for k, v in params.items()}
    for step in range(5):
        g = _grads(params, x, y)
        for k in params:
            cache[k] = 0.999 * cache[k] + (1 - 0.999) * g[k] * g[k]
            params[k] = params[k] - 0.001 * g[k] / (np.sqrt(cache[k]) + 1e-10)
        for k in params:
            np.testing.assert_allclose(ours[step][k], params[k], rtol=1e-12)


def test_convention_table_and_explicit_override():
    assert set(CONVENTIONS) == {"descend", "torch", "keras", "curriculum"}
    assert convention_options("torch", "rmsprop") == {"rho": 0.99, "eps": 1e-8, "initial_accumulator": 0.0,
                                                      "eps_in_sqrt": False}
    assert convention_options("keras", "adam")["bias_correction"] == "folded"
    assert convention_options("torch", "nesterov") == {"lr_inside": False}
    assert convention_options("keras", "sgd") == {}
    assert resolve("keras", "rmsprop", {"eps": 1e-3})["eps"] == 1e-3  # explicit beats the convention
    assert resolve("keras", "rmsprop")["initial_scale"] == 0.0        # rmsprop's keyword name


# --- running a study ---------------------------------------------------------------------------------


def test_same_initial_weights_and_batch_order_per_seed(blobs, tmp_path, monkeypatch):
    """The runs of one seed get literally the same initial weights and batch orders (captured where the
    fit loop takes them), different configurations notwithstanding; another seed gets others."""
    inits, orders = [], []
    real_init, real_order = setup_mod.init_params, loop_mod.epoch_order

    def spy_init(spec, n_in, n_out, key, dtype="float32"):
        params = real_init(spec, n_in, n_out, key=key, dtype=dtype)
        inits.append((key, {k: v.copy() for k, v in params.items()}))
        return params

    def spy_order(seed, epoch, n):
        order = real_order(seed, epoch, n)
        orders.append((seed, epoch, order.copy()))
        return order

    monkeypatch.setattr(setup_mod, "init_params", spy_init)
    monkeypatch.setattr(loop_mod, "epoch_order", spy_order)
    study = _study(blobs, runs=("sgd lr=0.1", "adam lr=0.01 batch_size=50"), seeds=2)
    result = run_compare(study, tmp_path / "c", workers=1, log=_quiet)

    assert [k for k, _ in inits] == [0, 0, 1, 1]  # seed-major: both configurations of seed 0, then seed 1
    for a, b in ((inits[0][1], inits[1][1]), (inits[2][1], inits[3][1])):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(inits[0][1]["dense0.W"], inits[2][1]["dense0.W"])
    by_run = [orders[i:i + 2] for i in range(0, 8, 2)]  # 2 epochs per run, 4 runs
    for first, second in ((by_run[0], by_run[1]), (by_run[2], by_run[3])):
        for (s1, e1, o1), (s2, e2, o2) in zip(first, second):
            assert (s1, e1) == (s2, e2)
            np.testing.assert_array_equal(o1, o2)
    assert not np.array_equal(by_run[0][0][2], by_run[2][0][2])

    # ... and the fingerprints in result.json (what the trainers received) say the same.
    records = result.records
    for seed in (0, 1):
        a, b = records[(0, seed)]["fingerprint"], records[(1, seed)]["fingerprint"]
        assert a["init_params"] == b["init_params"] and a["batch_orders"] == b["batch_orders"]
    assert records[(0, 0)]["fingerprint"]["init_params"] != records[(0, 1)]["fingerprint"]["init_params"]
    ok, lines = same_start(study, records)
    assert ok and len(lines) == 2 and "identical" in lines[0]


def test_runs_can_vary_pca(blobs, tmp_path):
    """``pca`` is a run-spec key: each run is fed its own number of components, and the same-start
    check compares first layers only among runs of the same input width."""
    assert parse_run_spec("sgd pca=4") == {"optimizer": "sgd", "pca": 4}
    assert parse_run_spec("sgd pca=none") == {"optimizer": "sgd", "pca": None}
    with pytest.raises(ConfigError, match="pca"):
        parse_run_spec("sgd pca=0")
    study = _study(blobs, runs=("sgd lr=0.1 label=raw", "sgd lr=0.1 pca=3 label=pca3", "nesterov lr=0.05 pca=3"),
                   seeds=1)
    result = run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    records = result.records
    assert [records[(i, 0)]["config"]["pca"] for i in range(3)] == [None, 3, 3]
    raw, pca3, nesterov3 = (records[(i, 0)]["fingerprint"]["init_params"] for i in range(3))
    assert raw["dense0.W"] != pca3["dense0.W"]  # 6 inputs against 3 components
    assert pca3 == nesterov3
    ok, lines = same_start(study, records)
    assert ok and "2 architectures" in lines[0]


def test_outputs_table_plots_report(blobs, tmp_path):
    study = _study(blobs, target_error=0.5)
    result = run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    out = result.out_dir
    for name in ("compare.json", "runs.csv", "summary.csv", "summary.md", "report.html", "curves-epoch.png",
                 "curves-step.png", "curves-time.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "runs").glob("*/result.json"))) == 4
    record = json.loads(next((out / "runs").glob("*/result.json")).read_text())
    assert record["history"][0]["step"] == 0 and record["history"][-1]["epoch"] == 2.0
    assert {"final_valid_error", "best_epoch", "test_error", "train_seconds"} <= set(record["metrics"])
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 3
    assert "http://" not in report and "https://" not in report and "<script" not in report
    assert "Same start per seed" in report
    row = result.summary[1]
    assert row["done"] == 2 and row["final_valid_error"] is not None and row["paired"] == 2
    assert "seconds to 50%" in (out / "summary.md").read_text()


def test_resume_skips_finished_runs(blobs, tmp_path, monkeypatch):
    out = tmp_path / "c"
    study = _study(blobs)
    run_compare(study, out, workers=1, log=_quiet)
    first = {p: p.read_text() for p in sorted((out / "runs").glob("*/result.json"))}
    assert len(first) == 4
    victim = sorted(first)[1]
    victim.unlink()  # as if the compare had been interrupted before this run finished

    executed = []
    real = compare_study.execute

    def counting(task):
        executed.append(task.run_id)
        return real(task)

    monkeypatch.setattr(compare_study, "execute", counting)  # where the study calls it
    result = run_compare(load_study(out), out, workers=1, log=_quiet)
    assert executed == [victim.parent.name] and result.skipped == 3
    for path, text in first.items():
        if path != victim:
            assert path.read_text() == text  # untouched
    assert victim.is_file() and len(result.records) == 4

    executed.clear()
    assert main(["compare", "--resume", str(out)]) == 0  # nothing left to do
    assert executed == []
    again = run_compare(_study(blobs, target_error=0.4), out, workers=1, log=_quiet)  # same runs, new target
    assert executed == [] and again.study.target_error == 0.4 and "reached" in again.summary[0]

    with pytest.raises(ConfigError, match="holds a different comparison"):
        run_compare(_study(blobs, runs=("sgd lr=0.5", "adam lr=0.01")), out, workers=1, log=_quiet)


def test_budget_stops_every_run_at_the_first_evaluation_past_it(blobs, tmp_path):
    study = _study(blobs, runs=("sgd lr=0.1 eval_every=2", "sgd lr=0.1 batch_size=1 eval_every=20"), seeds=1,
                   budget=1e-9, base={"epochs": 50})
    result = run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    for record in result.records.values():
        m = record["metrics"]
        assert m["stopped_by_budget"] and len(record["history"]) == 2  # row 0, then the first evaluation
        assert m["test_error"] is not None  # the weights at the stop were kept


def test_divergence_is_a_result_not_a_crash(blobs, tmp_path):
    study = _study(blobs, runs=("sgd lr=0.1", "sgd lr=1e30 label=huge"), seeds=1)
    result = run_compare(study, tmp_path / "c", workers=1, log=_quiet)
    assert result.records[(1, 0)]["status"] == "diverged"
    assert "diverged" in result.records[(1, 0)]["message"]
    assert result.summary[1]["diverged"] == 1


def test_workers_run_in_spawned_processes(blobs, tmp_path):
    study = _study(blobs, seeds=1)
    lines = []
    result = run_compare(study, tmp_path / "c", workers=2, log=lines.append)
    assert "2 workers, one thread each" in lines[0]
    assert {r["threads"] for r in result.records.values()} == {1}
    assert all(r["status"] == "ok" for r in result.records.values()) and len(result.records) == 2
    sequential = run_compare(study, tmp_path / "s", workers=1, log=_quiet)
    for key, record in result.records.items():  # same numbers in a worker as in this process
        assert record["metrics"]["final_valid_error"] == sequential.records[key]["metrics"]["final_valid_error"]


def test_time_to_target_and_summary_statistics():
    from descend.experiments.compare.spec import RunDef, Study
    from descend.train import TrainConfig

    def rec(seed, errors, status="ok"):
        history = [{"epoch": float(i), "step": 10 * i, "time": 1.5 * i, "valid_error": e}
                   for i, e in enumerate(errors)]
        return {"seed": seed, "status": status, "history": history,
                "metrics": {"final_valid_error": errors[-1], "best_valid_error": min(errors[1:]),
                            "steps": history[-1]["step"], "train_seconds": history[-1]["time"]}}

    assert first_reaching(rec(0, [0.9, 0.5, 0.2, 0.1])["history"], 0.2)["step"] == 20
    assert first_reaching(rec(0, [0.1, 0.5])["history"], 0.2) is None  # row 0 never counts
    runs = tuple(RunDef(label, label, TrainConfig()) for label in ("a", "b"))
    study = Study("d", runs, seeds=(0, 1), target_error=0.3)
    records = {(0, 0): rec(0, [0.9, 0.5, 0.4]), (0, 1): rec(1, [0.9, 0.6, 0.5]),
               (1, 0): rec(0, [0.9, 0.3, 0.2]), (1, 1): rec(1, [0.9, 0.4, 0.25])}
    a, b = summarize(study, records)
    assert a["reached"] == 0 and b["reached"] == 2
    assert b["time_to_target"] == pytest.approx((1.5 + 3.0) / 2) and b["steps_to_target"] == 15
    assert b["final_valid_error"] == pytest.approx(0.225)
    assert b["final_valid_error_std"] == pytest.approx(np.std([0.2, 0.25], ddof=1))
    assert b["vs_baseline"] == pytest.approx(-0.225) and b["lower_than_baseline"] == 2


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_end_to_end_and_one_line_errors(blobs, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["compare", blobs, "--run", "sgd lr=0.1", "--run", "momentum lr=0.05 momentum=0.9 label=mom",
                 "--seeds", "1", "--epochs", "1", "--hidden", "8", "--engine", "numpy", "--workers", "1",
                 "--target-error", "40%", "--threads", "1", "--pca", "4", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and (out / "report.html").is_file()
    assert "| mom | 1/1 |" in captured.out and "seconds to 40%" in captured.out
    assert "[2/2] mom (seed 0)" in captured.err
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    assert [(r["config"]["threads"], r["config"]["pca"], r["threads"]) for r in records] == [(1, 4, 1)] * 2

    assert main(["compare", blobs, "--run", "sgd lr=0.1 speed=3", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("descend: run 'sgd lr=0.1 speed=3': unknown key `speed`") and "\n" not in err
    assert main(["compare", blobs]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert main(["compare", "--resume", str(tmp_path / "nowhere")]) == 2
    assert main(["compare", "--resume", str(out), "--preset", "momentum"]) == 2


# --- a real Dask cluster: a scheduler and two workers on 127.0.0.1 --------------------------------------------
# Runs long enough (a second or so each) for a worker to be killed in the middle of one.
DASK_CLI = ["--run", "sgd lr=0.1 early_stopping=none", "--run", "nesterov lr=0.05 momentum=0.9 early_stopping=none",
            "--seeds", "2", "--epochs", "100", "--batch-size", "10", "--hidden", "8", "--engine", "numpy"]


def _numbers(out) -> dict:
    """Every run's record less what measures time: what must not depend on where the runs executed."""
    records = {}
    for path in sorted((out / "runs").glob("*/result.json")):
        r = json.loads(path.read_text())
        records[path.parent.name] = (
            {k: v for k, v in r["metrics"].items() if "seconds" not in k},
            [{k: v for k, v in row.items() if k != "time"} for row in r["history"]],
            r["fingerprint"], r["config"], r["threads"], r["status"])
    return records


def _kill_a_busy_worker(address: str, prefix: str, killed: dict) -> threading.Thread:
    """SIGKILL, by its PID, the first Dask worker seen running a task whose key starts with ``prefix``."""
    import distributed

    def kill():
        with distributed.Client(address, timeout="30s") as client:
            pids = client.run(os.getpid)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for worker, keys in client.processing().items():
                    keys = [k for k in keys if str(k).startswith(prefix)]
                    if keys:
                        os.kill(pids[worker], signal.SIGKILL)
                        killed.update(pid=pids[worker], keys=keys)
                        return
                time.sleep(0.02)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_cli_dask_gives_the_local_records_even_when_a_worker_is_sigkilled(blobs, tmp_path, capsys, dask_cluster):
    assert main(["compare", blobs, *DASK_CLI, "--workers", "2", "--out", str(tmp_path / "local")]) == 0
    local = _numbers(tmp_path / "local")
    assert len(local) == 4
    with dask_cluster() as (address, workers):
        capsys.readouterr()
        assert main(["compare", blobs, *DASK_CLI, "--dask", address, "--out", str(tmp_path / "dask")]) == 0
        assert f"on the Dask cluster at {address}, one thread per run" in capsys.readouterr().err
        assert _numbers(tmp_path / "dask") == local
        assert (tmp_path / "dask" / "report.html").is_file()

        killed = {}
        thread = _kill_a_busy_worker(address, "descend-compare-", killed)
        assert main(["compare", blobs, *DASK_CLI, "--dask", address, "--out", str(tmp_path / "killed")]) == 0
        thread.join(10)
        assert killed["pid"] in workers and workers[killed["pid"]].wait(10) == -signal.SIGKILL
        assert _numbers(tmp_path / "killed") == local  # the killed worker's run was placed again, same numbers
    assert main(["compare", blobs, *DASK_CLI, "--dask", "tcp://bad:::", "--out", str(tmp_path / "bad")]) == 2
    assert "`dask` must be a scheduler address" in capsys.readouterr().err and not (tmp_path / "bad").exists()
