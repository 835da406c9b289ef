"""io/: atomic writes, pytrees, model files and checkpoints (never pickle), run dirs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import descend
from descend.errors import InputError
from descend.io import tree
from descend.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from descend.io.modelfile import load_checkpoint, load_model, save_checkpoint, save_model
from descend.io.rundir import make_run_dir, read_json, write_json


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_bytes_and_text(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _leftovers(p.parent) == []


def test_atomic_path_failure_keeps_old_content_and_no_temp(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(p) as tmp:
            assert tmp.parent == p.parent and tmp != p
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_failure_leaves_no_destination(tmp_path):
    p = tmp_path / "new.png"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p) as tmp:
            assert tmp.suffix == ".png"  # writers that infer the format from the suffix work
            tmp.write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_save_model_failure_midway_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "model.safetensors"
    save_model(p, {"W": np.ones(3, np.float32)}, metadata={"v": 1})
    before = p.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("descend.io.modelfile.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(p, {"W": np.zeros(3, np.float32)}, metadata={"v": 2})
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert load_model(p).metadata == {"v": 1}


# ---------------------------------------------------------------- pytrees


class Trace(NamedTuple):
    trace: dict


class Count(NamedTuple):
    count: np.ndarray


class Empty(NamedTuple):
    pass


def _state():
    params = {"dense0.W": np.arange(6.0).reshape(2, 3), "dense0.b": np.zeros(3)}
    return (Count(np.array(3)), Trace(trace=params), Empty(), [None, (np.ones(1),)])


def test_tree_flatten_unflatten_roundtrip_preserves_namedtuples():
    s = _state()
    leaves, treedef = tree.flatten(s)
    assert len(leaves) == treedef.num_leaves == 5
    back = tree.unflatten(treedef, leaves)
    assert type(back[0]) is Count and type(back[1]) is Trace and type(back[2]) is Empty
    assert isinstance(back[3], list) and isinstance(back[3][1], tuple)
    assert back[3][0] is None
    np.testing.assert_array_equal(back[1].trace["dense0.W"], s[1].trace["dense0.W"])
    assert list(back[1].trace) == ["dense0.W", "dense0.b"]
    assert tree.flatten(back)[1] == treedef
    with pytest.raises(ValueError):
        tree.unflatten(treedef, leaves[:-1])


def test_tree_paths_are_stable_and_refill_from_checkpoint(tmp_path):
    s = _state()
    paths = tree.flatten_with_paths(s)
    assert list(paths) == ["0.count", "1.trace.dense0.W", "1.trace.dense0.b", "3.0", "3.1.0"]
    assert list(tree.flatten_with_paths(_state())) == list(paths)  # deterministic
    arrays = {k: v for k, v in paths.items() if v is not None}
    save_checkpoint(tmp_path / "c.safetensors", arrays, {})
    loaded, _ = load_checkpoint(tmp_path / "c.safetensors")
    loaded["3.0"] = None
    back = tree.unflatten_from_paths(s, loaded)
    assert type(back[1]) is Trace
    np.testing.assert_array_equal(back[1].trace["dense0.W"], s[1].trace["dense0.W"])
    with pytest.raises(KeyError, match="0.count"):
        tree.unflatten_from_paths(s, {})


def test_tree_map():
    s = _state()
    doubled = tree.map(lambda x: None if x is None else x * 2, s)
    assert type(doubled[1]) is Trace
    np.testing.assert_array_equal(doubled[1].trace["dense0.W"], 2 * s[1].trace["dense0.W"])
    summed = tree.map(lambda a, b: None if a is None else a + b, s, doubled)
    np.testing.assert_array_equal(summed[0].count, np.array(9))
    with pytest.raises(ValueError):
        tree.map(lambda a, b: a, {"a": 1}, {"b": 1})


# ---------------------------------------------------------------- model files


def test_model_roundtrip_dtypes_metadata_versions(tmp_path):
    p = tmp_path / "model.safetensors"
    params = {"dense0.W": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
              "dense0.b": np.arange(3, dtype=np.float64)}
    state = {"bn0.mean": np.array([1.5, -2.0]), "bn0.count": np.array(7, dtype=np.int64)}
    extra = {"mean": np.arange(4, dtype=np.int32).reshape(2, 2).T, "mask": np.array([True, False])}
    meta = {"spec": {"hidden": (300,), "activation": "relu"}, "classes": ["0", "1", "2"],
            "metrics": {"test_error": np.float32(0.0125)}, "path": Path("data/x.csv")}
    save_model(p, params, state=state, extra_arrays=extra, metadata=meta)
    m = load_model(p)
    for got, want in ((m.params, params), (m.state, state), (m.extra, extra)):
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            np.testing.assert_array_equal(got[k], want[k])
    assert m.metadata["spec"] == {"hidden": [300], "activation": "relu"}
    assert m.metadata["classes"] == ["0", "1", "2"]
    assert m.metadata["metrics"]["test_error"] == pytest.approx(0.0125)
    assert m.metadata["path"] == "data/x.csv"
    assert m.versions["descend"] == descend.__version__
    assert m.versions["numpy"] == np.__version__ and "python" in m.versions
    assert m.format_version == 1
    # The on-disk layout other tools see: prefixed tensors, JSON under "descend".
    from safetensors import safe_open

    with safe_open(str(p), framework="np") as f:
        assert set(f.keys()) == {"params/dense0.W", "params/dense0.b", "state/bn0.mean",
                                 "state/bn0.count", "extra/mean", "extra/mask"}
        header = json.loads(f.metadata()["descend"])
    assert header["format_version"] == 1 and header["versions"]["descend"] == descend.__version__


def test_model_without_state_and_extra(tmp_path):
    p = save_model(tmp_path / "m.safetensors", {"W": np.eye(2, dtype=np.float32)}, metadata={})
    m = load_model(p)
    assert m.state == {} and m.extra == {} and m.metadata == {}


def test_pickle_given_as_model_is_rejected_and_never_executed(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    p = tmp_path / "model.safetensors"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InputError, match="model.safetensors"):
        load_model(p)
    with pytest.raises(InputError):
        load_checkpoint(p)
    assert not marker.exists()


def test_source_never_unpickles():
    src = Path(descend.__file__).parent
    for sub in ("io", "reports"):
        for f in (src / sub).glob("*.py"):
            text = f.read_text(encoding="utf-8")
            for bad in ("import pickle", "pickle.load", "np.load(", "allow_pickle=True", "torch.load"):
                assert bad not in text, f"{f.name} uses {bad}"


@pytest.mark.parametrize("cut", [1, 7, 20, 60])
def test_truncated_model_file_is_input_error_naming_path(tmp_path, cut):
    p = tmp_path / "model.safetensors"
    save_model(p, {"W": np.ones((8, 8), np.float32)}, metadata={"a": 1})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - cut] if cut < len(data) else data[:cut])
    with pytest.raises(InputError) as e:
        load_model(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_bad_model_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(InputError, match="not a file"):
        load_model(tmp_path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.safetensors"):
        load_model(empty)
    text = tmp_path / "notes.txt"
    text.write_text("just some text that is long enough to look like a header\n")
    with pytest.raises(InputError, match="not a valid safetensors"):
        load_model(text)
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.ones(2, np.float32)}, str(foreign))
    with pytest.raises(InputError, match="no descend metadata"):
        load_model(foreign)
    ckpt = save_checkpoint(tmp_path / "ckpt.safetensors", {"a": np.ones(1)}, {})
    with pytest.raises(InputError, match="not a model file"):
        load_model(ckpt)
    model = save_model(tmp_path / "m.safetensors", {"a": np.ones(1)}, metadata={})
    with pytest.raises(InputError, match="not a checkpoint"):
        load_checkpoint(model)
    future = tmp_path / "future.safetensors"
    save_file({"params/w": np.ones(1)}, str(future),
              metadata={"descend": json.dumps({"format": "descend-model", "format_version": 99})})
    with pytest.raises(InputError, match="upgrade descend"):
        load_model(future)


def test_non_numeric_tensor_is_refused(tmp_path):
    with pytest.raises(TypeError, match="dtype"):
        save_model(tmp_path / "m.safetensors", {"names": np.array(["a", "b"])}, metadata={})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip(tmp_path):
    p = tmp_path / "ckpt" / "last.safetensors"
    arrays = {"params/dense0.W": np.ones((3, 2), np.float32), "opt/0.count": np.array(12, np.int32),
              "best/dense0.W": np.full((3, 2), 0.5, np.float32), "rng": np.arange(4, dtype=np.uint32)}
    history = [{"epoch": 0.5, "step": 10, "train_cost": 0.123456789012345, "valid_error": None}]
    meta = {"epoch": 3, "step": 12, "best_valid_error": 0.0123, "history": history}
    save_checkpoint(p, arrays, meta)
    got, got_meta = load_checkpoint(p)
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype
        np.testing.assert_array_equal(got[k], v)
    assert got_meta == meta  # floats survive JSON exactly
    save_checkpoint(p, {"x": np.zeros(1)}, {"epoch": 4})  # overwrite in place
    assert load_checkpoint(p)[1] == {"epoch": 4}
    assert _leftovers(p.parent) == []


# ---------------------------------------------------------------- run dirs, JSON


def test_make_run_dir_unique(tmp_path):
    a = make_run_dir(tmp_path / "runs", "train mnist/../x")
    b = make_run_dir(tmp_path / "runs", "train mnist/../x")
    assert a != b and a.is_dir() and b.is_dir()
    assert a.parent == tmp_path / "runs" and b.name.startswith(a.name)
    assert "/" not in a.name and " " not in a.name
    assert a.name[:8].isdigit() and a.name[8] == "-"


def test_write_read_json(tmp_path):
    p = tmp_path / "config.json"
    obj = {"lr": np.float32(0.5), "hidden": (300, 100), "arr": np.arange(3), "path": Path("a/b"),
           "n": np.int64(3), "bad": float("nan"), "flag": np.bool_(True), "ok": True}
    write_json(p, obj)
    assert p.read_text().endswith("\n")
    assert read_json(p) == {"lr": 0.5, "hidden": [300, 100], "arr": [0, 1, 2], "path": "a/b",
                            "n": 3, "bad": None, "flag": True, "ok": True}
    p.write_text('{"a": 1,\n  oops}')
    with pytest.raises(InputError, match="line 2"):
        read_json(p)
    with pytest.raises(InputError, match="no such file"):
        read_json(tmp_path / "nope.json")
    with pytest.raises(TypeError):
        write_json(tmp_path / "x.json", {"f": object()})
    assert not (tmp_path / "x.json").exists()
