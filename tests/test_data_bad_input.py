"""Every kind of malformed input gives one line naming the file, the row and the problem.

Each case is a small file written to tmp_path.  The library must raise
InputError; ``descend data info FILE`` must exit 2 with exactly one
``descend: ...`` line on stderr and no traceback.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from descend.cli.main import main
from descend.data import load
from descend.errors import InputError

KAGGLE = "label," + ",".join(f"pixel{i}" for i in range(784))


def idx(dims, dtype=0x08, body: bytes | None = None, ndim=None) -> bytes:
    head = bytes([0, 0, dtype, len(dims) if ndim is None else ndim])
    head += b"".join(int(d).to_bytes(4, "big") for d in dims)
    return head + (bytes(int(np.prod(dims))) if body is None else body)


def mnist_pair(tmp: Path, images: bytes, labels: bytes) -> Path:
    (tmp / "train-labels-idx1-ubyte").write_bytes(labels)
    path = tmp / "train-images-idx3-ubyte"
    path.write_bytes(images)
    return path


def kaggle(*rows: str) -> bytes:
    return (KAGGLE + "\n" + "\n".join(rows) + "\n").encode()


def krow(label="3", pixel5="0", n=784) -> str:
    pixels = ["0"] * n
    if n > 5:
        pixels[5] = pixel5
    return ",".join([label] + pixels)


def fer(*rows: str) -> bytes:
    return ("emotion,pixels,Usage\n" + "\n".join(rows) + "\n").encode()


def frow(emotion="0", pixels=None, usage="Training") -> str:
    return f"{emotion},{pixels or ' '.join(['1'] * 2304)},{usage}"


def npz(tmp: Path, name: str, **arrays) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def write(name: str, data: bytes):
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name
    return make


X5 = np.zeros((5, 4))
CASES = {
    # name: (make file, --format, expected message after "<file>: ")
    "idx truncated": (lambda t: mnist_pair(t, idx((5, 28, 28))[:-100], idx((5,))), None,
                      r"truncated IDX file: shape \(5, 28, 28\) needs 3936 bytes, found 3836"),
    "idx trailing bytes": (lambda t: mnist_pair(t, idx((5, 28, 28)) + b"x", idx((5,))), None,
                           "IDX file has trailing bytes"),
    "idx header cut": (lambda t: mnist_pair(t, idx((5, 28, 28))[:10], idx((5,))), "idx",
                       "truncated IDX file"),
    "idx labels as images": (lambda t: mnist_pair(t, idx((5,)), idx((5,))), None,
                             "wrong magic number 0x00000801 for an IDX images file"),
    "idx bad magic": (lambda t: mnist_pair(t, b"\x12\x34\x56\x78" + bytes(40), idx((5,))), "idx",
                      "not an IDX file \\(magic number 0x12345678\\)"),
    "idx count mismatch": (lambda t: mnist_pair(t, idx((5, 28, 28)), idx((4,))), None,
                           "4 labels but .*train-images-idx3-ubyte has 5 images"),
    "idx label range": (lambda t: mnist_pair(t, idx((1, 2, 2)), idx((1,), body=b"\x03")), None,
                        None),  # labels of a user IDX file are free: not an error
    "gzip truncated": (write("train.csv.gz", gzip.compress(kaggle(*[krow()] * 50))[:-30]), None,
                       "corrupt or truncated gzip data"),
    "kaggle column count": (write("train.csv", kaggle(krow(), krow(n=783))), None,
                            "line 3: expected 785 columns, found 784"),
    "kaggle non-numeric pixel": (write("train.csv", kaggle(krow(pixel5="abc"))), None,
                                 "line 2: non-numeric value 'abc' in column 'pixel5'"),
    "kaggle fractional pixel": (write("train.csv", kaggle(krow(), krow(pixel5="1.5"))), None,
                                "line 3: non-integer value '1.5' in column 'pixel5'"),
    "kaggle pixel too big": (write("train.csv", kaggle(krow(), krow(), krow(pixel5="256"))), None,
                             r"line 4: pixel5 value 256 out of range \[0, 255\]"),
    "kaggle negative pixel": (write("train.csv", kaggle(krow(pixel5="-1"))), None,
                              r"line 2: pixel5 value -1 out of range \[0, 255\]"),
    "kaggle label range": (write("train.csv", kaggle(krow(), krow(label="10"))), None,
                           r"line 3: label 10 out of range \[0, 9\]"),
    "kaggle wrong header": (write("train.csv", ("label,pixel1\n0,1\n").encode()), "kaggle",
                            "line 1: not a Kaggle digits header"),
    "fer label range": (write("fer.csv", fer(frow(), frow("7"))), None,
                        r"line 3: label 7 out of range \[0, 6\]"),
    "fer non-numeric emotion": (write("fer.csv", fer(frow("happy"))), None,
                                "line 2: non-numeric emotion 'happy'"),
    "fer non-numeric pixel": (write("fer.csv", fer(frow(pixels="1 x" + " 1" * 2302))), None,
                              r"line 2: non-numeric value 'x' in pixels \(pixel 2\)"),
    "fer pixel range": (write("fer.csv", fer(frow(), frow(pixels="1 " * 9 + "300" + " 1" * 2294))),
                        None, r"line 3: pixel 10 value 300 out of range \[0, 255\]"),
    "fer pixel count": (write("fer.csv", fer(frow(), frow(pixels=" ".join(["1"] * 2303)))), None,
                        "line 3: expected 2304 pixels, found 2303"),
    "fer rows of 3 pixels": (write("fer.csv", fer(frow(pixels="1 2 3"), frow("1", "4 5 6"))), None,
                             r"line 2: expected 2304 pixels, found 3 \(FER2013 images are 48x48\)"),
    "fer empty pixels": (write("fer.csv", fer(frow(), "1,,Training")), None,
                         "line 3: expected 2304 pixels, found 0"),
    "fer column count": (write("fer.csv", fer(frow() + ",extra")), None,
                         "line 2: expected 3 columns, found 4"),
    "fer usage": (write("fer.csv", fer(frow(usage="Dev"))), None, "line 2: unknown Usage 'Dev'"),
    "fer header": (write("fer.csv", b"emotions,pixel\n0,1\n"), "fer2013",
                   "line 1: not a FER2013 header"),
    "csv NaN": (write("t.csv", b"label,a,b\n0,1,2\n1,nan,2\n"), None,
                "line 3: NaN in column 'a'"),
    "csv inf": (write("t.csv", b"label,a,b\n0,1,inf\n"), None, "line 2: inf in column 'b'"),
    "csv empty value": (write("t.csv", b"label,a,b\n0,1,\n"), None,
                        "line 2: empty value in column 'b'"),
    "csv NaN label": (write("t.csv", b"label,a\n0,1\nNaN,2\n"), None,
                      "line 3: label 'NaN' is not a finite number"),
    "csv empty label": (write("t.csv", b"a,label\n1,\n"), None, "line 2: empty label"),
    "csv column count": (write("t.csv", b"label,a,b\n0,1,2\n\n0,1\n"), None,
                         "line 4: expected 3 columns, found 2"),
    "csv no label column": (write("t.csv", b"a,b\n1,2\n"), "csv",
                            "line 1: no column 'label' in header \\(a, b\\)"),
    "csv header missing": (write("t.csv", b"1,2,3\n4,5,6\n"), None, "line 1: header missing"),
    "kaggle header missing": (write("train.csv", b"0,1,2\n"), "kaggle", "line 1: header missing"),
    "empty file": (write("train.csv", b""), None, "file is empty"),
    "blank file": (write("train.csv", b"\n\n"), None, "file is empty"),
    "empty gzip": (write("train.csv.gz", gzip.compress(b"")), None, "file is empty"),
    "header only": (write("train.csv", b"label,a\n"), None, "no data rows after the header"),
    "npz missing X": (lambda t: npz(t, "d.npz", y=np.zeros(5)), None,
                      "missing array 'X' \\(found: y\\)"),
    "npz missing y": (lambda t: npz(t, "d.npz", X=X5), None, "missing array 'y'"),
    "npz X 5-D": (lambda t: npz(t, "d.npz", X=np.zeros((5, 2, 2, 1, 1)), y=np.zeros(5)), None,
                  r"X must be 2-D .* got shape \(5, 2, 2, 1, 1\)"),
    "npz X 1-D": (lambda t: npz(t, "d.npz", X=np.zeros(5), y=np.zeros(5)), None,
                  "X must be 2-D"),
    "npz y length": (lambda t: npz(t, "d.npz", X=X5, y=np.zeros(4)), None,
                     "y has 4 labels but X has 5 rows"),
    "npz NaN in X": (lambda t: npz(t, "d.npz", X=np.array([[0, 1.0], [np.nan, 0]]),
                                   y=np.zeros(2)), None, "X row 2: NaN value"),
    "npz NaN in y": (lambda t: npz(t, "d.npz", X=X5, y=np.array([0, 1, np.nan, 0, 1])), None,
                     "y row 3: label NaN is not a finite number"),
    "npz pickled objects": (lambda t: npz(t, "d.npz", X=np.array([{}, 1], dtype=object),
                                          y=np.zeros(2)), None, "unreadable array"),
    "npz not a zip": (write("d.npz", b"PK\x03\x04 this is not a zip archive"), None,
                      "not a readable .npz archive"),
    "npz label out of classes": (lambda t: npz(t, "d.npz", X=X5, y=np.arange(5),
                                               classes=np.array(["a", "b"])), None,
                                 r"row 3: label 2 out of range \[0, 1\]"),
    "unknown format": (write("blob.bin", bytes(range(256)) * 4), None, "unknown format"),
    "binary as csv": (write("blob.csv", b"\xff\xfe\x00\x01,\x80\n"), "csv", "not a text file"),
    "not found": (lambda t: t / "nope.csv", None, "file not found"),
    "directory without IDX": (lambda t: t, "idx", "no train-images-idx3-ubyte"),
}
BAD = {k: v for k, v in CASES.items() if v[2] is not None}


@pytest.mark.parametrize("case", list(BAD))
def test_library_raises_input_error_naming_file_row_problem(tmp_path, case):
    make, fmt, expected = BAD[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        load(path, format=fmt)
    msg = str(info.value)
    assert "\n" not in msg
    assert path.name in msg
    assert __import__("re").search(expected, msg), msg


@pytest.mark.parametrize("case", list(BAD))
def test_cli_exits_2_with_one_line(tmp_path, case, capsys):
    make, fmt, _ = BAD[case]
    path = make(tmp_path)
    rc = main(["data", "info", str(path)] + (["--format", fmt] if fmt else []))
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("descend: ") and path.name in err
    assert "Traceback" not in err


def test_user_idx_labels_are_not_range_checked(tmp_path):
    ds = load(CASES["idx label range"][0](tmp_path), validation=0, require_labels=False)
    assert ds.classes == ("3",) and ds.train.y.tolist() == [0]


@pytest.mark.parametrize("case", ["kaggle pixel too big", "npz missing y", "not found"])
def test_python_m_descend_exits_2_without_traceback(tmp_path, case):
    make, fmt, _ = BAD[case]
    path = make(tmp_path)
    done = subprocess.run([sys.executable, "-m", "descend", "data", "info", str(path)]
                          + (["--format", fmt] if fmt else []),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("descend: ") and len(done.stderr.splitlines()) == 1
    assert path.name in done.stderr and "Traceback" not in done.stderr


# --- what training refuses (describing the file, `descend data info`, still works) -------

def _fer_one_class(tmp: Path) -> Path:
    return write("fer.csv", fer(*[frow("3", usage=u) for u in ("Training",) * 4 + ("PublicTest",)]))(tmp)


UNTRAINABLE = {
    # name: (make file, expected message after "<file>: ")
    "kaggle test file": (write("test.csv", (KAGGLE.removeprefix("label,") + "\n"
                                            + ",".join(["0"] * 784) + "\n").encode()),
                         "no label column, so nothing to train on: this looks like a Kaggle test "
                         "file, which is for `descend predict`"),
    "csv one class": (write("t.csv", b"label,a,b\ncat,1,2\ncat,3,4\ncat,5,6\n"),
                      "every label is 'cat': training needs at least two classes"),
    "csv one numeric class": (write("t.csv", b"label,a\n7,1\n7.0,2\n7,3\n"),
                              "every label is '7': training needs at least two classes"),
    "npz one class": (lambda t: npz(t, "d.npz", X=X5, y=np.full(5, 2)),
                      "every label is '2': training needs at least two classes"),
    "fer one class": (_fer_one_class, "every label is 'Happy': training needs at least two classes"),
}


@pytest.mark.parametrize("case", list(UNTRAINABLE))
def test_training_data_needs_labels_of_two_classes(tmp_path, case):
    make, expected = UNTRAINABLE[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        load(path)
    assert str(info.value) == f"{path}: {expected}"
    described = load(path, require_labels=False)  # data info and PCA read it
    assert len(described.train) >= 1


@pytest.mark.parametrize("case", ["kaggle test file", "npz one class", "fer one class"])
def test_descend_train_refuses_in_one_line_and_leaves_no_run(tmp_path, case):
    make, expected = UNTRAINABLE[case]
    path = make(tmp_path)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "descend", "train", str(path), "--engine", "numpy",
                           "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"descend: {path}: {expected}"]
    assert not out.exists()


def test_data_info_describes_a_test_file(tmp_path, capsys):
    path = UNTRAINABLE["kaggle test file"][0](tmp_path)
    assert main(["data", "info", str(path)]) == 0
    assert "unlabeled" in capsys.readouterr().out
