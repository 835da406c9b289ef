"""Experiments built on the training layer: compare, search, ensemble, bench, pca."""
