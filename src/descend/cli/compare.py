"""``descend compare``: build a Study from a preset / run specs / a TOML file and call run_compare."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap

from descend.cli.main import HelpFormatter, positive_int
from descend.cli.train import _batch, _hidden, _targets, add_pca_option
from descend.errors import ConfigError
from descend.experiments.compare.build import build_study
from descend.experiments.compare.spec import COMPARE_DEFAULTS, PRESETS
from descend.data.targets import TASKS
from descend.optim.conventions import CONVENTIONS, DESCRIPTIONS

EPILOG = """run specs: "NAME key=value ...", NAME one of the optimizers, keys any of
  lr momentum batch_size(or 'full') sampling(shuffle|replacement) epochs schedule schedule_unit hidden layers
  activation init(he|glorot|normal) l1 l2 dropout_keep batchnorm max_norm clip_norm label_smoothing eval_every
  engine dtype early_stopping patience validation target task
  eps rho b1 b2 initial_accumulator eps_in_sqrt lr_inside bias_correction
  label convention budget
examples:
  descend compare mnist --preset momentum --seeds 3
  descend compare mnist --run "sgd lr=0.1" --run "nesterov lr=0.01 momentum=0.9" --run "rmsprop+nesterov lr=1e-4"
  descend compare mnist --preset adaptive --convention torch --target-error 3%
  descend compare --preset overfit --seeds 3
  descend compare houses.csv --target price --run "adam lr=1e-3" --run "adam lr=1e-3 dropout_keep=1,0.8"
  descend compare mnist --run momentum --run nesterov --tune "lr=log(1e-4,1) momentum=0.8,0.9,0.99" --budget 16
  descend compare mnist --preset tuned-optimizers --budget 8 --seeds 2 --folds 3
  descend compare --config study.toml --workers 2
  descend compare mnist --preset momentum --dask tcp://scheduler:8786
  descend compare --resume runs/20250101-120000-compare-momentum
presets:
""" + "\n".join(textwrap.fill(f"{name}: {p.description}", 80, initial_indent="  ", subsequent_indent="    ")
                for name, p in PRESETS.items()) + """
conventions:
""" + "\n".join(textwrap.fill(f"{name}: {text}", 80, initial_indent="  ", subsequent_indent="    ")
                for name, text in DESCRIPTIONS.items())


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every default shown; the description and the examples keep their line breaks."""


DESCRIPTION = textwrap.fill(
    "Run several training configurations from the same initial weights and the same batch order (per seed), over "
    "several seeds; write a table (final / best / test error mean ± std, best epoch, seconds, time and steps to a "
    "target error), cost and error curves versus epochs, steps and wall-clock seconds (mean line, min-max band) "
    "and a self-contained report.html.", 80)


def _fraction(text: str) -> float:
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an error rate like 0.03 or 3%, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected an error rate in (0, 1) such as 0.03 or 3%, got {text!r}")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare training configurations over several seeds, with plots and a report",
        description=DESCRIPTION,
        epilog=EPILOG, formatter_class=_Formatter)
    p.add_argument("dataset", nargs="?", default=None, help="dataset name or file (default: the file's, else mnist)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, metavar="NAME",
                   help=f"a curriculum experiment: {', '.join(PRESETS)}")
    p.add_argument("--run", action="append", default=None, metavar="SPEC",
                   help="one configuration, e.g. \"nesterov lr=0.01 momentum=0.9\" (repeat; added to a preset's)")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="a study file: [base] options and [[run]] tables (see docs/compare.md)")
    p.add_argument("--seeds", type=positive_int, default=None, help="seeds per configuration (default: 3)")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: 0)")
    p.add_argument("--convention", choices=CONVENTIONS, default=None,
                   help="which library's variant of each update rule (default: descend)")
    p.add_argument("--target-error", type=_fraction, default=None, metavar="RATE",
                   help="validation error for time-to-target and steps-to-target, e.g. 3%% (default: the preset's)")
    p.add_argument("--budget", type=float, default=None, metavar="N",
                   help="stop every run after N seconds of training time (default: the preset's; gd-variants 20); "
                        "with tuning (--tune, a tuned preset, a [tune] table): N tuning trials per run (default 8)")
    p.add_argument("--tune", metavar="SPACE", default=None,
                   help='first tune every run on these keys with the same budget of trials, e.g. '
                        '"lr=log(1e-4,1) momentum=0.8,0.9,0.99" (keys a run spec sets are not tuned for that run), '
                        'selected on validation data only, then compare the runs at their best values')
    p.add_argument("--tune-method", choices=("tpe", "grid", "random"), default=None,
                   help="how tuning trials are chosen (default: tpe)")
    p.add_argument("--folds", type=positive_int, default=None, metavar="K",
                   help="score tuning trials by K-fold cross-validation on the training rows (default: the "
                        "validation split)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="parallel processes, one thread each (default: one per core; 1 with a time budget); "
                        "with --dask, the most runs in flight (default: all; 1 with a time budget)")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run on an existing Dask cluster, e.g. tcp://HOST:8786 (one thread per run; every worker "
                        "must be able to read the dataset: give a name or an absolute path)")
    base = p.add_argument_group("base options (override the preset's and the file's; a run spec overrides them)")
    base.add_argument("--hidden", type=_hidden, default=None,
                      help=f"hidden layer sizes (default: {','.join(map(str, COMPARE_DEFAULTS['hidden']))})")
    base.add_argument("--layers", default=None, metavar="TOKENS",
                      help="the network as layer tokens instead of --hidden (see descend train --help), "
                           "e.g. conv:32:5,pool:2,dense:128")
    base.add_argument("--activation", choices=("relu", "tanh", "sigmoid"), default=None, help="hidden activation")
    base.add_argument("--epochs", type=int, default=None, help="epochs per run")
    base.add_argument("--batch-size", type=_batch, default=None, help="mini-batch size ('full' = full batch)")
    base.add_argument("--schedule", default=None, help="learning-rate schedule (constant, step:F:E, exponential:K ...)")
    base.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (0 = every epoch)")
    base.add_argument("--engine", default=None, help="numpy, jax, torch, tensorflow, pytensor (default: auto)")
    base.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None, help="where to compute")
    base.add_argument("--dtype", choices=("float32", "float64"), default=None, help="floating-point precision")
    base.add_argument("--threads", type=positive_int, default=None,
                      help="compute threads of each run (default: the engine's choice; with --workers, one each)")
    base.add_argument("--validation", type=float, default=None, help="validation rows (fraction or count)")
    base.add_argument("--target", type=_targets, default=None, metavar="COL[,COL...]",
                      help="a CSV's target column(s): a regression, compared by RMSE instead of error rate")
    base.add_argument("--task", choices=TASKS, default=None, help="what to learn (default: decided by the data)")
    add_pca_option(base, "a run spec may set its own, e.g. --run \"pca=50\"", default=None)
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--out", default=None, help="write here instead of runs/<date>-compare-<name>/ (reuses finished runs)")
    p.add_argument("--resume", metavar="DIR", default=None, help="continue the interrupted compare in DIR")
    p.add_argument("--profile", metavar="DIR", nargs="+", default=None,
                   help="no training: a performance profile over finished compare directories (one problem each, "
                        "e.g. one per dataset or preset): the fraction of problems on which each run label reaches "
                        "its target within τ × the fastest median time, τ from 1 to 4; written to --out "
                        "(default runs/<date>-profile/)")
    p.set_defaults(func=run)


BASE_OPTIONS = ("hidden", "layers", "activation", "epochs", "batch_size", "schedule", "eval_every", "engine", "device",
                "dtype", "threads", "validation", "pca", "target", "task")


def _tuned(args) -> bool:
    if args.tune is not None or (args.preset and PRESETS[args.preset].tune):
        return True
    if args.config:
        from descend.experiments.compare.spec import load_toml

        data = load_toml(args.config)
        return "tune" in data or bool(PRESETS.get(data.get("preset", "")) and PRESETS[data["preset"]].tune)
    return False


def build(args):
    base = {k: getattr(args, k) for k in BASE_OPTIONS if getattr(args, k) is not None}
    budget, trials = args.budget, None
    if _tuned(args):  # --budget counts tuning trials
        budget, trials = None, (int(args.budget) if args.budget is not None and args.budget.is_integer()
                                else args.budget)
    elif args.tune_method or args.folds:
        raise ConfigError(f"--{'tune-method' if args.tune_method else 'folds'} applies to tuning: add --tune SPACE "
                          f"(e.g. --tune 'lr=log(1e-4,1)')")
    return build_study(args.dataset, preset=args.preset, runs=args.run or (), config_file=args.config, seeds=args.seeds,
                       first_seed=args.seed, convention=args.convention, target_error=args.target_error,
                       budget=budget, base=base, title=args.title, tune=args.tune, tune_budget=trials,
                       tune_method=args.tune_method, folds=args.folds)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _profile(args) -> int:
    from descend.experiments.compare import load_study
    from descend.experiments.compare.profile import write_profile
    from descend.io.rundir import make_run_dir

    given = [f"--{k.replace('_', '-')}" for k in ("preset", "config", "resume", "tune", *BASE_OPTIONS)
             if getattr(args, k, None) is not None] + (["--run"] if args.run else []) + (
             ["DATASET"] if args.dataset else [])
    if given:
        raise ConfigError(f"--profile reads finished comparisons; it cannot be combined with {', '.join(given)}")
    for directory in args.profile:  # checked before anything is written
        load_study(directory)
    out = args.out or make_run_dir("runs", "profile")
    print(write_profile(args.profile, out))
    print(f"descend: wrote {out}/profile.png and profile.md", file=sys.stderr)
    return 0


def run(args) -> int:
    from descend.experiments.compare import load_study, run_compare
    from descend.experiments.compare.report import markdown, same_start

    if args.profile:
        return _profile(args)
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in ("preset", "config", "out", "tune", "tune_method", "folds",
                                                       *BASE_OPTIONS)
                 if getattr(args, k, None) is not None] + (["--run"] if args.run else []) + (
                 ["DATASET"] if args.dataset else [])
        if given:
            raise ConfigError(f"--resume continues the stored study; it cannot be combined with {', '.join(given)}")
        study, out = load_study(args.resume), args.resume
    else:
        study, out = build(args), args.out
    workers = args.workers
    if workers is None and args.config:  # a study file may say how many workers it wants
        from descend.experiments.compare.spec import load_toml

        workers = load_toml(args.config).get("workers")
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        result = run_compare(study, out, workers=workers, dask=args.dask)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(markdown(result.study, result.summary, same_start(result.study, result.records), result.tuning))
    print(f"descend: wrote {result.out_dir / 'report.html'} (tables, plots, configurations)", file=sys.stderr)
    return 0
