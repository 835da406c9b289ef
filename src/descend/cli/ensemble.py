"""``descend ensemble``: build an EnsembleConfig from the options and call run_ensemble."""

from __future__ import annotations

import signal

from descend.cli.main import HelpFormatter
from descend.cli.train import OPTIONS, add_compute_options, add_network_options, add_pca_option, config_values
from descend.experiments.ensemble import VOTES, EnsembleConfig, run_ensemble
from descend.train import TrainConfig
from descend.train.config import EARLY_STOPPING, MONITORS, NORMALIZATIONS

D = TrainConfig()
E = EnsembleConfig()

# descend train's options less --balance: members resample the rows themselves.
TRAIN_OPTIONS = tuple(name for name in OPTIONS if name != "balance")


def register(sub) -> None:
    p = sub.add_parser(
        "ensemble", help="train an ensemble (bagging, feature subsets, soft / hard voting) and compare it",
        description="Train --members networks on DATASET, each on its own sample of the training rows "
                    "(--rows, with replacement under --bootstrap) and its own random subset of the input columns "
                    "(--features), in --workers parallel processes; combine them by soft (mean probability) or "
                    "hard (majority) vote; members of regression data (--target) average their values, and "
                    "the report gives RMSE, MAE and R^2. Writes runs/<date>-<name>/ with ensemble.safetensors "
                    "(all members in one "
                    "file), members.csv, metrics.json and report.html (ensemble vs best and mean member, error vs "
                    "ensemble size, and with dropout: weight scaling vs Monte-Carlo averaging).",
        formatter_class=HelpFormatter)
    p.add_argument("dataset", nargs="?", default=D.dataset, help="dataset name or file")
    g = p.add_argument_group("ensemble")
    g.add_argument("--members", type=int, default=E.members, help="number of networks")
    g.add_argument("--rows", type=float, default=E.rows, help="fraction of the training rows each member sees")
    g.add_argument("--bootstrap", action="store_true", help="draw each member's rows with replacement (bagging)")
    g.add_argument("--features", type=float, default=E.features,
                   help="fraction of the input columns each member sees (a random subset per member)")
    g.add_argument("--vote", choices=VOTES, default=E.vote,
                   help="how the saved ensemble combines members: soft = mean probability, hard = majority "
                        "(the report shows both); a regression ensemble averages its members' values (soft only)")
    g.add_argument("--workers", type=int, default=E.workers,
                   help="parallel worker processes (0 = one per core); with --dask, the most members in flight "
                        "(0 = all)")
    g.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="train the members on an existing Dask cluster, e.g. tcp://HOST:8786 (the data is sent "
                        "to every worker once; one thread per member unless --threads)")
    g.add_argument("--mc-samples", type=int, default=E.mc_samples,
                   help="most Monte-Carlo dropout passes compared with weight scaling (members with dropout)")
    t = p.add_argument_group("each member's training (as in descend train)")
    add_network_options(t, epochs_help="passes over each member's rows")
    add_compute_options(t)
    t.add_argument("--threads", type=int, default=D.threads,
                   help="compute threads per member (default: cores / workers, the engine's choice with one worker)")
    t.add_argument("--seed", type=int, default=D.seed,
                   help="seeds the split and, per member, its rows, columns, weights and batch order")
    t.add_argument("--normalize", choices=NORMALIZATIONS, default=D.normalize, help="input scaling, fitted on training rows")
    add_pca_option(t, "stored in the ensemble file; --features then samples components")
    t.add_argument("--validation", type=float, default=D.validation,
                   help="validation rows carved from training (fraction < 1 or a count; default: the dataset's)")
    t.add_argument("--eval-every", type=int, default=D.eval_every, help="evaluate every N steps (0 = every epoch)")
    t.add_argument("--early-stopping", choices=EARLY_STOPPING, default=D.early_stopping,
                   help="stop each member when validation stops improving, keeping its best weights")
    t.add_argument("--patience", type=int, default=D.patience, help="early-stopping patience, in evaluations")
    t.add_argument("--monitor", choices=MONITORS, default=D.monitor, help="validation metric for early stopping and plateau")
    p.add_argument("--name", default=None, help="run name (default: DATASET-ensemble)")
    p.add_argument("--out", default=None, help="write the run here instead of runs/<date>-<name>/")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def build_config(args) -> EnsembleConfig:
    train = TrainConfig(dataset=args.dataset, **config_values(args, TRAIN_OPTIONS))
    return EnsembleConfig(train=train, members=args.members, rows=args.rows, bootstrap=args.bootstrap,
                          features=args.features, vote=args.vote, workers=args.workers, mc_samples=args.mc_samples)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    cfg = build_config(args)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        run_ensemble(cfg, out=args.out, progress=not args.quiet, dask=args.dask)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
