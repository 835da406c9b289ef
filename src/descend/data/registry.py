"""Datasets known by name: where their files live and how to verify them.

Hashes are of the *decompressed* payload so that a mirror which re-compresses
the files (different gzip header, level or timestamp) still verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FER2013 = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class RemoteDataset:
    """A named dataset: its files (name -> SHA-256 or None), public base URLs, labels."""

    name: str
    format: str
    files: Mapping[str, str | None]
    urls: tuple[str, ...]
    classes: tuple[str, ...]
    image_shape: tuple[int, int]


REGISTRY: Mapping[str, RemoteDataset] = MappingProxyType({
    "mnist": RemoteDataset(
        name="mnist",
        format="idx",
        files=MappingProxyType(dict(zip(MNIST_FILES, (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        )))),
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        classes=DIGITS,
        image_shape=(28, 28),
    ),
    "fashion-mnist": RemoteDataset(
        name="fashion-mnist",
        format="idx",
        files=MappingProxyType(dict(zip(MNIST_FILES, (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        )))),
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=FASHION,
        image_shape=(28, 28),
    ),
    # A user file with no public source: reachable by name only through
    # DESCEND_MIRROR or the cache, and checked by schema instead of a hash.
    "fer2013": RemoteDataset(
        name="fer2013",
        format="fer2013",
        files=MappingProxyType({"fer2013.csv.gz": None}),
        urls=(),
        classes=FER2013,
        image_shape=(48, 48),
    ),
})
