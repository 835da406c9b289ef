"""``descend search``: build a SearchConfig from the options and call run_search."""

from __future__ import annotations

import signal

from descend.cli.main import HelpFormatter
from descend.cli.train import OPTIONS as TRAIN_OPTIONS
from descend.cli.train import _typed, add_compute_options, add_network_options, add_pca_option, config_values
from descend.errors import ConfigError
from descend.train.config import BALANCING, EARLY_STOPPING, MONITORS, NORMALIZATIONS, TrainConfig
from descend.train.recipes import RECIPES

D = TrainConfig()
# descend train's options less --threads (here: per worker, a search setting) and --validation (the folds
# hold the trials' validation rows).
BASE_OPTIONS = tuple(name for name in TRAIN_OPTIONS if name not in ("threads", "validation"))
RESUME_OPTIONS = {"resume", "workers", "dask", "storage", "quiet"}
EXAMPLE = 'lr=log(1e-4,1e-1) momentum=0.8,0.9,0.99 hidden=300|500,300 l2=log(1e-6,1e-2)'


def register(sub) -> None:
    from descend.experiments.search import DEFAULT_TRIALS, METHODS, METRICS, PRUNERS

    p = sub.add_parser(
        "search", help="hyperparameter search (grid, random, hill-climbing, TPE) with K-fold cross-validation",
        description="Search hyperparameters of a network on DATASET's training rows with stratified K-fold "
                    "cross-validation (the test set is never used during the search), then retrain the best "
                    "configuration on all training rows and evaluate it once on the test set. Trials run in "
                    "worker processes (one thread each) against an Optuna study: a SQLite file in the run "
                    "directory, or --storage postgresql+psycopg2://... with --dask tcp://HOST:8786 to place "
                    "workers on an existing Dask cluster. Options not in --space set the base configuration, "
                    f"as in `descend train`. Example: descend search mnist --space \"{EXAMPLE}\" --method tpe "
                    "--trials 40 --folds 3",
        formatter_class=HelpFormatter)
    p.add_argument("dataset", nargs="?", default=D.dataset, help="dataset name or file")
    g = p.add_argument_group("search")
    g.add_argument("--space", default=None, metavar="SPEC",
                   help="what varies: name=log(a,b) | name=lin(a,b) (ranges) | name=a,b,c (lists; '|' separates "
                        "tuple values such as hidden=300|500,300), items separated by spaces; names are train "
                        "options (lr, momentum, l1, l2, hidden, dropout_keep, batch_size, epochs, optimizer, "
                        "activation, schedule, max_norm, clip_norm, label_smoothing, ...)")
    g.add_argument("--method", choices=METHODS, default="tpe",
                   help="grid: every cell of the lists once; random: N uniform (log-uniform) draws; hillclimb: "
                        "random steps in a ball around the best so far; tpe: Optuna's TPE")
    g.add_argument("--trials", type=int, default=None,
                   help=f"trials of random / hillclimb / tpe search (default: {DEFAULT_TRIALS}; grid runs every cell)")
    g.add_argument("--folds", type=int, default=3,
                   help="K of the K-fold cross-validation in each trial (stratified by class when classifying)")
    g.add_argument("--metric", choices=METRICS, default="valid_error",
                   help="score minimised: mean over the folds (valid_error is the task's error measure: the error "
                        "rate, or the RMSE of regression targets; valid_rmse is for regression only)")
    g.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="stop a trial after a fold when its running mean is worse than the median of earlier trials")
    g.add_argument("--radius", type=float, default=0.15,
                   help="hillclimb step: ball radius as a fraction of each range (log space for log ranges)")
    g.add_argument("--workers", type=int, default=None,
                   help="parallel search workers (default: this machine's cores, or the Dask cluster's threads)")
    g.add_argument("--threads", type=int, default=1, help="compute threads per worker")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL, e.g. postgresql+psycopg2://user@host/db (default: a SQLite file "
                        "study.db in the run directory)")
    g.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="place the workers on an existing Dask cluster, e.g. tcp://HOST:8786 (the storage must "
                        "be reachable from every Dask worker)")
    g.add_argument("--heartbeat", type=int, default=10,
                   help="seconds between a running trial's heartbeats; a worker silent for 3 is taken for dead "
                        "and its trial is retried once")
    g.add_argument("--no-retrain", dest="retrain", action="store_false",
                   help="stop after the search: no final training on all training rows, no test-set evaluation")
    g.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the search in DIR without redoing finished trials")
    t = p.add_argument_group("base configuration (as in descend train)")
    add_network_options(t)
    t.add_argument("--balance", choices=BALANCING, default=D.balance, help="oversample small classes up to the median class size")
    t.add_argument("--recipe", choices=tuple(RECIPES), default=None, metavar="NAME",
                   help="a named base configuration (" + ", ".join(RECIPES) + "); options given explicitly override it")
    add_compute_options(t)
    t.add_argument("--seed", type=int, default=D.seed,
                   help="seeds the folds, the random points, the samplers, the initial weights and the batch order")
    t.add_argument("--normalize", choices=NORMALIZATIONS, default=D.normalize, help="input scaling, fitted on each fold's training rows")
    add_pca_option(t, "refitted on each fold's training rows; --space can vary it, e.g. pca=none,50,100")
    t.add_argument("--eval-every", type=int, default=D.eval_every, help="evaluate every N steps (0 = every epoch)")
    t.add_argument("--early-stopping", choices=EARLY_STOPPING, default="none",
                   help="early stopping on the held-out fold (off by default: the fold that scores a trial "
                        "would also choose its epoch)")
    t.add_argument("--patience", type=int, default=D.patience, help="early-stopping patience, in evaluations")
    t.add_argument("--monitor", choices=MONITORS, default=D.monitor, help="metric for early stopping and plateau")
    p.add_argument("--name", default=None, help="run name (default: DATASET-search-METHOD)")
    p.add_argument("--out", default=None, help="write the run here instead of runs/<date>-<name>/")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def build_search_config(args):
    from descend.experiments.search import SearchConfig

    if not args.space:
        raise ConfigError(f"`space` is required, e.g. --space \"{EXAMPLE}\". Received: space=None")
    base = TrainConfig(dataset=args.dataset, recipe=args.recipe, **config_values(args, BASE_OPTIONS))
    return SearchConfig(space=args.space, base=base, method=args.method, trials=args.trials, folds=args.folds,
                        metric=args.metric, pruner=args.pruner, radius=args.radius, threads=args.threads,
                        heartbeat=args.heartbeat, storage=args.storage, retrain=args.retrain)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    from descend.experiments.search import run_search

    if args.resume:
        extra = sorted(_typed(getattr(args, "argv", ())) - RESUME_OPTIONS)
        if args.out:
            extra.append("out")
        if extra:
            raise ConfigError(f"`--resume` continues the search as configured in {args.resume}/search.json; only "
                              f"--workers, --dask, --storage and --quiet may be given with it. Received: "
                              + ", ".join(f"--{e.replace('_', '-')}" for e in extra))
        sc = None
    else:
        sc = build_search_config(args)
    # `kill` (SIGTERM) stops the workers and keeps the study, like Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        run_search(sc, workers=args.workers, dask=args.dask, out=args.out, resume_dir=args.resume,
                   storage=args.storage if args.resume else None, progress=not args.quiet)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
