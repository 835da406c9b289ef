"""descend serve in a real browser: draw a "1" and a "0" on the page, stroke by stroke, read the answer.

Debian's Chromium, driven by Playwright's Python package (its own browser
downloads are never used), headless with the flags below and a fresh profile
folder.  The model is a real MNIST network trained here for one epoch from
DESCEND_MIRROR (CI sets it).  ``descend serve`` runs as a subprocess on
127.0.0.1 and an ephemeral port and is stopped by its PID.  Screenshots go to
$DESCEND_ARTIFACTS (default: the test's temporary folder); their paths are
printed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image
from playwright import sync_api

from descend.serve.preprocess import decode_image, image_to_input, mnist_preprocess, to_ink
from descend.train import TrainConfig, run_training

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _train(cfg: TrainConfig, out: Path) -> Path:
    """run_training without the plots and HTML report (seconds of matplotlib these tests do not need)."""
    import descend.train.run as run_module

    with pytest.MonkeyPatch.context() as mp:
        if hasattr(run_module, "write_reports"):
            mp.setattr(run_module, "write_reports", lambda *a, **k: None)
        return run_training(cfg, out=out, progress=False).run_dir / "model.safetensors"


@pytest.fixture(scope="module")
def mnist_model(mirror_dir, tmp_path_factory) -> Path:
    """A real MNIST network: one epoch of a 64-unit MLP on the 50,000 training digits (about 5 % test error)."""
    cfg = TrainConfig(dataset="mnist", hidden=(64,), epochs=1, batch_size=100, engine="numpy", seed=0,
                      early_stopping="none")
    return _train(cfg, tmp_path_factory.mktemp("mnist-model"))


@pytest.fixture(scope="module")
def server_url(mnist_model):
    """``descend serve`` in a subprocess on a free port; stopped by its PID."""
    proc = subprocess.Popen([sys.executable, "-m", "descend", "serve", str(mnist_model), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
        assert m, f"descend serve did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
        yield m.group(1)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Debian Chromium context with a fresh profile; touch enabled for the touch strokes."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium (.ci/run installs it)")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1000, "height": 760}, has_touch=True)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("DESCEND_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """The served page, with what a person does on it: strokes with a mouse or a finger."""

    def __init__(self, context, url: str):
        self.url = url
        self.page = context.new_page()
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url + "/")
        self.wait("window.descend && window.descend.model !== null")

    def wait(self, expr: str = "window.descend.idle()", timeout: float = 30) -> None:
        # Polled with evaluate(): wait_for_function would need 'unsafe-eval', which the page's CSP forbids.
        deadline = time.time() + timeout
        while not self.page.evaluate(expr):
            assert time.time() < deadline, f"timed out waiting for {expr}; page problems: {self.problems}"
            time.sleep(0.05)

    def pad_origin(self) -> tuple[float, float]:
        box = self.page.locator("#pad").bounding_box()
        return box["x"], box["y"]

    def mouse_stroke(self, points) -> None:
        x0, y0 = self.pad_origin()
        mouse = self.page.mouse
        mouse.move(x0 + points[0][0], y0 + points[0][1])
        mouse.down()
        for x, y in points[1:]:
            mouse.move(x0 + x, y0 + y, steps=2)
        mouse.up()

    def touch_stroke(self, points) -> None:
        x0, y0 = self.pad_origin()
        cdp = self.page.context.new_cdp_session(self.page)
        try:
            for i, (x, y) in enumerate(points):
                kind = "touchStart" if i == 0 else "touchMove"
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x0 + x, "y": y0 + y}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        finally:
            cdp.detach()

    def answer(self) -> tuple[str, list[float]]:
        label = self.page.locator("#label").text_content()
        bars = self.page.locator("#bars .pct").all_text_contents()
        return label, [float(b.rstrip("%")) / 100 if b.endswith("%") else 0.0 for b in bars]

    def screenshot(self, path: Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return path


def arc(cx, cy, rx, ry, start_deg, end_deg, n=16):
    return [(cx + rx * math.sin(math.radians(a)), cy - ry * math.cos(math.radians(a)))
            for a in np.linspace(start_deg, end_deg, n)]


def test_draw_a_one_and_a_zero(browser, server_url, artifacts, capsys):
    ui = Page(browser, server_url)
    assert ui.page.locator("#draw-panel").is_visible()
    assert ui.answer()[0] == "–"

    # "1": one stroke of the mouse, top to bottom, slightly slanted.
    ui.mouse_stroke([(148 - 0.12 * t, 45 + t) for t in range(0, 191, 10)])
    ui.wait()
    label, probs = ui.answer()
    assert label == "1", (label, probs)
    assert abs(sum(probs) - 1) < 0.01 and probs[1] == max(probs)
    one = ui.screenshot(artifacts / "serve-draw-1.png")

    ui.page.click("#clear")
    ui.wait()
    assert ui.answer() == ("–", [0.0] * 10)
    assert ui.page.evaluate("window.descend.lastInput") is None

    # "0": two strokes of a finger (touch events), the left half then the right half; the bars
    # follow the drawing: there is an answer after the first stroke already.
    ui.touch_stroke(arc(140, 140, 62, 98, 0, -185))
    ui.wait()
    half_label, half_probs = ui.answer()
    assert abs(sum(half_probs) - 1) < 0.01
    ui.touch_stroke(arc(140, 140, 62, 98, -180, -365))
    ui.wait()
    label, probs = ui.answer()
    assert label == "0", (label, probs, "after the first stroke:", half_label)
    zero = ui.screenshot(artifacts / "serve-draw-0.png")

    # What the page sent is what the Python preprocessing makes of the same canvas pixels.
    ink = np.reshape(json.loads(ui.page.evaluate("JSON.stringify(Array.from(window.descend.lastInk))")), (280, 280))
    sent = np.reshape(json.loads(ui.page.evaluate("JSON.stringify(Array.from(window.descend.lastInput))")), (28, 28))
    np.testing.assert_allclose(sent, mnist_preprocess(ink), atol=1e-6)
    assert 0.05 < (sent > 0).mean() < 0.5

    assert not ui.problems, ui.problems
    outside = [u for u in ui.requests if not u.startswith(server_url) and not u.startswith(("data:", "blob:"))]
    assert not outside, f"the page fetched from outside: {outside}"
    for shot in (one, zero):
        with Image.open(shot) as im:
            assert im.size[0] >= 900 and im.size[1] >= 600
            assert len(np.unique(np.asarray(im.convert("L")))) > 20  # a real page, not a blank
    with capsys.disabled():
        print(f"\nscreenshots: {one} {zero}")
    ui.page.close()


def test_page_preprocessing_is_the_python_one(browser, server_url):
    """DescendPreprocess (JS) against descend.serve.preprocess on random ink blobs and photos."""
    ui = Page(browser, server_url)
    def js(call: str, *args):
        # Arrays travel as one JSON string each way: Playwright's per-value serialisation is slow.
        code = f"([a, w, h, s]) => {{ a = JSON.parse(a); const r = {call}; return JSON.stringify(r); }}"
        return json.loads(ui.page.evaluate(code, list(args)))

    rng = np.random.default_rng(0)
    for h, w in [(280, 280), (90, 200), (37, 23), (5, 300)]:
        ink = np.zeros((h, w))
        for _ in range(4):
            y, x = rng.integers(0, h), rng.integers(0, w)
            ink[max(0, y - 6):y + 6, max(0, x - 9):x + 9] = rng.uniform(30, 255)
        got = js("Array.from(DescendPreprocess.mnistPreprocess(a, w, h))", json.dumps(ink.ravel().tolist()), w, h)
        np.testing.assert_allclose(np.reshape(got, (28, 28)), mnist_preprocess(ink), atol=1e-6)
        paper = 255 - ink
        got = js("Array.from(DescendPreprocess.toInk(a, w, h))", json.dumps(paper.ravel().tolist()), w, h)
        np.testing.assert_allclose(np.reshape(got, (h, w)), to_ink(paper), atol=1e-9)
        photo = rng.uniform(0, 255, (h, w))
        for shape in [(48, 48), (28, 28), (10, 20)]:
            want, mode = image_to_input(photo, shape)
            got = js("(r => [Array.from(r.input), r.mode])(DescendPreprocess.imageToInput(a, w, h, s, 'auto'))",
                     json.dumps(photo.ravel().tolist()), w, h, list(shape))
            assert got[1] == mode
            np.testing.assert_allclose(np.reshape(got[0], shape), want, atol=1e-6)
    assert not ui.problems, ui.problems
    ui.page.close()


def test_a_face_model_takes_an_uploaded_picture(browser, tmp_path, artifacts, capsys):
    """A 48x48 model (FER2013's size, trained here on synthetic faces): the page offers an upload."""
    from descend.serve.app import create_app

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 160)
    yy = np.mgrid[0:48, 0:48][0]
    X = np.clip(rng.normal(100, 20, (160, 48, 48)) + np.where(y[:, None, None] == 1, yy * 3, -yy), 0, 255)
    np.savez(tmp_path / "faces.npz", X=X.astype(np.uint8), y=y, X_test=X[:20].astype(np.uint8), y_test=y[:20],
             classes=np.array(["Happy", "Sad"]))
    model = _train(TrainConfig(dataset=str(tmp_path / "faces.npz"), hidden=(8,), epochs=3, batch_size=40,
                               engine="numpy", schedule="constant", early_stopping="none"), tmp_path / "run")
    picture = np.clip(np.linspace(0, 255, 120)[:, None] + np.zeros((120, 90)), 0, 255).astype(np.uint8)
    png = tmp_path / "face.png"
    Image.fromarray(picture, "L").save(png)

    server = uvicorn.Server(uvicorn.Config(create_app(model, reload_interval=0), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started:
            assert thread.is_alive() and time.time() < deadline
            time.sleep(0.02)
        ui = Page(browser, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}")
        assert not ui.page.locator("#draw-panel").is_visible()
        assert ui.page.locator("#upload-panel").is_visible()
        assert "48x48" in ui.page.locator("#upload-title").text_content()
        ui.page.set_input_files("#upload", str(png))
        ui.wait("window.descend.idle() && window.descend.lastResponse !== null")
        label, probs = ui.answer()
        assert label in ("Happy", "Sad") and len(probs) == 2
        seen = ui.page.evaluate("(c => [c.width, c.height])(document.getElementById('seen'))")
        assert seen == [48, 48]
        sent = np.array(json.loads(ui.page.evaluate("JSON.stringify(Array.from(window.descend.lastInput))")))
        sent = sent.reshape(48, 48)
        want, mode = image_to_input(decode_image(png.read_bytes()), (48, 48))
        assert mode == "resize"
        np.testing.assert_allclose(sent, want, atol=1e-6)
        shot = ui.screenshot(artifacts / "serve-upload-face.png")
        assert not ui.problems, ui.problems
        with capsys.disabled():
            print(f"\nscreenshot: {shot}")
        ui.page.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
