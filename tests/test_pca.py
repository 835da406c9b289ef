"""PCA by gradient ascent without the covariance matrix (descend.pca).

Accuracy criterion used throughout (the acceptance's "components whose eigengap
allows it"): an eigenvector is only determined to within about
``perturbation / g_i`` radians, ``g_i = min(l_{i-1} - l_i, l_i - l_{i+1}) / l_i``
its relative eigengap, so principal angles are required (<= 1e-3 rad) only for
components with ``g_i >= 0.01``; eigenvalues are required for all of the first
20 (<= 1e-4 relative).  The synthetic data below has an exactly known sample
covariance, so the reference is the truth, not another solver.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from descend import pca
from descend.errors import ConfigError, InputError
from descend.pca.data import ArraySource, FileSource, as_source

GAP = 0.01
EIG_TOL, ANGLE_TOL = 1e-4, 1e-3


def known_spectrum(n=600, d=40, seed=0, offset=3.0, dtype=np.float64):
    """Rows whose sample covariance (N-1) is exactly R diag(lam) R^T: (X, lam descending, R columns)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z)                      # centered, orthonormal columns
    lam = 10.0 * 0.8 ** np.arange(d)            # relative gaps 0.2 (a well-posed spectrum)
    lam[5:7] = [lam[5], lam[5] * 0.995]         # plus one close pair: g < 0.01, angles not required
    lam = np.sort(lam)[::-1]
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    X = (Q * np.sqrt((n - 1) * lam)) @ R.T + offset * rng.standard_normal(d)
    return X.astype(dtype), lam, R


def check(result, lam, R, eig_tol=EIG_TOL, angle_tol=ANGLE_TOL):
    k = result.n_components
    rel = np.abs(result.explained_variance / lam[:k] - 1)
    assert rel[:20].max() <= eig_tol, rel
    angles = pca.principal_angles(result.components, R[:, :k].T)
    required = pca.relative_gaps(lam, k) >= GAP
    assert angles[required].max() <= angle_tol, (angles, required)
    return rel, angles


@pytest.fixture(scope="module")
def spectrum():
    return known_spectrum()


@pytest.mark.parametrize("method", ["exact", "block", "gd"])
def test_methods_find_the_known_spectrum(spectrum, method):
    X, lam, R = spectrum
    result = pca.fit(X, 10, method)
    check(result, lam, R)
    assert result.converged
    np.testing.assert_allclose(result.explained_variance_ratio, lam[:10] / lam.sum(), rtol=1e-5)
    np.testing.assert_allclose(result.components @ result.components.T, np.eye(10), atol=1e-5)
    assert result.method == method and result.n_passes >= 2


@pytest.mark.parametrize("method", ["block", "gd"])
def test_float64_products_reach_float64_accuracy(spectrum, method):
    X, lam, R = spectrum
    result = pca.fit(X, 8, method, dtype="float64", tol=1e-10 if method == "block" else 1e-9)
    check(result, lam, R, eig_tol=1e-9, angle_tol=1e-6)


def test_block_and_gd_report_residuals_and_iterations(spectrum):
    X, _, _ = spectrum
    block = pca.fit(X, 6, "block", tol=1e-6)
    assert block.residuals.shape == (6,) and block.residuals.max() <= 1e-6
    assert isinstance(block.n_iter, int) and block.n_passes == block.n_iter + 1   # + the mean/variance pass
    gd = pca.fit(X, 3, "gd")
    assert isinstance(gd.n_iter, tuple) and len(gd.n_iter) == 3
    assert gd.n_passes == sum(gd.n_iter) + 3 + 1   # one pass per step, one per start, the mean pass


def test_gd_learning_rate_is_relative_to_the_variance(spectrum):
    """The same lr converges on data scaled by 1e-6 or 1e6: the step is lr / (current variance)."""
    X, lam, R = spectrum
    for s in (1e-6, 1e6):
        result = pca.fit(X, 4, "gd", scale=s)
        np.testing.assert_allclose(result.explained_variance, lam[:4] * s * s, rtol=1e-5)
        assert result.converged


def test_explained_variance_matches_sklearn():
    from sklearn.decomposition import PCA  # the dev extra installs scikit-learn

    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 25)) @ rng.standard_normal((25, 25)) + 7.0
    ref = PCA(6, svd_solver="full").fit(X)
    for method in ("exact", "block", "gd"):
        got = pca.fit(X, 6, method, dtype="float64", tol=1e-12 if method == "block" else 1e-10)
        np.testing.assert_allclose(got.explained_variance, ref.explained_variance_, rtol=1e-9)
        np.testing.assert_allclose(got.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-9)
        np.testing.assert_allclose(got.mean, ref.mean_, rtol=1e-12)
        assert pca.principal_angles(got.components, ref.components_).max() < 1e-6
        signs = np.sign(np.sum(got.components * ref.components_, axis=1))
        np.testing.assert_allclose(got.transform(X) * signs, ref.transform(X), atol=1e-6)


def test_npy_file_and_memmap_are_read_in_chunks_and_equal_in_memory(tmp_path, spectrum):
    X, _, _ = spectrum
    path = tmp_path / "x.npy"
    np.save(path, X.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    assert isinstance(as_source(mm), FileSource) and isinstance(as_source(str(path)), FileSource)
    assert isinstance(as_source(np.asarray(X)), ArraySource)
    ref = pca.fit(np.array(mm), 5, "block", dtype="float64", chunk_rows=37, tol=1e-9)
    for src in (str(path), path, mm):
        got = pca.fit(src, 5, "block", dtype="float64", chunk_rows=37, tol=1e-9)
        np.testing.assert_allclose(got.explained_variance, ref.explained_variance, rtol=1e-12)
        np.testing.assert_allclose(got.components, ref.components, atol=1e-10)
        np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12)
    # a row slice of a memmap starts at its own byte offset
    sliced = pca.fit(mm[100:], 3, "exact", chunk_rows=50)
    direct = pca.fit(np.array(mm[100:]), 3, "exact")
    np.testing.assert_allclose(sliced.explained_variance, direct.explained_variance, rtol=1e-12)


def test_no_d_by_d_allocation_by_construction(tmp_path):
    """D = 4000: a D x D float64 matrix is 128 MB. block and gd stay far below it, in memory and from a file."""
    rng = np.random.default_rng(0)
    n, d = 200, 4000
    X = (rng.standard_normal((n, 8)) * [9, 7, 5, 4, 3, 2, 1.5, 1]) @ rng.standard_normal((8, d))
    X += 0.1 * rng.standard_normal((n, d))
    X = X.astype(np.float32)
    path = tmp_path / "wide.npy"
    np.save(path, X)
    dxd = d * d * 8
    runs = [(X, "block", {}), (str(path), "block", {"chunk_rows": 25}), (str(path), "gd", {"chunk_rows": 25})]
    for data, method, options in runs:
        tracemalloc.start()
        try:
            result = pca.fit(data, 3, method, **options)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.converged
        assert peak < dxd / 8, f"{method}: peak {peak / 2**20:.1f} MiB, D x D is {dxd / 2**20:.0f} MiB"
        if isinstance(data, str):  # out of core: a few chunks of 25 rows (x float64) and D x m vectors only
            assert peak < 25 * d * 8 * 6 + 64 * d * 8, peak
    with pytest.raises(ConfigError, match="exact"):
        pca.fit(np.zeros((2, pca.EXACT_MAX_FEATURES + 1), np.float32), 1, "exact")


def test_torch_engine_matches_numpy(spectrum):
    X, lam, R = spectrum
    for method in ("block", "gd", "exact"):
        ref = pca.fit(X, 5, method, dtype="float64", tol=1e-10 if method != "gd" else 1e-9)
        got = pca.fit(X, 5, method, engine="torch", dtype="float64", tol=1e-10 if method != "gd" else 1e-9)
        assert got.engine == "torch" and got.device == "cpu"
        np.testing.assert_allclose(got.explained_variance, ref.explained_variance, rtol=1e-9)
        assert pca.principal_angles(got.components, ref.components).max() < 1e-6
    got32 = pca.fit(X.astype(np.float32), 5, "block", engine="torch", chunk_rows=64)
    check(got32, lam, R)
    X8 = np.clip(X * 10 + 128, 0, 255).astype(np.uint8)   # uint8 rows, scaled on the device
    a = pca.fit(X8, 4, "block", scale=1 / 255, dtype="float64", tol=1e-10)
    b = pca.fit(X8, 4, "block", scale=1 / 255, dtype="float64", tol=1e-10, engine="torch", cache=False)
    np.testing.assert_allclose(b.explained_variance, a.explained_variance, rtol=1e-9)


def test_jax_engine_matches_numpy_or_says_it_is_missing(spectrum):
    from descend.engines import is_available
    from descend.errors import EngineNotInstalled

    X, lam, R = spectrum
    if not is_available("jax"):
        with pytest.raises(EngineNotInstalled, match="jax"):
            pca.fit(X, 3, engine="jax")
        return
    got = pca.fit(X.astype(np.float32), 5, "block", engine="jax", chunk_rows=100)
    assert got.engine == "jax"
    check(got, lam, R)


def test_the_callers_data_is_never_modified(spectrum):
    X, _, _ = spectrum
    for dtype in (np.float64, np.float32):
        data = X.astype(dtype)
        before = data.copy()
        for engine in ("numpy", "torch"):
            for method in ("block", "gd", "exact"):
                r = pca.fit(data, 2, method, engine=engine, dtype=np.dtype(dtype).name, max_iter=3, cache=False)
        r.transform(data)
        r.transform(data, whiten=True)
        np.testing.assert_array_equal(data, before)


def test_result_round_trips_through_dict_and_file(tmp_path, spectrum):
    X, _, _ = spectrum
    result = pca.fit(X[:, :12], 4, "gd", scale=0.5)
    meta, arrays = result.to_dict()
    assert set(arrays) == {"pca.components", "pca.mean", "pca.explained_variance",
                           "pca.explained_variance_ratio", "pca.residuals"}
    import json

    again = pca.PCAResult.from_dict(json.loads(json.dumps(meta)), arrays)
    assert again.n_iter == result.n_iter and again.scale == 0.5 and again.method == "gd"
    np.testing.assert_array_equal(again.transform(X[:, :12]), result.transform(X[:, :12]))
    path = result.save(tmp_path / "pca.safetensors")
    loaded = pca.load(path)
    np.testing.assert_array_equal(loaded.components, result.components)
    np.testing.assert_array_equal(loaded.explained_variance, result.explained_variance)
    with pytest.raises(InputError, match="missing array"):
        pca.PCAResult.from_dict(meta, {k: v for k, v in arrays.items() if k != "pca.mean"})
    bad = dict(arrays, **{"pca.mean": np.zeros(3)})
    with pytest.raises(InputError, match="shape"):
        pca.PCAResult.from_dict(meta, bad)


def test_transform_whiten_standardizes_and_full_rank_inverts(spectrum):
    X, _, _ = spectrum
    result = pca.fit(X, 40, "exact")
    Z = result.transform(X, whiten=True)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(Z.std(axis=0, ddof=1), 1, rtol=1e-9)
    np.testing.assert_allclose(result.inverse_transform(Z, whiten=True), X, atol=1e-9)
    assert result.transform(X[:3], dtype=np.float32).dtype == np.float32
    with pytest.raises(InputError, match="features"):
        result.transform(X[:, :5])


def test_bad_arguments_and_data_raise_one_line_errors(spectrum, tmp_path):
    X, _, _ = spectrum
    with pytest.raises(ConfigError, match="`k`"):
        pca.fit(X, 0)
    with pytest.raises(ConfigError, match="`k`"):
        pca.fit(X, 41)
    with pytest.raises(ConfigError, match="`method`"):
        pca.fit(X, 2, "svd")
    with pytest.raises(ConfigError, match="`engine`"):
        pca.fit(X, 2, engine="tensorflow")
    with pytest.raises(ConfigError, match="`lr`"):
        pca.fit(X, 2, "gd", lr=-1)
    with pytest.raises(ConfigError, match="`tol`"):
        pca.fit(X, 2, tol=float("nan"))
    with pytest.raises(ConfigError, match="gpu"):
        pca.fit(X, 2, engine="numpy", device="gpu")
    bad = X.copy()
    bad[17, 3] = np.nan
    with pytest.raises(InputError, match="row 18"):
        pca.fit(bad, 2)
    with pytest.raises(InputError, match="2-D"):
        pca.fit(X[0], 1)
    with pytest.raises(InputError, match="not a real number"):
        pca.fit(X.astype(complex), 1)
    with pytest.raises(InputError, match="not found"):
        pca.fit(tmp_path / "missing.npy", 1)
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="objects.npy"):
        pca.fit(tmp_path / "objects.npy", 1)


def test_constant_and_rank_deficient_data():
    const = np.ones((10, 4))
    result = pca.fit(const, 2)
    assert result.total_variance == 0 and np.all(result.explained_variance == 0)
    rng = np.random.default_rng(1)
    low = rng.standard_normal((50, 2)) @ rng.standard_normal((2, 6))   # rank 2, k = 4
    for method in ("block", "gd", "exact"):
        r = pca.fit(low, 4, method, dtype="float64")
        assert r.explained_variance[2:].max() < 1e-10 * r.explained_variance[0]
        np.testing.assert_allclose(r.explained_variance_ratio[:2].sum(), 1.0, rtol=1e-9)


# MNIST ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist(mirror_dir):
    from descend.data import load

    X = load("mnist").train.X
    # float32 products summed in float64: a reference good to ~1e-7, three times faster than float64
    exact = pca.fit(X, 21, "exact", scale=1 / 255, dtype="float32")
    return X, exact


@pytest.mark.slow
def test_mnist_block_and_gd_match_exact(mnist):
    """The acceptance tolerance on real data: block k=20, and gd on the first 3 components (gd is slow)."""
    X, exact = mnist
    lam = exact.explained_variance
    for method, k, tol in (("block", 20, None), ("gd", 3, 1e-5)):
        got = pca.fit(X, k, method, scale=1 / 255, tol=tol)
        rel = np.abs(got.explained_variance / lam[:k] - 1)
        angles = pca.principal_angles(got.components, exact.components[:k])
        required = pca.relative_gaps(lam, k) >= GAP
        assert rel.max() <= EIG_TOL, (method, rel)
        assert angles[required].max() <= ANGLE_TOL, (method, angles)


# CLI -----------------------------------------------------------------------------------------------------

def _cli(args, capsys):
    from descend.cli.main import main

    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err, *fragments):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("descend:") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, spectrum):
    X, _, _ = spectrum
    np.save(tmp_path / "ok.npy", X)
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    nan = X.copy()
    nan[41, 7] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    cases = [
        (["pca", tmp_path / "nan.npy", "-k", "2"], ["nan.npy", "row 42", "NaN"]),
        (["pca", tmp_path / "missing.npy", "-k", "2"], ["missing.npy", "not found"]),
        (["pca", tmp_path / "flat.npy", "-k", "2"], ["flat.npy", "2-D"]),
        (["pca", tmp_path / "objects.npy", "-k", "2"], ["objects.npy"]),
        (["pca", tmp_path / "junk.npy", "-k", "2"], ["junk.npy"]),
        (["pca", tmp_path / "ok.npy", "-k", "400"], ["`k`"]),
        (["pca", tmp_path / "ok.npy", "-k", "0"], ["positive integer"]),
        (["pca", tmp_path / "ok.npy", "-k", "1.5"], ["positive integer"]),
        (["pca", tmp_path / "ok.npy", "-k", "2", "--method", "svd"], ["--method"]),
        (["pca", tmp_path / "ok.npy", "-k", "2", "--tol", "-1"], ["`tol`"]),
        (["pca", tmp_path / "ok.npy", "-k", "2", "--labels", tmp_path / "flat.npy"], ["labels"]),
        (["pca", tmp_path / "ok.npy", "-k", "2", "--image-shape", "3x3"], ["image_shape"]),
        (["pca", "no-such-dataset", "-k", "2"], ["no-such-dataset"]),
    ]
    for args, fragments in cases:
        rc, _, err = _cli([*args, "--out", tmp_path / "out", "--no-plots"], capsys)
        _one_line_error(rc, err, *fragments)


def test_cli_writes_components_table_and_plots(tmp_path):
    X, _, _ = known_spectrum(n=400, d=36)
    y = (np.arange(400) % 3).astype(np.int64)
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "descend", "pca", str(tmp_path / "x.npy"), "-k", "5",
                           "--labels", str(tmp_path / "y.npy"), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["component", "variance", "ratio", "cumulative", "residual"]
    assert len(lines) == 1 + 5 + 1 and lines[1].split()[0] == "1"
    for name in ("pca.safetensors", "eigenvalues.csv", "summary.json", "explained_variance.png",
                 "projection.png", "components.png"):
        assert (out / name).stat().st_size > 0, name
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" or not name.endswith(".png")
    loaded = pca.load(out / "pca.safetensors")
    ref = pca.fit(X.astype(np.float32), 5)
    np.testing.assert_allclose(loaded.explained_variance, ref.explained_variance, rtol=1e-6)
    csv = (out / "eigenvalues.csv").read_text().splitlines()
    assert csv[0].startswith("component,explained_variance,explained_variance_ratio") and len(csv) == 6


# descend train --pca -----------------------------------------------------------------------------------

def test_normalizer_pca_projects_standardizes_and_round_trips(spectrum):
    from descend.data.preprocess import Normalizer
    from descend.train.setup import fit_normalizer

    X, lam, R = spectrum
    norm = fit_normalizer("standardize", 5, X)
    assert norm.n_outputs == 5 and norm.n_features == 40
    Z = norm.transform(X)
    assert Z.shape == (600, 5) and Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(axis=0, ddof=1), 1, rtol=1e-4)       # "then standardize"
    # the same projection descend.pca finds on the normalized rows
    ref = pca.fit(Normalizer("standardize").fit_transform(X), 5, "exact")
    assert pca.principal_angles(norm.pca_components, ref.components).max() < 1e-3
    meta, arrays = norm.to_dict()
    assert meta["pca"]["n_components"] == 5 and meta["pca"]["method"] == "block"
    assert {"pca.mean", "pca.components", "pca.explained_variance"} <= set(arrays)
    again = Normalizer.from_dict(meta, arrays)
    np.testing.assert_array_equal(again.transform(X), Z)
    with pytest.raises(InputError, match="pca.components"):
        Normalizer.from_dict(meta, {k: v for k, v in arrays.items() if k != "pca.components"})
    with pytest.raises(InputError, match="shape"):
        Normalizer.from_dict(meta, {**arrays, "pca.mean": np.zeros(3)})
    with pytest.raises(ConfigError, match="`pca`"):
        pca.fit_projection(Normalizer("scale").fit(X), X, 0)
    with pytest.raises(ConfigError, match=r"`pca` must be an integer in \[1, 40\]"):
        fit_normalizer("scale", 41, X)
    with pytest.raises(ConfigError, match="projection"):
        Normalizer("scale").fit(X).set_projection(np.zeros(3), np.zeros((2, 3)), np.ones(2))
    # without pca nothing changes: no extra arrays, no "pca" key
    meta, arrays = Normalizer("scale").fit(X).to_dict()
    assert "pca" not in meta and arrays == {}


@pytest.fixture(scope="module")
def mnist_subset(mirror_dir, tmp_path_factory):
    """2,000 MNIST training rows and 500 test rows as .npz files (uint8 pixels, as in the IDX files)."""
    from descend.data import load

    ds = load("mnist")
    d = tmp_path_factory.mktemp("mnist-subset")
    np.savez(d / "train.npz", X=ds.train.X[:2000], y=ds.train.y[:2000], X_test=ds.test.X[:500],
             y_test=ds.test.y[:500])
    np.savez(d / "test.npz", X=ds.test.X[:500], y=ds.test.y[:500])
    return d, ds.test.X[:500], ds.test.y[:500]


def test_train_with_pca_stores_the_projection_and_predict_reproduces_the_test_error(mnist_subset, tmp_path,
                                                                                        capsys):
    import json

    from descend.io.modelfile import load_model
    from descend.train.predict import load_trained, predict_file

    d, X_test, y_test = mnist_subset
    out = tmp_path / "run"
    rc, _, err = _cli(["train", d / "train.npz", "--pca", "30", "--hidden", "32", "--epochs", "2",
                       "--engine", "numpy", "--out", out, "--quiet"], capsys)
    assert rc == 0, err
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["pca"] == 30
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_size"] == 500 and metrics["test_error"] < 0.5
    mf = load_model(out / "model.safetensors")                      # safetensors: no pickle anywhere
    assert mf.params["dense0.W"].shape == (30, 32)                  # the network sees 30 inputs
    assert mf.metadata["n_features"] == 784                         # ...but takes raw 784-pixel rows
    assert mf.metadata["normalization"]["pca"]["n_components"] == 30
    assert mf.extra["normalization.pca.components"].shape == (30, 784)
    # the library (descend.train.predict) and the CLI apply the stored projection: same test error
    model = load_trained(out / "model.safetensors")
    assert model.normalizer.pca == 30
    assert float(np.mean(model.predict(X_test) != y_test)) == metrics["test_error"]
    assert predict_file(out / "model.safetensors", d / "test.npz").error == metrics["test_error"]
    rc, _, err = _cli(["predict", out / "model.safetensors", d / "test.npz"], capsys)
    assert rc == 0 and f"error {100 * metrics['test_error']:.2f}%" in err, err
    # resuming rebuilds the same configuration (pca included) from config.json
    from descend.train.config import TrainConfig

    assert TrainConfig.from_dict(config).pca == 30


def test_train_bad_pca_is_one_line_exit_2(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "small.npz", X=rng.standard_normal((120, 20)).astype(np.float32), y=np.arange(120) % 3)
    cases = [("0", "positive integer"), ("-3", "positive integer"), ("2.5", "positive integer"),
             ("ten", "positive integer"), ("21", "`pca` must be an integer in [1, 20]")]
    for value, fragment in cases:
        rc, _, err = _cli(["train", tmp_path / "small.npz", "--pca", value, "--hidden", "4", "--epochs", "1",
                           "--engine", "numpy", "--out", tmp_path / f"never-{value}", "--quiet"], capsys)
        _one_line_error(rc, err, fragment)
        assert not (tmp_path / f"never-{value}").exists()
    from descend.train.config import TrainConfig

    with pytest.raises(ConfigError, match="`pca`"):
        TrainConfig(pca=0)
    with pytest.raises(ConfigError, match="`pca`"):
        TrainConfig(pca=2.5)


# GPU -----------------------------------------------------------------------------------------------------

def _machine_has_gpu() -> bool:
    return bool(glob.glob("/proc/driver/nvidia/gpus/*") or glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi"))


@pytest.mark.gpu
@pytest.mark.skipif(not _machine_has_gpu(), reason="no NVIDIA GPU")
@pytest.mark.parametrize("engine", ["torch", "jax"])
def test_gpu_engines_match_numpy(engine, tmp_path, spectrum):
    if engine == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch sees no GPU")
    else:
        jax = pytest.importorskip("jax")
        try:
            jax.devices("gpu")
        except RuntimeError:
            pytest.skip("jax sees no GPU")
    X, lam, R = spectrum
    for method in ("block", "gd"):
        got = pca.fit(X, 6, method, engine=engine, device="gpu")
        assert got.device == "gpu"
        check(got, lam, R)
    path = tmp_path / "x.npy"
    np.save(path, X.astype(np.float32))
    streamed = pca.fit(str(path), 6, "block", engine=engine, device="gpu", chunk_rows=64)
    check(streamed, lam, R)
    if engine == "torch":
        ref = pca.fit(X, 6, "block", dtype="float64", tol=1e-10)
        got = pca.fit(X, 6, "block", engine=engine, device="gpu", dtype="float64", tol=1e-10)
        np.testing.assert_allclose(got.explained_variance, ref.explained_variance, rtol=1e-9)
