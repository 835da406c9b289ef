"""The measured section a benchmark keeps in a docs page, between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, body: str, heading: str | None = None) -> None:
    """Replace section ``name`` of the Markdown file ``path`` with ``body``, or append it (under ``heading``, when
    given) if the page has none yet; the page is replaced whole, never left half-written."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text()
    section = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + section + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
