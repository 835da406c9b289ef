"""A search's tables and report: trials.csv, best.json and report.html."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from descend.experiments.search.space import Space
from descend.io.atomic import atomic_write_text


def trial_rows(study, space: Space, folds: int) -> list[dict]:
    """One row per trial of a ticket (surplus trials left out), in trial order."""
    from descend.experiments.search.storage import ticket_trials

    rows = []
    for t in sorted(ticket_trials(study, deepcopy=False), key=lambda t: t.number):
        attrs = t.user_attrs
        scores = list(attrs.get("fold_scores") or [])
        seconds = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        row = {"trial": t.number, "ticket": int(attrs["ticket"]), "state": t.state.name,
               "score": t.value if t.state.name == "COMPLETE" else None,
               "last_score": (t.intermediate_values[max(t.intermediate_values)]
                              if t.intermediate_values else None),
               "folds_done": len(scores)}
        for k in range(folds):
            row[f"fold_{k + 1}"] = scores[k] if k < len(scores) else None
        for p in space.params:
            row[p.name] = t.params.get(p.name)
        retry = t.system_attrs.get("failed_trial")
        row.update({"seconds": seconds, "worker": attrs.get("worker"),
                    "retry_of": retry, "error": attrs.get("error"),
                    "hc_center": attrs.get("hc_center")})
        rows.append(row)
    return rows


def best_row(rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["state"] == "COMPLETE" and r["score"] is not None and math.isfinite(r["score"])]
    return min(done, key=lambda r: (r["score"], r["trial"])) if done else None


def write_trials_csv(path: Path, rows: list[dict], space: Space, folds: int, metric: str) -> Path:
    columns = (["trial", "ticket", "state", metric, *(f"fold_{k + 1}" for k in range(folds)), "folds_done",
                *space.names, "seconds", "worker", "retry_of", "error"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        values = {**r, metric: r["score"]}
        writer.writerow(["" if values.get(c) is None else values.get(c) for c in columns])
    return atomic_write_text(path, buf.getvalue())


def write_search_report(path: Path, *, title: str, summary: dict, best: dict | None, final: dict | None,
                        images: dict, rows: list[dict], space: Space, metric: str, base_config: dict) -> Path:
    """A self-contained HTML page (inline PNGs, no scripts), like every descend report."""
    from descend import __version__
    from descend.reports.html import CSS, escape, image_figure, kv_table, rows_table

    parts = [f"<h1>{escape(title)}</h1>", "<h2>Search</h2>", kv_table(summary)]
    parts.append("<h2>Best configuration (cross-validated)</h2>")
    if best is None:
        parts.append('<p class="note">no trial completed</p>')
    else:
        parts.append(kv_table({"trial": best["trial"], metric: best["score"], "fold scores": best["fold_scores"],
                                **best["params"]}))
    parts.append("<h2>Retrained on all training rows, evaluated once on the test set</h2>")
    parts.append(kv_table(final) if final else '<p class="note">not run</p>')
    if images:
        parts += ["<h2>Plots</h2>", "<div>", *(image_figure(c, p) for c, p in images.items()), "</div>"]
    ranked = sorted(rows, key=lambda r: (r["state"] != "COMPLETE", r["score"] if r["score"] is not None
                                         else math.inf, r["trial"]))
    shown = [{k: v for k, v in r.items() if k not in ("ticket", "last_score", "hc_center") and v is not None}
             for r in ranked[:50]]
    parts += [f"<h2>Trials (best first{', top 50' if len(rows) > 50 else ''})</h2>", rows_table(shown)]
    parts += ["<h2>Space</h2>", kv_table({p.name: p.text for p in space.params})]
    parts += ["<h2>Base configuration</h2>", kv_table(base_config)]
    doc = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width,initial-scale=1">'
           f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts)
           + f"\n<footer>descend {escape(__version__)}</footer>\n</body></html>\n")
    return atomic_write_text(path, doc)
