"""Ensembles: member plans, voting, one-file save/load, parallel workers, report, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

import descend
from descend.cli.main import main
from descend.errors import ConfigError, InputError
from descend.experiments.ensemble import (
    Ensemble,
    EnsembleConfig,
    combine,
    dropout_comparison,
    error_by_size,
    plan_members,
    run_ensemble,
)
from descend.train import TrainConfig
from descend.train.predict import load_classifier, mc_dropout_proba, predict_file


def _train(data, **kw):
    base = dict(dataset=str(data), hidden=(16,), epochs=4, batch_size=50, optimizer="nesterov", lr=0.05,
                schedule="constant", engine="numpy", normalize="standardize", early_stopping="none", threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 3-class problem hard enough for members to disagree: 1000 train + 400 test rows, 20 features."""
    rng = np.random.default_rng(0)
    n, d = 1400, 20
    centers = rng.normal(size=(3, d)) * 0.6
    y = rng.integers(0, 3, size=n)
    X = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    path = tmp_path_factory.mktemp("ens") / "blobs.npz"
    np.savez(path, X=X[:1000], y=y[:1000], X_test=X[1000:], y_test=y[1000:])
    return path


@pytest.fixture(scope="module")
def serial_run(data, tmp_path_factory):
    cfg = EnsembleConfig(train=_train(data), members=5, rows=0.8, bootstrap=True, features=0.6, workers=1)
    return run_ensemble(cfg, out=tmp_path_factory.mktemp("runs") / "serial", progress=False)


def test_plans_are_seeded_and_sized():
    cfg = EnsembleConfig(train=TrainConfig(seed=3), members=4, rows=0.5, bootstrap=True, features=0.25)
    plans = plan_members(cfg, 1000, 40)
    again = plan_members(cfg, 1000, 40)
    for p, q in zip(plans, again):
        np.testing.assert_array_equal(p.rows, q.rows)
        np.testing.assert_array_equal(p.features, q.features)
        assert len(p.rows) == 500 and len(p.features) == 10
        assert len(np.unique(p.rows)) < 500  # with replacement
        assert np.all(np.diff(p.features) > 0)  # sorted, distinct
    assert len({p.seed for p in plans}) == 4
    assert not np.array_equal(plans[0].features, plans[1].features)
    # another run seed gives other members (no member shared between seeds 0 and 1)
    other = plan_members(EnsembleConfig(train=TrainConfig(seed=4), members=4), 1000, 40)
    assert not {p.seed for p in plans} & {p.seed for p in other}
    full = plan_members(EnsembleConfig(members=2), 100, 8)
    np.testing.assert_array_equal(full[0].rows, np.arange(100))
    np.testing.assert_array_equal(full[1].features, np.arange(8))
    subset = plan_members(EnsembleConfig(members=1, rows=0.3), 100, 8)[0]
    assert len(subset.rows) == len(np.unique(subset.rows)) == 30


def test_soft_and_hard_voting():
    # three members, two rows, three classes
    p = np.array([[[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]],
                  [[0.4, 0.5, 0.1], [0.2, 0.5, 0.3]],
                  [[0.1, 0.8, 0.1], [0.1, 0.6, 0.3]]])
    np.testing.assert_allclose(combine(p, "soft"), p.mean(axis=0))
    hard = combine(p, "hard")
    np.testing.assert_allclose(hard.sum(axis=1), 1.0)
    assert list(np.argmax(hard, axis=1)) == [1, 1]  # majority: 2 of 3 votes each
    # soft and hard can disagree: one confident member outvoted
    q = np.array([[[0.99, 0.01]], [[0.45, 0.55]], [[0.45, 0.55]]])
    assert np.argmax(combine(q, "soft")) == 0 and np.argmax(combine(q, "hard")) == 1
    # a tie goes to the tied class with the higher mean probability
    t = np.array([[[0.9, 0.1, 0.0]], [[0.4, 0.6, 0.0]]])
    assert np.argmax(combine(t, "hard")) == 0
    with pytest.raises(ConfigError, match="vote"):
        combine(p, "mean")
    curves = error_by_size(p, np.array([1, 2]))
    assert curves["size"] == [1, 2, 3]
    assert curves["soft"][-1] == np.mean(np.argmax(combine(p, "soft"), axis=1) != [1, 2])
    assert curves["hard"][-1] == np.mean(np.argmax(combine(p, "hard"), axis=1) != [1, 2])


def test_run_writes_one_file_report_and_beats_the_mean_member(serial_run, data):
    run = serial_run
    files = {p.name for p in run.run_dir.iterdir()}
    assert {"config.json", "ensemble.safetensors", "members.csv", "metrics.json", "report.html",
            "error_vs_size.png"} <= files
    m = run.metrics
    assert m["eval_split"] == "test" and m["eval_rows"] == 400
    assert m["ensemble_error_soft"] < m["mean_member_error"]
    assert m["best_member_error"] <= m["mean_member_error"] <= m["worst_member_error"]
    html = (run.run_dir / "report.html").read_text()
    for text in ("soft vote", "hard vote", "best single member", "mean single member", "Error vs ensemble size",
                 "data:image/png;base64,"):
        assert text in html
    assert "Monte-Carlo" not in html  # no dropout, no dropout section
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert len(metrics["error_by_size"]["soft"]) == 5
    assert len((run.run_dir / "members.csv").read_text().splitlines()) == 6

    # one safetensors file: every member's tensors and its column indices, JSON metadata
    with safe_open(str(run.run_dir / "ensemble.safetensors"), framework="np") as f:
        keys = set(f.keys())
    assert {f"params/member{i}/dense0.W" for i in range(5)} <= keys
    assert {f"extra/member{i}/features" for i in range(5)} <= keys
    loaded = Ensemble.load(run.run_dir / "ensemble.safetensors")
    assert len(loaded.members) == 5 and loaded.classes == run.ensemble.classes
    raw = np.load(data)
    np.testing.assert_allclose(loaded.predict_proba(raw["X_test"]), run.ensemble.predict_proba(raw["X_test"]))
    error = np.mean(loaded.predict(raw["X_test"]) != raw["y_test"])
    assert error == pytest.approx(m["ensemble_error_soft"])
    assert np.mean(loaded.predict(raw["X_test"], vote="hard") != raw["y_test"]) == pytest.approx(
        m["ensemble_error_hard"])
    for member, plan_features in zip(loaded.members, run.ensemble.members):
        assert member.params["dense0.W"].shape == (12, 16)
        np.testing.assert_array_equal(member.features, plan_features.features)


def test_parallel_workers_give_the_serial_ensemble(serial_run, data, tmp_path):
    cfg = EnsembleConfig(train=_train(data), members=5, rows=0.8, bootstrap=True, features=0.6, workers=2)
    parallel = run_ensemble(cfg, out=tmp_path / "parallel", progress=False)
    assert parallel.metrics["workers"] == 2
    for a, b in zip(serial_run.ensemble.members, parallel.ensemble.members):
        np.testing.assert_array_equal(a.features, b.features)
        for k in a.params:
            np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-5, atol=1e-6)
    assert parallel.metrics["ensemble_error_soft"] == pytest.approx(serial_run.metrics["ensemble_error_soft"],
                                                                    abs=1e-2)


def test_dropout_members_report_weight_scaling_vs_monte_carlo(data, tmp_path):
    cfg = EnsembleConfig(train=_train(data, dropout_keep=(0.9, 0.5)), members=2, workers=1, mc_samples=5,
                         vote="hard")
    run = run_ensemble(cfg, out=tmp_path / "dropout", progress=False)
    html = (run.run_dir / "report.html").read_text()
    assert "Monte-Carlo" in html and "weight scaling" in html and (run.run_dir / "dropout.png").is_file()
    assert run.metrics["dropout_mc_samples"] == 5
    assert Ensemble.load(run.run_dir / "ensemble.safetensors").vote == "hard"
    # the K-pass average is descend's mc_dropout_proba with K samples
    raw = np.load(data)
    x = run.ensemble.normalizer.transform(raw["X_test"])
    cmp = dropout_comparison(run.ensemble, x, raw["y_test"], 5)
    assert cmp["samples"] == [1, 2, 5]
    m = run.ensemble.members[0]
    proba = mc_dropout_proba(run.ensemble.spec, m.params, m.state, x[:, m.features], samples=5, seed=0)
    assert cmp["mc_error"][-1] == pytest.approx(np.mean(np.argmax(proba, axis=1) != raw["y_test"]))
    # predict with Monte-Carlo dropout through the ensemble file: seeded, not the weight-scaling answer
    path = run.run_dir / "ensemble.safetensors"
    mc = predict_file(path, _test_rows(data, tmp_path), mc_samples=20)
    assert mc.vote == "hard" and mc.members == 2
    np.testing.assert_array_equal(mc.probabilities,
                                  predict_file(path, _test_rows(data, tmp_path), mc_samples=20).probabilities)
    assert not np.allclose(mc.probabilities, predict_file(path, _test_rows(data, tmp_path)).probabilities)


def _test_rows(data, tmp_path):
    """The data's 400 test rows as their own NPZ file, as a user would hand them to `descend predict`."""
    raw = np.load(data)
    path = tmp_path / "test_rows.npz"
    if not path.exists():
        np.savez(path, X=raw["X_test"], y=raw["y_test"])
    return path


def test_predict_reads_ensemble_files(serial_run, data, tmp_path, capsys):
    path = serial_run.run_dir / "ensemble.safetensors"
    rows = _test_rows(data, tmp_path)
    m = serial_run.metrics
    result = predict_file(path, rows)
    assert result.members == 5 and result.vote == "soft"
    assert result.error == pytest.approx(m["ensemble_error_soft"])
    assert predict_file(path, rows, vote="hard").error == pytest.approx(m["ensemble_error_hard"])
    assert isinstance(load_classifier(path), Ensemble)

    sub = tmp_path / "submission.csv"
    assert main(["predict", str(path), str(rows), "--vote", "hard", "--submission", str(sub)]) == 0
    line = capsys.readouterr().err
    assert "with an ensemble of 5 (hard vote)" in line and f"{100 * m['ensemble_error_hard']:.2f}%" in line
    assert len(sub.read_text().splitlines()) == 401

    # --vote names the ensemble's rule: a single model, or a rule that does not exist, is one line and exit 2
    from descend.io.modelfile import save_model

    with pytest.raises(ConfigError, match="vote"):
        predict_file(path, rows, vote="mean")
    single = tmp_path / "model.safetensors"
    model = serial_run.ensemble.members[0]
    norm_meta, norm_arrays = serial_run.ensemble.normalizer.to_dict()
    meta = {"spec": serial_run.ensemble.spec.to_dict(), "classes": list(serial_run.ensemble.classes),
            "n_features": serial_run.ensemble.n_features, "normalization": norm_meta}
    save_model(single, model.params, extra_arrays={f"normalization.{k}": v for k, v in norm_arrays.items()},
               metadata=meta)
    assert main(["predict", str(single), str(rows), "--vote", "soft"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`vote` applies to ensemble files" in err


def test_predict_output_holds_the_combined_probabilities(serial_run, data, tmp_path, capsys):
    path = serial_run.run_dir / "ensemble.safetensors"
    rows, out = _test_rows(data, tmp_path), tmp_path / "predictions.csv"
    assert main(["predict", str(path), str(rows), "--vote", "hard", "--output", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    classes = serial_run.ensemble.classes
    assert lines[0].split(",") == ["row", "label", *(f"p_{c}" for c in classes)]
    table = [line.split(",") for line in lines[1:]]
    proba = np.array([[float(v) for v in r[2:]] for r in table])
    expected = serial_run.ensemble.predict_proba(np.load(data)["X_test"], vote="hard")
    np.testing.assert_array_equal(proba, expected)  # 17 digits: float64 read back exactly
    assert [r[1] for r in table] == [classes[i] for i in np.argmax(expected, axis=1)]
    assert [int(r[0]) for r in table] == list(range(1, 401))


def test_load_refuses_other_files(serial_run, tmp_path):
    from descend.io.modelfile import save_model

    single = tmp_path / "model.safetensors"
    save_model(single, {"dense0.W": np.zeros((2, 2), np.float32)}, metadata={"spec": {}})
    with pytest.raises(InputError, match="not a descend ensemble"):
        Ensemble.load(single)
    with pytest.raises(InputError, match="no such file"):
        Ensemble.load(tmp_path / "missing.safetensors")
    # a member's column indices out of range
    ens = serial_run.ensemble
    bad = Ensemble(ens.spec, list(ens.members), ens.classes, ens.n_features, ens.normalizer)
    bad.members[0] = type(ens.members[0])(ens.members[0].params, {}, ens.members[0].features + 100)
    bad.save(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="out of range"):
        Ensemble.load(tmp_path / "bad.safetensors")
    with pytest.raises(InputError, match="features"):
        ens.predict(np.zeros((2, 3)))


def test_config_validation():
    for kw, name in [({"members": 0}, "members"), ({"rows": 0.0}, "rows"), ({"rows": 1.5}, "rows"),
                     ({"features": 2.0}, "features"), ({"vote": "mean"}, "vote"), ({"workers": -1}, "workers"),
                     ({"mc_samples": 0}, "mc_samples"), ({"train": TrainConfig(balance="oversample")}, "balance")]:
        with pytest.raises(ConfigError, match=name):
            EnsembleConfig(**kw)


def test_cli(data, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["ensemble", str(data), "--members", "3", "--rows", "0.7", "--features", "0.5", "--vote", "hard",
               "--workers", "1", "--hidden", "8", "--epochs", "2", "--engine", "numpy", "--normalize", "standardize",
               "--out", str(out), "--quiet"])
    assert rc == 0 and (out / "ensemble.safetensors").is_file() and (out / "report.html").is_file()
    config = json.loads((out / "config.json").read_text())["ensemble"]
    assert config["members"] == 3 and config["vote"] == "hard" and config["train"]["hidden"] == [8]
    capsys.readouterr()
    for bad in (["--members", "0"], ["--rows", "1.5"], ["--features", "0"], ["--workers", "-2"]):
        assert main(["ensemble", str(data), *bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("descend: `")
    assert not (tmp_path / "bad").exists()
    assert descend.ensemble.run_ensemble is run_ensemble


def test_cli_pca_ensemble_round_trips_through_predict(data, tmp_path, capsys):
    """--pca K: members sample their columns from the K components, and the ensemble file carries the
    projection, so `descend predict` on raw rows reproduces the run's test error."""
    out = tmp_path / "pca"
    rc = main(["ensemble", str(data), "--members", "3", "--features", "0.5", "--pca", "6", "--workers", "1",
               "--hidden", "8", "--epochs", "2", "--engine", "numpy", "--normalize", "standardize",
               "--out", str(out), "--quiet"])
    assert rc == 0
    capsys.readouterr()
    ens = Ensemble.load(out / "ensemble.safetensors")
    assert ens.normalizer.n_outputs == 6 and all(m.features.size == 3 for m in ens.members)
    metrics = json.loads((out / "metrics.json").read_text())
    assert predict_file(out / "ensemble.safetensors", _test_rows(data, tmp_path)).error == pytest.approx(
        metrics["ensemble_error_soft"])


def test_mnist_ensemble_beats_its_mean_member(mirror_dir, tmp_path):
    """Real data, kept small for CI (five 784-32-10 members on 10% of the rows, 3 epochs);
    the full-size measurement (10 members, 3 seeds) is in docs/ensembles.md."""
    cfg = EnsembleConfig(train=TrainConfig(dataset="mnist", hidden=(32,), epochs=3, engine="numpy", threads=1,
                                           early_stopping="none", schedule="constant", lr=0.05),
                         members=5, rows=0.1, bootstrap=True, features=0.8, workers=1)
    run = run_ensemble(cfg, out=tmp_path / "mnist", progress=False)
    m = run.metrics
    assert m["eval_rows"] == 10_000
    assert m["ensemble_error_soft"] < m["mean_member_error"] - 0.005
    assert m["ensemble_error_soft"] < m["best_member_error"]


def test_cli_dask_trains_the_members_of_the_local_run(data, tmp_path, capsys, dask_cluster):
    """On a real Dask cluster (a scheduler and two workers on 127.0.0.1): the same ensemble, tensor for tensor."""
    from safetensors.numpy import load_file

    args = ["ensemble", str(data), "--members", "3", "--rows", "0.8", "--bootstrap", "--features", "0.6",
            "--hidden", "8", "--epochs", "2", "--engine", "numpy", "--threads", "1"]
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "local"), "--quiet"]) == 0
    with dask_cluster() as (address, _workers):
        capsys.readouterr()
        assert main([*args, "--dask", address, "--out", str(tmp_path / "dask")]) == 0
        assert f"on the Dask cluster at {address}" in capsys.readouterr().err
    local, placed = (load_file(tmp_path / d / "ensemble.safetensors") for d in ("local", "dask"))
    assert sorted(local) == sorted(placed) and len(local) > 3 * 2
    for name, tensor in local.items():
        np.testing.assert_array_equal(placed[name], tensor, err_msg=name)
    metrics = json.loads((tmp_path / "dask" / "metrics.json").read_text())
    assert metrics["dask"] == address
    assert main([*args, "--dask", "tcp://bad:::", "--out", str(tmp_path / "bad")]) == 2
    assert "`dask` must be a scheduler address" in capsys.readouterr().err and not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------- regression


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """y = 10 (3 x1 - 2 x2 + noise) + 50 (x3 is noise): 150 training rows and 60 test rows, float targets."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((210, 3))
    y = 10 * (3 * X[:, 0] - 2 * X[:, 1] + 0.5 * rng.standard_normal(210)) + 50
    path = tmp_path_factory.mktemp("ens-reg") / "linear.npz"
    np.savez(path, X=X[:150], y=y[:150], X_test=X[150:], y_test=y[150:])
    return path, X[150:], y[150:]


def _forward(member, normalizer, X):
    """A one-hidden-layer ReLU member's raw output, by hand."""
    x = normalizer.transform(X)[:, member.features].astype(np.float64)
    p = member.params
    h = np.maximum(x @ p["dense0.W"] + p["dense0.b"], 0)
    return h @ p["dense1.W"] + p["dense1.b"]


def test_regression_ensemble_averages_members_values_and_reports_rmse(linear, tmp_path, capsys):
    path, X_test, y_test = linear
    cfg = EnsembleConfig(train=_train(path, hidden=(8,), epochs=6, batch_size=16, optimizer="adam", lr=0.01),
                         members=3, rows=0.8, bootstrap=True, workers=1)
    import io

    lines = io.StringIO()
    run = run_ensemble(cfg, out=tmp_path / "reg", progress=True, stream=lines)
    m = run.metrics
    assert m["eval_split"] == "test" and m["eval_rows"] == 60 and m["targets"] == ["y"]
    log = lines.getvalue()
    assert "best validation RMSE" in log and f"test RMSE: ensemble {m['ensemble_rmse']:.4g}" in log
    loaded = load_classifier(run.run_dir / "ensemble.safetensors")
    assert isinstance(loaded, Ensemble) and loaded.task == "regression" and loaded.targets == ("y",)
    # each member's values, computed by hand from the saved weights and the targets' stored standardization
    scaler = loaded.target_scaler
    values = np.stack([_forward(member, loaded.normalizer, X_test) * scaler.std + scaler.mean
                       for member in loaded.members])[:, :, 0]
    member_rmse = np.sqrt(np.mean((values - y_test) ** 2, axis=1))
    mean = values.mean(axis=0)
    ensemble_rmse = np.sqrt(np.mean((mean - y_test) ** 2))
    assert m["ensemble_rmse"] == pytest.approx(ensemble_rmse, rel=1e-5)
    assert m["ensemble_mae"] == pytest.approx(np.mean(np.abs(mean - y_test)), rel=1e-5)
    ss = np.sum((y_test - y_test.mean()) ** 2)
    assert m["ensemble_r2"] == pytest.approx(1 - np.sum((mean - y_test) ** 2) / ss, rel=1e-5)
    np.testing.assert_allclose([r["test_rmse"] for r in run.members], member_rmse, rtol=1e-5)
    assert m["mean_member_rmse"] == pytest.approx(member_rmse.mean(), rel=1e-5)
    assert m["best_member_rmse"] == pytest.approx(member_rmse.min(), rel=1e-5)
    assert m["ensemble_rmse"] < y_test.std()  # in the targets' units (y spans tens), better than the mean
    curves = json.loads((run.run_dir / "metrics.json").read_text())["rmse_by_size"]
    assert curves["size"] == [1, 2, 3] and curves["rmse"][-1] == pytest.approx(m["ensemble_rmse"])
    assert curves["rmse"][0] == pytest.approx(member_rmse[0], rel=1e-5)
    header = (run.run_dir / "members.csv").read_text().splitlines()[0].split(",")
    assert {"valid_rmse", "test_rmse", "test_mae", "test_r2", "best_valid_rmse"} <= set(header)
    assert "test_error" not in header
    html = (run.run_dir / "report.html").read_text()
    assert "RMSE vs ensemble size" in html and "R^2" in html and "hard vote" not in html
    assert (run.run_dir / "rmse_vs_size.png").stat().st_size > 0
    # the saved ensemble predicts values with `descend predict`
    csv = tmp_path / "test.csv"
    csv.write_text("x1,x2,x3,y\n" + "".join(f"{a!r},{b!r},{c!r},{t!r}\n"
                                           for (a, b, c), t in zip(X_test.tolist(), y_test.tolist())))
    capsys.readouterr()
    assert main(["predict", str(run.run_dir / "ensemble.safetensors"), str(csv), "--output",
                 str(tmp_path / "p.csv")]) == 0
    assert "ensemble of 3 (mean of its members' values)" in capsys.readouterr().err
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "row,y" and len(lines) == 61
    np.testing.assert_allclose([float(line.split(",")[1]) for line in lines[1:]], mean, rtol=1e-5, atol=1e-4)
    assert predict_file(run.run_dir / "ensemble.safetensors", csv).rmse == pytest.approx(ensemble_rmse, rel=1e-5)


def test_hard_vote_on_regression_data_is_one_line(linear, tmp_path, capsys):
    path, _, _ = linear
    out = tmp_path / "never"
    assert main(["ensemble", str(path), "--members", "2", "--vote", "hard", "--epochs", "1", "--engine", "numpy",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`vote` 'hard'" in err[0] and "Received: vote='hard'" in err[0]
    assert not out.exists()
