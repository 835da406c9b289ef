"""The ``descend`` command: one module per sub-command, each a thin wrapper.

Each command module defines ``register(subparsers)``, which adds its parser and
sets ``run`` as the parser's default ``func``.  ``run(args)`` builds a config
and calls one library function.  Errors the user caused (DescendError) print
one line and exit 2; Ctrl-C exits 130 after the command has saved what it can.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from descend import __version__
from descend.errors import DescendError

COMMANDS = ("train", "lr-find", "data", "predict", "export", "bench", "serve", "compare", "ensemble", "search", "pca")


def parse_positive_int(text: str, expected: str = "a positive integer") -> int:
    """``text`` as an integer >= 1, else an argparse error saying ``expected ..., got ...``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return parse_positive_int(text)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (tuples as ``500,300``; None and False left out)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, argparse.SUPPRESS)
                or action.option_strings == [] and action.nargs not in ("?", "*")):
            return text
        if isinstance(default, (tuple, list)):
            default = ",".join(map(str, default)) or "none"
        return f"{text} (default: {default})".strip()


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit 2 (no usage dump),
    and no abbreviated options (a recipe must know exactly what was typed)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D102
        self.exit(2, f"descend: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="descend",
        description="Practical deep learning on image-classification data.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"descend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"descend.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except DescendError as exc:
        print(f"descend: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("descend: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
