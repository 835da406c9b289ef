"""descend bench: every engine in one process, missing ones reported, CSV and chart written."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from descend.engines import ENGINES, available_engines
from descend.errors import ConfigError
from descend.experiments.bench import parse_list, run_bench
from descend.train import TrainConfig


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    X = rng.standard_normal((400, 12)).astype(np.float32) + y[:, None]
    yt = rng.integers(0, 3, 100)
    Xt = rng.standard_normal((100, 12)).astype(np.float32) + yt[:, None]
    path = tmp_path_factory.mktemp("bench") / "blobs.npz"
    np.savez(path, X=X, y=y, X_test=Xt, y_test=yt)
    return path


def test_bench_times_every_installed_engine_and_reports_the_rest(npz, tmp_path):
    cfg = TrainConfig(dataset=str(npz), hidden=(16,), optimizer="momentum", lr=0.05, batch_size=50, epochs=3,
                      schedule="constant", normalize="standardize")
    rows = run_bench(cfg, list(ENGINES), ["cpu"], tmp_path, log=lambda line: None)
    by_engine = {r.engine: r for r in rows}
    assert set(by_engine) == set(ENGINES)
    installed = set(available_engines())
    for name, row in by_engine.items():
        if name in installed:
            assert row.status == "ok", row.status
            assert row.epoch_s > 0 and row.samples_per_s > 0 and row.ratio >= 1.0
            assert row.test_error < 0.3  # the blobs are separable
        else:
            assert "not installed" in row.status or "not implemented" in row.status
    assert min(r.ratio for r in rows if r.ratio) == 1.0
    with open(tmp_path / "bench.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["engine"] for t in table] == list(ENGINES)
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_engine_twice_gives_the_same_test_error(npz, tmp_path):
    cfg = TrainConfig(dataset=str(npz), hidden=(8,), optimizer="sgd", lr=0.1, batch_size=40, epochs=2,
                      schedule="constant", normalize="standardize")
    a = run_bench(cfg, ["numpy"], ["cpu"], None, log=lambda line: None)[0]
    b = run_bench(cfg, ["numpy"], ["cpu"], None, log=lambda line: None)[0]
    assert a.test_error == b.test_error


def test_gpu_absent_is_reported_not_raised(npz):
    cfg = TrainConfig(dataset=str(npz), hidden=(8,), batch_size=40, epochs=2, normalize="standardize")
    row = run_bench(cfg, ["numpy"], ["gpu"], None, log=lambda line: None)[0]
    assert row.status != "ok" and "gpu" in row.status.lower()


@pytest.mark.parametrize("text", ["caffe", "numpy,theano", ""])
def test_bad_engine_lists_are_config_errors(text):
    with pytest.raises(ConfigError, match="`engines` must be"):
        parse_list(text, ENGINES, "engines")


def test_cli_bad_option_exits_2(npz, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "descend", "bench", str(npz), "--epochs", "1", "--out",
                           str(tmp_path / "b")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "`epochs` must be >= 2" in proc.stderr


@pytest.mark.parametrize("devices, shared", [(["cpu"], False), (["cpu", "gpu"], True)])
def test_gpu_bench_lets_engines_share_the_gpu_memory(npz, monkeypatch, devices, shared):
    from descend.experiments.bench import SHARED_GPU_MEMORY

    for name in SHARED_GPU_MEMORY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")  # the user's own choice is kept
    cfg = TrainConfig(dataset=str(npz), hidden=(8,), batch_size=40, epochs=2, normalize="standardize")
    run_bench(cfg, ["numpy"], devices, None, log=lambda line: None)
    assert os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE") == ("false" if shared else None)
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "false"


def test_bench_trains_the_configured_network_with_dropout_and_batchnorm(npz):
    """bench times the network the config describes: the same test error as fitting that network directly."""
    from descend.train import fit, fit_options
    from descend.train.setup import prepare_data, setup_run

    cfg = TrainConfig(dataset=str(npz), hidden=(16,), dropout_keep=(0.9, 0.5), batchnorm=True, optimizer="momentum",
                      lr=0.05, batch_size=50, epochs=3, schedule="constant", normalize="standardize", engine="numpy",
                      device="cpu")
    row = run_bench(cfg, ["numpy"], ["cpu"], None, log=lambda line: None)[0]
    data = prepare_data(cfg)
    run = setup_run(cfg, data.n_in, data.n_out, data.n_train)
    engine = run.engine
    result = fit(engine, run.spec, fit_options(cfg, early_stopping="none", restore_best=False),
                 engine.asarray(data.X_train), engine.put_labels(data.y_train), params=run.params,
                 model_state=run.model_state)
    assert set(result.model_state) == {"bn0.mean", "bn0.var"}
    logits = engine.logits(run.spec, result.params, result.model_state, engine.asarray(data.X_test))
    assert row.test_error == float(np.mean(np.argmax(logits, axis=1) != data.y_test))
    plain = run_bench(cfg.replace(dropout_keep=(), batchnorm=False), ["numpy"], ["cpu"], None,
                      log=lambda line: None)[0]
    assert plain.test_error != row.test_error
