"""Per-library ``ops`` namespaces: the small vocabulary model and optim are written in.

Each supported array library has a module here exposing the same functions
(``matmul``, ``exp``, ``log``, ``sqrt``, ``where``, ``sum``...).  The model and
the optimizers are written once against that surface and run eagerly (NumPy,
PyTorch), traced (JAX, TensorFlow) or built symbolically (PyTensor).

Modules are imported lazily: importing descend never imports JAX or PyTorch.
``namespace_of(x)`` picks the namespace from an array's type, as the Array API's
``array_namespace`` does, so optimizer code needs no ``ops`` argument.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {
    "numpy": "descend.backend.numpy_ops",
    "jax": "descend.backend.jax_ops",
    "torch": "descend.backend.torch_ops",
    "tensorflow": "descend.backend.tensorflow_ops",
    "pytensor": "descend.backend.pytensor_ops",
}

# The top-level package of an array's type, mapped to the ops that handle it.
_TYPE_ROOTS = {
    "numpy": "numpy",
    "builtins": "numpy",
    "jax": "jax",
    "jaxlib": "jax",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "pytensor": "pytensor",
}


def get_ops(name: str) -> ModuleType:
    """Return the ops namespace of library ``name`` ("numpy", "jax", "torch", ...)."""
    try:
        module = _MODULES[name]
    except KeyError:
        raise ValueError(f"unknown ops namespace {name!r}; known: {sorted(_MODULES)}") from None
    return importlib.import_module(module)


def namespace_of(*arrays) -> ModuleType:
    """The ops namespace for the first argument that is an array (NumPy for scalars)."""
    for x in arrays:
        if x is None:
            continue
        root = type(x).__module__.partition(".")[0]
        if root == "builtins" or root == "numpy":
            continue
        name = _TYPE_ROOTS.get(root)
        if name is not None:
            return get_ops(name)
    return get_ops("numpy")
