"""How many compute threads a worker's libraries use: one list of variables, set before they load.

BLAS, OpenMP, NumExpr, TensorFlow and XLA read their thread counts from the
environment when they start, so a worker process gets them in the environment
it is started with; :func:`limit_threads` also caps the BLAS / OpenMP pools of
libraries already loaded in a process (threadpoolctl).
"""

from __future__ import annotations

import contextlib
import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS")


def thread_settings(threads: int, base: dict | None = None) -> dict:
    """The variables that limit every library to ``threads`` threads, given environment ``base``.

    XLA takes its CPU thread count from ``XLA_FLAGS``; a thread count the user
    already set there wins, and other flags are kept.
    """
    base = os.environ if base is None else base
    settings = {name: str(threads) for name in THREAD_VARIABLES}
    flags = base.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        eigen = "true" if threads > 1 else "false"
        flags = f"{flags} --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}".strip()
    settings["XLA_FLAGS"] = flags
    return settings


def thread_environment(threads: int, base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with every library limited to ``threads`` threads."""
    env = dict(os.environ if base is None else base)
    env.update(thread_settings(threads, env))
    return env


@contextlib.contextmanager
def environment(values: dict):
    """This process's environment updated with ``values`` while the block runs (children inherit it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def limit_threads(threads: int):
    """Limit this process to ``threads`` compute threads; returns the threadpoolctl limiter.

    The environment is set for libraries not loaded yet (XLA only before
    ``jax`` is imported: it reads its flags once); threadpoolctl caps the BLAS
    and OpenMP pools already running.
    """
    settings = thread_settings(threads)
    if "jax" in sys.modules:
        del settings["XLA_FLAGS"]
    os.environ.update(settings)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(threads)
