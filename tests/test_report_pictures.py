"""What the model learned, as pictures: first-layer weights as images and the most confident mistakes.

Hand-made weights and probabilities check what is selected and drawn; small runs on 8x8 images check
that ``descend train`` puts both pictures in its report (test or validation split, named in the caption),
deterministically, and neither for data without an image shape.
"""

from __future__ import annotations

import csv
import re

import numpy as np

from descend.model import MLP, parse_layers
from descend.reports.learned import (
    MAX_TILES,
    confident_mistakes,
    first_layer_figure,
    first_layer_tiles,
    grid_shape,
    mistakes_figure,
)
from descend.train import TrainConfig, run_training

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


# ---------------------------------------------------------------- the most confident wrong rows

def test_confident_mistakes_are_the_wrong_rows_most_confident_first():
    proba = np.array([
        [0.99, 0.01, 0.00],  # 0: right (class 0), the most confident row of all: not a mistake
        [0.10, 0.60, 0.30],  # 1: wrong (true 2), 0.60
        [0.05, 0.05, 0.90],  # 2: wrong (true 0), 0.90
        [0.20, 0.70, 0.10],  # 3: right
        [0.80, 0.15, 0.05],  # 4: wrong (true 1), 0.80
        [0.10, 0.00, 0.90],  # 5: wrong (true 1), 0.90: ties with row 2, comes after it
        [0.34, 0.33, 0.33],  # 6: wrong (true 2), 0.34
    ])
    y = np.array([0, 2, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(confident_mistakes(proba, y), [2, 5, 4, 1, 6])
    np.testing.assert_array_equal(confident_mistakes(proba, y, limit=3), [2, 5, 4])
    assert confident_mistakes(proba[[0, 3]], y[[0, 3]]).size == 0


def test_the_gallery_draws_each_mistake_with_true_predicted_and_probability():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 6, 5)).astype(np.uint8)
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.5, 0.5], [0.05, 0.95], [0.9, 0.1]])
    y = np.array([0, 0, 1, 0, 1, 0, 1])
    rows = confident_mistakes(proba, y)
    np.testing.assert_array_equal(rows, [5, 0, 6, 3, 4])
    fig = mistakes_figure(images, y, proba, rows, ["cat", "dog"], "validation")
    axes = _image_axes(fig)
    assert len(axes) == 5
    assert [ax.get_xlabel() for ax in axes[:2]] == ["true cat\npred dog, p=0.950", "true cat\npred dog, p=0.900"]
    np.testing.assert_array_equal(axes[0].images[0].get_array(), images[5])
    assert "validation set" in fig._suptitle.get_text()


# ---------------------------------------------------------------- first-layer weights as images

def test_dense_first_layer_units_as_images_up_to_64_in_an_8x8_grid():
    spec = MLP(hidden=(70,), dropout_keep=(0.8, 0.5)).resolve(30, 3)
    params, _ = spec.init(0)
    tiles = first_layer_tiles(spec, params, (6, 5))
    assert tiles.images.shape == (MAX_TILES, 6, 5) and tiles.total == 70 and tiles.noun == "units"
    for k in (0, 17, 63):
        np.testing.assert_array_equal(tiles.images[k], params["dense0.W"][:, k].reshape(6, 5))
    assert grid_shape(64) == (8, 8) and grid_shape(10) == (3, 4) and grid_shape(5, 8) == (1, 5)
    fig = first_layer_figure(tiles)
    axes = _image_axes(fig)
    assert len(axes) == 64
    lo, hi = axes[0].images[0].get_clim()
    assert lo == -hi == -np.max(np.abs(tiles.images))  # one scale, symmetric around 0
    assert axes[0].images[0].get_cmap().name == "RdBu_r"
    assert "64 of 70 units" in fig._suptitle.get_text()


def test_logistic_regression_tiles_are_the_classes_and_colour_images_average_their_channels():
    spec = MLP(hidden=()).resolve(4 * 3 * 3, 3)
    params, _ = spec.init(1)
    tiles = first_layer_tiles(spec, params, (4, 3, 3), classes=["a", "b", "c"])
    assert tiles.labels == ("a", "b", "c") and tiles.noun == "classes" and tiles.images.shape == (3, 4, 3)
    np.testing.assert_allclose(tiles.images[1], params["dense0.W"][:, 1].reshape(4, 3, 3).mean(axis=2), rtol=1e-6)
    assert "mean over the 3 channels" in tiles.what


def test_conv_first_layer_kernels_per_filter_mean_over_input_channels():
    spec = parse_layers("conv:5:3,pool:2,dense:4", (8, 8, 3)).resolve(192, 2)
    params, _ = spec.init(2)
    tiles = first_layer_tiles(spec, params, (8, 8, 3))
    W = params["conv0.W"]
    assert tiles.images.shape == (5, 3, 3) and tiles.total == 5 and tiles.noun == "kernels"
    np.testing.assert_allclose(tiles.images[4], W[:, :, :, 4].mean(axis=2), rtol=1e-6)
    assert "mean over the 3 input channels" in tiles.what
    grey = parse_layers("conv:80:3,gap", (8, 8, 1)).resolve(64, 2)
    grey_params, _ = grey.init(0)
    tiles = first_layer_tiles(grey, grey_params, (8, 8))
    assert tiles.images.shape == (64, 3, 3) and tiles.total == 80  # at most 64 drawn
    np.testing.assert_array_equal(tiles.images[9], grey_params["conv0.W"][:, :, 0, 9])
    assert len(_image_axes(first_layer_figure(tiles))) == 64


def test_no_weight_images_without_an_image_shape_or_without_a_first_dense_or_conv_layer():
    spec = MLP(hidden=(4,)).resolve(10, 2)
    params, _ = spec.init(0)
    assert first_layer_tiles(spec, params, None) is None
    pooled = parse_layers("pool:2,conv:2:3,dense:4", (8, 8, 1)).resolve(64, 2)
    assert first_layer_tiles(pooled, pooled.init(0)[0], (8, 8)) is None


def test_pca_models_show_the_weights_projected_back_onto_the_pixels():
    from descend.train.setup import fit_normalizer

    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (200, 36)).astype(np.float32)
    normalizer = fit_normalizer("standardize", 8, X)
    spec = MLP(hidden=(5,)).resolve(8, 2)
    params, _ = spec.init(0)
    tiles = first_layer_tiles(spec, params, (6, 6), normalizer=normalizer)
    assert tiles.images.shape == (5, 6, 6) and "principal components" in tiles.what
    # each unit's input through the PCA = its pixel image applied to the normalized pixels, plus a constant
    through_pca = normalizer.transform(X).astype(np.float64) @ params["dense0.W"]
    normalized = (X - np.asarray(normalizer.offset)) / np.asarray(normalizer.scale)
    on_pixels = normalized.astype(np.float64) @ tiles.images.reshape(5, 36).T
    shift = through_pca - on_pixels
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-4)


# ---------------------------------------------------------------- the run report

def halves(n: int, seed: int, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 120, (n, side, side)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    for i, c in enumerate(y):
        X[i, :, c * side // 2:(c + 1) * side // 2] += 120
    X[: n // 4] = rng.integers(0, 256, (n // 4, side, side))  # noise: some confident mistakes to show
    return X, y


def _train(data, out, **kw):
    base = dict(dataset=str(data), hidden=(16,), epochs=2, batch_size=50, schedule="constant", engine="numpy",
                threads=1, early_stopping="none")
    return run_training(TrainConfig(**{**base, **kw}), out=out, progress=False)


def _captions(report) -> list[str]:
    text = report.read_text()
    section = text[text.index("<h2>What the model learned</h2>"):]
    section = section[:section.index("<h2>", 5)]
    return re.findall(r"<figcaption>([^<]*)</figcaption>", section)


def test_the_run_report_shows_first_layer_weights_and_confident_test_mistakes(tmp_path):
    X, y = halves(200, 0)
    Xt, yt = halves(80, 1)
    np.savez(tmp_path / "tiny.npz", X=X, y=y, X_test=Xt, y_test=yt)
    runs = [_train(tmp_path / "tiny.npz", tmp_path / f"run{i}").run_dir for i in range(2)]
    for name in ("first-layer.png", "mistakes.png"):
        data = (runs[0] / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE
        assert data == (runs[1] / name).read_bytes()  # same seed, same picture
    assert not any(".tmp" in p.name for p in runs[0].iterdir())
    weights, mistakes = _captions(runs[0] / "report.html")
    assert weights.startswith("First-layer weights (dense0, all 16)") and "8x8 image" in weights
    assert "on the test images" in mistakes and "of 80 wrong" in mistakes


def test_without_a_test_split_the_gallery_shows_validation_images_and_says_so(tmp_path):
    X, y = halves(200, 0)
    np.savez(tmp_path / "notest.npz", X=X, y=y)
    run = _train(tmp_path / "notest.npz", tmp_path / "run", layers="conv:3:3,pool:2", hidden=()).run_dir
    weights, mistakes = _captions(run / "report.html")
    assert weights.startswith("First-layer weights (conv0, all 3): 3x3 kernels")
    assert "on the validation images" in mistakes and (run / "mistakes.png").is_file()


def test_data_without_an_image_shape_gets_no_pictures(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", *(f"f{i}" for i in range(10))])
        for _ in range(80):
            row = rng.random(10)
            w.writerow([int(row[0] > 0.5), *row])
    run = _train(path, tmp_path / "run").run_dir
    assert (run / "report.html").is_file() and (run / "cost.png").is_file()
    assert not (run / "first-layer.png").exists() and not (run / "mistakes.png").exists()
    assert "What the model learned" not in (run / "report.html").read_text()
