"""Loaders, splits and normalization on small generated files, plus real MNIST / FER2013."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from descend.data import REGISTRY, Dataset, Normalizer, Split, dataset_info, load
from descend.data.splits import carve
from descend.errors import ConfigError, InputError

FER_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")


# --- writers of small files in each format ------------------------------------------

def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    arr = np.asarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    raw += arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_mnist_dir(root: Path, n_train=60, n_test=20, seed=0, gz=True) -> Path:
    rng = np.random.default_rng(seed)
    sfx = ".gz" if gz else ""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}",
                  rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", np.arange(n) % 10, gz)
    return root


def write_kaggle(path: Path, X: np.ndarray, y: np.ndarray | None) -> Path:
    header = ([] if y is None else ["label"]) + [f"pixel{i}" for i in range(X.shape[1])]
    rows = X if y is None else np.column_stack([y, X])
    text = ",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
    return path


def write_fer(path: Path, labels, usages, n_pix=2304, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (len(labels), n_pix))
    lines = ["emotion,pixels,Usage"] + [f"{e},{' '.join(map(str, x))},{u}"
                                       for e, x, u in zip(labels, X, usages)]
    text = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return X


def fer_rows(per_usage=(30, 7, 7)):
    names = ("Training", "PublicTest", "PrivateTest")
    usages = [u for u, n in zip(names, per_usage) for _ in range(n)]
    return [i % 7 for i in range(len(usages))], usages


# --- IDX -------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_gives_train_and_official_test(tmp_path, gz):
    root = write_mnist_dir(tmp_path / "m", gz=gz)
    ds = load(root, validation=10)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (50, 10, 20)
    assert ds.train.X.dtype == np.uint8 and ds.train.X.shape[1] == ds.n_features == 784
    assert ds.image_shape == (28, 28) and ds.classes == tuple("0123456789")
    assert ds.train.y.dtype == np.int64


def test_idx_images_file_finds_labels_and_test_beside_it(tmp_path):
    root = write_mnist_dir(tmp_path)
    ds = load(root / "train-images-idx3-ubyte.gz")
    assert ds.test is not None and len(ds.test) == 20
    raw = np.frombuffer(gzip.decompress((root / "t10k-images-idx3-ubyte.gz").read_bytes())[16:],
                        np.uint8).reshape(20, 784)
    np.testing.assert_array_equal(ds.test.X, raw)  # official test rows, untouched, in order


# --- Kaggle digits ----------------------------------------------------------------------

def test_kaggle_train_with_test_beside(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.integers(0, 256, (40, 784)), np.arange(40) % 10
    write_kaggle(tmp_path / "train.csv", X, y)
    write_kaggle(tmp_path / "test.csv", X[:7], None)
    ds = load(tmp_path / "train.csv")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (36, 4, 7)
    assert ds.test.y is None and ds.classes == tuple("0123456789")
    assert ds.image_shape == (28, 28) and ds.train.X.dtype == np.uint8
    np.testing.assert_array_equal(ds.test.X, X[:7])
    # the carved rows are the original rows with their labels
    both = np.concatenate([ds.train.X, ds.validation.X])
    labels = np.concatenate([ds.train.y, ds.validation.y])
    order = np.lexsort(both.T[::-1])
    ref = np.lexsort(X.T[::-1])
    np.testing.assert_array_equal(both[order], X[ref])
    np.testing.assert_array_equal(labels[order], y[ref])


def test_kaggle_without_test_and_gzipped(tmp_path):
    X = np.zeros((20, 784), dtype=int)
    write_kaggle(tmp_path / "digits.csv.gz", X, np.arange(20) % 10)
    ds = load(tmp_path / "digits.csv.gz", validation=0)
    assert ds.test is None and ds.validation is None and len(ds.train) == 20
    assert ds.name == "digits"


def test_kaggle_test_file_alone_is_unlabeled(tmp_path):
    write_kaggle(tmp_path / "test.csv", np.ones((5, 784), dtype=int), None)
    ds = load(tmp_path / "test.csv", require_labels=False)
    assert ds.train.y is None and ds.validation is None and len(ds.train) == 5
    assert "unlabeled" in dataset_info(ds)


# --- FER2013 ----------------------------------------------------------------------------

def test_fer_official_splits(tmp_path):
    labels, usages = fer_rows()
    X = write_fer(tmp_path / "fer2013.csv.gz", labels, usages)
    ds = load(tmp_path / "fer2013.csv.gz")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (30, 7, 7)
    assert ds.classes == FER_NAMES and ds.image_shape == (48, 48) and ds.n_classes == 7
    np.testing.assert_array_equal(ds.train.X, X[:30])
    np.testing.assert_array_equal(ds.test.X, X[37:])
    np.testing.assert_array_equal(ds.validation.y, np.array(labels[30:37]))


def test_fer_explicit_validation_is_carved_from_training(tmp_path):
    labels, usages = fer_rows((28, 7, 7))
    write_fer(tmp_path / "fer.csv", labels, usages)
    ds = load(tmp_path / "fer.csv", format="fer2013", validation=7)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (21, 7, 7)
    assert sorted(ds.validation.y) == list(range(7))  # one per class: stratified


def test_fer_variant_columns_quotes_and_no_usage(tmp_path):
    path = tmp_path / "faces.csv"
    rows = [f'{i % 7}, "{" ".join(["7"] * 2304)}"' for i in range(20)]
    path.write_text("emotion, pixels\n" + "\r\n".join(rows) + "\r\n")
    ds = load(path)
    assert ds.image_shape == (48, 48) and ds.test is None
    assert (len(ds.train), len(ds.validation)) == (18, 2)
    assert (ds.train.X == 7).all()


def test_fer_by_name_through_a_mirror(tmp_path, monkeypatch):
    labels, usages = fer_rows((14, 7, 7))
    (tmp_path / "mirror" / "fer2013").mkdir(parents=True)
    write_fer(tmp_path / "mirror" / "fer2013" / "fer2013.csv.gz", labels, usages)
    monkeypatch.setenv("DESCEND_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path / "cache"))
    ds = load("fer2013")
    assert ds.name == "fer2013" and (len(ds.train), len(ds.validation), len(ds.test)) == (14, 7, 7)
    assert (tmp_path / "cache" / "fer2013" / "fer2013.csv.gz").is_file()


# --- generic CSV ------------------------------------------------------------------------

def test_csv_text_labels_map_to_sorted_classes(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text("w,species,h\n" + "".join(
        f"{i},{'dog' if i % 2 else 'cat'},{i * 0.5}\n" for i in range(20)))
    ds = load(path, label_column="species", validation=0)
    assert ds.classes == ("cat", "dog") and ds.image_shape is None
    assert ds.train.X.dtype == np.float32 and ds.train.X.shape == (20, 2)
    np.testing.assert_array_equal(ds.train.y, np.arange(20) % 2)
    np.testing.assert_allclose(ds.train.X[3], [3, 1.5])


def test_csv_numeric_labels_0_to_k_stay_ids_and_bytes_stay_uint8(tmp_path):
    path = tmp_path / "signs.csv"
    path.write_text("pixel1,pixel2,pixel3,pixel4,label\n" + "".join(
        f"{i},{2 * i},0,255,{i % 4}\n" for i in range(40)))
    ds = load(path)
    assert ds.classes == ("0", "1", "2", "3")
    assert ds.train.X.dtype == np.uint8 and ds.image_shape == (2, 2)
    assert len(ds.validation) == 4 and sorted(ds.validation.y) == [0, 1, 2, 3]


def test_csv_other_numbers_map_to_sorted_values(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("label,x\n" + "".join(f"{v},{i}\n" for i, v in enumerate([-1, 0.5, 3] * 4)))
    ds = load(path, validation=0)
    assert ds.classes == ("-1", "0.5", "3")
    np.testing.assert_array_equal(ds.train.y, [0, 1, 2] * 4)
    path.write_text("label,x\n" + "".join(f"{v},{i}\n" for i, v in enumerate([1, 2, 10] * 4)))
    assert load(path, validation=0).classes == ("1", "2", "10")  # gaps: names keep meaning


def test_csv_with_test_file(tmp_path):
    (tmp_path / "a.csv").write_text("label,x\n" + "cat,1\ndog,2\n" * 10)
    (tmp_path / "b.csv").write_text("label,x\ndog,5\ncat,6\n")
    ds = load(tmp_path / "a.csv", test=tmp_path / "b.csv")
    np.testing.assert_array_equal(ds.test.y, [1, 0])
    (tmp_path / "c.csv").write_text("label,x\nemu,5\n")
    with pytest.raises(InputError, match=r"c\.csv: row 1: label 'emu' does not occur"):
        load(tmp_path / "a.csv", test=tmp_path / "c.csv")


# --- NPZ --------------------------------------------------------------------------------

def test_npz_image_stack_with_test_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "imgs.npz"
    np.savez(path, X=rng.integers(0, 256, (30, 5, 6), dtype=np.uint8), y=np.arange(30) % 3,
             X_test=np.zeros((4, 5, 6), np.uint8), y_test=np.array([0, 1, 2, 0]),
             classes=np.array(["a", "b", "c"]))
    ds = load(path, validation=0.2, seed=3)
    assert ds.image_shape == (5, 6) and ds.n_features == 30 and ds.classes == ("a", "b", "c")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (24, 6, 4)
    assert ds.train.X.dtype == np.uint8


def test_npz_text_labels_and_float_features(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, X=np.linspace(0, 1, 20).reshape(10, 2), y=np.array(["b", "a"] * 5))
    ds = load(path, validation=0)
    assert ds.classes == ("a", "b") and ds.train.X.dtype == np.float64
    np.testing.assert_array_equal(ds.train.y, [1, 0] * 5)


# --- splits -----------------------------------------------------------------------------

def test_carve_is_stratified_seeded_and_disjoint():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    tr, va = carve(y, len(y), 20, seed=7)
    assert len(va) == 20 and np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.union1d(tr, va), np.arange(100))
    np.testing.assert_array_equal(np.bincount(y[va]), [10, 6, 3, 1])
    np.testing.assert_array_equal(carve(y, len(y), 20, seed=7)[1], va)
    assert not np.array_equal(carve(y, len(y), 20, seed=8)[1], va)


@pytest.mark.parametrize("bad", [-1, 60, 1.0, 0.999, -0.1, True, "0.1"])
def test_invalid_validation_is_a_config_error(tmp_path, bad):
    root = write_mnist_dir(tmp_path)
    with pytest.raises(ConfigError, match="validation"):
        load(root, validation=bad)


def test_unknown_format_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="`format` must be one of"):
        load(write_mnist_dir(tmp_path), format="parquet")


# --- normalization ----------------------------------------------------------------------

def test_scale_uint8_divides_by_255_and_leaves_input_alone():
    X = np.array([[0, 51, 255], [10, 20, 30]], dtype=np.uint8)
    before = X.copy()
    out = Normalizer("scale").fit_transform(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, before / 255, rtol=1e-6)
    np.testing.assert_array_equal(X, before)


def test_scale_other_dtypes_min_max_from_training_only():
    norm = Normalizer().fit(np.array([[2.0, 4.0], [6.0, 10.0]]))
    np.testing.assert_allclose(norm.transform(np.array([[2.0, 18.0]])), [[0, 2]])


def test_standardize_per_feature_constant_feature_std_1():
    X = np.array([[1.0, 5.0], [3.0, 5.0]])
    norm = Normalizer("standardize").fit(X)
    np.testing.assert_allclose(norm.transform(X), [[-1, 0], [1, 0]])
    assert Normalizer("none").fit_transform(X).dtype == np.float32


@pytest.mark.parametrize("method", ["scale", "standardize", "none"])
def test_normalizer_roundtrips_through_safetensors(tmp_path, method):
    from safetensors.numpy import load_file, save_file

    X = np.random.default_rng(0).normal(3, 2, (50, 4))
    norm = Normalizer(method).fit(X)
    meta, arrays = norm.to_dict()
    save_file({"dense0.W": np.ones((4, 2), np.float32), **arrays}, tmp_path / "m.safetensors",
              metadata={"normalizer": json.dumps(meta)})
    from safetensors import safe_open

    with safe_open(tmp_path / "m.safetensors", "np") as f:
        stored = json.loads(f.metadata()["normalizer"])
    back = Normalizer.from_dict(stored, load_file(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(back.transform(X), norm.transform(X))


def test_normalizer_misuse():
    with pytest.raises(ConfigError, match="not fitted"):
        Normalizer().transform(np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="`method` must be one of"):
        Normalizer("zscore")
    with pytest.raises(InputError, match="3 features, but the Normalizer was fitted on 2"):
        Normalizer().fit(np.zeros((2, 2))).transform(np.zeros((1, 3)))


# --- real data (through DESCEND_MIRROR) --------------------------------------------------

def test_registry_hashes_match_the_mirror_files(mirror_dir):
    for file, sha in REGISTRY["mnist"].files.items():
        payload = gzip.decompress((mirror_dir / "mnist" / file).read_bytes())
        assert hashlib.sha256(payload).hexdigest() == sha, file


def test_mnist_splits(mirror_dir):
    ds = load("mnist", seed=1)
    assert isinstance(ds, Dataset) and isinstance(ds.train, Split)
    assert (ds.train.X.shape, ds.validation.X.shape, ds.test.X.shape) == (
        (50000, 784), (10000, 784), (10000, 784))
    assert ds.train.X.dtype == np.uint8 and ds.n_classes == 10 and ds.image_shape == (28, 28)
    counts = np.bincount(ds.validation.y)
    full = np.bincount(np.concatenate([ds.train.y, ds.validation.y]))
    assert np.abs(counts - full / 6).max() <= 1  # stratified
    again = load("mnist", seed=1)
    np.testing.assert_array_equal(again.validation.y, ds.validation.y)
    assert ds.test.y[:5].tolist() == [7, 2, 1, 0, 4]
    for split in ds.splits().values():
        assert split.X.flags.writeable and split.X.flags.c_contiguous
        assert split.y.dtype == np.int64


def test_cli_data_info_mnist(mirror_dir, capsys):
    from descend.cli.main import main

    assert main(["data", "info", "mnist", "--validation", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "30000 rows x 784" in out and "10000 rows" in out and "uint8" in out


def test_cli_data_help_shows_defaults(capsys):
    from descend.cli.main import main

    with pytest.raises(SystemExit):
        main(["data", "info", "--help"])
    assert "(default: label)" in capsys.readouterr().out


@pytest.mark.slow
def test_fer2013_real_file_counts_and_memory(mirror_dir):
    """Loads the 300 MB-of-text FER2013 in a fresh process: splits right, peak RSS < 1 GB."""
    path = mirror_dir / "fer2013" / "fer2013.csv.gz"
    # VmHWM is the peak of this process's own address space; ru_maxrss would also count
    # the pytest parent it was forked from (Linux keeps it across exec).
    code = ("import re, sys\n"
            "from descend.cli.main import main\n"
            "rc = main(['data', 'info', sys.argv[1]])\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
            "print('RSS_KB', hwm)\n"
            "sys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "train:       28709 rows x 2304" in out
    assert "validation:  3589 rows" in out and "test:        3589 rows" in out
    assert "Angry 3995, Disgust 436" in out
    rss_kb = int(out.rsplit("RSS_KB", 1)[1])
    assert rss_kb < 1024 * 1024, f"peak RSS {rss_kb / 1024:.0f} MB"
