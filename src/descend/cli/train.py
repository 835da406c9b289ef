"""``descend train``: build a TrainConfig from the options and call run_training."""

from __future__ import annotations

import argparse
import signal

from descend.cli.main import HelpFormatter, parse_positive_int
from descend.errors import ConfigError
from descend.model.augment import HELP as AUGMENT_HELP
from descend.model.parse import GRAMMAR
from descend.optim import OPTIMIZERS
from descend.train import TrainConfig, run_training
from descend.data.targets import TASK_RULE, TASKS
from descend.model.layers import INITS, NORMAL_STD
from descend.train.config import BALANCING, EARLY_STOPPING, MONITORS, NORMALIZATIONS, SAMPLINGS
from descend.train.recipes import RECIPES, recipe_values

D = TrainConfig()


def _hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 500,300 (or 'none'), got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return sizes


def _batch(text: str) -> int:
    return 0 if text.lower() == "full" else parse_positive_int(text, "a positive integer or 'full'")


def _components(text: str) -> int:
    return parse_positive_int(text, "a positive integer number of components")


def _targets(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names like price or x,y, got {text!r}")
    return names


def _keeps(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected keep probabilities like 0.8,0.5,0.5, got {text!r}") from None


LAYERS_HELP = (
    "the network as comma-separated tokens, e.g. conv:32:5,pool:2,conv:64:5,pool:2,dense:512 (instead of "
    f"--hidden); tokens: {GRAMMAR}. conv:F:K[:S][:valid] is F filters of KxK, stride S, 'same' padding unless "
    "valid; pool/avgpool:K[:S] pool KxK windows every S pixels (default K); drop:KEEP keeps units with "
    "probability KEEP. Every conv and dense layer is followed by --activation unless the next token (after its "
    "bn, if any) is an activation; bn right after conv/dense sits before the activation. Images are flattened "
    "before the first dense layer, and the output layer (one unit per class) is added at the end")


def network_values(values: dict, typed: set[str], recipe_layers: bool = False) -> dict:
    """``values`` with the network options settled: ``--layers`` and ``--hidden`` are alternatives.

    Both typed is an error; ``--hidden`` typed over a recipe's ``layers``
    replaces them; with ``layers`` the MLP shorthand's sizes are cleared so
    config.json names one network.
    """
    if values.get("layers") is None:
        return values
    if "hidden" in typed:
        if "layers" in typed or not recipe_layers:
            raise ConfigError(f"`--layers` and `--hidden` cannot be combined (--hidden is the shorthand for dense "
                              f"layers only). Received: layers={values['layers']!r}, hidden={values['hidden']}")
        return {**values, "layers": None}
    return {**values, "hidden": ()}


def _lr_or_auto(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate or 'auto', got {text!r}") from None


def add_network_options(g, *, epochs_help: str = "passes over the training rows", lr_auto: bool = False) -> None:
    """The network and optimizer options shared by train, search and ensemble (defaults from TrainConfig).

    ``lr_auto`` lets ``--lr auto`` ask for the learning-rate range test's suggestion.
    """
    g.add_argument("--format", default=None, help="file format when it cannot be sniffed (kaggle, fer2013, csv, npz, idx)")
    g.add_argument("--target", type=_targets, default=D.target, metavar="COL[,COL...]",
                   help="a CSV's target column(s) (default: the 'label' column); several columns are a regression "
                        "with one output each")
    g.add_argument("--task", choices=TASKS, default=D.task,
                   help=f"what to learn; by default {TASK_RULE}. Regression standardizes the targets with the "
                        "training rows' mean and standard deviation (undone at prediction), trains on the mean "
                        "squared error and reports RMSE, MAE and R^2")
    g.add_argument("--hidden", type=_hidden, default=D.hidden,
                   help="multilayer perceptron shorthand: hidden layer sizes, e.g. 500,300 ('none' = logistic regression)")
    g.add_argument("--layers", default=None, metavar="TOKENS", help=LAYERS_HELP)
    g.add_argument("--activation", choices=("relu", "tanh", "sigmoid"), default=D.activation, help="hidden-layer activation")
    g.add_argument("--init", choices=INITS, default=D.init,
                   help=f"initial weights: he, glorot, or normal (N(0, {NORMAL_STD:g}^2) for weights and biases); by default "
                        "the one that suits each layer's activation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=D.optimizer, metavar="NAME",
                   help=f"one of {', '.join(OPTIMIZERS)}")
    if lr_auto:
        g.add_argument("--lr", type=_lr_or_auto, default=D.lr,
                       help="learning rate (initial, with a schedule); 'auto' runs `descend lr-find` first and "
                            "trains with its suggestion, recorded in config.json")
    else:
        g.add_argument("--lr", type=float, default=D.lr, help="learning rate (initial, with a schedule)")
    g.add_argument("--momentum", type=float, default=D.momentum, help="momentum for momentum / nesterov / +nesterov")
    g.add_argument("--batch-size", type=_batch, default=D.batch_size, help="mini-batch size; 1 = stochastic, 'full' = full batch")
    g.add_argument("--sampling", choices=SAMPLINGS, default=D.sampling,
                   help="shuffle: every training row once an epoch, in a new order; replacement: each batch's rows "
                        "drawn with replacement (the batch may then be larger than the training set)")
    g.add_argument("--epochs", type=int, default=D.epochs, help=epochs_help)
    g.add_argument("--schedule", default=D.schedule,
                   help="constant | step:FACTOR:EVERY | exponential:K | inverse:K | cosine[:WARMUP[:LR_MIN]] | "
                        "plateau[:FACTOR[:PATIENCE]]")
    g.add_argument("--schedule-unit", choices=("epoch", "step"), default=D.schedule_unit, help="what t counts in the schedule")
    g.add_argument("--l1", type=float, default=D.l1, help="L1 penalty on weight matrices")
    g.add_argument("--l2", type=float, default=D.l2, help="L2 penalty (l2/2 * sum W^2) on weight matrices")
    g.add_argument("--dropout-keep", type=_keeps, default=D.dropout_keep, metavar="P0,P1,...",
                   help="dropout keep probabilities: the input's, then each hidden layer's (e.g. 0.8,0.5,0.5)")
    g.add_argument("--batchnorm", action="store_true", help="batch normalisation before each hidden activation")
    g.add_argument("--max-norm", type=float, default=D.max_norm,
                   help="cap on each unit's incoming weight norm (0 = off)")
    g.add_argument("--augment", default=D.augment, metavar="TOKENS", help=AUGMENT_HELP)
    g.add_argument("--clip-norm", type=float, default=D.clip_norm, metavar="C",
                   help="scale each step's gradient to global L2 norm at most C (all parameters together), "
                        "before the optimizer's rule (0 = off)")
    g.add_argument("--label-smoothing", type=float, default=D.label_smoothing, metavar="E",
                   help="train on the targets (1-E)*onehot + E/K over the K classes, E in [0, 1); the "
                        "validation and test costs stay the plain cross-entropy (0 = off)")


def add_pca_option(g, where: str, default=D.pca) -> None:
    """``--pca K``: inputs become their first K principal components (fitted on training rows only)."""
    g.add_argument("--pca", type=_components, default=default, metavar="K",
                   help="after --normalize, project onto the first K principal components and standardize them "
                        f"(fitted on training rows only; {where})")


def add_compute_options(g) -> None:
    """Where and how precisely to compute: engine, device, dtype."""
    g.add_argument("--engine", default=D.engine, help="numpy, jax, torch, tensorflow, pytensor or auto")
    g.add_argument("--device", choices=("auto", "cpu", "gpu"), default=D.device, help="where to compute")
    g.add_argument("--dtype", choices=("float32", "float64"), default=D.dtype, help="floating-point precision")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network and write a run directory",
                       description="Train a network on DATASET (mnist, fashion-mnist, or a CSV / NPZ / IDX file) "
                                   "and write runs/<date>-<name>/ with config, history, model, plots and report.",
                       formatter_class=HelpFormatter)
    add_train_options(p, lr_auto=True)
    p.add_argument("--out", default=None, help="write the run here instead of runs/<date>-<name>/")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the interrupted run in DIR (with the learning rate it recorded)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def add_train_options(p, *, lr_auto: bool = False) -> None:
    """DATASET and every option of a training configuration (what ``train`` and ``lr-find`` share)."""
    p.add_argument("dataset", nargs="?", default=D.dataset, help="dataset name or file")
    add_network_options(p, lr_auto=lr_auto)
    p.add_argument("--balance", choices=BALANCING, default=D.balance,
                   help="oversample small classes up to the median class size")
    p.add_argument("--recipe", choices=tuple(RECIPES), default=None, metavar="NAME",
                   help="a named configuration (" + "; ".join(f"{k}: {v[0]}" for k, v in RECIPES.items())
                   + "); options given explicitly override it")
    add_compute_options(p)
    p.add_argument("--threads", type=int, default=D.threads, help="compute threads (default: the engine's choice)")
    p.add_argument("--seed", type=int, default=D.seed, help="seeds the split, the initial weights and the batch order")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default=D.normalize, help="input scaling, fitted on training rows")
    add_pca_option(p, "stored in the model file")
    p.add_argument("--validation", type=float, default=D.validation,
                   help="validation rows carved from training (fraction < 1 or a count; default: the dataset's); "
                        "0 trains on every training row, with no early stopping and the last weights kept")
    p.add_argument("--eval-every", type=int, default=D.eval_every, help="evaluate every N steps (0 = every epoch)")
    p.add_argument("--early-stopping", choices=EARLY_STOPPING, default=D.early_stopping,
                   help="stop when validation stops improving, keeping the best weights")
    p.add_argument("--patience", type=int, default=D.patience, help="early-stopping patience, in evaluations")
    p.add_argument("--monitor", choices=MONITORS, default=D.monitor,
                   help="validation metric for early stopping and plateau; valid_error is the task's error measure "
                        "(error rate, or RMSE for regression)")
    p.add_argument("--name", default=None, help="run name (default: DATASET-OPTIMIZER)")


OPTIONS = ("format", "task", "target", "hidden", "layers", "activation", "init", "optimizer", "lr", "momentum", "batch_size",
           "sampling", "epochs", "schedule",
           "schedule_unit", "l1", "l2", "dropout_keep", "batchnorm", "max_norm", "augment", "clip_norm",
           "label_smoothing", "balance", "engine", "device",
           "dtype", "threads", "seed", "normalize", "pca", "validation", "eval_every", "early_stopping", "patience",
           "monitor", "name")


def _typed(argv) -> set[str]:
    """Options written on the command line (``--lr 0.1`` or ``--lr=0.1``), as config names."""
    return {tok[2:].split("=", 1)[0].replace("-", "_") for tok in argv or () if tok.startswith("--")}


def config_values(args, names=OPTIONS) -> dict:
    """The TrainConfig values of ``names`` from the options: the recipe's (``--recipe``) where none was typed."""
    values = {name: getattr(args, name) for name in names}
    typed = _typed(getattr(args, "argv", ()))
    recipe = recipe_values(args.recipe) if getattr(args, "recipe", None) else {}
    values.update({k: v for k, v in recipe.items() if k not in typed and k in names})
    return network_values(values, typed, recipe_layers="layers" in recipe and "layers" not in typed)


def build_config(args) -> TrainConfig:
    """The config of the options; ``--lr auto`` leaves the default rate in it, for the range test to replace."""
    values = config_values(args)
    if values["lr"] == "auto":
        values["lr"] = D.lr
    return TrainConfig(dataset=args.dataset, recipe=args.recipe, **values)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    cfg = None if args.resume else build_config(args)
    if args.resume and args.out:
        raise ConfigError("`--out` cannot be combined with `--resume` (the run directory is the one resumed)")
    # `kill` (SIGTERM) saves a checkpoint like Ctrl-C does; kill -9 loses at most the steps since the last one.
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        run_training(cfg, out=args.out, resume_dir=args.resume, progress=not args.quiet,
                     auto_lr=args.lr == "auto" and not args.resume)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
