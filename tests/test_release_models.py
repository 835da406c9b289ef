"""Model files written by the release before layers existed load and predict bit for bit as it did.

The fixtures (``tests/fixtures/release_*``) were written by that release's
``descend train`` through ``tests/fixtures/make_release_models.py``, with the
probabilities it predicted for 50 MNIST test rows, with one BLAS thread: a
multi-threaded float32 matrix product sums in an order that depends on the
thread count, so the comparison pins it to the one the fixtures were made with.
"""

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from descend.train.predict import load_trained

FIXTURES = Path(__file__).parent / "fixtures"
INPUTS = np.load(FIXTURES / "release_inputs.npy", allow_pickle=False)


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.mark.parametrize("name", ["mlp64", "mlp64_bn_dropout"])
def test_release_model_predicts_bit_identically(name):
    model = load_trained(FIXTURES / f"release_{name}.safetensors")
    expected = np.load(FIXTURES / f"release_{name}_proba.npy", allow_pickle=False)
    got = model.predict_proba(INPUTS)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


def test_release_model_mc_dropout_is_bit_identical():
    model = load_trained(FIXTURES / "release_mlp64_bn_dropout.safetensors")
    expected = np.load(FIXTURES / "release_mlp64_bn_dropout_mc_proba.npy", allow_pickle=False)
    got = model.predict_proba(INPUTS, mc_samples=4, seed=1)
    assert np.array_equal(got, expected)
    # Monte-Carlo dropout really sampled: it differs from the deterministic prediction.
    assert not np.array_equal(got, model.predict_proba(INPUTS))


def test_release_model_files_hold_the_parameters_the_release_named():
    plain = load_trained(FIXTURES / "release_mlp64.safetensors")
    assert sorted(plain.params) == ["dense0.W", "dense0.b", "dense1.W", "dense1.b"]
    bn = load_trained(FIXTURES / "release_mlp64_bn_dropout.safetensors")
    assert sorted(bn.params) == ["bn0.beta", "bn0.gamma", "dense0.W", "dense1.W", "dense1.b"]
    assert sorted(bn.state) == ["bn0.mean", "bn0.var"]
