"""Data: loaders (IDX, Kaggle digits, FER2013, generic CSV, NPZ), registry, cache, splits.

>>> from descend.data import load, Normalizer
>>> ds = load("mnist")                    # doctest: +SKIP
>>> norm = Normalizer("scale").fit(ds.train.X)
"""

from descend.data.dataset import Dataset, Split, dataset_info
from descend.data.download import fetch
from descend.data.loaders import FORMATS, load
from descend.data.preprocess import Normalizer
from descend.data.registry import REGISTRY

__all__ = ["FORMATS", "REGISTRY", "Dataset", "Normalizer", "Split", "dataset_info", "fetch",
           "load"]
