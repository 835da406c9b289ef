"""One self-contained HTML report per run.

Everything is inline (CSS, PNGs as base64 data URIs, tables) so the file can be
mailed, attached to a ticket or opened offline years later; no CDN, no script,
no external reference.  Every piece of text is HTML-escaped: class names and
config values come from user files.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write_text
from ..io.rundir import to_jsonable
from .metrics import per_class_precision_recall

__all__ = ["CSS", "escape", "image_figure", "kv_table", "rows_table", "write_report"]

#: The style sheet every descend report shares (train, compare, search, ensemble, pca).
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #2171b5;padding-bottom:.2em}
h2{font-size:1.2em;margin-top:1.8em;color:#2171b5}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f4f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.cm td{text-align:center;min-width:2.2em}
figure{display:inline-block;margin:.5em 1em .5em 0}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555;text-align:center}
.note{color:#888;font-style:italic}
footer{margin-top:2em;font-size:.8em;color:#888}
"""


def escape(x: Any) -> str:
    """``x`` as text safe inside HTML elements and attribute values."""
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    """Compact, readable value text (escaped)."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None:
        return "&mdash;"
    if isinstance(v, float):
        return escape(f"{v:.6g}")
    if isinstance(v, (dict, list, tuple, np.ndarray)):
        return escape(json.dumps(to_jsonable(v), ensure_ascii=False))
    return escape(v)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def kv_table(d: Mapping) -> str:
    """A two-column table of ``d`` (nested mappings flattened to dotted keys), values escaped."""
    if not d:
        return '<p class="note">none</p>'
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td{' class=num' if _is_num(v) else ''}>{_fmt(v)}</td></tr>"
        for k, v in _flatten(d).items()
    )
    return f"<table>{rows}</table>"


def rows_table(rows: Sequence[Mapping]) -> str:
    """A table whose columns are the union of the rows' keys, in first-seen order."""
    if not rows:
        return '<p class="note">none</p>'
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if _is_num(r.get(c)) else ''}>{_fmt(r.get(c))}</td>" for c in cols)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def architecture_rows(summary: Sequence[Mapping]) -> list[dict]:
    """The architecture table of a network's per-layer summary (layer, output shape, parameters,
    multiply-adds per row), with a total row."""
    rows = [{"layer": f"{r['name']}: {r['layer']}", "output shape": " x ".join(map(str, r["output"])),
             "parameters": int(r["params"]), "multiply-adds": int(r["macs"])} for r in summary]
    rows.append({"layer": "total", "output shape": "", "parameters": sum(r["parameters"] for r in rows),
                 "multiply-adds": sum(r["multiply-adds"] for r in rows)})
    return rows


def _class_names(classes, n: int) -> list[str]:
    return [str(c) for c in classes] if classes is not None else [str(i) for i in range(n)]


def _confusion_table(cm: np.ndarray, names: list[str]) -> str:
    """Counts, cells shaded by row fraction (recall) like the PNG heatmap."""
    totals = cm.sum(axis=1)
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{escape(c)}</th>" for c in names) + "<th>total</th></tr>"
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            frac = cm[i, j] / totals[i] if totals[i] else 0.0
            fg = "#fff" if frac > 0.5 else "#222"
            cells.append(f'<td style="background:rgba(33,113,181,{frac:.3f});color:{fg}">{int(cm[i, j])}</td>')
        body.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}<td class=num>{int(totals[i])}</td></tr>")
    return f'<table class="cm">{head}{"".join(body)}</table>'


def _per_class_rows(per_class: Any, names: list[str]) -> list[dict]:
    """Accept (precision, recall, f1, support) arrays, a list of row dicts or a column dict."""
    if isinstance(per_class, Mapping):
        cols = list(per_class)
        return [dict(zip(cols, vals)) for vals in zip(*(per_class[c] for c in cols))]
    if isinstance(per_class, (tuple, list)) and len(per_class) == 4 and not isinstance(per_class[0], Mapping):
        p, r, f, s = (np.asarray(a) for a in per_class)
        return [
            {"class": names[i] if i < len(names) else i, "precision": float(p[i]), "recall": float(r[i]),
             "f1": float(f[i]), "support": int(s[i])}
            for i in range(len(p))
        ]
    return [dict(r) for r in per_class]


def image_figure(caption: str, path: Path) -> str:
    """The PNG at ``path`` embedded as a data URI in a captioned figure (the report stays one file)."""
    try:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    except OSError:
        return f'<p class="note">{escape(caption)}: image {escape(Path(path).name)} missing</p>'
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def write_report(
    path: str | os.PathLike,
    *,
    title: str,
    config: Mapping,
    metrics: Mapping,
    images: Mapping[str, str | os.PathLike] | None = None,
    confusion: np.ndarray | None = None,
    classes: Sequence | None = None,
    per_class: Any = None,
    history_tail: Sequence[Mapping] | None = None,
    architecture: Sequence[Mapping] | None = None,
    learned: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Write the run report (config, metrics, architecture, plots, confusion, per-class table) atomically.

    When `per_class` is None and a confusion matrix is given, precision/recall/F1
    are computed from it.  `architecture` is one row per layer (see
    :func:`architecture_rows`).  `learned` holds the pictures of what the model learned
    ({caption: PNG path}: first-layer weights, confident mistakes).
    """
    from .. import __version__

    parts = [f"<h1>{escape(title)}</h1>", "<h2>Final metrics</h2>", kv_table(metrics)]
    if architecture:
        parts += ["<h2>Architecture</h2>", rows_table(architecture)]
    if images:
        parts += ["<h2>Training curves</h2>", "<div>", *(image_figure(c, p) for c, p in images.items()), "</div>"]
    if learned:
        parts += ["<h2>What the model learned</h2>", "<div>", *(image_figure(c, p) for c, p in learned.items()),
                  "</div>"]
    if confusion is not None:
        cm = np.asarray(confusion)
        names = _class_names(classes, cm.shape[0])
        parts += ["<h2>Confusion matrix</h2>", _confusion_table(cm, names)]
        if per_class is None:
            per_class = per_class_precision_recall(cm)
    if per_class is not None:
        names = _class_names(classes, 0)  # without classes, rows are labelled by index
        parts += ["<h2>Per-class precision / recall</h2>", rows_table(_per_class_rows(per_class, names))]
    if history_tail:
        parts += ["<h2>Last history rows</h2>", rows_table(history_tail)]
    parts += ["<h2>Configuration</h2>", kv_table(config)]
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + f"\n<footer>descend {escape(__version__)}</footer>\n</body></html>\n"
    )
    return atomic_write_text(path, doc)
