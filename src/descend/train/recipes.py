"""Named, documented training recipes: ``descend train mnist --recipe dropout``.

A recipe is a set of TrainConfig values; options given explicitly on the
command line override it, and the resolved config (with the recipe's name) is
stored in the run's config.json.  Published references for MNIST test error
with fully connected networks: lisa-lab MLP 1.65%, Simard et al. 2003 1.6%,
Srivastava et al. 2014 dropout 1.25%, 1.06% with max-norm.
"""

from __future__ import annotations

from descend.errors import ConfigError

RECIPES: dict[str, tuple[str, dict]] = {
    "baseline": (
        "Fast: 784-500-300-10 ReLU, Nesterov momentum with exponential decay, 20 epochs (the default).",
        {},
    ),
    "dropout": (
        "Srivastava et al. 2014: 784-1024-1024-10 ReLU, dropout keep 0.8 (input) / 0.5 / 0.5, max-norm 3.0, "
        "Nesterov momentum 0.95 with exponential decay, batch 100, 150 epochs, plain patience early stopping "
        "switched off so the decayed rate can settle; 59,000 training rows (1,000 held out for validation), "
        "since a dropout network keeps gaining from data where selection needs little.",
        {"hidden": (1024, 1024), "dropout_keep": (0.8, 0.5, 0.5), "max_norm": 3.0, "optimizer": "nesterov",
         "lr": 0.05, "momentum": 0.95, "schedule": "exponential:0.02", "batch_size": 100, "epochs": 150,
         "early_stopping": "none", "validation": 1000},
    ),
    "batchnorm": (
        "Ioffe & Szegedy 2015: 784-500-300-10 ReLU with batch normalisation before each activation, "
        "Nesterov momentum at a higher rate, 20 epochs.",
        {"hidden": (500, 300), "batchnorm": True, "optimizer": "nesterov", "lr": 0.1, "momentum": 0.9,
         "schedule": "exponential:0.15", "batch_size": 100, "epochs": 20},
    ),
    "lenet": (
        "A modern LeNet for 28x28 digits, no augmentation: conv 5x5x32 'same' + ReLU, max-pool 2, dropout keep "
        "0.75, conv 5x5x64 'same' + ReLU, max-pool 2, dropout keep 0.75, dense 512 ReLU with dropout keep 0.5, "
        "output layer; Adam 1e-3 decaying exponentially (x0.9 an epoch), batch 128, 15 epochs, best validation "
        "weights kept.",
        {"layers": "conv:32:5,pool:2,drop:0.75,conv:64:5,pool:2,drop:0.75,dense:512,drop:0.5", "hidden": (),
         "optimizer": "adam",
         "lr": 1e-3, "schedule": "exponential:0.1", "batch_size": 128, "epochs": 15,
         "early_stopping": "patience", "patience": 10},
    ),
    "mnist-cnn": (
        "A small VGG-style CNN for 28x28 digits, with augmentation: two blocks of two 3x3 'same' convolutions "
        "(32, then 64 channels), each with batch normalisation before its ReLU, max-pool 2 and dropout keep 0.75 "
        "after each block, dense 256 with batch normalisation and dropout keep 0.5, output layer; training rows "
        "shifted by up to 2 pixels and rotated by up to 10 degrees; Adam 1e-3 with a one-epoch linear warmup, "
        "then cosine decay to 0, batch 128, 20 epochs, 55,000 training rows (5,000 held out for validation), "
        "best validation weights kept.",
        {"layers": "conv:32:3,bn,conv:32:3,bn,pool:2,drop:0.75,conv:64:3,bn,conv:64:3,bn,pool:2,drop:0.75,"
                   "dense:256,bn,drop:0.5",
         "hidden": (), "augment": "shift:2,rotate:10", "optimizer": "adam", "lr": 1e-3, "schedule": "cosine:1",
         "batch_size": 128, "epochs": 20, "validation": 5000, "early_stopping": "patience", "patience": 20},
    ),
    "fer2013": (
        "FER2013 (48x48 faces, 7 emotions): per-pixel standardisation, the rare Disgust class (and the other "
        "small ones) oversampled to the median class size as the curriculum repeats it, 2304-1024-512-7 ReLU "
        "with dropout 0.8/0.5/0.5 and max-norm, Adam with exponential decay, best PublicTest weights kept.",
        {"hidden": (1024, 512), "dropout_keep": (0.8, 0.5, 0.5), "max_norm": 4.0, "normalize": "standardize",
         "balance": "oversample", "optimizer": "adam", "lr": 2e-4, "schedule": "exponential:0.03",
         "batch_size": 128, "epochs": 40, "early_stopping": "patience", "patience": 10},
    ),
    "fer2013-cnn": (
        "FER2013 (48x48 faces, 7 emotions) with a VGG-style CNN: per-pixel standardisation, conv 3x3x32, then "
        "two blocks of two 3x3 convolutions (64, then 128 channels), every convolution with batch normalisation "
        "before its ReLU, max-pool 2 after the first convolution and after each block, dropout keep 0.75 after "
        "the blocks, dense 256 with batch normalisation and dropout keep 0.5, output layer; training faces "
        "shifted by up to 4 pixels, mirrored half of the time and rotated by up to 10 degrees; Adam 1e-3 with a "
        "one-epoch warmup, then cosine decay to 0, label smoothing 0.1, batch 128, 35 epochs, best PublicTest "
        "weights kept.",
        {"layers": "conv:32:3,bn,pool:2,conv:64:3,bn,conv:64:3,bn,pool:2,drop:0.75,conv:128:3,bn,conv:128:3,bn,"
                   "pool:2,drop:0.75,dense:256,bn,drop:0.5",
         "hidden": (), "normalize": "standardize", "augment": "shift:4,flip,rotate:10", "optimizer": "adam",
         "lr": 1e-3, "schedule": "cosine:1", "label_smoothing": 0.1, "batch_size": 128, "epochs": 35,
         "early_stopping": "patience", "patience": 35},
    ),
}


def recipe_values(name: str) -> dict:
    if name not in RECIPES:
        raise ConfigError(f"`recipe` must be one of {tuple(RECIPES)}. Received: recipe={name!r}")
    return dict(RECIPES[name][1])


def describe() -> str:
    return "\n".join(f"{name}: {text}" for name, (text, _) in RECIPES.items())
