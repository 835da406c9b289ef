"""Engine registry: engines are chosen per call and imported lazily.

``get_engine("numpy")`` returns a fresh engine object; nothing is fixed
globally, so one process can run several engines side by side (``bench``).
"""

from __future__ import annotations

import importlib
import importlib.util

from descend.engines.base import Engine, Trainer
from descend.errors import ConfigError, EngineNotInstalled

# engine name -> (module defining ENGINE_CLASS, library that must be importable, pip extra)
_REGISTRY = {
    "numpy": ("descend.engines.numpy_engine", "numpy", None),
    "jax": ("descend.engines.jax_engine", "jax", "jax"),
    "torch": ("descend.engines.torch_engine", "torch", "torch"),
    "tensorflow": ("descend.engines.tensorflow_engine", "tensorflow", "tensorflow"),
    "pytensor": ("descend.engines.pytensor_engine", "pytensor", "pytensor"),
}
ENGINES = tuple(_REGISTRY)
DEVICES = ("auto", "cpu", "gpu")


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def is_available(name: str) -> bool:
    """Whether engine ``name`` is implemented and its library installed."""
    module, library, _ = _REGISTRY[name]
    return _module_exists(module) and _module_exists(library)


def available_engines() -> list[str]:
    return [name for name in ENGINES if is_available(name)]


def nvidia_gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU with its driver loaded, checked without importing any engine.

    Cheap (a few file-system look-ups), so GPU tests and checks can ask it
    before paying for an engine's import; an engine may still see no GPU (a
    CPU-only build of its library), which its ``capabilities`` tell.
    """
    import glob
    import shutil

    return bool(glob.glob("/proc/driver/nvidia/gpus/*") or glob.glob("/dev/nvidia[0-9]*")
                or shutil.which("nvidia-smi"))


def default_engine() -> str:
    """The fastest installed engine: JAX when present, else the NumPy reference."""
    return "jax" if is_available("jax") else "numpy"


# Multiply-adds per optimizer step above which a second thread pays off in the compiled
# engines: 256 rows of 784-300-10 (the measured break-even on 2 cores).
PARALLEL_MACS = 256 * (784 * 300 + 300 * 10)


def default_threads(engine: str, batch_size: int, macs_per_row: int | None = None, cores: int | None = None) -> int:
    """The ``--threads`` default: every core when a step is big enough to split, else one.

    For 784-300-10 that is the measured rule "both cores for batch >= 256, one
    below": a smaller step's matrix products are too short for a second thread
    to pay for itself.  Wider networks cross the line at smaller batches
    (``macs_per_row`` = multiply-adds of one row's forward pass).  The NumPy
    engine always gets every core: OpenBLAS splits even a 100-row product
    profitably (784-500-300-10 at batch 100: 1.77 s/epoch on one thread, 1.18 s
    on two).
    """
    import os

    cores = cores or os.cpu_count() or 1
    engine = engine.partition(":")[0]
    if engine == "auto":
        engine = default_engine()
    work = batch_size * (macs_per_row if macs_per_row is not None else 784 * 300 + 300 * 10)
    return cores if engine == "numpy" or work >= PARALLEL_MACS else 1


VARIANTS = {"pytensor": ("c", "numba"), "tensorflow": ("xla", "noxla")}


def get_engine(name: str = "auto", *, device: str = "auto", dtype: str = "float32", threads: int | None = None) -> Engine:
    """Build engine ``name`` ("auto" = ``default_engine()``) on ``device``.

    ``name`` may carry a variant after a colon: ``pytensor:numba`` (default
    ``pytensor:c``, the C backend) or ``tensorflow:noxla`` (default ``xla``).
    """
    full = name
    name, _, variant = name.partition(":")
    if name == "auto":
        name = default_engine()
    if variant and variant not in VARIANTS.get(name, ()):
        known = ", ".join(f"{n}:{v}" for n, vs in VARIANTS.items() for v in vs)
        raise ConfigError(f"`engine` variant must be one of {known}. Received: engine={full!r}")
    if name not in _REGISTRY:
        raise ConfigError(f"`engine` must be one of {('auto',) + ENGINES}. Received: engine={name!r}")
    if device not in DEVICES:
        raise ConfigError(f"`device` must be one of {DEVICES}. Received: device={device!r}")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"`dtype` must be 'float32' or 'float64'. Received: dtype={dtype!r}")
    module, library, extra = _REGISTRY[name]
    if not _module_exists(library):
        raise EngineNotInstalled(f"engine {name!r} is not installed: pip install \"descend[{extra}]\"")
    if not _module_exists(module):
        raise EngineNotInstalled(f"engine {name!r} is not implemented in this version of descend")
    kwargs = {"variant": variant} if variant else {}
    return importlib.import_module(module).ENGINE_CLASS(device=device, dtype=dtype, threads=threads, **kwargs)


__all__ = ["DEVICES", "ENGINES", "Engine", "Trainer", "available_engines", "default_engine", "default_threads",
           "get_engine", "is_available", "nvidia_gpu_present"]
