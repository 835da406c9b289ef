"""descend serve: every endpoint, bad input answered 4xx with a clear JSON error, PNG uploads,
the MNIST-style preprocessing, hot reload under load, and the command line.

The model is trained here, on synthetic 28x28 images of three shapes (a
vertical bar, a horizontal bar, a ring), through descend's own training run.
Servers are real uvicorn servers on 127.0.0.1 and an ephemeral port, in a
thread (stopped through their handle) or a subprocess (stopped by its PID).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from descend.io.modelfile import load_model, save_model
from descend.serve.app import create_app
from descend.serve.preprocess import (
    area_resize, center_crop, decode_image, image_to_input, mnist_preprocess, to_ink)
from descend.train import TrainConfig, run_training
from descend.train.predict import load_trained

CLASSES = ("vertical", "horizontal", "ring")


# ---------------------------------------------------------------- a small model, trained here

def shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 28x28 images (white on black, MNIST-like) of the three CLASSES, jittered."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, 28, 28), np.uint8)
    y = rng.integers(0, 3, n)
    yy, xx = np.mgrid[0:28, 0:28]
    for i, c in enumerate(y):
        dy, dx = rng.integers(-2, 3, 2)
        t = rng.integers(2, 4)
        if c == 0:
            X[i, 4 + dy:24 + dy, 13 + dx:13 + dx + t] = 255
        elif c == 1:
            X[i, 13 + dy:13 + dy + t, 4 + dx:24 + dx] = 255
        else:
            r = np.hypot(yy - 13.5 - dy, xx - 13.5 - dx)
            X[i][(r > 6 + t / 2 - 1.5) & (r < 8 + t / 2)] = 255
    return X, y


def train_tiny(folder: Path, X, y, Xt, yt, *, classes=None, hidden=(16,), epochs=8, seed=0) -> Path:
    """run_training on an NPZ of (X, y); the plots and HTML report (seconds of matplotlib) are skipped."""
    import descend.train.run as run_module

    folder.mkdir(parents=True, exist_ok=True)
    arrays = dict(X=X, y=y, X_test=Xt, y_test=yt)
    if classes:
        arrays["classes"] = np.array(classes)
    np.savez(folder / "data.npz", **arrays)
    cfg = TrainConfig(dataset=str(folder / "data.npz"), hidden=hidden, optimizer="momentum", lr=0.1, batch_size=32,
                      epochs=epochs, schedule="constant", engine="numpy", early_stopping="none", seed=seed)
    with pytest.MonkeyPatch.context() as mp:
        if hasattr(run_module, "write_reports"):
            mp.setattr(run_module, "write_reports", lambda *a, **k: None)
        return run_training(cfg, out=folder / "run", progress=False).run_dir / "model.safetensors"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    X, y = shapes(450, 0)
    Xt, yt = shapes(90, 1)
    return train_tiny(tmp_path_factory.mktemp("serve-model"), X, y, Xt, yt, classes=CLASSES)


@pytest.fixture(scope="module")
def feature_model(tmp_path_factory) -> Path:
    """A model of 4 plain features (no image shape): any finite value, no image upload."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    X = rng.standard_normal((200, 4)) * 50 + y[:, None] * 100
    return train_tiny(tmp_path_factory.mktemp("feature-model"), X, y, X[:40], y[:40], epochs=3)


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 and an ephemeral port, in a thread; stopped through its handle."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "the test server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the test server did not stop"


MAX_BATCH, MAX_BYTES = 8, 256 * 1024


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    """(base URL, path of the served copy) of a server with small limits; its file is never changed."""
    copy = tmp_path_factory.mktemp("served") / "model.safetensors"
    shutil.copyfile(model_path, copy)
    app = create_app(copy, max_batch=MAX_BATCH, max_request_bytes=MAX_BYTES, reload_interval=0)
    with ServerThread(app) as base:
        yield base, copy


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served[0], timeout=30) as c:
        yield c


def png_bytes(gray: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(gray, np.uint8), "L")
    if mode != "L":
        img = img.convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def paper_drawing(kind: str, h: int = 200, w: int = 160) -> np.ndarray:
    """A black shape on white paper, as a person would draw or scan it."""
    g = np.full((h, w), 255, np.uint8)
    if kind == "vertical":
        g[30:170, 70:88] = 0
    elif kind == "horizontal":
        g[95:111, 20:140] = 0
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot(yy - 100, xx - 80)
        g[(r > 45) & (r < 60)] = 0
    return g


# ---------------------------------------------------------------- the endpoints

def test_health(client, served):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"]["generation"] == 1
    assert body["model"]["sha256"] == hashlib.sha256(served[1].read_bytes()).hexdigest()
    assert body["reload"]["enabled"] is False and body["reload"]["last_error"] is None


def test_model_metadata(client, served):
    body = client.get("/model").json()
    assert body["task"] == "classification" and body["classes"] == list(CLASSES) and body["targets"] is None
    assert body["n_features"] == 784 and body["image_shape"] == [28, 28]
    assert body["spec"]["hidden"] == [16] and body["spec"]["activation"] == "relu"
    assert body["dataset"]["name"] == "data"
    assert body["training"]["config"]["epochs"] == 8
    assert 0 <= body["metrics"]["test_error"] < 0.1
    assert body["input"]["kind"] == "image" and body["input"]["range"] == [0, 255]
    assert body["input"]["max_batch"] == MAX_BATCH and body["input"]["max_request_bytes"] == MAX_BYTES
    assert body["normalization"]["method"] == "scale"
    assert body["versions"]["descend"]
    assert body["file"]["sha256"] == hashlib.sha256(served[1].read_bytes()).hexdigest()


def test_predict_json_matches_the_library(client, served):
    X, y = shapes(6, 7)
    model = load_trained(served[1])
    want = model.predict_proba(X.reshape(6, -1))
    flat = client.post("/predict", json={"images": X.reshape(6, -1).tolist()})
    grid = client.post("/predict", json={"images": X.tolist()})  # 28 rows of 28 is accepted too
    for r in (flat, grid):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["classes"] == list(CLASSES)
        np.testing.assert_allclose(body["probabilities"], want, atol=1e-6)
        np.testing.assert_allclose(np.sum(body["probabilities"], axis=1), 1, atol=1e-9)
        assert body["indices"] == np.argmax(want, axis=1).tolist()
        assert body["labels"] == [CLASSES[i] for i in body["indices"]]
        assert body["indices"] == y.tolist()  # the shapes are easy
        assert "inputs" not in body  # JSON input is used as sent
    floats = client.post("/predict", json={"images": (X[:2].reshape(2, -1) + 0.25).clip(0, 255).tolist()})
    assert floats.status_code == 200  # fractional intensities are fine


def test_openapi_schema_describes_the_model(client):
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert {"/predict", "/model", "/health"} <= set(schema["paths"])
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    images = body["application/json"]["schema"]["properties"]["images"]
    assert images["minItems"] == 1 and images["maxItems"] == MAX_BATCH
    flat = images["items"]["anyOf"][0]
    assert flat["minItems"] == flat["maxItems"] == 784
    assert flat["items"] == {"type": "number", "minimum": 0, "maximum": 255}
    assert "multipart/form-data" in body
    assert {"400", "413", "415", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])


def test_the_page_and_its_files_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<canvas id="pad"' in page.text
    for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert not re.match(r"(https?:)?//", src), f"the page loads {src} from outside"
        if src.startswith("static/"):
            r = client.get("/" + src)
            assert r.status_code == 200 and r.content, src
            assert b"http://" not in r.content and b"https://" not in r.content, src
    assert client.get("/docs").status_code == 404  # Swagger UI would load a CDN


B = 784
BAD_JSON = [
    # (id, raw body, status, words the error must contain)
    ("wrong-length", json.dumps({"images": [[0] * 783]}), 422, "783 values; the model expects 784"),
    ("wrong-rows", json.dumps({"images": [[[0] * 28] * 27]}), 422, "27 rows"),
    ("ragged-rows", json.dumps({"images": [[[0] * 28] * 27 + [[0] * 5]]}), 422, "row 27 has 5 values"),
    ("row-not-array", json.dumps({"images": [[[0] * 28] * 27 + [7]]}), 422, "expects 28 rows"),
    ("string-pixel", json.dumps({"images": [["0"] * B]}), 422, "images[0][0] is a string"),
    ("bool-pixel", json.dumps({"images": [[0] * 5 + [True] + [0] * (B - 6)]}), 422, "images[0][5] is a boolean"),
    ("null-pixel", json.dumps({"images": [[None] * B]}), 422, "is null"),
    ("object-pixel", json.dumps({"images": [[{}] * B]}), 422, "is an object"),
    ("image-not-array", json.dumps({"images": [5]}), 422, "images[0] must be an array"),
    ("images-not-array", json.dumps({"images": "pixels"}), 422, "'images' must be an array"),
    ("nan", '{"images": [[' + ",".join(["0"] * 100 + ["NaN"] + ["0"] * (B - 101)) + "]]}", 422,
     "images[0][100] is nan"),
    ("infinity", '{"images": [[' + ",".join(["Infinity"] * B) + "]]}", 422, "finite"),
    ("overflow-float", '{"images": [[' + ",".join(["1e400"] * B) + "]]}", 422, "finite"),
    ("overflow-int", '{"images": [[' + ",".join(["1" + "0" * 400] + ["0"] * (B - 1)) + "]]}", 422, "too large"),
    ("int-too-long", '{"images": [[' + ",".join(["9" * 5000] + ["0"] * (B - 1)) + "]]}", 400, "malformed JSON"),
    ("negative", json.dumps({"images": [[0] * 7 + [-1] + [0] * (B - 8)]}), 422, "images[0][7] is -1"),
    ("above-255", json.dumps({"images": [[255.5] * B]}), 422, "[0, 255]"),
    ("empty-batch", json.dumps({"images": []}), 422, "empty batch"),
    ("empty-image", json.dumps({"images": [[]]}), 422, "0 values"),
    ("missing-images", json.dumps({"pixels": [[0] * B]}), 422, "unknown field"),
    ("no-field", json.dumps({}), 422, "missing field 'images'"),
    ("extra-field", json.dumps({"images": [[0] * B], "debug": True}), 422, "unknown field(s) 'debug'"),
    ("body-array", json.dumps([[0] * B]), 422, "must be a JSON object"),
    ("body-string", json.dumps("hello"), 422, "must be a JSON object"),
    ("malformed", '{"images": [[0, 0,', 400, "malformed JSON"),
    ("empty-body", "", 400, "malformed JSON"),
    ("not-utf8", b"\xff\xfe{", 400, "not UTF-8"),
    ("deeply-nested", "[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    ("too-many-images", json.dumps({"images": [[]] * (MAX_BATCH + 1)}), 422, f"at most {MAX_BATCH}"),
    ("huge-payload", json.dumps({"images": [[0] * B] * 200}), 413, "limit"),
]


def _check_error(r, status: int, words: str):
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 400
    assert words.lower() in detail.lower(), detail


@pytest.mark.parametrize("body,status,words", [b[1:] for b in BAD_JSON], ids=[b[0] for b in BAD_JSON])
def test_bad_json_input_is_a_clear_4xx(client, body, status, words):
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    _check_error(r, status, words)


def test_a_chunked_body_over_the_limit_is_cut_off(client):
    def chunks():
        yield b'{"images": ['
        for _ in range(200):
            yield json.dumps([0] * B).encode() + b","
        yield b"[]]}"

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    _check_error(r, 413, "over the limit")


@pytest.mark.parametrize("ctype,status,words", [
    ("text/plain", 415, "unsupported content-type 'text/plain'"),
    (None, 415, "unsupported content-type '(none)'"),
    ("multipart/form-data", 400, "malformed multipart"),  # no boundary
])
def test_content_types(client, ctype, status, words):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/predict", content=b'{"images": []}', headers=headers)
    _check_error(r, status, words)


def test_wrong_method_and_unknown_path(client):
    _check_error(client.get("/predict"), 405, "method not allowed")
    _check_error(client.get("/nothing-here"), 404, "not found")
    _check_error(client.post("/predict?preprocess=sharpen", json={"images": [[0] * B]}), 422, "preprocess")


# ---------------------------------------------------------------- image uploads

def test_png_uploads_are_preprocessed_like_the_page(client):
    files = [("images", (f"{k}.png", png_bytes(paper_drawing(k)), "image/png")) for k in CLASSES]
    r = client.post("/predict", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"] == list(CLASSES)
    assert body["preprocess"] == "mnist"
    want = mnist_preprocess(to_ink(paper_drawing("vertical").astype(float)))
    np.testing.assert_allclose(np.reshape(body["inputs"][0], (28, 28)), want, atol=1e-4)


def test_png_in_the_model_shape_is_used_as_is(client, served):
    X, _ = shapes(2, 11)
    files = [("images", (f"{i}.png", png_bytes(x), "image/png")) for i, x in enumerate(X)]
    r = client.post("/predict", files=files)
    assert r.status_code == 200 and r.json()["preprocess"] == "none"
    want = load_trained(served[1]).predict_proba(X.reshape(2, -1))
    np.testing.assert_allclose(r.json()["probabilities"], want, atol=1e-6)
    np.testing.assert_allclose(r.json()["inputs"], X.reshape(2, -1), atol=1e-9)


def test_transparent_png_is_ink_on_white_paper(client):
    ink = 255 - paper_drawing("horizontal")
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[..., 3] = ink  # black strokes on a transparent canvas, as a browser exports a drawing
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    r = client.post("/predict", files={"images": ("drawing.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200 and r.json()["labels"] == ["horizontal"]
    rgb = client.post("/predict", files={"images": ("rgb.png", png_bytes(paper_drawing("horizontal"), "RGB"))})
    assert rgb.json()["inputs"] == r.json()["inputs"]


@pytest.mark.parametrize("files,data,query,status,words", [
    ({"images": ("x.png", b"not a png at all", "image/png")}, None, "", 422, "images[0] (x.png): not a readable"),
    ({"images": ("x.png", b"", "image/png")}, None, "", 422, "empty file"),
    ({"images": ("x.png", png_bytes(np.zeros((3, 3))), "image/png")}, None, "?preprocess=none", 422,
     "must be 28x28"),
    ({"photo": ("x.png", png_bytes(np.zeros((28, 28))), "image/png")}, None, "", 422, "unknown form field(s) 'photo'"),
    (None, {"images": "0,0,0"}, "", 422, "text field"),
    ({"images": ("x.png", png_bytes(np.zeros((28, 28))), "image/png")}, None, "?preprocess=magic", 422,
     "preprocess"),
])
def test_bad_uploads_are_a_clear_4xx(client, files, data, query, status, words):
    if files is None:  # force multipart with only a text field
        r = client.post("/predict" + query, files={"images": (None, data["images"])})
    else:
        r = client.post("/predict" + query, files=files)
    _check_error(r, status, words)


def test_upload_batch_limit_and_empty_form(client):
    one = png_bytes(np.zeros((28, 28)))
    r = client.post("/predict", files=[("images", (f"{i}.png", one, "image/png")) for i in range(MAX_BATCH + 1)])
    _check_error(r, 422, f"at most {MAX_BATCH}")
    boundary = "xyz"
    empty = f"--{boundary}--\r\n".encode()
    r = client.post("/predict", content=empty, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    _check_error(r, 422, "empty batch")


def test_decode_image_refuses_an_image_too_large():
    big = png_bytes(np.zeros((300, 300)))
    with pytest.raises(Exception, match="at most 10,000 pixels"):
        decode_image(big, max_pixels=10_000)


def test_a_feature_model_takes_any_finite_values_and_no_images(feature_model):
    app = create_app(feature_model, reload_interval=0)
    with ServerThread(app) as base, httpx.Client(base_url=base) as c:
        info = c.get("/model").json()
        assert info["image_shape"] is None and info["input"]["kind"] == "features"
        r = c.post("/predict", json={"images": [[-300.5, 12, 1e6, 0]]})
        assert r.status_code == 200 and len(r.json()["probabilities"][0]) == 2
        _check_error(c.post("/predict", json={"images": [[[1, 2], [3, 4]]]}), 422, "not 2-D")
        _check_error(c.post("/predict", files={"images": ("a.png", png_bytes(np.zeros((2, 2))))}), 422, "not images")
        schema = c.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert "multipart/form-data" not in schema


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model file, CSV) of a regression model of y = 3 x1 - 2 x2 + noise on a CSV without image shape."""
    import descend.train.run as run_module

    folder = tmp_path_factory.mktemp("regression-model")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((120, 2))
    y = 3 * X[:, 0] - 2 * X[:, 1] + 0.1 * rng.standard_normal(120) + 10
    csv = folder / "r.csv"
    csv.write_text("x1,x2,y\n" + "".join(f"{a},{b},{t}\n" for (a, b), t in zip(X, y)))
    cfg = TrainConfig(dataset=str(csv), target=("y",), hidden=(8,), optimizer="adam", lr=0.02, batch_size=16,
                      epochs=15, schedule="constant", engine="numpy", early_stopping="none")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "write_reports", lambda *a, **k: None)
        run = run_training(cfg, out=folder / "run", progress=False)
    return run.run_dir / "model.safetensors", csv


def test_a_regression_model_answers_values_in_the_targets_units(regression_model, tmp_path):
    from descend.train.predict import predict_file

    path, csv = regression_model
    predicted = predict_file(path, csv, output=tmp_path / "p.csv")
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    with ServerThread(create_app(path, reload_interval=0)) as base, httpx.Client(base_url=base, timeout=30) as c:
        info = c.get("/model").json()
        assert info["task"] == "regression" and info["targets"] == ["y"] and info["classes"] == []
        assert info["image_shape"] is None and info["input"]["kind"] == "features" and info["n_features"] == 2
        assert info["layers"][-1]["output"] == [1]
        r = c.post("/predict", json={"images": rows[:10, :2].tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["targets"] == ["y"] and "probabilities" not in body and "labels" not in body
        np.testing.assert_allclose(body["values"], predicted.values[:10], rtol=1e-6)
        assert [p["y"] for p in body["predictions"]] == [v[0] for v in body["values"]]
        # values in the targets' units: close to y (mean 10), not standardized outputs
        assert np.mean(np.abs(np.array(body["values"])[:, 0] - rows[:10, 2])) < 0.5 * rows[:, 2].std()
        _check_error(c.post("/predict", json={"images": [[1, 2, 3]]}), 422, "3 values; the model expects 2")
        _check_error(c.post("/predict", files={"images": ("a.png", png_bytes(np.zeros((2, 2))))}), 422, "not images")
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "<canvas" not in page.text and "<script" not in page.text
        assert "POST /predict" in page.text and "regression" in page.text and "&#x27;y&#x27;" in page.text


def test_a_feature_classifier_gets_no_drawing_page(feature_model):
    with ServerThread(create_app(feature_model, reload_interval=0)) as base, httpx.Client(base_url=base) as c:
        assert c.get("/model").json()["task"] == "classification"
        page = c.get("/")
        assert page.status_code == 200 and "<canvas" not in page.text and "<script" not in page.text
        assert "rows of 4 features" in page.text and "openapi.json" in page.text


# ---------------------------------------------------------------- the preprocessing itself

def test_mnist_preprocess_fits_20x20_and_centres_the_mass():
    ink = np.zeros((300, 120))
    ink[40:260, 30:90] = 255  # a 220x60 block
    out = mnist_preprocess(ink)
    assert out.shape == (28, 28) and out.min() >= 0 and out.max() <= 255
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert len(rows) == 20 and len(cols) == 5  # 220 -> 20 rows, 60 -> round(5.45) = 5 columns
    yy, xx = np.mgrid[0:28, 0:28]
    cy, cx = (out * yy).sum() / out.sum(), (out * xx).sum() / out.sum()
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5
    assert not mnist_preprocess(np.zeros((50, 50))).any()


def test_area_resize_keeps_the_mass_and_to_ink_inverts_paper():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (37, 23))
    for oh, ow in [(20, 12), (5, 5), (60, 40), (1, 1)]:
        out = area_resize(img, oh, ow)
        assert out.shape == (oh, ow)
        np.testing.assert_allclose(out.sum() * (37 / oh) * (23 / ow), img.sum(), rtol=1e-12)
    np.testing.assert_allclose(area_resize(img, 37, 23), img, atol=1e-12)
    paper = paper_drawing("vertical").astype(float)
    assert to_ink(paper)[0, 0] == 0 and to_ink(paper)[100, 75] == 255
    assert to_ink(255 - paper)[0, 0] == 0  # already white on black: unchanged
    assert center_crop(np.zeros((100, 40)), 1.0).shape == (40, 40)
    assert center_crop(np.zeros((30, 90)), 1.0).shape == (30, 30)
    face, mode = image_to_input(rng.uniform(0, 255, (120, 90)), (48, 48))
    assert face.shape == (48, 48) and mode == "resize"


# ---------------------------------------------------------------- hot reload

def rolled(src: Path, dst: Path) -> Path:
    """A 'retrained' model: the same file with its output classes rotated by one, written atomically."""
    mf = load_model(src)
    params = dict(mf.params)
    last = max((k for k in params if k.endswith(".W")), key=lambda k: int(re.sub(r"\D", "", k) or 0))
    bias = last[:-2] + ".b"
    params[last] = np.roll(params[last], 1, axis=1)
    params[bias] = np.roll(params[bias], 1)
    norm = {k: v for k, v in mf.extra.items()}
    return save_model(dst, params, state=mf.state, extra_arrays=norm, metadata=mf.metadata)


def test_hot_reload_swaps_the_model_without_a_failed_request(model_path, tmp_path):
    served_file = tmp_path / "model.safetensors"
    shutil.copyfile(model_path, served_file)
    old_sha = hashlib.sha256(served_file.read_bytes()).hexdigest()
    X, _ = shapes(4, 5)
    rows = X.reshape(4, -1).tolist()
    app = create_app(served_file, reload_interval=0.1, log=lambda line: None)
    results: dict[int, list] = {0: [], 1: []}
    stop = threading.Event()

    def hammer(k: int, base: str):
        with httpx.Client(base_url=base, timeout=30) as c:
            for _ in range(2000):  # bounded; normally stopped by the event after a few seconds
                if stop.is_set():
                    return
                try:
                    r = c.post("/predict", json={"images": rows})
                    results[k].append((r.status_code, r.json()))
                except Exception as exc:  # a dropped connection is a failure too
                    results[k].append((None, repr(exc)))

    with ServerThread(app) as base:
        threads = [threading.Thread(target=hammer, args=(k, base)) for k in results]
        for t in threads:
            t.start()
        try:
            deadline = time.time() + 20
            while min(len(v) for v in results.values()) < 10:
                assert time.time() < deadline, "no traffic"
                time.sleep(0.02)
            rolled(model_path, served_file)  # save_model writes a temp file and os.replace()s it
            new_sha = hashlib.sha256(served_file.read_bytes()).hexdigest()
            with httpx.Client(base_url=base) as c:
                while c.get("/health").json()["model"]["generation"] < 2:
                    assert time.time() < deadline, "the new model file was not picked up"
                    time.sleep(0.05)
            seen = {k: len(v) for k, v in results.items()}
            while min(len(v) - seen[k] for k, v in results.items()) < 10:
                assert time.time() < deadline, "no traffic after the swap"
                time.sleep(0.02)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)

    want = {old_sha: load_trained(model_path).predict_proba(X.reshape(4, -1)),
            new_sha: load_trained(served_file).predict_proba(X.reshape(4, -1))}
    assert not np.array_equal(np.argmax(want[old_sha], 1), np.argmax(want[new_sha], 1))
    for k, res in results.items():
        failed = [r for r in res if r[0] != 200]
        assert not failed, f"{len(failed)} of {len(res)} requests failed during the swap: {failed[:3]}"
        shas = [body["model"]["sha256"] for _, body in res]
        assert shas[0] == old_sha and shas[-1] == new_sha
        switch = shas.index(new_sha)
        assert set(shas[:switch]) == {old_sha} and set(shas[switch:]) == {new_sha}  # one switch, never back
        for _, body in res:
            np.testing.assert_allclose(body["probabilities"], want[body["model"]["sha256"]], atol=1e-6)


def test_requests_in_flight_finish_on_the_old_model_and_a_bad_file_is_not_served(model_path, tmp_path):
    served_file = tmp_path / "model.safetensors"
    shutil.copyfile(model_path, served_file)
    lines = []
    app = create_app(served_file, reload_interval=0, log=lines.append)  # reloads driven by holder.check()
    holder = app.state.holder
    old = holder.current
    entered, release = threading.Event(), threading.Event()
    real = old.model.predict_proba

    def slow(X, **kw):
        entered.set()
        release.wait(10)
        return real(X, **kw)

    old.model.predict_proba = slow
    X, _ = shapes(1, 9)
    with ServerThread(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        answer = {}
        body = {"images": X.reshape(1, -1).tolist()}
        t = threading.Thread(target=lambda: answer.update(r=c.post("/predict", json=body)))
        t.start()
        assert entered.wait(10)
        rolled(model_path, served_file)
        assert holder.check() and holder.current.generation == 2
        release.set()
        t.join(10)
        assert answer["r"].status_code == 200
        assert answer["r"].json()["model"] == old.ref()  # finished on the model it started with
        np.testing.assert_allclose(answer["r"].json()["probabilities"], real(X.reshape(1, -1)), atol=1e-6)

        served_file.write_bytes(b"half a file")  # a broken (or half-written, non-atomic) file
        assert not holder.check()
        health = c.get("/health").json()
        assert health["model"]["generation"] == 2 and "not a valid safetensors file" in health["reload"]["last_error"]
        assert c.post("/predict", json={"images": X.reshape(1, -1).tolist()}).status_code == 200
        assert any("reload failed" in line for line in lines)

        os.remove(served_file)
        assert not holder.check() and "still serving generation 2" in holder.last_error
        shutil.copyfile(model_path, served_file)
        assert holder.check() and holder.current.generation == 3
        assert c.get("/health").json()["reload"]["last_error"] is None


# ---------------------------------------------------------------- the command

def test_cli_errors_are_one_line(tmp_path, model_path):
    from descend.cli.main import main

    assert main(["serve", str(tmp_path / "missing.safetensors"), "--port", "0"]) == 2
    assert main(["serve", str(model_path), "--port", "70000"]) == 2
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    assert main(["serve", str(tmp_path / "junk.safetensors"), "--port", "0"]) == 2


def test_cli_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "descend", "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for option in ("--host", "--port", "--max-batch", "--max-request-mb", "--reload-interval"):
        assert option in out.stdout
    assert "127.0.0.1" in out.stdout


def test_cli_serves_on_a_free_port_and_stops_on_sigterm(model_path):
    proc = subprocess.Popen([sys.executable, "-m", "descend", "serve", str(model_path), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
        assert m, line
        r = httpx.get(m.group(1) + "/health", timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "ok"
    finally:
        proc.terminate()  # by its PID
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == 0


# ---------------------------------------------------------------- an exported ONNX model, run by onnxruntime

@pytest.fixture(scope="module")
def onnx_path(model_path, tmp_path_factory) -> Path:
    from descend.cli.main import main

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(model_path), "-o", str(out)]) == 0
    return out


def test_an_onnx_model_is_served_through_the_same_api_and_page(onnx_path, model_path):
    app = create_app(onnx_path, max_batch=MAX_BATCH, max_request_bytes=MAX_BYTES, reload_interval=0)
    X, y = shapes(6, 7)
    native = load_trained(model_path)
    with ServerThread(app) as base, httpx.Client(base_url=base, timeout=30) as c:
        info = c.get("/model").json()
        assert info["runtime"] == "onnxruntime" and info["classes"] == list(CLASSES)
        assert info["n_features"] == 784 and info["image_shape"] == [28, 28] and info["input"]["kind"] == "image"
        assert info["spec"] == native.spec.to_dict() and info["training"]["config"]["epochs"] == 8
        assert info["versions"]["onnxruntime"] and info["versions"]["descend"] == descend_version()
        assert info["file"]["name"] == "model.onnx"
        assert c.get("/health").json()["model"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        r = c.post("/predict", json={"images": X.tolist()})
        assert r.status_code == 200, r.text
        want, r_onnx = native.predict_proba(X.reshape(6, -1)), r.json()["probabilities"]
        np.testing.assert_allclose(r_onnx, want, atol=1e-5)
        assert r.json()["indices"] == np.argmax(want, axis=1).tolist() == y.tolist()
        files = [("images", (f"{k}.png", png_bytes(paper_drawing(k)), "image/png")) for k in CLASSES]
        r = c.post("/predict", files=files)
        assert r.status_code == 200 and r.json()["labels"] == list(CLASSES) and r.json()["preprocess"] == "mnist"
        r = c.post("/predict", json={"images": [[0] * 783]})
        assert r.status_code == 422 and "784 values" in r.json()["detail"]
        assert c.get("/").status_code == 200
        schema = c.get("/openapi.json").json()
        assert "/predict" in schema["paths"]
    with ServerThread(create_app(model_path, reload_interval=0)) as base:  # the native service answers the same
        same = httpx.post(base + "/predict", json={"images": X.tolist()}, timeout=30).json()
    assert same["indices"] == y.tolist()
    np.testing.assert_allclose(same["probabilities"], r_onnx, atol=1e-5)


def descend_version() -> str:
    import descend

    return descend.__version__


def test_an_onnx_file_is_hot_reloaded(onnx_path, model_path, tmp_path):
    from descend.cli.main import main
    from descend.serve.app import ModelHolder

    served_file = tmp_path / "served.onnx"
    shutil.copyfile(onnx_path, served_file)
    holder = ModelHolder(served_file, reload_interval=0)
    X, y = shapes(4, 5)
    before = holder.current.model.predict_proba(X.reshape(4, -1))
    assert np.argmax(before, axis=1).tolist() == y.tolist()
    retrained = rolled(model_path, tmp_path / "rolled.safetensors")
    time.sleep(0.01)
    assert main(["export", str(retrained), "-o", str(served_file)]) == 0  # replaced atomically
    assert holder.check() and holder.current.generation == 2
    after = holder.current.model.predict_proba(X.reshape(4, -1))
    np.testing.assert_allclose(after, np.roll(before, 1, axis=1), atol=1e-5)  # the rotated classes


def test_cli_refuses_onnx_files_descend_did_not_write(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from descend.cli.main import main

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    opsets = [helper.make_opsetid("", 13)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)),
              str(foreign))
    capsys.readouterr()
    for bad, words in ((junk, "not a valid ONNX model"), (foreign, "not written by descend export"),
                       (tmp_path / "missing.onnx", "No such file")):
        assert main(["serve", str(bad), "--port", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err and words in err, err
