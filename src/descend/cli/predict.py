"""``descend predict``: labels for a CSV / NPZ file, optionally a Kaggle submission and a
predictions file with every class's probability."""

from __future__ import annotations

import sys

from descend.cli.main import HelpFormatter
from descend.errors import ConfigError
from descend.model.augment import TTA
from descend.train.ensemble_model import VOTES
from descend.train.predict import predict_file


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict labels with a saved model",
                       description="Predict the class of every row of INPUT with MODEL: the model.safetensors of a "
                                   "training run, or the ensemble.safetensors of an ensemble run.",
                       formatter_class=HelpFormatter)
    p.add_argument("model", help="model.safetensors written by descend train, or ensemble.safetensors written by "
                                 "descend ensemble")
    p.add_argument("input", help="rows to classify: Kaggle test.csv / train.csv, FER2013 CSV, CSV with a label column, "
                                 "NPZ; for a regression model a CSV (its target columns, when present, give the "
                                 "RMSE) or an NPZ")
    p.add_argument("--format", default=None, help="input format when it cannot be sniffed")
    p.add_argument("--submission", default=None, metavar="CSV", help="write a Kaggle submission (ImageId,Label; ImageId from 1)")
    p.add_argument("--output", default=None, metavar="CSV",
                   help="write every row's prediction: row (from 1), label, and one probability column p_<class> "
                        "per class (an ensemble's combined probabilities); a regression model writes row and one "
                        "column of predicted values per target")
    p.add_argument("--mc-samples", type=int, default=0, metavar="K",
                   help="average K Monte-Carlo dropout passes instead of weight scaling (models with dropout)")
    p.add_argument("--tta", choices=TTA, default="none",
                   help="test-time augmentation: flip averages each image's probabilities with those of its "
                        "left-right mirror image (models trained with --augment ...,flip); none = off")
    p.add_argument("--vote", choices=VOTES, default=None,
                   help="an ensemble's voting rule (default: the one it was trained with)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.mc_samples < 0:
        raise ConfigError(f"`mc_samples` must be >= 0. Received: mc_samples={args.mc_samples}")
    result = predict_file(args.model, args.input, format=args.format, submission=args.submission,
                          mc_samples=args.mc_samples, vote=args.vote, output=args.output, tta=args.tta)
    line = f"descend: predicted {len(result.labels if result.values is None else result.values):,} rows"
    if result.members is not None:
        line += f" with an ensemble of {result.members} " + (
            "(mean of its members' values)" if result.vote is None else f"({result.vote} vote)")
    if result.rmse is not None:
        line += f"; RMSE {result.rmse:.4g} against the file's targets"
    if args.tta != "none":
        line += " (each averaged with its mirror image)"
    if result.error is not None:
        line += f"; error {100 * result.error:.2f}% against the file's labels"
    written = [str(p) for p in (result.submission, result.output) if p is not None]
    if written:
        line += f"; wrote {' and '.join(written)}"
    print(line, file=sys.stderr)
    return 0
