"""``descend lr-find``: build a TrainConfig from the train options and call run_lr_find."""

from __future__ import annotations

from descend.cli.main import HelpFormatter, parse_positive_int
from descend.cli.train import add_train_options, build_config
from descend.train.lr_find import LR_MAX, LR_MIN, RULE, STEPS, run_lr_find


def _steps(text: str) -> int:
    return parse_positive_int(text, "a positive number of steps")


def register(sub) -> None:
    p = sub.add_parser(
        "lr-find", help="learning-rate range test: sweep the rate, plot the loss, suggest a rate",
        description="Train DATASET from the run's initial weights, with its optimizer and batches, while the "
                    "learning rate grows exponentially from --lr-min to --lr-max over --steps steps; stop once "
                    "the smoothed loss (a bias-corrected moving average) exceeds 4 times its minimum. Writes "
                    "lr-find.png (smoothed loss against lr, log scale), lr-find.csv and lr-find.json to the "
                    f"run directory. The suggested lr is {RULE}. `descend train --lr auto` runs this first.",
        formatter_class=HelpFormatter)
    add_train_options(p)
    g = p.add_argument_group("range test")
    g.add_argument("--lr-min", type=float, default=LR_MIN, help="learning rate of the first step")
    g.add_argument("--lr-max", type=float, default=LR_MAX, help="learning rate of the last step")
    g.add_argument("--steps", type=_steps, default=STEPS, help="optimizer steps from --lr-min to --lr-max")
    g.add_argument("--out", default=None, help="write here instead of runs/<date>-<name>-lr-find/")
    g.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def run(args) -> int:
    run_lr_find(build_config(args), out=args.out, lr_min=args.lr_min, lr_max=args.lr_max, steps=args.steps,
                progress=not args.quiet)
    return 0
