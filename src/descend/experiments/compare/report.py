"""The outputs of ``descend compare``: summary table, findings, same-start check, CSV, PNG, HTML.

Statistics are over seeds: mean ± sample standard deviation.  Configurations
are also compared *paired by seed* with the first one (the baseline): the same
seed means the same initial weights and batch order, so "lower on 3/3 seeds"
is evidence the seeds' noise cannot explain away.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descend.experiments.compare.plots import plot_curves, plot_fits, plot_lr_sensitivity, plot_tuning_curves
from descend.experiments.compare.run import cost_column, metric_key
from descend.experiments.compare.spec import PRESETS, Study
from descend.io.atomic import atomic_write_csv, atomic_write_text
from descend.reports.html import escape
from descend.train.config import TrainConfig


def _stats(values) -> tuple[float | None, float | None]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


@dataclass(frozen=True)
class Measure:
    """What a comparison ranks and plots: ``key`` (a history column such as ``valid_error`` or ``train_rmse``),
    its cost column, and how both are named and written."""

    task: str = "classification"
    split: str = "valid"

    @property
    def key(self) -> str:
        return metric_key(self.task, self.split)

    @property
    def cost(self) -> str:
        return cost_column(self.task, self.split)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def rows(self) -> str:
        return "validation" if self.split == "valid" else "training"

    @property
    def name(self) -> str:
        return f"{'valid' if self.split == 'valid' else 'train'} {'RMSE' if self.regression else 'error'}"

    @property
    def test_key(self) -> str:
        return "test_rmse" if self.regression else "test_error"

    def fmt(self, mean, std=None) -> str:
        return _num(mean, std, "{:.4g}") if self.regression else _pct(mean, std)

    def diff(self, value) -> str:
        return f"{value:+.4g}" if self.regression else f"{100 * value:+.2f} pp"


def measure_of(records) -> Measure:
    """The measure of a comparison's records (all share one dataset and validation setting)."""
    for r in (records.values() if isinstance(records, dict) else records):
        if "metric" in r:
            task, split = r.get("task", "classification"), r["metric"].split("_")[0]
            return Measure(task, split)
    return Measure()


def first_reaching(history, target: float, key: str = "valid_error"):
    """The first evaluation (after step 0) whose ``key`` (validation error) is <= ``target``, or None."""
    for row in history:
        if row.get("step", 0) > 0 and row.get(key) is not None and row[key] <= target:
            return row
    return None


def summarize(study: Study, records: dict) -> list[dict]:
    """One row per configuration: statistics over its seeds, and the paired comparison with the first.

    Each row's ``metric`` names the measure (``valid_error``, or ``valid_rmse`` / ``train_rmse`` for
    regression); its statistics are ``final_<metric>``, ``best_<metric>`` and the test set's.
    """
    rows = []
    measure = measure_of(records)
    final_key = f"final_{measure.key}"
    target = study.target_error if not measure.regression else None
    base_final = {seed: r["metrics"].get(final_key) for (i, seed), r in records.items()
                  if i == 0 and r["status"] == "ok"}
    for i, run in enumerate(study.runs):
        recs = [records[(i, s)] for s in study.seeds if (i, s) in records]
        ok = [r for r in recs if r["status"] == "ok"]
        m = [r["metrics"] for r in ok]
        row = {"label": run.label, "spec": run.spec, "metric": measure.key, "done": len(recs),
               "seeds": len(study.seeds), "diverged": sum(r["status"] == "diverged" for r in recs)}
        for key in (final_key, f"best_{measure.key}", f"final_{measure.cost}", measure.test_key, "best_epoch",
                    "train_seconds", "steps", "epochs"):
            row[key], row[key + "_std"] = _stats(x.get(key) for x in m)
        if target is not None:
            hits = [first_reaching(r["history"], target, measure.key) for r in ok]
            reached = [h for h in hits if h is not None]
            row["reached"] = len(reached)
            row["time_to_target"], row["time_to_target_std"] = _stats(h["time"] for h in reached)
            row["steps_to_target"], row["steps_to_target_std"] = _stats(h["step"] for h in reached)
            row["epochs_to_target"], _ = _stats(h["epoch"] for h in reached)
            for key, field in (("time_to_target", "time"), ("steps_to_target", "step")):
                values = [float(h[field]) for h in reached]
                row[key + "_median"] = float(np.median(values)) if values else None
                row[key + "_min"], row[key + "_max"] = (min(values), max(values)) if values else (None, None)
        if i > 0:
            pairs = [(r["metrics"].get(final_key), base_final[r["seed"]]) for r in ok
                     if base_final.get(r["seed"]) is not None]
            diffs = [a - b for a, b in pairs if a is not None]
            row["vs_baseline"] = float(np.mean(diffs)) if diffs else None
            row["lower_than_baseline"] = sum(d < 0 for d in diffs)
            row["paired"] = len(diffs)
        rows.append(row)
    return rows


def same_start(study: Study, records: dict) -> tuple[bool, list[str]]:
    """Check the fingerprints: per seed, one set of initial weights and one batch order for all configurations.

    Weights are compared name by name among configurations of the same architecture and input width
    (batch norm adds parameters but leaves the dense weights alone; ``pca`` changes the first layer's
    shape); batch orders over the epochs every run reached.
    """
    ok, lines = True, []
    for seed in study.seeds:
        recs = [records[(i, seed)] for i in range(len(study.runs)) if (i, seed) in records]
        if len(recs) < 2:
            continue
        groups: dict = {}
        for r in recs:
            c = r["config"]
            groups.setdefault((tuple(c["hidden"]), c.get("layers"), c["activation"], c["dtype"], c.get("pca")),
                              []).append(r)
        init_same = True
        for members in groups.values():
            digests = [r["fingerprint"]["init_params"] or {} for r in members]
            common = set.intersection(*(set(d) for d in digests))
            init_same &= all(len({d[k] for d in digests}) == 1 for k in common)
        by_n: dict = {}
        for r in recs:
            by_n.setdefault(r["fingerprint"]["n_train"], []).append(r["fingerprint"]["batch_orders"])
        order_same, epochs = True, []
        for orders in by_n.values():
            k = min(len(o) for o in orders)
            epochs.append(k)
            order_same &= all(o[:k] == orders[0][:k] for o in orders)
        ok &= init_same and order_same
        arch = "" if len(groups) == 1 else f" ({len(groups)} architectures, each compared with itself)"
        lines.append(f"seed {seed}: {len(recs)} configurations; initial weights "
                     f"{'identical' if init_same else 'DIFFERENT'}{arch}; batch order "
                     f"{'identical' if order_same else 'DIFFERENT'} over the first {min(epochs)} epoch(s)")
    return ok, lines


# --- text ------------------------------------------------------------------------------------------


def _pct(mean, std=None, digits=2) -> str:
    if mean is None:
        return "—"
    text = f"{100 * mean:.{digits}f}"
    return f"{text} ± {100 * std:.{digits}f}%" if std is not None else f"{text}%"


def _num(mean, std=None, fmt="{:.1f}") -> str:
    if mean is None:
        return "—"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if std is not None else "")


def table_rows(study: Study, summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary table (shared by Markdown and HTML)."""
    measure = _summary_measure(summary)
    k = measure.key
    head = ["configuration", "runs", f"final {measure.name}", f"best {measure.name}", "best epoch",
            f"test {'RMSE' if measure.regression else 'error'}", "seconds", "steps"]
    if measure.regression:
        head.insert(4, f"final {measure.split} MSE")
    target = _target(study, measure)
    if target is not None:
        head += [f"seconds to {100 * target:g}%", f"steps to {100 * target:g}%"]
    head.append("vs first (paired)")
    cells = []
    for i, r in enumerate(summary):
        runs = f"{r['done'] - r['diverged']}/{r['seeds']}" + (f" ({r['diverged']} diverged)" if r["diverged"] else "")
        row = [r["label"], runs, measure.fmt(r[f"final_{k}"], r[f"final_{k}_std"]),
               measure.fmt(r[f"best_{k}"], r[f"best_{k}_std"]),
               _num(r["best_epoch"], r["best_epoch_std"], "{:.3g}"),
               measure.fmt(r[measure.test_key], r[measure.test_key + "_std"]),
               _num(r["train_seconds"], r["train_seconds_std"], "{:.3g}"), _num(r["steps"], None, "{:,.0f}")]
        if measure.regression:
            row.insert(4, _num(r[f"final_{measure.cost}"], r[f"final_{measure.cost}_std"], "{:.4g}"))
        if target is not None:
            n = r["done"] - r["diverged"]
            if r["reached"]:
                note = "" if r["reached"] == n else f" ({r['reached']}/{n} reached)"
                row += [_num(r["time_to_target"], r["time_to_target_std"], "{:.3g}") + note,
                        _num(r["steps_to_target"], None, "{:,.0f}") + note]
            else:
                row += ["not reached", "not reached"]
        if i == 0:
            row.append("baseline")
        elif r.get("vs_baseline") is None:
            row.append("—")
        else:
            row.append(f"{measure.diff(r['vs_baseline'])}, lower on {r['lower_than_baseline']}/{r['paired']} seeds")
        cells.append(row)
    return head, cells


def findings(study: Study, summary: list[dict]) -> list[str]:
    """Plain sentences: each configuration against the first, paired by seed; the time-to-target winner."""
    out = []
    measure = _summary_measure(summary)
    final = f"final_{measure.key}"
    if not summary or summary[0].get(final) is None:
        return out
    base = summary[0]
    for r in summary[1:]:
        if r.get("vs_baseline") is None:
            continue
        verdict = "ahead of" if r["lower_than_baseline"] == r["paired"] and r["vs_baseline"] < 0 else (
            "behind" if r["lower_than_baseline"] == 0 and r["vs_baseline"] > 0 else "not clearly different from")
        what = (f"{measure.rows} RMSE" if measure.regression else "validation error")
        out.append(f"{r['label']} ends {verdict} {base['label']}: final {what} "
                   f"{measure.fmt(r[final])} vs {measure.fmt(base[final])} "
                   f"({measure.diff(r['vs_baseline']).replace('pp', 'percentage points')}; lower on "
                   f"{r['lower_than_baseline']} of {r['paired']} seeds).")
    if measure.regression and measure.split == "train":
        out.append("There are no validation rows: the curves and the table measure the training rows, in "
                   "inference mode (dropout off, batch norm on its running statistics); lower is closer to the "
                   "points, not better generalization.")
    if measure.regression and study.target_error is not None:
        out.append("The target error rate applies to classification; it is ignored for this regression.")
    if _target(study, measure) is not None:
        reached = [r for r in summary if r.get("reached")]
        if reached:
            fast = min(reached, key=lambda r: r["time_to_target"])
            out.append(f"First to {100 * study.target_error:g}% validation error in wall-clock time: {fast['label']} "
                       f"({fast['time_to_target']:.1f} s, {fast['steps_to_target']:,.0f} steps, mean of "
                       f"{fast['reached']} seed(s)).")
        missed = [r["label"] for r in summary if not r.get("reached")]
        if missed:
            out.append(f"Never reached {100 * study.target_error:g}%: {', '.join(missed)}.")
    if study.budget is not None:
        out.append(f"Every run was stopped at the first evaluation after {study.budget:g} s of training "
                   f"(evaluations included), so the seconds-axis plot compares equal wall-clock budgets.")
    return out


def _summary_measure(summary: list[dict]) -> Measure:
    key = summary[0].get("metric", "valid_error") if summary else "valid_error"
    split, what = key.split("_", 1)
    return Measure("regression" if what == "rmse" else "classification", split)


def _target(study: Study, measure: Measure) -> float | None:
    """The target error rate where it means something: classification only."""
    return None if measure.regression else study.target_error


def target_rows(study: Study, summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Time and steps to the target: median and min-max over the seeds that reached it."""
    t = f"{100 * study.target_error:g}%"
    head = ["configuration", "reached", f"seconds to {t}: median", "min–max", f"steps to {t}: median", "min–max"]
    cells = []
    for r in summary:
        n = r["done"] - r["diverged"]
        if not r.get("reached"):
            cells.append([r["label"], f"0/{n}", "not reached", "—", "not reached", "—"])
            continue
        cells.append([r["label"], f"{r['reached']}/{n}", f"{r['time_to_target_median']:.3g}",
                      f"{r['time_to_target_min']:.3g}–{r['time_to_target_max']:.3g}",
                      f"{r['steps_to_target_median']:,.0f}",
                      f"{r['steps_to_target_min']:,.0f}–{r['steps_to_target_max']:,.0f}"])
    return head, cells


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "none"
    return str(v)


def tuning_table(tuning: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Each run's tuned values and the best validation error of its tuning trials."""
    head = ["configuration", "tuned over", "trials", "tuned values", "tuning valid error"]
    cells = []
    for row in tuning:
        best = row["best"]
        cells.append([row["label"], row["space"] or "— (fixed by its run spec)", str(len(row["trials"])),
                      " ".join(f"{k}={_fmt_value(v)}" for k, v in row["values"].items()) or "—",
                      _pct(best["score"]) if best else "—"])
    return head, cells


def _md_table(head, cells) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]


def markdown(study: Study, summary: list[dict], same: tuple[bool, list[str]], tuning: list[dict] | None = None) -> str:
    head, cells = table_rows(study, summary)
    lines = [f"## {study.title}", "", *_md_table(head, cells)]
    lines.append("")
    if tuning:
        lines += ["Tuned values (same trial budget per configuration, validation data only):", "",
                  *_md_table(*tuning_table(tuning)), ""]
    if _target(study, _summary_measure(summary)) is not None and any(r.get("reached") for r in summary):
        lines += [*_md_table(*target_rows(study, summary)), ""]
    lines += [f"- {s}" for s in findings(study, summary)]
    ok, detail = same
    if detail:
        lines.append(f"- Same start per seed: {'verified' if ok else 'NOT verified'} "
                     f"(fingerprints of the weights and batch orders each trainer received).")
    return "\n".join(lines) + "\n"


# --- files -----------------------------------------------------------------------------------------

RUN_COLUMNS = ("run_id", "label", "seed", "status", "engine", "epochs", "steps", "train_seconds",
               "final_valid_error", "best_valid_error", "best_epoch", "test_error", "stopped_by_budget")


def run_columns(measure: Measure) -> tuple[str, ...]:
    """runs.csv's columns: :data:`RUN_COLUMNS` with the comparison's measure in place of the error rate."""
    if measure == Measure():
        return RUN_COLUMNS
    swap = {"final_valid_error": f"final_{measure.key}", "best_valid_error": f"best_{measure.key}",
            "test_error": measure.test_key}
    out = [swap.get(c, c) for c in RUN_COLUMNS]
    if measure.regression:
        out.insert(out.index(f"best_{measure.key}"), f"final_{measure.cost}")
    return tuple(out)


def _csv(path: Path, columns, rows) -> None:
    atomic_write_csv(path, columns, rows)


def write_outputs(study: Study, records: dict, out_dir: Path,
                  tuning: list[dict] | None = None) -> tuple[list[dict], list[str]]:
    """runs.csv, summary.csv, summary.md, the PNGs and report.html; returns the summary.

    ``tuning``: per run, what tuning chose (tuning.json's rows): a table, the tuning curves and the
    learning-rate sensitivity join the report.
    """
    summary = summarize(study, records)
    same = same_start(study, records)
    measure = measure_of(records)
    ordered = [records[(i, s)] for s in study.seeds for i in range(len(study.runs)) if (i, s) in records]
    _csv(out_dir / "runs.csv", run_columns(measure),
         [{**r["metrics"], **{k: r[k] for k in ("run_id", "label", "seed", "status", "engine")}} for r in ordered])
    columns = list(dict.fromkeys(k for row in summary for k in row))
    _csv(out_dir / "summary.csv", columns, summary)
    atomic_write_text(out_dir / "summary.md", markdown(study, summary, same, tuning))
    groups = [(run.label, [records[(i, s)]["history"] for s in study.seeds if (i, s) in records])
              for i, run in enumerate(study.runs)]
    images = {}
    fits = [(run.label, [records[(i, s)] for s in study.seeds if (i, s) in records
                         and records[(i, s)].get("fitted_curve")]) for i, run in enumerate(study.runs)]
    if any(recs for _, recs in fits):
        images["fitted curves: each configuration's prediction (one line per seed) and the training points"] = \
            plot_fits(fits, out_dir / "fits.png", title=study.title)
    panels = curve_panels(measure)
    for axis, caption in (("epoch", "versus epochs"), ("step", "versus optimizer steps"),
                          ("time", "versus wall-clock seconds")):
        images[caption] = plot_curves(groups, axis, out_dir / f"curves-{axis}.png", title=study.title,
                                      target=_target(study, measure), budget=study.budget, panels=panels)
    tuning_images = {}
    if tuning:
        _csv(out_dir / "tuning.csv", ("label", "ticket", "score", "status", "steps", "seconds", "params"),
             [{"label": row["label"], **t, "params": " ".join(f"{k}={_fmt_value(v)}" for k, v in t["params"].items())}
              for row in tuning for t in row["trials"]])
        tuning_images["tuning curves: best validation error so far vs trials"] = plot_tuning_curves(
            tuning, out_dir / "tuning-curves.png", title=study.title)
        if any("lr" in t["params"] for row in tuning for t in row["trials"]):
            tuning_images["learning-rate sensitivity: validation error of every tuning trial vs lr"] = \
                plot_lr_sensitivity(tuning, out_dir / "lr-sensitivity.png", title=study.title)
    write_html(out_dir / "report.html", study, summary, same, ordered, images, tuning, tuning_images)
    return summary, same[1]


def curve_panels(measure: Measure) -> tuple[tuple[str, str, float, bool], ...]:
    """The curves' two panels: (history column, axis label, scale, is a percentage)."""
    if not measure.regression:
        if measure.split == "valid":
            return (("valid_cost", "validation cost (cross-entropy)", 1.0, False),
                    ("valid_error", "validation error (%)", 100.0, True))
        return (("train_eval_cost", "training cost (cross-entropy, inference mode)", 1.0, False),
                ("train_error", "training error (%, inference mode)", 100.0, True))
    where = "validation" if measure.split == "valid" else "training"
    return ((measure.cost, f"{where} MSE (targets' units, inference mode)", 1.0, False),
            ("train_cost", "mini-batch training loss (standardized MSE)", 1.0, False))


def _table(head, cells, numeric_from=1) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=num' if j >= numeric_from else ''}>{escape(c)}</td>"
                                    for j, c in enumerate(row)) + "</tr>" for row in cells)
    return f"<table><tr>{th}</tr>{body}</table>"


def _differences(study: Study) -> list[list[str]]:
    """Each configuration's settings that differ from the TrainConfig defaults (and the optimizer options)."""
    default = TrainConfig().to_dict()
    rows = []
    for run in study.runs:
        c = run.config.to_dict()
        keys = [k for k in c if k not in ("dataset", "optimizer_options", "seed", "name", "recipe")
                and c[k] != default.get(k)]
        text = ", ".join(f"{k}={c[k]}" for k in keys)
        opts = ", ".join(f"{k}={v}" for k, v in c["optimizer_options"].items())
        rows.append([run.label, run.spec, run.convention, opts or "—", text,
                     "—" if run.budget is None else f"{run.budget:g} s"])
    return rows


def write_html(path: Path, study: Study, summary, same, ordered, images, tuning=None, tuning_images=None) -> Path:
    from descend import __version__
    from descend.reports.html import CSS, image_figure

    head, cells = table_rows(study, summary)
    measure = _summary_measure(summary)
    preset = PRESETS.get(study.preset) if study.preset else None
    about = [f"Dataset <b>{escape(study.dataset)}</b>; {len(study.runs)} configurations × {len(study.seeds)} seeds "
             f"({escape(', '.join(map(str, study.seeds)))}); convention {escape(study.convention)}."]
    if preset:
        about.insert(0, escape(preset.description))
    if study.notes:
        about.append(escape(study.notes))
    about.append("Within a seed every configuration starts from the same initial weights and sees the same "
                 "batch order; lines are the mean over seeds, shaded bands the min-max range.")
    ok, detail = same
    parts = [f"<h1>{escape(study.title)}</h1>", "<p>" + " ".join(about) + "</p>", "<h2>Findings</h2>",
             "<ul>" + "".join(f"<li>{escape(s)}</li>" for s in findings(study, summary)) + "</ul>",
             "<h2>Summary (mean ± std over seeds)</h2>", _table(head, cells),
             *(["<h2>Time and steps to the target (median, min–max over seeds)</h2>",
                _table(*target_rows(study, summary))]
               if _target(study, measure) is not None and any(r.get("reached") for r in summary) else []),
             *(["<h2>Tuning (the same budget of trials per configuration, scored on validation data only)</h2>",
                _table(*tuning_table(tuning), numeric_from=2), "<div>",
                *(image_figure(c, p) for c, p in (tuning_images or {}).items()), "</div>"] if tuning else []),
             "<h2>Curves</h2>", "<div>", *(image_figure(c, p) for c, p in images.items()), "</div>",
             "<h2>Same start per seed</h2>",
             f"<p>{'Verified' if ok else '<b>Not verified</b>'}: SHA-256 fingerprints of the initial weights and "
             f"of every epoch's batch order, taken from what each trainer received.</p>",
             "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in detail) + "</ul>",
             "<h2>Configurations</h2>",
             _table(["label", "run spec", "convention", "optimizer options", "settings (non-default)", "budget"],
                    _differences(study), numeric_from=99),
             "<h2>Runs</h2>",
             _table(["run", "seed", "status", "engine", "epochs", "steps", "seconds", f"final {measure.name}",
                     f"best {measure.name}", *([f"final {measure.split} MSE"] if measure.regression else []),
                     f"test {'RMSE' if measure.regression else 'error'}"],
                    [[r["run_id"], r["seed"], r["status"], r["engine"], f"{r['metrics'].get('epochs', 0):.3g}",
                      f"{r['metrics'].get('steps', 0):,}", f"{r['metrics'].get('train_seconds', 0):.1f}",
                      measure.fmt(r["metrics"].get(f"final_{measure.key}")),
                      measure.fmt(r["metrics"].get(f"best_{measure.key}")),
                      *([_num(r["metrics"].get(f"final_{measure.cost}"), None, "{:.4g}")] if measure.regression
                        else []),
                      measure.fmt(r["metrics"].get(measure.test_key))] for r in ordered], numeric_from=1)]
    doc = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width,initial-scale=1">'
           f"<title>{escape(study.title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts)
           + f"\n<footer>descend {escape(__version__)}, {escape(time.strftime('%Y-%m-%d %H:%M'))}</footer>\n</body></html>\n")
    return atomic_write_text(path, doc)
