"""``descend data info DATASET``: check what a dataset or file will look like to training."""

from __future__ import annotations

import argparse

from descend.cli.main import HelpFormatter
from descend.data import FORMATS, dataset_info, load


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="inspect datasets",
        description="Inspect datasets: named ones (mnist, fashion-mnist, fer2013) or files.",
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    info = actions.add_parser(
        "info", help="show splits, shapes, class counts and pixel range",
        description="Load DATASET as training would and summarize it: source, classes, "
                    "each split's shape and class counts, value range and dtype.",
        formatter_class=HelpFormatter,
    )
    info.add_argument("dataset", metavar="DATASET",
                      help="a dataset name (mnist, fashion-mnist, fer2013) or a file path")
    info.add_argument("--format", choices=FORMATS, default=None,
                      help="file format; None: guessed from the content")
    info.add_argument("--label-column", default="label", help="label column of a generic CSV")
    info.add_argument("--validation", type=_fraction_or_count, default=None,
                      help="validation rows carved from training: a count (int) or a "
                           "fraction (float); None: 10000 for mnist and fashion-mnist, "
                           "PublicTest for fer2013, else 0.1")
    info.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    info.set_defaults(func=run)


def _fraction_or_count(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int count or a float fraction, "
                                         f"got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    ds = load(args.dataset, format=args.format, label_column=args.label_column,
              validation=args.validation, seed=args.seed, require_labels=False)
    print(dataset_info(ds))
    return 0
