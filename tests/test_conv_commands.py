"""Convolutional networks through every command: ``--layers`` on train, predict, compare, search,
ensemble, bench, export, serve and the scikit-learn estimator, and its bad input (one line, exit 2).

The data is tiny: 8x8 grey images whose class is which half (left or right)
is brighter, so a few steps of a small conv net already do better than chance.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from descend.cli.main import main
from descend.io.modelfile import load_model
from descend.model import Conv2D, Dense, MaxPool2D, Network
from descend.train import TrainConfig
from descend.train.predict import load_trained

CONV = "conv:4:3,pool:2,dense:16"
FAST = ["--engine", "numpy", "--epochs", "2", "--batch-size", "50", "--quiet"]


def halves(n: int, seed: int, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 120, (n, side, side)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    for i, c in enumerate(y):
        X[i, :, c * side // 2:(c + 1) * side // 2] += 120
    return X, y


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """An NPZ of 200 8x8 images with a labelled test set of 60."""
    folder = tmp_path_factory.mktemp("conv-data")
    X, y = halves(200, 0)
    Xt, yt = halves(60, 1)
    np.savez(folder / "tiny.npz", X=X, y=y, X_test=Xt, y_test=yt)
    return folder / "tiny.npz"


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Path:
    """A generic CSV of 10 features: no image shape."""
    path = tmp_path_factory.mktemp("vector-data") / "rows.csv"
    rng = np.random.default_rng(2)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", *(f"f{i}" for i in range(10))])
        for _ in range(60):
            row = rng.random(10)
            w.writerow([int(row[0] > 0.5), *row])
    return path


@pytest.fixture(scope="module")
def conv_run(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conv-run") / "run"
    assert main(["train", str(images), "--layers", "conv:4:3,bn,pool:2,dense:16,drop:0.5", *FAST,
                 "--out", str(out)]) == 0
    return out


def _one_line_exit_2(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------ train, predict

def test_train_writes_a_conv_model_its_config_and_an_architecture_table(conv_run):
    cfg = json.loads((conv_run / "config.json").read_text())["config"]
    assert cfg["layers"] == "conv:4:3,bn,pool:2,dense:16,drop:0.5" and cfg["hidden"] == []
    mf = load_model(conv_run / "model.safetensors")
    assert mf.metadata["spec"]["type"] == "Network" and mf.format_version == 2  # a release reading 1 refuses it
    spec = Network.from_dict(mf.metadata["spec"])
    assert spec.input_shape == (8, 8, 1)
    assert isinstance(spec.layers[0], Conv2D) and not spec.layers[0].bias  # bn replaces its bias
    assert any(isinstance(layer, MaxPool2D) for layer in spec.layers)
    assert mf.params["conv0.W"].shape == (3, 3, 1, 4) and mf.params["dense1.W"].shape == (16, 2)
    report = (conv_run / "report.html").read_text()
    assert "<h2>Architecture</h2>" in report
    for cell in ("conv0: Conv2D(4, 3x3, same)", "8 x 8 x 4", "4 x 4 x 4", "total"):
        assert cell in report, cell
    # conv 3*3*1*4 weights, no bias; bn 2*4; dense 64*16+16; output 16*2+2
    assert f"<td class=num>{36 + 8 + 64 * 16 + 16 + 16 * 2 + 2}</td>" in report


def test_predict_on_a_conv_model_writes_output_and_submission(conv_run, images, tmp_path, capsys):
    out, sub = tmp_path / "pred.csv", tmp_path / "sub.csv"
    assert main(["predict", str(conv_run / "model.safetensors"), str(images), "--output", str(out),
                 "--submission", str(sub)]) == 0
    rows = list(csv.DictReader(out.open()))
    X = np.load(images)["X"].reshape(200, -1)
    want = load_trained(conv_run / "model.safetensors").predict_proba(X)
    assert len(rows) == 200
    np.testing.assert_allclose([[float(r["p_0"]), float(r["p_1"])] for r in rows], want, rtol=1e-9)
    labels = [int(r["Label"]) for r in csv.DictReader(sub.open())]
    assert labels == list(np.argmax(want, axis=1))


def test_dense_only_layers_train_the_same_weights_as_hidden(images, tmp_path):
    a, b = tmp_path / "hidden", tmp_path / "layers"
    assert main(["train", str(images), "--hidden", "16", *FAST, "--out", str(a)]) == 0
    assert main(["train", str(images), "--layers", "dense:16", *FAST, "--out", str(b)]) == 0
    wa, wb = load_model(a / "model.safetensors").params, load_model(b / "model.safetensors").params
    assert sorted(wa) == sorted(wb) == ["dense0.W", "dense0.b", "dense1.W", "dense1.b"]
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_an_npz_of_colour_images_feeds_channels_to_the_convolution(tmp_path):
    from descend.data import load
    from descend.train.setup import build_network, prepare_data

    X, y = halves(40, 4)
    rgb = np.stack([X, X // 2, 255 - X], axis=-1)  # (n, 8, 8, 3)
    np.savez(tmp_path / "rgb.npz", X=rgb, y=y)
    ds = load(str(tmp_path / "rgb.npz"))
    assert ds.image_shape == (8, 8, 3) and ds.n_features == 192
    np.testing.assert_array_equal(ds.splits()["train"].X[0].reshape(8, 8, 3)[..., 2],
                                  255 - ds.splits()["train"].X[0].reshape(8, 8, 3)[..., 0])
    cfg = TrainConfig(dataset=str(tmp_path / "rgb.npz"), layers=CONV, hidden=())
    data = prepare_data(cfg)
    spec, params, _ = build_network(cfg, data.n_in, data.n_out, data.image_shape)
    assert spec.input_shape == (8, 8, 3) and params["conv0.W"].shape == (3, 3, 3, 4)


def test_old_config_json_without_layers_still_loads():
    d = TrainConfig().to_dict()
    d.pop("layers")
    cfg = TrainConfig.from_dict(d)
    assert cfg.layers is None and cfg.hidden == (500, 300)


def test_recipe_lenet_is_a_conv_net_that_options_override(tmp_path):
    from descend.cli.main import build_parser
    from descend.cli.train import build_config

    parse = build_parser().parse_args
    argv = ["train", "mnist", "--recipe", "lenet", "--epochs", "3"]
    args = parse(argv)
    args.argv = argv
    cfg = build_config(args)
    assert cfg.layers.startswith("conv:32:5") and cfg.optimizer == "adam" and cfg.epochs == 3 and cfg.hidden == ()
    argv = ["train", "mnist", "--recipe", "lenet", "--hidden", "64"]
    args = parse(argv)
    args.argv = argv
    cfg = build_config(args)
    assert cfg.layers is None and cfg.hidden == (64,)


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("layers, words", [
    ("conv:4:9", "kernel 9x9 is larger than its 8x8 input map"),
    ("conv:4:3,pool:2,pool:8", "pool 8x8 is larger than its 4x4 input map"),
    ("conv:4:3,avgpool:9", "token 'avgpool:9'"),
    ("conv:4:3,dense:x", "token 2 'dense:x' is malformed (expected dense:N)"),
    ("conv:4", "token 1 'conv:4' is malformed (expected conv:F:K[:S][:valid])"),
    ("conv:4:3,wobble", "token 2 'wobble' is malformed"),
])
def test_bad_layers_are_one_line_exit_2_and_leave_no_run(images, tmp_path, capsys, layers, words):
    out = tmp_path / "run"
    err = _one_line_exit_2(capsys, ["train", str(images), "--layers", layers, *FAST, "--out", str(out)])
    assert words in err and layers in err
    assert not out.exists()


def test_conv_on_data_without_an_image_shape(vectors, tmp_path, capsys):
    err = _one_line_exit_2(capsys, ["train", str(vectors), "--layers", CONV, *FAST, "--out", str(tmp_path / "r")])
    assert "has no image shape" in err and "rows.csv" in err
    assert not (tmp_path / "r").exists()
    assert main(["train", str(vectors), "--layers", "dense:8,drop:0.8", *FAST, "--out", str(tmp_path / "d")]) == 0


def test_pca_with_conv_layers(images, tmp_path, capsys):
    err = _one_line_exit_2(capsys, ["train", str(images), "--layers", CONV, "--pca", "5", *FAST])
    assert "`pca` cannot feed convolution or pooling layers" in err and "pca=5" in err


def test_max_norm_with_conv_layers(images, capsys):
    err = _one_line_exit_2(capsys, ["train", str(images), "--layers", CONV, "--max-norm", "3", *FAST])
    assert "`max_norm`" in err and "max_norm=3.0" in err


def test_layers_with_hidden(images, capsys):
    err = _one_line_exit_2(capsys, ["train", str(images), "--layers", CONV, "--hidden", "16", *FAST])
    assert "`--layers` and `--hidden` cannot be combined" in err


def test_layers_with_the_mlp_dropout_option(images, capsys):
    err = _one_line_exit_2(capsys, ["train", str(images), "--layers", CONV, "--dropout-keep", "0.8,0.5", *FAST])
    assert "drop:KEEP" in err


def test_export_of_a_conv_model_runs_in_onnxruntime_and_is_served(conv_run, images, tmp_path):
    pytest.importorskip("onnxruntime")
    from fastapi.testclient import TestClient

    from descend.io.onnx_export import load_onnx
    from descend.serve.app import create_app

    path, target = conv_run / "model.safetensors", tmp_path / "m.onnx"
    assert main(["export", str(path), "-o", str(target)]) == 0
    X = np.load(images)["X_test"].reshape(60, -1)
    want = load_trained(path).predict_proba(X.astype(np.float64))
    got = load_onnx(target).predict_proba(X)
    assert np.max(np.abs(got - want)) <= 1e-5
    np.testing.assert_array_equal(np.argmax(got, axis=1), np.argmax(want, axis=1))
    with TestClient(create_app(target, reload_interval=0)) as client:  # descend serve MODEL.onnx
        body = client.get("/model").json()
        assert body["runtime"] == "onnxruntime" and body["image_shape"] == [8, 8]
        assert [r["name"] for r in body["layers"]][:4] == ["conv0", "bn0", "act0", "maxpool0"]
        r = client.post("/predict", json={"images": X[:5].reshape(5, 8, 8).tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["probabilities"], want[:5], atol=1e-5)


def test_help_documents_the_grammar(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("conv:F:K[:S][:valid]", "pool:K[:S]", "avgpool:K[:S]", "gap", "drop:KEEP", "dense:N",
                  "relu | tanh | sigmoid", "unless the next token", "output layer"):
        assert words in text, words


# ------------------------------------------------------------------------------------------ experiments

def test_compare_takes_layers_in_a_run_spec(images, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", str(images), "--run", f"sgd layers={CONV} lr=0.05", "--run", "sgd hidden=8 lr=0.05",
                 "--epochs", "1", "--engine", "numpy", "--seeds", "1", "--out", str(out)]) == 0
    configs = [json.loads(p.read_text())["config"] for p in sorted(out.rglob("result.json"))]
    assert sorted(str(c.get("layers")) for c in configs) == sorted([CONV, "None"])
    conv = [c for c in configs if c["layers"]]
    assert conv[0]["optimizer"] == "sgd" and conv[0]["lr"] == 0.05


def test_search_space_chooses_among_layer_texts(images, tmp_path):
    from descend.experiments.search.space import parse_space

    space = parse_space(f"layers={CONV}|dense:8|none lr=0.05")
    (layers,) = [p for p in space.params if p.name == "layers"]
    assert layers.choices == (CONV, "dense:8", None)
    with pytest.raises(Exception, match="conv:4"):
        parse_space("layers=conv:4|dense:8")
    out = tmp_path / "search"
    assert main(["search", str(images), "--space", f"layers={CONV}|dense:8", "--method", "grid", "--folds", "2",
                 "--epochs", "1", "--engine", "numpy", "--out", str(out), "--quiet"]) == 0
    trials = list(csv.DictReader((out / "trials.csv").open()))
    assert sorted(t["layers"] for t in trials) == sorted([CONV, "dense:8"])
    assert all(t["state"] == "COMPLETE" for t in trials)
    assert (out / "final" / "model.safetensors").is_file()  # the best one retrained on every row


def test_ensemble_of_conv_nets_with_bootstrap_rows(images, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["ensemble", str(images), "--layers", CONV, "--members", "2", "--rows", "0.8", "--bootstrap",
                 "--workers", "1", *FAST, "--out", str(out)]) == 0
    pred = tmp_path / "p.csv"
    assert main(["predict", str(out / "ensemble.safetensors"), str(images), "--output", str(pred)]) == 0
    assert len(list(csv.DictReader(pred.open()))) == 200
    if importlib.util.find_spec("onnxruntime") is not None:  # exported, both votes, at the lowest opset
        from descend.io.onnx_export import MIN_OPSET, load_onnx
        from descend.train.predict import load_classifier

        X = np.load(images)["X_test"].reshape(60, -1)
        native = load_classifier(out / "ensemble.safetensors")
        for vote in ("soft", "hard"):
            target = tmp_path / f"{vote}.onnx"
            assert main(["export", str(out / "ensemble.safetensors"), "-o", str(target), "--vote", vote,
                         "--opset", str(MIN_OPSET)]) == 0
            np.testing.assert_allclose(load_onnx(target).predict_proba(X), native.predict_proba(X, vote=vote),
                                       atol=1e-5)
    capsys.readouterr()
    err = _one_line_exit_2(capsys, ["ensemble", str(images), "--layers", CONV, "--features", "0.5", *FAST,
                                    "--out", str(tmp_path / "e2")])
    assert "`features` must be 1 with convolution or pooling layers" in err
    assert not (tmp_path / "e2").exists()


def test_bench_runs_a_conv_net(images, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", str(images), "--layers", CONV, "--engines", "numpy", "--epochs", "2",
                 "--batch-size", "50", "--out", str(out)]) == 0
    (row,) = list(csv.DictReader((out / "bench.csv").open()))
    assert row["engine"] == "numpy" and float(row["test_error"]) <= 1.0


# ------------------------------------------------------------------------------------------ estimator, serve

def test_the_estimator_takes_layers_and_an_image_shape():
    from descend.estimator import MLPClassifier

    X, y = halves(120, 3)
    X = X.reshape(120, -1) / 255.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(layers=CONV, image_shape=(8, 8), epochs=30, lr=0.01, random_state=0).fit(X, y)
    assert isinstance(clf.spec_.layers[0], Conv2D) and clf.params_["conv0.W"].shape == (3, 3, 1, 4)
    assert clf.score(X, y) > 0.8
    with pytest.raises(ValueError, match="pass image_shape"):
        MLPClassifier(layers=CONV, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="image_shape"):
        MLPClassifier(layers=CONV, image_shape=(8, 9), epochs=1).fit(X, y)
    dense = MLPClassifier(layers="dense:8", epochs=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(dense.fit(X, y).spec_.layers[-1], Dense)


def test_serve_lists_the_layers_and_feeds_uploads_as_images(conv_run):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from descend.serve.app import create_app

    path = conv_run / "model.safetensors"
    with TestClient(create_app(path, reload_interval=0)) as client:
        body = client.get("/model").json()
        assert body["image_shape"] == [8, 8] and body["input"]["kind"] == "image"
        assert [r["name"] for r in body["layers"]][:4] == ["conv0", "bn0", "act0", "maxpool0"]
        assert body["layers"][0]["output"] == [8, 8, 4] and body["layers"][0]["params"] == 36
        X, _ = halves(2, 5)
        files = []
        for i, x in enumerate(X):
            buf = io.BytesIO()
            Image.fromarray(x, "L").save(buf, "PNG")
            files.append(("images", (f"{i}.png", buf.getvalue(), "image/png")))
        r = client.post("/predict", files=files)
        assert r.status_code == 200, r.text
        want = load_trained(path).predict_proba(X.reshape(2, -1).astype(np.float64))
        np.testing.assert_allclose(r.json()["probabilities"], want, atol=1e-6)


def test_image_networks_predict_in_chunks_that_bound_their_activations(conv_run, images):
    from descend.backend import numpy_ops
    from descend.model import MLP, parse_layers, predict_logits
    from descend.train.inference import CHUNK_ELEMENTS, inference_rows, softmax

    assert inference_rows(MLP(hidden=(500, 300))) == 10_000  # unchanged for networks without images
    big = parse_layers("conv:32:3,pool:2,dense:64", (48, 48, 1))
    rows = inference_rows(big)
    assert rows * 48 * 48 * 32 <= CHUNK_ELEMENTS < (rows + 1) * 48 * 48 * 32
    model = load_trained(conv_run / "model.safetensors")
    X = np.load(images)["X"].reshape(200, -1).astype(np.float64)
    x = model.normalizer.transform(X).astype(np.float32)
    whole = softmax(predict_logits(numpy_ops, model.spec, model.params, model.state, x))
    np.testing.assert_allclose(model.predict_proba(X, batch_size=7), whole, rtol=1e-6, atol=1e-9)
