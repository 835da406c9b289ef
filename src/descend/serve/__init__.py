"""``descend serve``: a prediction service (FastAPI on uvicorn) and a web page to draw a digit.

:mod:`descend.serve.preprocess` (NumPy only) holds the MNIST-style
preprocessing shared with the page; :mod:`descend.serve.app` (needs the
``serve`` extra: ``pip install "descend[serve]"``) the service itself.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name):
    if name in __all__:
        from descend.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'descend.serve' has no attribute {name!r}")
