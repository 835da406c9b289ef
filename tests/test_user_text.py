"""What a user reads states facts: no pointer to the development design file or mirror path.

Every command's --help (sub-commands included), the README, docs/ and the benchmark
scripts are scanned for the design file's name and the development setup's data folder."""
import argparse
from pathlib import Path

import pytest

from descend.cli.main import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("DESIGN", "shared/data")


def _helps(parser: argparse.ArgumentParser, prog: str):
    yield prog, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _helps(child, f"{prog} {name}")


def _texts():
    yield from _helps(build_parser(), "descend")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                 *sorted((ROOT / "benchmarks").glob("*.py"))]:
        yield str(path.relative_to(ROOT)), path.read_text()


def test_every_command_has_a_help_text_in_the_scan():
    names = {name for name, _ in _helps(build_parser(), "descend")}
    assert {f"descend {c}" for c in COMMANDS} <= names
    assert "descend data info" in names


@pytest.mark.parametrize("word", FORBIDDEN)
def test_no_user_visible_text_cites_the_design_file_or_the_development_mirror(word):
    found = [f"{where}: {line.strip()}" for where, text in _texts()
             for line in text.splitlines() if word in line]
    assert found == []
