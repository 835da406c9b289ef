"""``descend export``: write a model or ensemble file as ONNX, for onnxruntime and other runtimes."""

from __future__ import annotations

import sys

from descend.cli.main import HelpFormatter
from descend.io.onnx_export import DEFAULT_OPSET, MIN_OPSET
from descend.train.ensemble_model import VOTES
from descend.train.export import export_file


def _opset(text: str) -> int:
    import argparse

    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer opset, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="write a model as ONNX",
        description="Write MODEL (a model.safetensors of a training run or the ensemble.safetensors of an ensemble "
                    "run) as an ONNX model that takes the same raw rows as descend predict (pixel values 0..255, "
                    "or the training file's feature values): normalization, the PCA projection and batch norm are "
                    "folded into the graph, dropout is removed. Outputs: probabilities and logits.",
        formatter_class=HelpFormatter)
    p.add_argument("model", help="model.safetensors written by descend train, or ensemble.safetensors written by "
                                 "descend ensemble")
    p.add_argument("-o", "--output", default=None, metavar="FILE.onnx",
                   help="where to write the ONNX model (default: MODEL with the suffix .onnx)")
    p.add_argument("--opset", type=_opset, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset version to target, at least {MIN_OPSET}")
    p.add_argument("--vote", choices=VOTES, default=None,
                   help="an ensemble's voting rule in the graph (default: the one it was trained with)")
    p.set_defaults(func=run)


def run(args) -> int:
    result = export_file(args.model, args.output, opset=args.opset, vote=args.vote)
    what = f"an ensemble ({result.vote} vote)" if result.kind == "ensemble" else "a model"
    print(f"descend: exported {what} to {result.path} (ONNX opset {result.opset})", file=sys.stderr)
    return 0
