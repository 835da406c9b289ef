"""descend: practical deep learning on image-classification data.

Train neural networks fast, and see how they train.  The layers, from the top:
``cli`` -> ``experiments`` -> ``train`` -> ``engines`` -> ``model``/``optim`` ->
``backend`` (the per-library ``ops`` namespaces) and ``data``; ``io`` and
``reports`` write what a run produces.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
