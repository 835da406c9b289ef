"""descend export: ONNX graphs that onnxruntime runs exactly as descend predicts, their metadata, bad input.

Tiny models (dense and convolutional) are trained here on 500 MNIST training images (2 epochs); every
export is checked with ``onnx.checker`` and run by onnxruntime on 1,000 MNIST
test images against ``load_classifier(path).predict_proba`` (what ``descend
predict`` computes).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import descend
from descend.backend import numpy_ops
from descend.cli.main import main
from descend.errors import ConfigError, InputError
from descend.io.onnx_export import MIN_OPSET, build_onnx, inference_steps, load_onnx, network_steps
from descend.model import MLP
from descend.model.mlp import batchnorm
from descend.train import TrainConfig
from descend.train.predict import load_classifier

TOLERANCE = 1e-5
N_TEST = 1000


@pytest.fixture(scope="module")
def mnist(mirror_dir, tmp_path_factory):
    """(NPZ of 500 training images as 28x28 uint8 + the test images, the 1,000 test rows flattened, their labels)."""
    from descend.data import load

    ds = load("mnist")
    path = tmp_path_factory.mktemp("mnist") / "mnist500.npz"
    X_test = ds.test.X[:N_TEST]
    np.savez(path, X=ds.train.X[:500].reshape(-1, 28, 28), y=ds.train.y[:500],
             X_test=X_test.reshape(-1, 28, 28), y_test=ds.test.y[:N_TEST])
    return path, X_test, ds.test.y[:N_TEST]


def _config(data, **kw) -> TrainConfig:
    base = dict(dataset=str(data), hidden=(32,), epochs=2, batch_size=50, schedule="constant", engine="numpy",
                threads=1, early_stopping="none")
    return TrainConfig(**{**base, **kw})


VARIANTS = {
    "plain": {},
    "batchnorm+dropout": dict(hidden=(32, 16), batchnorm=True, dropout_keep=(0.9, 0.8, 0.8), activation="tanh",
                              epochs=4),
    "pca": dict(pca=24, normalize="standardize", activation="sigmoid", lr=0.3, epochs=4),
    # conv + folded bn + relu, max pooling, a second conv, average pooling, then flatten into the dense layers
    "conv-bn-pool-conv-avgpool": dict(hidden=(), layers="conv:6:3,bn,pool:2,conv:8:3,avgpool:2,dense:16",
                                      optimizer="adam", lr=0.01, batch_size=25, epochs=6),
    # stride and valid padding, an even kernel with stride ("same" pads 1 before, 2 after), a batch norm after
    # an activation (no conv to fold into), overlapping average windows and global average pooling
    "stride-valid-gap": dict(hidden=(), layers="conv:8:5:2:valid,tanh,bn,conv:16:4:2,avgpool:3:1,gap",
                             normalize="standardize", optimizer="adam", lr=0.01, batch_size=25, epochs=10),
}
CONV_VARIANTS = ("conv-bn-pool-conv-avgpool", "stride-valid-gap")


@pytest.fixture(scope="module")
def models(mnist, tmp_path_factory):
    """A model file of each VARIANTS entry, and a 3-member ensemble file; trained with reports skipped."""
    import descend.train.run as run_module
    from descend.experiments.ensemble import EnsembleConfig, run_ensemble
    from descend.train import run_training

    root = tmp_path_factory.mktemp("models")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "write_reports", lambda *a, **k: None)
        for name, kw in VARIANTS.items():
            run = run_training(_config(mnist[0], **kw), out=root / name, progress=False)
            out[name] = run.run_dir / "model.safetensors"
    cfg = EnsembleConfig(train=_config(mnist[0], hidden=(16,)), members=3, rows=0.8, bootstrap=True, features=0.7,
                         workers=1)
    out["ensemble"] = run_ensemble(cfg, out=root / "ensemble", progress=False).run_dir / "ensemble.safetensors"
    return out


def _export(model, out, *args) -> None:
    rc = main(["export", str(model), "-o", str(out), *args])
    assert rc == 0


def _run(path, X) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) computed by onnxruntime, reading the file with its own API only."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    return tuple(sess.run(["probabilities", "logits"], {"input": np.asarray(X, np.float32)}))


def _same_predictions(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape == (N_TEST, 10)
    assert np.max(np.abs(got - want)) <= TOLERANCE
    np.testing.assert_array_equal(np.argmax(got, axis=1), np.argmax(want, axis=1))


# ---------------------------------------------------------------- the graphs equal descend's predictions

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_single_models_run_in_onnxruntime_as_in_descend(models, mnist, tmp_path, variant):
    from descend.train.inference import softmax

    path, X = models[variant], mnist[1]
    out = tmp_path / "model.onnx"
    _export(path, out)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert "Dropout" not in ops
    assert "BatchNormalization" not in ops or variant == "stride-valid-gap"
    native = load_classifier(path)
    if variant not in CONV_VARIANTS:
        assert ops.count("MatMul") == len(native.spec.hidden) + 1 + (1 if native.normalizer.pca else 0)
    proba, logits = _run(out, X)
    _same_predictions(proba, native.predict_proba(X))
    np.testing.assert_allclose(softmax(logits), proba, atol=1e-6)  # logits are the softmax's input
    if variant in CONV_VARIANTS:  # trained nets, not near-uniform outputs that would agree trivially
        assert np.mean(np.argmax(proba, axis=1) == mnist[2]) > 0.55 and np.mean(proba.max(axis=1) > 0.9) > 0.2


def test_ensembles_soft_and_hard_vote_as_the_ensemble_does(models, mnist, tmp_path):
    path, X = models["ensemble"], mnist[1]
    native = load_classifier(path)
    assert len(native.members) == 3 and all(m.features.size < 784 for m in native.members)
    for vote in ("soft", "hard"):
        out = tmp_path / f"{vote}.onnx"
        _export(path, out, "--vote", vote)
        proto = onnx.load(str(out))
        onnx.checker.check_model(proto, full_check=True)
        assert [n.op_type for n in proto.graph.node].count("Gather") == 3  # each member's columns
        assert {p.key: p.value for p in proto.metadata_props}["vote"] == vote
        proba, logits = _run(out, X)
        want = native.predict_proba(X, vote=vote)
        _same_predictions(proba, want)
        np.testing.assert_allclose(np.exp(logits), proba, rtol=1e-6)
    # the hard vote's argmax is the members' majority: a real vote outweighs the tie-breaking half vote
    member_labels = np.argmax(native.member_proba(X), axis=2)
    hard, _ = _run(tmp_path / "hard.onnx", X)
    votes = np.stack([(member_labels == c).sum(axis=0) for c in range(10)], axis=1)
    assert np.all(votes[np.arange(N_TEST), np.argmax(hard, axis=1)] == votes.max(axis=1))


def test_the_ensembles_own_vote_is_the_default(models, tmp_path, capsys):
    out = tmp_path / "e.onnx"
    _export(models["ensemble"], out)
    vote = load_classifier(models["ensemble"]).vote
    assert f"({vote} vote)" in capsys.readouterr().err
    assert load_onnx(out).props["vote"] == vote


def test_metadata_names_classes_shapes_version_and_config_digest(models, tmp_path):
    path = models["pca"]
    out = tmp_path / "m.onnx"
    _export(path, out)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    meta = load_classifier(path).metadata
    assert json.loads(props["classes"]) == [str(d) for d in range(10)] == meta["classes"]
    assert json.loads(props["input_shape"]) == [784] and json.loads(props["image_shape"]) == [28, 28]
    assert props["descend_version"] == descend.__version__
    canonical = json.dumps(meta["training"]["config"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert props["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert json.loads(props["descend_metadata"])["training"]["config"]["pca"] == 24
    # another config, another digest
    other = {p.key: p.value for p in onnx.load(str(_exported(models["plain"], tmp_path / "p.onnx"))).metadata_props}
    assert other["config_sha256"] != props["config_sha256"] and len(other["config_sha256"]) == 64


def _exported(model, out):
    _export(model, out)
    return out


def test_default_output_is_the_model_path_with_onnx_suffix_and_opset_is_honoured(models, mnist, tmp_path):
    import shutil

    model = tmp_path / "model.safetensors"
    shutil.copyfile(models["plain"], model)
    assert main(["export", str(model), "--opset", str(MIN_OPSET)]) == 0
    out = tmp_path / "model.onnx"
    proto = onnx.load(str(out))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [MIN_OPSET]
    _same_predictions(_run(out, mnist[1])[0], load_classifier(model).predict_proba(mnist[1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.safetensors"]  # no temp left


def test_conv_graphs_are_nchw_between_one_reshape_and_the_flatten(models):
    """The node sequence of each conv variant: one NHWC->NCHW transpose in, one back before the flatten."""
    for variant, want in (("conv-bn-pool-conv-avgpool",
                           ["Reshape", "Transpose", "Conv", "Relu", "MaxPool", "Conv", "Relu", "AveragePool",
                            "Transpose", "Flatten", "MatMul", "Add", "Relu", "MatMul", "Add"]),
                          ("stride-valid-gap",
                           ["Reshape", "Transpose", "Conv", "Tanh", "BatchNormalization", "Conv", "Relu",
                            "AveragePool", "GlobalAveragePool", "Flatten", "MatMul", "Add"])):
        proto = build_onnx(load_classifier(models[variant]))
        nodes = list(proto.graph.node)
        ops = [n.op_type for n in nodes]
        assert ops[2:2 + len(want)] == want, ops  # after the normalizer's Sub and Div, before the softmax
        perms = [list(n.attribute[0].ints) for n in nodes if n.op_type == "Transpose"]
        assert perms[0] == [0, 3, 1, 2] and (len(perms) == 1 or perms[1] == [0, 2, 3, 1])
        convs = [{a.name: list(a.ints) for a in n.attribute if a.ints} for n in nodes if n.op_type == "Conv"]
        if variant == "stride-valid-gap":
            assert convs[0]["strides"] == [2, 2] and convs[0]["pads"] == [0, 0, 0, 0]
            assert convs[1]["kernel_shape"] == [4, 4] and convs[1]["pads"] == [1, 1, 2, 2]
        else:
            assert all(c["pads"] == [1, 1, 1, 1] and c["strides"] == [1, 1] for c in convs)


def test_conv_batchnorm_folding_equals_batchnorm_after_the_convolution():
    from descend.model import parse_layers

    rng = np.random.default_rng(1)
    spec = parse_layers("conv:3:3,bn", (5, 5, 2)).resolve(50, 4)
    params, state = spec.init(0)
    params = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    state = {"bn0.mean": rng.standard_normal(3).astype(np.float32),
             "bn0.var": rng.uniform(0.1, 3, 3).astype(np.float32)}
    steps = inference_steps(network_steps(spec, params, state))
    assert [s.kind for s in steps] == ["image", "conv", "activation", "flatten", "dense"]
    x = rng.standard_normal((7, 50)).astype(np.float32).reshape(7, 5, 5, 2)
    z = numpy_ops.conv2d(x, params["conv0.W"], 1, "same")
    want, _, _ = batchnorm(numpy_ops, z, params["bn0.gamma"], params["bn0.beta"], state["bn0.mean"],
                           state["bn0.var"], train=False)
    folded = numpy_ops.conv2d(x, steps[1].arrays["W"], 1, "same") + steps[1].arrays["b"]
    np.testing.assert_allclose(folded, want, atol=1e-5)


def test_dense_layers_on_images_need_no_reshape_and_a_lone_batchnorm_stays_a_node():
    from descend.model import parse_layers

    spec = parse_layers("dense:8,relu,bn", (5, 5, 1)).resolve(25, 3)
    params, state = spec.init(0)
    kinds = [s.kind for s in inference_steps(network_steps(spec, params, state))]
    assert kinds == ["dense", "activation", "batchnorm", "dense"]  # image + flatten cancel; bn after relu kept


def test_float64_conv_models_are_refused_with_one_line(mnist, tmp_path, capsys):
    import descend.train.run as run_module
    from descend.train import run_training

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "write_reports", lambda *a, **k: None)
        run = run_training(_config(mnist[0], hidden=(), layers="conv:2:3,gap", epochs=1, dtype="float64"),
                           out=tmp_path / "run", progress=False)
    out = tmp_path / "m.onnx"
    capsys.readouterr()
    assert main(["export", str(run.run_dir / "model.safetensors"), "-o", str(out)]) == 2
    _one_line_error(capsys, "'conv0'", "float32 model", "float64")
    assert not out.exists()


def test_batchnorm_folding_equals_batchnorm_after_the_dense_layer():
    rng = np.random.default_rng(0)
    spec = MLP(hidden=(5,), batchnorm=True, dropout_keep=(0.5, 0.5))
    W = rng.standard_normal((4, 5)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    mean, var = rng.standard_normal(5).astype(np.float32), rng.uniform(0.1, 3, 5).astype(np.float32)
    params = {"dense0.W": W, "bn0.gamma": gamma, "bn0.beta": beta, "dense1.W": W.T.copy(),
              "dense1.b": np.ones(4, np.float32)}
    steps = inference_steps(network_steps(spec, params, {"bn0.mean": mean, "bn0.var": var}))
    assert [s.kind for s in steps] == ["dense", "activation", "dense"]  # no dropout, no batch norm
    x = rng.standard_normal((7, 4)).astype(np.float32)
    want, _, _ = batchnorm(numpy_ops, x @ W, gamma, beta, mean, var, train=False)
    folded = x @ steps[0].arrays["W"] + steps[0].arrays["b"]
    np.testing.assert_allclose(folded, want, atol=1e-5)
    assert steps[0].arrays["W"].dtype == np.float32


def test_load_onnx_gives_the_native_interface(models, mnist, tmp_path):
    out = _exported(models["batchnorm+dropout"], tmp_path / "m.onnx")
    m = load_onnx(out, threads=1)
    native = load_classifier(models["batchnorm+dropout"])
    assert m.classes == native.classes and m.n_features == 784
    assert m.spec == native.spec and m.metadata["image_shape"] == [28, 28]
    _same_predictions(m.predict_proba(mnist[1].astype(np.float64)), native.predict_proba(mnist[1]))
    with pytest.raises(InputError, match="expects rows of 784 features"):
        m.predict_proba(np.zeros((2, 783)))


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

def _one_line_error(capsys, *fragments) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("descend: "), err
    for f in fragments:
        assert f in err, err
    return err


def test_not_a_descend_model_is_one_line_exit_2(models, mnist, tmp_path, capsys):
    from safetensors.numpy import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(plain))
    from descend.io.modelfile import save_model

    pca = save_model(tmp_path / "pca.safetensors", {}, extra_arrays={"mean": np.zeros(3)},
                     metadata={"kind": "pca"})  # a descend file, but not a network
    onnx_file = _exported(models["plain"], tmp_path / "exported.onnx")
    capsys.readouterr()
    for bad, words in ((junk, "not a valid safetensors file"), (plain, "no descend metadata"),
                       (pca, "not a descend model file"),
                       (mnist[0], "not a valid safetensors file"), (onnx_file, "not a valid safetensors file"),
                       (tmp_path / "missing.safetensors", "no such file")):
        out = tmp_path / "out.onnx"
        assert main(["export", str(bad), "-o", str(out)]) == 2
        _one_line_error(capsys, str(bad), words)
        assert not out.exists()


def test_bad_opset_and_vote_are_one_line_exit_2(models, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert main(["export", str(models["plain"]), "-o", str(out), "--opset", str(MIN_OPSET - 1)]) == 2
    _one_line_error(capsys, "`opset`", f"[{MIN_OPSET}, ", f"opset={MIN_OPSET - 1}")
    assert main(["export", str(models["plain"]), "-o", str(out), "--opset", "999"]) == 2
    _one_line_error(capsys, "opset=999")
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(models["plain"]), "-o", str(out), "--opset", "new"])
    assert exit_.value.code == 2
    _one_line_error(capsys, "--opset", "'new'")
    assert main(["export", str(models["plain"]), "-o", str(out), "--vote", "hard"]) == 2
    _one_line_error(capsys, "`vote`", "single model")
    assert not out.exists()


def test_load_onnx_refuses_files_that_are_not_descend_exports(tmp_path):
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="not a valid ONNX model") as e:
        load_onnx(junk)
    assert len(str(e.value).splitlines()) == 1
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=helper.find_min_ir_version_for([helper.make_opsetid("", 13)])),
              str(foreign))
    with pytest.raises(InputError, match="not written by descend export"):
        load_onnx(foreign)
    with pytest.raises(InputError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")


def test_check_opset_range():
    from descend.io.onnx_export import check_opset, max_opset

    assert check_opset(MIN_OPSET) == MIN_OPSET and check_opset(max_opset()) == max_opset()
    for bad in (MIN_OPSET - 1, max_opset() + 1, True, 13.0):
        with pytest.raises(ConfigError, match="`opset` must be an integer"):
            check_opset(bad)
