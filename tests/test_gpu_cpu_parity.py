"""On a GPU, each engine computes what it computes on the CPU, to float32 rounding.

JAX, PyTorch and TensorFlow each train the same float32 MLP for 50 optimizer
steps twice, once with ``device="cpu"`` and once with ``device="gpu"``: the
same initial weights (one seed), the same batch order (the fit loop's own
permutations) and the same dropout-free momentum update, in two calls of 25
steps (the second starting mid-order, as the fit loop's evaluation points make
it).  The 50 losses, the final parameters and the optimizer state must agree
within ``RTOL`` of each tensor's largest entry.

TensorFloat-32 is switched off for the GPU run: TensorFlow and JAX multiply
float32 matrices with 10-bit mantissas by default on Ampere and later GPUs,
which is a different (faster, less precise) computation; this test checks the
engines' GPU code paths, not that rounding mode.

Without an NVIDIA GPU (a file-system look-up, no engine imported) or without
the engine's GPU build, each case skips; only these ``gpu`` tests may skip.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from descend.engines import get_engine, is_available, nvidia_gpu_present
from descend.io.tree import flatten
from descend.model import MLP, init_params
from descend.optim import make_optimizer
from descend.train.loop import epoch_order

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not nvidia_gpu_present(), reason="no NVIDIA GPU on this machine")]

STEPS, BATCH, SEED = 50, 32, 5
N, D, K = 256, 64, 10
RTOL = 1e-4  # float32 rounding of two summation orders, grown over 50 steps, with a wide margin
_rng = np.random.default_rng(0)
Y = _rng.integers(0, K, N)
X = (_rng.standard_normal((N, D)) + 0.5 * Y[:, None] / K).astype(np.float32)
SPEC = MLP(hidden=(48, 24))


@contextlib.contextmanager
def full_float32(engine_name: str):
    """Switch TensorFloat-32 matrix products off for ``engine_name`` in this block, then restore them."""
    if engine_name == "jax":
        import jax

        with jax.default_matmul_precision("highest"):
            yield
    elif engine_name == "torch":
        import torch

        before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    else:
        import tensorflow as tf

        before = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(before)


def trajectory(engine_name: str, device: str):
    """``(losses, final TrainState as NumPy)`` of STEPS momentum steps of SPEC on ``device``."""
    engine = get_engine(engine_name, device=device, dtype="float32")
    assert engine.device == device
    trainer = engine.trainer(SPEC, make_optimizer("momentum", 0.05, momentum=0.9))
    ts = trainer.init(init_params(SPEC, D, K, key=SEED, dtype="float32"), {})
    Xd, yd = engine.asarray(X), engine.put_labels(Y)
    order = np.concatenate([epoch_order(SEED, e, N) for e in range(-(-STEPS * BATCH // N))])
    half = STEPS // 2
    ts, first = trainer.run(ts, Xd, yd, order, BATCH, 0, half, 0, SEED)
    ts, second = trainer.run(ts, Xd, yd, order, BATCH, half, STEPS - half, half, SEED)
    return np.concatenate([np.asarray(first), np.asarray(second)]), trainer.to_numpy(ts)


def assert_close(got, ref, what):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * float(np.max(np.abs(ref))), err_msg=what)


@pytest.mark.parametrize("engine_name", ["jax", "torch", "tensorflow"])
def test_gpu_run_equals_cpu_run(engine_name):
    if not is_available(engine_name):
        pytest.skip(f"{engine_name} is not installed")
    if "gpu" not in get_engine(engine_name, device="cpu").capabilities:
        pytest.skip(f"{engine_name} sees no GPU (a CPU-only build?)")
    cpu_losses, cpu = trajectory(engine_name, "cpu")
    with full_float32(engine_name):
        gpu_losses, gpu = trajectory(engine_name, "gpu")
    assert np.all(np.isfinite(cpu_losses)) and cpu_losses[-1] < cpu_losses[0]  # it trained
    assert_close(gpu_losses, cpu_losses, f"{engine_name}: losses")
    assert sorted(gpu.params) == sorted(cpu.params)
    for name in cpu.params:
        assert_close(gpu.params[name], cpu.params[name], f"{engine_name}: {name}")
    gpu_opt, cpu_opt = flatten(gpu.opt_state)[0], flatten(cpu.opt_state)[0]
    assert len(gpu_opt) == len(cpu_opt)
    for i, (g, c) in enumerate(zip(gpu_opt, cpu_opt)):
        assert_close(g, c, f"{engine_name}: optimizer state leaf {i}")
