"""Augmentation: the tokens, the geometry, the same batches on every engine, training rows only, resume.

The NumPy engine is the reference: every backend's augmented batch must equal
NumPy's for the same (seed, step) exactly (the draws are a counter-based
integer hash and the geometry is integer arithmetic), and NumPy's must equal
a float64 loop written from the definition except where a source coordinate
lies within 1e-2 pixel of a rounding boundary (the fixed-point sine and cosine
are within 1/4096 of the true ones, which moves a coordinate at most
radius / 4096 < 1e-2 pixel on these images).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from descend.backend import get_ops, numpy_ops
from descend.engines import get_engine
from descend.errors import ConfigError
from descend.model import MLP, init_params
from descend.model.augment import Q, Augmentation, augment_rows, draws
from descend.optim import make_optimizer
from descend.train import LambdaCallback, TrainConfig, fit, fit_options

BACKENDS = [name for name in ("numpy", "jax", "torch", "tensorflow", "pytensor")
            if importlib.util.find_spec(name) is not None]
ENGINES = [name for name in ("jax", "torch", "tensorflow", "pytensor") if importlib.util.find_spec(name)]
SPECS = ["shift:2", "flip", "rotate:10", "shift:3,flip,rotate:45"]


# tokens ---------------------------------------------------------------------------

def test_tokens_parse_to_a_canonical_text():
    assert Augmentation.parse(None) is None and Augmentation.parse("none") is None
    aug = Augmentation.parse(" rotate:10 , FLIP,shift:2")
    assert (aug.shift, aug.flip, aug.rotate) == (2, True, 10.0)
    assert aug.text == "shift:2,flip,rotate:10"
    assert TrainConfig(augment="rotate:7.5,shift:1").augment == "shift:1,rotate:7.5"
    assert TrainConfig().augment is None


@pytest.mark.parametrize("text, token", [("shift:0", "shift:0"), ("shift:x,flip", "shift:x"), ("flip:1", "flip:1"),
                                         ("rotate:90", "rotate:90"), ("shift:2,blur", "blur"),
                                         ("shift:1,shift:2", "shift:2"), ("rotate:nan", "rotate:nan")])
def test_a_malformed_token_is_named(text, token):
    with pytest.raises(ConfigError, match=f"token '{token}'"):
        TrainConfig(augment=text)


def test_principal_components_cannot_be_augmented():
    with pytest.raises(ConfigError, match="no image shape"):
        TrainConfig(augment="shift:2", pca=10)


def test_compare_run_spec_and_search_space_take_augment():
    from descend.experiments.compare.spec import parse_run_spec
    from descend.experiments.search.space import parse_space

    assert parse_run_spec("sgd augment=flip,shift:2")["augment"] == "shift:2,flip"
    assert parse_run_spec("sgd augment=none")["augment"] is None
    with pytest.raises(ConfigError, match="token 'spin'"):
        parse_run_spec("sgd augment=shift:2,spin")
    space = parse_space("augment=none|shift:2,rotate:10", TrainConfig())
    assert space["augment"].choices == (None, "shift:2,rotate:10")
    assert space.config(TrainConfig(), {"augment": "shift:2,rotate:10"}).augment == "shift:2,rotate:10"
    with pytest.raises(ConfigError, match="token 'shift:-1'"):
        parse_space("augment=shift:-1|flip", TrainConfig())


# geometry (NumPy, the reference) -----------------------------------------------------

RNG = np.random.default_rng(0)


def _reference(X, shape, dy, dx, flip, angle):
    """Undo flip, shift and rotation (angle/Q radians) of each output pixel in float64; nearest source pixel.

    Also returns, per output element, whether its source coordinate is within 1e-2 of a rounding boundary.
    """
    h, w, c = shape
    imgs = X.reshape(-1, h, w, c)
    out, near = np.zeros_like(imgs), np.zeros(imgs.shape, bool)
    for n in range(len(imgs)):
        th = angle[n] / Q
        for i in range(h):
            for j in range(w):
                jj = w - 1 - j if flip[n] else j
                y, x = i - dy[n] - (h - 1) / 2, jj - dx[n] - (w - 1) / 2
                sy = np.cos(th) * y - np.sin(th) * x + (h - 1) / 2
                sx = np.sin(th) * y + np.cos(th) * x + (w - 1) / 2
                near[n, i, j] = min(abs((sy % 1) - 0.5), abs((sx % 1) - 0.5)) < 1e-2
                r, q = int(np.floor(sy + 0.5)), int(np.floor(sx + 0.5))
                if 0 <= r < h and 0 <= q < w:
                    out[n, i, j] = imgs[n, r, q]
    return out.reshape(len(X), -1), near.reshape(len(X), -1)


@pytest.mark.parametrize("shape", [(28, 28, 1), (9, 6, 3)])
@pytest.mark.parametrize("text", SPECS)
def test_numpy_matches_the_definition(shape, text):
    X = RNG.random((24, int(np.prod(shape))))
    aug = Augmentation.parse(text).bind(shape)
    got = augment_rows(numpy_ops, aug, X, 3, 9)
    ref, near = _reference(X, shape, *(d[:, 0] for d in draws(numpy_ops, aug, X, 3, 9)))
    differ = got != ref
    assert not (differ & ~near).any()
    if not aug.rotate:
        np.testing.assert_array_equal(got, ref)
    assert differ.mean() < 0.01


def test_draws_cover_their_ranges_uniformly():
    aug = Augmentation.parse("shift:2,flip,rotate:10").bind((8, 8))
    dy, dx, flip, angle = draws(numpy_ops, aug, np.zeros((20000, 64)), 1, 2)
    for d in (dy, dx):
        assert set(np.unique(d)) == {-2, -1, 0, 1, 2}
        assert np.bincount(d[:, 0] + 2).min() > 3700  # 4000 expected of each
    assert 0.48 < flip.mean() < 0.52
    assert angle.min() < -0.97 * aug.angle_steps and angle.max() > 0.97 * aug.angle_steps
    assert abs(np.corrcoef(dy[:, 0], dx[:, 0])[0, 1]) < 0.03
    assert aug.angle_steps == round(np.radians(10) * Q)


def test_shift_keeps_the_pixel_mass_that_stays_inside():
    shape = (10, 12, 1)
    X = RNG.random((64, 120)) + 0.5
    aug = Augmentation.parse("shift:4").bind(shape)
    out = augment_rows(numpy_ops, aug, X, 0, 5)
    dy, dx, _, _ = (d[:, 0] for d in draws(numpy_ops, aug, X, 0, 5))
    imgs = X.reshape(-1, 10, 12)
    for n in range(len(X)):
        kept = imgs[n, max(0, -dy[n]):10 - max(0, dy[n]), max(0, -dx[n]):12 - max(0, dx[n])]
        assert out[n].sum() == pytest.approx(kept.sum(), rel=1e-12)
        assert (out[n] == 0).sum() == 120 - kept.size  # zero fill exactly where nothing came in
    assert (dy != 0).any() and (np.abs(dx) == 4).any()


def test_flip_twice_is_the_identity_and_flips_half_the_rows():
    X = RNG.random((40, 7 * 5 * 2))
    aug = Augmentation.parse("flip").bind((7, 5, 2))
    once = augment_rows(numpy_ops, aug, X, 2, 11)
    np.testing.assert_array_equal(augment_rows(numpy_ops, aug, once, 2, 11), X)
    flipped = draws(numpy_ops, aug, X, 2, 11)[2][:, 0] == 1
    np.testing.assert_array_equal(once[flipped].reshape(-1, 7, 5, 2), X[flipped].reshape(-1, 7, 5, 2)[:, :, ::-1])
    np.testing.assert_array_equal(once[~flipped], X[~flipped])
    assert 0 < flipped.sum() < 40


def test_rotation_keeps_the_centre_and_moves_nothing_off_a_disc():
    X = RNG.random((16, 81)) + 0.5
    aug = Augmentation.parse("rotate:45").bind((9, 9))
    out = augment_rows(numpy_ops, aug, X, 0, 0)
    np.testing.assert_array_equal(out[:, 40], X[:, 40])  # the centre pixel of a 9x9 image
    rr = np.add.outer((np.arange(9) - 4.0) ** 2, (np.arange(9) - 4.0) ** 2).ravel()
    assert (out[:, rr <= 9] > 0).all()  # a disc of radius 3 rotates onto itself: no zero fill there
    assert not np.array_equal(out, X)


def test_same_seed_and_step_same_batch_else_another():
    X = RNG.random((8, 64))
    aug = Augmentation.parse("shift:2,flip,rotate:10").bind((8, 8))
    a = augment_rows(numpy_ops, aug, X, 4, 100)
    np.testing.assert_array_equal(a, augment_rows(numpy_ops, aug, X.copy(), 4, 100))
    assert not np.array_equal(a, augment_rows(numpy_ops, aug, X, 5, 100))
    assert not np.array_equal(a, augment_rows(numpy_ops, aug, X, 4, 101))


# every backend equals NumPy ----------------------------------------------------------

def _on_backend(name, aug, X, seed, step):
    ops = get_ops(name)
    if name == "pytensor":
        import pytensor
        import pytensor.tensor as pt

        x, s, t = pt.matrix(dtype=str(X.dtype)), pt.lscalar(), pt.lscalar()
        return pytensor.function([x, s, t], augment_rows(ops, aug, x, s, t))(X, seed % 2**32, step % 2**32)
    if name == "jax":  # the engine's traced scalars are uint32 words
        seed, step = np.uint32(seed % 2**32), np.uint32(step % 2**32)
    return ops.to_numpy(augment_rows(ops, aug, ops.asarray(X), seed, step))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (7, 6, 3)])
def test_every_backend_draws_and_maps_exactly_as_numpy(backend, shape):
    X = RNG.random((32, int(np.prod(shape)))).astype(np.float32)
    for text in SPECS:
        aug = Augmentation.parse(text).bind(shape)
        for seed, step in ((0, 0), (7, 123_456), (2**32 - 1, 2**40 + 3)):
            ref = augment_rows(numpy_ops, aug, X, seed, step)
            np.testing.assert_array_equal(_on_backend(backend, aug, X, seed, step), ref, err_msg=f"{text} {seed} {step}")


def test_random_bits_agree_on_every_backend():
    counter = np.arange(1000, dtype=np.int32)
    ref = numpy_ops.random_bits(11, 2**33 + 5, counter)
    assert ref.dtype == np.int32 and ref.min() >= 0 and len(np.unique(ref)) == 1000
    for name in BACKENDS[1:]:
        if name == "pytensor":
            continue  # exercised through augment_rows above
        ops = get_ops(name)
        seed, step = (np.uint32(11), np.uint32((2**33 + 5) % 2**32)) if name == "jax" else (11, 2**33 + 5)
        np.testing.assert_array_equal(ops.to_numpy(ops.random_bits(seed, step, ops.asarray(counter))), ref)


# in the engines' training steps ---------------------------------------------------------

IMG = (6, 6, 1)
XT = RNG.random((64, 36))
YT = (XT[:, :18].sum(1) > XT[:, 18:].sum(1)).astype(np.int64) + 2 * (XT[:, ::6].sum(1) > 3)
ORDER = np.random.default_rng(1).permutation(64)


def _steps(engine_name, text, seed=0, steps=8, dtype="float64"):
    engine = get_engine(engine_name, dtype=dtype)
    spec = MLP(hidden=(12,))
    aug = Augmentation.parse(text).bind(IMG) if text else None
    trainer = engine.trainer(spec, make_optimizer("momentum", 0.1, momentum=0.9), augment=aug)
    ts = trainer.init(init_params(spec, 36, 4, key=0, dtype=dtype), {})
    losses = []
    for k in range(0, steps, 4):  # runs of 4 steps: the global step carries across runs
        ts, chunk = trainer.run(ts, engine.asarray(XT), engine.put_labels(YT), ORDER, 8, k, 4, k, seed)
        losses += list(chunk)
    return np.array(losses), trainer.to_numpy(ts).params


@pytest.mark.parametrize("engine_name", ENGINES)
def test_engines_train_on_numpys_augmented_batches(engine_name):
    ref_loss, ref = _steps("numpy", "shift:1,flip,rotate:20")
    loss, got = _steps(engine_name, "shift:1,flip,rotate:20")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-9, atol=1e-12)
    plain_loss, _ = _steps("numpy", None)
    assert not np.allclose(plain_loss[1:], ref_loss[1:])  # the augmentation changed what was trained on


def test_numpy_engine_augments_every_training_batch_and_no_evaluation(monkeypatch):
    import descend.engines.numpy_engine as numpy_engine

    seen, logits_inputs = [], []
    original = numpy_engine.augment_rows

    def spy(ops, aug, x, seed, step):
        seen.append((x.copy(), step))
        return original(ops, aug, x, seed, step)

    monkeypatch.setattr(numpy_engine, "augment_rows", spy)
    engine = get_engine("numpy", dtype="float64")
    original_logits = engine.logits

    def logits(spec, params, state, X, batch_size=10000):
        logits_inputs.append(np.array(X))
        return original_logits(spec, params, state, X, batch_size)

    engine.logits = logits
    cfg = TrainConfig(dataset="synthetic", hidden=(8,), batch_size=8, epochs=2, early_stopping="none",
                      augment="shift:1", optimizer="sgd", lr=0.1, eval_every=3)
    spec = MLP(hidden=(8,))
    X_train, X_valid = XT[:48], XT[48:]
    result = fit(engine, spec, fit_options(cfg), X_train, YT[:48], X_valid, YT[48:],
                 params=init_params(spec, 36, 4, key=0, dtype="float64"), model_state={}, image_shape=IMG)
    assert [step for _, step in seen] == list(range(result.steps)) == list(range(12))
    order0 = np.random.default_rng([cfg.seed, 0x5EED, 0]).permutation(48)
    np.testing.assert_array_equal(seen[0][0], X_train[order0[:8]])  # raw training rows in, before the transform
    assert logits_inputs and all(np.array_equal(x, X_valid) for x in logits_inputs)  # validation: never augmented


def test_fit_without_an_image_shape_refuses_augmentation():
    engine = get_engine("numpy")
    spec = MLP(hidden=(8,))
    cfg = TrainConfig(dataset="synthetic", hidden=(8,), augment="flip", early_stopping="none")
    with pytest.raises(ConfigError, match="needs image rows"):
        fit(engine, spec, fit_options(cfg), XT, YT, params=init_params(spec, 36, 4, key=0), model_state={})


@pytest.mark.parametrize("engine_name", ["numpy", *ENGINES])
def test_interrupted_augmented_fit_resumes_to_identical_weights(engine_name, tmp_path):
    cfg = TrainConfig(dataset="synthetic", hidden=(8,), optimizer="nesterov", lr=0.05, batch_size=8, epochs=3,
                      eval_every=5, early_stopping="none", dtype="float64", augment="shift:2,flip,rotate:15", seed=4)
    engine = get_engine(engine_name, dtype="float64")
    spec = MLP(hidden=(8,))
    params = init_params(spec, 36, 4, key=0, dtype="float64")
    Xd, yd = engine.asarray(XT), engine.put_labels(YT)

    def train(**kw):
        return fit(engine, spec, fit_options(cfg), Xd[:48], yd[:48], Xd[48:], YT[48:], params=params,
                   model_state={}, image_shape=IMG, **kw)

    full = train()
    seen = []

    def stop(row):
        seen.append(row)
        if len(seen) == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint=ckpt, callbacks=[LambdaCallback(on_evaluation=stop)])
    resumed = train(checkpoint=ckpt, resume=True)
    assert resumed.steps == full.steps == 18
    for k in full.params:
        np.testing.assert_array_equal(resumed.final_params[k], full.final_params[k])
    plain = fit(engine, spec, fit_options(cfg.replace(augment=None)), Xd[:48], yd[:48], Xd[48:], YT[48:],
                params=params, model_state={})
    assert not np.allclose(plain.final_params["dense0.W"], full.final_params["dense0.W"])


# the command line ---------------------------------------------------------------------

def descend(*args, env=None):
    return subprocess.run([sys.executable, "-m", "descend", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 3-D NPZ (600 images of 8x8, 3 classes) and the same rows flat (no image shape)."""
    root = tmp_path_factory.mktemp("augment")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    X = (rng.random((600, 8, 8)) * 60 + y[:, None, None] * 60).astype(np.uint8)
    np.savez(root / "img.npz", X=X, y=y)
    np.savez(root / "flat.npz", X=X.reshape(600, -1), y=y)
    return root


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_names_a_malformed_token_and_refuses_rows_without_an_image_shape(images, tmp_path):
    _one_line_error(descend("train", images / "img.npz", "--augment", "shift:2,twirl", "--out", tmp_path / "a"),
                    "`augment`", "'twirl'")
    _one_line_error(descend("train", images / "flat.npz", "--augment", "shift:2", "--out", tmp_path / "b"),
                    "`augment`", "image")
    help_text = " ".join(descend("train", "--help").stdout.split())
    for token in ("shift:S", "flip", "rotate:D", "zero fill", "never validation or test"):
        assert token in help_text


def _checkpoint_step(path):
    from descend.io.modelfile import load_checkpoint

    try:
        return load_checkpoint(path)[1]["step"]
    except Exception:  # not written yet
        return -1


def test_killed_augmented_training_resumes_to_identical_weights(images, tmp_path):
    """kill -9 a real `descend train --augment` mid-run, `--resume` it: the weights of an uninterrupted run."""
    from descend.io.modelfile import load_model

    data = images / "img.npz"
    args = ["--hidden", "64", "--batch-size", "1", "--epochs", "3", "--eval-every", "100", "--engine", "numpy",
            "--augment", "shift:2,flip,rotate:10", "--quiet", "--dtype", "float64", "--threads", "1"]
    full = tmp_path / "full"
    assert descend("train", data, *args, "--out", full).returncode == 0
    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "descend", "train", str(data), *args, "--out", str(part)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while _checkpoint_step(part / "checkpoint.safetensors") < 300 and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (part / "model.safetensors").exists()
    assert _checkpoint_step(part / "checkpoint.safetensors") >= 300
    resumed = descend("train", "--resume", part)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_model(full / "model.safetensors"), load_model(part / "model.safetensors")
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


# the run report ----------------------------------------------------------------------------

def test_report_shows_the_first_training_batch_as_the_engine_augmented_it(images, tmp_path, monkeypatch):
    import descend.engines.numpy_engine as numpy_engine
    from descend.train.outputs import first_augmented_batch
    from descend.train.run import run_training
    from descend.train.setup import prepare_data

    seen = []
    original = numpy_engine.augment_rows

    def spy(ops, aug, x, seed, step):
        out = original(ops, aug, x, seed, step)
        seen.append(out)
        return out

    monkeypatch.setattr(numpy_engine, "augment_rows", spy)
    cfg = TrainConfig(dataset=str(images / "img.npz"), hidden=(16,), epochs=1, batch_size=50, engine="numpy",
                      augment="shift:2,rotate:20", early_stopping="none", seed=2)
    run = run_training(cfg, out=tmp_path / "run", progress=False)
    grid = first_augmented_batch(cfg, prepare_data(cfg))
    assert grid.shape == (50, 8, 8, 1)  # a batch of 50: all of it (up to 64 rows are shown)
    np.testing.assert_array_equal(grid.reshape(50, -1), seen[0])
    assert (run.run_dir / "augmented.png").stat().st_size > 1000
    report = (run.run_dir / "report.html").read_text()
    assert "The first training batch after --augment shift:2,rotate:20 (50 rows)" in report
    plain = run_training(cfg.replace(augment=None), out=tmp_path / "plain", progress=False)
    assert not (plain.run_dir / "augmented.png").exists()
    assert "after --augment" not in (plain.run_dir / "report.html").read_text()


# test-time augmentation ------------------------------------------------------------------

def test_mirror_rows_is_what_flip_makes_of_a_row_whose_bit_is_set():
    from descend.model.augment import mirror_rows

    for shape in ((7, 5, 2), (6, 4)):
        X = RNG.random((40, int(np.prod(shape))))
        aug = Augmentation.parse("flip").bind(shape)
        flipped = draws(numpy_ops, aug, X, 3, 5)[2][:, 0] == 1
        np.testing.assert_array_equal(mirror_rows(X, shape)[flipped], augment_rows(numpy_ops, aug, X, 3, 5)[flipped])
        assert not np.array_equal(mirror_rows(X, shape), X)


def test_a_run_trained_on_mirrors_reports_the_mirror_averaged_errors_and_predict_reproduces_them(tmp_path, capsys):
    """Mirrored after normalisation: per-pixel standardisation is not mirror-symmetric, so mirroring the raw
    rows instead would give other probabilities (checked)."""
    from descend.cli.main import main
    from descend.model.augment import mirror_rows
    from descend.train.predict import load_trained
    from descend.train.run import run_training

    rng = np.random.default_rng(4)
    y, yt = rng.integers(0, 3, 300), rng.integers(0, 3, 90)
    X, Xt = ((rng.random((n, 6, 6)) * 50 + labels[:, None, None] * 40 + np.arange(6) * 8).astype(np.uint8)
             for n, labels in ((300, y), (90, yt)))
    np.savez(tmp_path / "img.npz", X=X, y=y, X_test=Xt, y_test=yt)
    cfg = TrainConfig(dataset=str(tmp_path / "img.npz"), layers="conv:4:3,pool:2,dense:16", hidden=(), epochs=2,
                      batch_size=30, engine="numpy", augment="flip", normalize="standardize", validation=60,
                      early_stopping="none", seed=1)
    metrics = run_training(cfg, out=tmp_path / "run", progress=False).metrics
    model = load_trained(tmp_path / "run" / "model.safetensors")
    both = model.predict_proba(Xt.reshape(90, -1), tta="flip")
    plain = model.predict_proba(Xt.reshape(90, -1))
    mirrored = model.predict_proba(mirror_rows(Xt.reshape(90, -1), (6, 6)))
    assert not np.allclose(both, (plain + mirrored) / 2)  # raw mirror != mirror of the standardised rows
    assert metrics["test_error_flip_tta"] == pytest.approx(float(np.mean(both.argmax(1) != yt)))
    assert "valid_error_flip_tta" in metrics and not np.allclose(both, plain)
    assert main(["predict", str(tmp_path / "run" / "model.safetensors"), str(tmp_path / "img.npz"),
                 "--tta", "flip"]) == 0
    assert "each averaged with its mirror image" in capsys.readouterr().err
    plain_run = run_training(cfg.replace(augment="shift:1"), out=tmp_path / "plain", progress=False)
    assert "test_error_flip_tta" not in plain_run.metrics


def test_flip_tta_on_rows_that_are_not_images_is_one_line_exit_2(tmp_path, capsys):
    from descend.cli.main import main

    rng = np.random.default_rng(5)
    np.savez(tmp_path / "flat.npz", X=rng.random((80, 10)), y=rng.integers(0, 2, 80))
    assert main(["train", str(tmp_path / "flat.npz"), "--hidden", "8", "--epochs", "1", "--engine", "numpy",
                 "--quiet", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run" / "model.safetensors"), str(tmp_path / "flat.npz"),
                 "--tta", "flip"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`tta`" in err[0] and "not images" in err[0]
