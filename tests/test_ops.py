"""The five ``ops`` namespaces: the same names, and the same convolution and pooling.

Convolution and pooling are checked against loops written straight from the
definition (NHWC images, HWIO kernels, "same" pads of (k-1)//2 before and k//2
after, "valid" windows only), in float64, on every installed backend.
"""

from __future__ import annotations

import importlib.util
import inspect

import numpy as np
import pytest

from descend.backend import get_ops

BACKENDS = [name for name in ("numpy", "jax", "torch", "tensorflow", "pytensor")
            if importlib.util.find_spec(name) is not None]
_rng = np.random.default_rng(0)
X = _rng.standard_normal((2, 7, 6, 3))
W = _rng.standard_normal((4, 4, 3, 5))


def public_names(module) -> set[str]:
    """Functions and constants a namespace offers (not the modules and helpers it imports)."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)
            and getattr(value, "__module__", module.__name__) != "__future__"
            and name not in {"annotations", "RngChain", "to_dtype"}}


def test_every_ops_namespace_exposes_the_same_names():
    reference = public_names(get_ops("numpy"))
    assert {"conv2d", "max_pool2d", "avg_pool2d", "reshape", "flatten", "matmul", "keep_mask"} <= reference
    for name in BACKENDS:
        missing = reference - public_names(get_ops(name))
        assert not missing, f"{name} lacks {sorted(missing)}"


def reference_conv(x, w, stride, padding):
    k = w.shape[0]
    lo, hi = ((k - 1) // 2, k // 2) if padding == "same" else (0, 0)
    xp = np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    oh, ow = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j, :] = np.einsum("nabc,abcf->nf", patch, w)
    return out


def reference_pool(x, size, stride, reduce):
    oh, ow = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j, :] = reduce(x[:, i * stride:i * stride + size, j * stride:j * stride + size, :], axis=(1, 2))
    return out


def evaluate(name, build, *arrays):
    """``build(ops, *inputs)`` on backend ``name`` in float64, as NumPy."""
    ops = get_ops(name)
    if name == "pytensor":
        import pytensor
        import pytensor.tensor as pt

        inputs = [pt.tensor(dtype="float64", shape=a.shape) for a in arrays]
        return np.asarray(pytensor.function(inputs, build(ops, *inputs))(*arrays))
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return ops.to_numpy(build(ops, *(ops.asarray(a) for a in arrays)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride, padding", [(1, "same"), (2, "same"), (1, "valid"), (3, "valid")])
def test_conv2d_matches_the_definition(backend, stride, padding):
    got = evaluate(backend, lambda ops, x, w: ops.conv2d(x, w, stride, padding), X, W)
    expected = reference_conv(X, W, stride, padding)
    assert got.shape == expected.shape
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, "same"), (4, 2, "same"), (2, 1, "valid"), (3, 3, "valid")])
def test_im2col_rows_are_the_windows_in_hwio_order_into_a_given_buffer_too(kernel, stride, padding, channels):
    from descend.backend import windows

    x = np.random.default_rng(4).standard_normal((2, 7, 6, channels))
    lo, hi = windows.conv_pads(kernel, padding)
    xp = np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    oh, ow = windows.conv_out(7, kernel, stride, padding), windows.conv_out(6, kernel, stride, padding)
    expected = np.array([xp[n, i * stride:i * stride + kernel, j * stride:j * stride + kernel, :].ravel()
                         for n in range(2) for i in range(oh) for j in range(ow)])
    cols, got_h, got_w = windows.im2col(x, kernel, stride, padding)
    assert (got_h, got_w) == (oh, ow) and np.array_equal(cols, expected)
    size = windows.im2col_size(x.shape, kernel, stride, padding)
    assert size == expected.size
    buf = np.full(size, np.nan)
    cols, _, _ = windows.im2col(x, kernel, stride, padding, out=buf)
    assert np.shares_memory(cols, buf) and np.array_equal(cols, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_bias_adds_one_value_per_channel(backend):
    b = np.arange(1.0, W.shape[3] + 1)
    z = reference_conv(X, W, 1, "same")
    assert np.array_equal(evaluate(backend, lambda ops, z, b: ops.add_bias(z, b), z, b), z + b)


def test_jax_add_bias_gradient_sums_the_output_gradient_over_every_pixel():
    import jax

    jax.config.update("jax_enable_x64", True)
    ops = get_ops("jax")
    rng = np.random.default_rng(5)
    z, b, r = rng.standard_normal((3, 4, 5, 6)), rng.standard_normal(6), rng.standard_normal((3, 4, 5, 6))
    dz, db = jax.grad(lambda z, b: (ops.add_bias(z, b) * r).sum(), argnums=(0, 1))(z, b)
    assert np.array_equal(np.asarray(dz), r)
    np.testing.assert_allclose(np.asarray(db), r.sum(axis=(0, 1, 2)), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size, stride", [(2, 2), (3, 2), (2, 1)])
def test_pooling_matches_the_definition(backend, size, stride):
    got = evaluate(backend, lambda ops, x: ops.max_pool2d(x, size, stride), X)
    assert np.array_equal(got, reference_pool(X, size, stride, np.max))
    got = evaluate(backend, lambda ops, x: ops.avg_pool2d(x, size, stride), X)
    assert np.allclose(got, reference_pool(X, size, stride, np.mean), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reshape_and_flatten_are_row_major(backend):
    rows = X.reshape(2, -1)
    assert np.array_equal(evaluate(backend, lambda ops, x: ops.reshape(x, (-1, 7, 6, 3)), rows), X)
    assert np.array_equal(evaluate(backend, lambda ops, x: ops.flatten(x), X), rows)


@pytest.mark.parametrize("kernel, stride, padding", [(5, 1, "same"), (4, 2, "same"), (3, 3, "valid"), (4, 1, "valid")])
def test_tensorflow_conv2d_gradients_in_a_compiled_loop_equal_tensorflows_own(kernel, stride, padding):
    """conv2d's own gradient (XLA's is slow inside the engine's while_loop) against TensorFlow's conv gradient."""
    import tensorflow as tf

    ops = get_ops("tensorflow")
    rng = np.random.default_rng(2)
    xs = tf.constant(rng.standard_normal((2, 3, 9, 8, 4)))
    w = tf.constant(rng.standard_normal((kernel, kernel, 4, 6)))
    lo, hi = ((kernel - 1) // 2, kernel // 2) if padding == "same" else (0, 0)

    def looped(conv):
        def body(j, total, dxs):
            x = xs[j]
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                loss = tf.reduce_sum(tf.tanh(conv(x, w)))
            dx, dw = tape.gradient(loss, [x, w])
            return j + 1, total + dw, dxs.write(j, dx)

        def run():
            _, dw, dxs = tf.while_loop(lambda j, *_: j < 2, body,
                                       (0, tf.zeros_like(w), tf.TensorArray(tf.float64, size=2)))
            return dw, dxs.stack()

        dw, dx = tf.function(run, jit_compile=True, autograph=False)()
        return dw.numpy(), dx.numpy()

    dw, dx = looped(lambda x, w_: ops.conv2d(x, w_, stride, padding))
    dw_tf, dx_tf = looped(lambda x, w_: tf.nn.conv2d(x, w_, stride, [[0, 0], [lo, hi], [lo, hi], [0, 0]]))
    np.testing.assert_allclose(dw, dw_tf, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_tf, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 7, 6, 3), (3, 8, 8, 2)])
def test_jax_max_pool_gradient_goes_to_the_first_maximum_like_numpys(shape):
    """JAX's non-overlapping max pool has its own backward pass: on ties (rounded values) and cropped edges
    it sends each window's gradient where the NumPy reference's does."""
    import jax

    from descend.engines.numpy_backprop import VJPS
    from descend.model import MaxPool2D

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal(shape))  # many exact ties in each window
    layer = MaxPool2D(2)
    y, _, cache = VJPS[MaxPool2D].forward(layer, {}, {}, x, True, None)
    dy = rng.standard_normal(y.shape)
    expected, _ = VJPS[MaxPool2D].backward(layer, {}, cache, dy, True)
    ops = get_ops("jax")
    got_y, vjp = jax.vjp(lambda a: ops.max_pool2d(a, 2), jax.numpy.asarray(x))
    assert np.array_equal(np.asarray(got_y), y)
    assert np.array_equal(np.asarray(vjp(jax.numpy.asarray(dy))[0]), expected)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size, stride, shape", [(2, 2, (2, 7, 6, 3)), (3, 2, (3, 8, 8, 2)), (3, 1, (2, 5, 6, 2))])
def test_pytensor_pooling_gradients_are_numpys(kind, size, stride, shape):
    """PyTensor's poolings are ops with their own gradient ops: values and gradients equal the NumPy
    reference's to the last bit, ties included (a max window's gradient goes to its first maximum, where
    PyTensor's own ``max`` would split it among the tied pixels)."""
    import pytensor
    import pytensor.tensor as pt

    from descend.engines.numpy_backprop import VJPS
    from descend.model import AvgPool2D, MaxPool2D

    rng = np.random.default_rng(4)
    x = np.round(rng.standard_normal(shape))
    layer_type = MaxPool2D if kind == "max" else AvgPool2D
    layer = layer_type(size, stride)
    y, _, cache = VJPS[layer_type].forward(layer, {}, {}, x, True, None)
    dy = rng.standard_normal(y.shape)
    expected, _ = VJPS[layer_type].backward(layer, {}, cache, dy, True)
    xs, gs = pt.tensor4(dtype="float64", shape=shape), pt.tensor4(dtype="float64", shape=y.shape)
    pool = get_ops("pytensor").max_pool2d if kind == "max" else get_ops("pytensor").avg_pool2d
    out = pool(xs, size, stride)
    got_y, got_dx = pytensor.function([xs, gs], [out, pytensor.grad(pt.sum(out * gs), xs)])(x, dy)
    assert np.array_equal(got_y, y)
    assert np.array_equal(got_dx, expected)


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, "same"), (4, 2, "same"), (3, 2, "valid"), (2, 3, "valid")])
def test_pytensor_conv2d_gradients_are_its_adjoints(kernel, stride, padding):
    """conv2d is linear in each argument, so its gradient ops must satisfy <conv(x, w), g> = <x, dx> = <w, dw>
    for every x and w (two random draws of each), and match the NumPy reference's VJP."""
    import pytensor
    import pytensor.tensor as pt

    from descend.engines.numpy_backprop import VJPS
    from descend.model import Conv2D

    rng = np.random.default_rng(5)
    shape, wshape = (3, 7, 6, 2), (kernel, kernel, 2, 4)
    xs, ws = pt.tensor4(dtype="float64", shape=shape), pt.tensor4(dtype="float64", shape=wshape)
    y = get_ops("pytensor").conv2d(xs, ws, stride, padding)
    gs = pt.tensor4(dtype="float64", shape=y.type.shape)
    dx, dw = pytensor.grad(pt.sum(y * gs), [xs, ws])
    fn = pytensor.function([xs, ws, gs], [y, dx, dw])
    g = rng.standard_normal(y.type.shape)
    layer = Conv2D(4, kernel, stride=stride, padding=padding, bias=False)
    for _ in range(2):
        x, w = rng.standard_normal(shape), rng.standard_normal(wshape)
        got_y, got_dx, got_dw = fn(x, w, g)
        np.testing.assert_allclose(got_y, reference_conv(x, w, stride, padding), rtol=1e-12, atol=1e-12)
        inner = np.sum(got_y * g)
        assert np.sum(x * got_dx) == pytest.approx(inner, rel=1e-12)
        assert np.sum(w * got_dw) == pytest.approx(inner, rel=1e-12)
        _, _, cache = VJPS[Conv2D].forward(layer, {"W": w}, {}, x, True, None)
        ref_dx, ref = VJPS[Conv2D].backward(layer, {"W": w}, cache, g, True)
        np.testing.assert_allclose(got_dx, ref_dx, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_dw, ref["W"], rtol=1e-12, atol=1e-12)
