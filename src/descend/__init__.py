"""descend: practical deep learning on image-classification data.

Train neural networks fast, and see how they train.  The layers, from the top:
``cli`` -> ``experiments`` -> ``train`` -> ``engines`` -> ``model``/``optim`` ->
``backend`` (the per-library ``ops`` namespaces) and ``data``; ``io`` and
``reports`` write what a run produces.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]  # the lazy names below stay out: `import *` must not need scikit-learn

# Heavy or optional parts load on first use, so ``import descend`` stays light:
# ``descend.MLPClassifier`` / ``MLPRegressor`` need scikit-learn, ``descend.ensemble`` multiprocessing and plots.
_LAZY = {"MLPClassifier": ("descend.estimator", "MLPClassifier"),
         "MLPRegressor": ("descend.estimator", "MLPRegressor"),
         "ensemble": ("descend.experiments.ensemble", None)}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        value = getattr(value, attr) if attr else value
        globals()[name] = value
        return value
    raise AttributeError(f"module 'descend' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
