"""Ensembles: members on bootstrap rows and/or random feature subsets, soft and hard voting.

``descend ensemble mnist --members 10 --rows 0.8 --bootstrap --features 0.8``
trains ten networks, each on its own sample of the training rows (with
replacement under ``--bootstrap``) and its own random subset of the input
columns, in parallel worker processes, then combines them:

- **soft** voting averages the members' class probabilities;
- **hard** voting takes the majority of their predicted classes (a tie goes to
  the tied class with the highest mean probability).

Everything is seeded: member ``i``'s rows, columns, initial weights, batch
order and dropout masks derive from ``(seed, i)`` alone, so the ensemble is
the same whatever the number of workers.  All members are saved in ONE
safetensors file (``member{i}/...`` tensors, each member's column indices as
an integer tensor, spec / classes / normalisation in the JSON metadata), read
back by :meth:`Ensemble.load` without pickle.

Regression data (``--target``, float NPZ targets) makes a regression
ensemble: its members' predictions, in the targets' units, are averaged
(hard voting has no meaning there and is refused), and the report gives the
RMSE, MAE and R^2 of the ensemble and of each member, and the RMSE against
ensemble size.

The run directory also holds ``report.html``: the ensemble's test error
against the best and the mean single member, error against ensemble size for
both votes, and, when members use dropout, one member's weight-scaling
inference against Monte-Carlo averaging of dropout masks (dropout as an
implicit ensemble).

Members are placed by :mod:`descend.placement`: worker processes started
with ``spawn`` (safe with threads and GPU runtimes) read the normalised
training matrix from a memory-mapped ``.npy`` file (shared page cache, no copy
per worker) and use ``cores // workers`` compute threads each (one when there
are as many workers as cores); a killed worker's member is trained again.
With ``dask`` the members are tasks on an existing Dask cluster, the data
scattered to every worker once.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from descend.backend import numpy_ops
from descend.errors import ConfigError
from descend.experiments.ensemble.members import (EnsembleConfig, _member_spec, member_data, member_placement,
                                                   plan_members, train_members)
from descend.model import predict_logits
from descend.placement import open_pool
from descend.train.ensemble_model import Ensemble, Member
from descend.train.inference import softmax
from descend.train.setup import network_label

MC_SIZES = (1, 2, 5, 10, 20, 50, 100)


def error_by_size(member_proba: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """Test error of the first k members' soft and hard vote, k = 1..M."""
    member_proba = np.asarray(member_proba, dtype=np.float64)
    m, n, c = member_proba.shape
    running = np.zeros((n, c))
    counts = np.zeros((n, c))
    soft, hard = [], []
    rows = np.arange(n)
    for k in range(m):
        running += member_proba[k]
        counts[rows, np.argmax(member_proba[k], axis=1)] += 1
        soft.append(float(np.mean(np.argmax(running, axis=1) != y)))
        hard.append(float(np.mean(np.argmax(counts + running / (k + 1) / 2, axis=1) != y)))
    return {"size": list(range(1, m + 1)), "soft": soft, "hard": hard}


# ---------------------------------------------------------------------------- a run


@dataclass
class EnsembleRun:
    run_dir: Path
    config: EnsembleConfig
    ensemble: Ensemble
    metrics: dict
    members: list[dict]


def run_ensemble(cfg: EnsembleConfig, *, out=None, root="runs", progress: bool = True, stream=None,
                 dask: str | None = None) -> EnsembleRun:
    """Train the ensemble per ``cfg``, evaluate it and write the run directory (what ``descend ensemble`` calls).

    ``dask``: the address of an existing Dask scheduler that trains the members.
    """
    import descend
    from descend.io.rundir import make_run_dir, write_json
    from descend.train.setup import prepare_data

    stream = stream or sys.stderr
    log = (lambda line: print(line, file=stream, flush=True)) if progress else (lambda line: None)
    tcfg = cfg.train
    data = prepare_data(tcfg)
    task = data.task
    regression = task == "regression"
    if regression:
        if cfg.vote != "soft":
            raise ConfigError(f"`vote` {cfg.vote!r} takes the majority of predicted classes; a regression ensemble "
                              f"averages its members' values (leave --vote out). Received: vote={cfg.vote!r}")
        if tcfg.task is None:  # config.json names the task the data called for, as `descend train` does
            tcfg = tcfg.replace(task="regression")
            cfg = dataclasses.replace(cfg, train=tcfg)
    ds, normalizer = data.dataset, data.normalizer
    X, y = data.X_train, data.y_train
    X_valid, y_valid = data.X_valid, data.y_valid
    X_test, y_test = data.X_test, data.y_test
    n_classes = data.n_out if regression else len(ds.classes)

    plans = plan_members(cfg, len(y), X.shape[1])
    placement = member_placement(cfg, len(plans), dask)
    # Opened before anything is written: a Dask scheduler that cannot be reached leaves no half-made run.
    with open_pool(placement, shared=member_data(X, y, X_valid, y_valid), log=log, name="descend-ensemble") as pool:
        name = tcfg.name or f"{Path(tcfg.dataset).name.split('.')[0]}-ensemble"
        run_dir = Path(out) if out else make_run_dir(root, name)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", {
            "ensemble": cfg.to_dict(), "descend": descend.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "command": " ".join(sys.argv)})
        workers = placement.workers or len(plans)
        where = (f"on the Dask cluster at {dask}" if dask else
                 f"{workers} worker process{'es' if workers > 1 else ''}")
        log(f"descend: ensemble of {cfg.members} x "
            f"{network_label(tcfg, _member_spec(tcfg, X.shape[1], data.image_shape, task))} on "
            f"{ds.name}: {len(plans[0].rows):,} rows{' (bootstrap)' if cfg.bootstrap else ''} and "
            f"{len(plans[0].features)}/{X.shape[1]} features each, {where}; run directory {run_dir}")
        started = time.perf_counter()
        trained = train_members(cfg, plans, X, y, X_valid, y_valid, n_classes=n_classes, log=log, dask=dask,
                                pool=pool, image_shape=data.image_shape, task=task, target_std=data.target_std)
        wall = time.perf_counter() - started

    spec = _member_spec(tcfg, X.shape[1], data.image_shape, task)
    members = []
    for plan, r in zip(plans, trained):
        info = {"rows": int(len(plan.rows)), "unique_rows": int(len(np.unique(plan.rows))),
                "features": int(len(plan.features)), "epochs": r["epochs"], "steps": r["steps"],
                "stopped_early": r["stopped_early"],
                "best_valid_rmse" if regression else "best_valid_error": r["best_valid"],
                "train_seconds": r["seconds"]}
        members.append(Member(r["params"], r["state"], plan.features, plan.seed, info))
    meta = {"task": "regression", "targets": list(ds.targets)} if regression else {}
    ensemble = Ensemble(spec, members, tuple(ds.classes), ds.n_features, normalizer, cfg.vote, {
        **meta, "dataset": {"name": ds.name, "source": ds.source},
        "image_shape": list(ds.image_shape) if ds.image_shape else None,
        "training": {"config": tcfg.to_dict(), "engine": trained[0]["engine"]},
        "sampling": {"rows": cfg.rows, "bootstrap": cfg.bootstrap, "features": cfg.features}},
        data.target_scaler)

    if regression:
        metrics, rows, curves = evaluate_regression_ensemble(ensemble, data)
        dropout = None
    else:
        metrics, rows, curves, dropout = evaluate_ensemble(ensemble, X_valid, y_valid, X_test, y_test,
                                                           cfg.mc_samples)
    if dask:
        metrics["dask"] = dask
    metrics.update({"members": cfg.members, "workers": workers, "wall_seconds": wall,
                    "member_train_seconds_total": float(sum(r["seconds"] for r in trained))})
    ensemble.metadata["metrics"] = metrics
    ensemble.save(run_dir / "ensemble.safetensors")
    if regression:
        write_json(run_dir / "metrics.json", {**metrics, "rmse_by_size": curves})
    else:
        write_json(run_dir / "metrics.json", {**metrics, "error_by_size": curves, "dropout": dropout})
    _write_members_csv(run_dir / "members.csv", rows, REGRESSION_MEMBER_COLUMNS if regression else MEMBER_COLUMNS)
    if regression:
        write_regression_report(run_dir, cfg, metrics, rows, curves)
    else:
        write_report(run_dir, cfg, metrics, rows, curves, dropout)
    held = metrics.get("eval_split")
    if held and regression:
        log(f"descend: {held} RMSE: ensemble {metrics['ensemble_rmse']:.4g} (R^2 {metrics['ensemble_r2']:.4f}, mean "
            f"of the members' values), mean member {metrics['mean_member_rmse']:.4g}, best member "
            f"{metrics['best_member_rmse']:.4g}; {wall:.1f} s; wrote {run_dir}")
    elif held:
        log(f"descend: {held} error: ensemble {_pct(metrics['ensemble_error_' + cfg.vote])} ({cfg.vote} vote), "
            f"mean member {_pct(metrics['mean_member_error'])}, best member {_pct(metrics['best_member_error'])}; "
            f"{wall:.1f} s; wrote {run_dir}")
    else:
        log(f"descend: no labelled validation or test rows to evaluate on; {wall:.1f} s; wrote {run_dir}")
    return EnsembleRun(run_dir, cfg, ensemble, metrics, rows)


def evaluate_ensemble(ensemble: Ensemble, X_valid, y_valid, X_test, y_test, mc_samples: int = 50):
    """``(metrics, member rows, error-by-size curves, dropout comparison)`` on normalised held-out rows.

    The test split is the evaluation set when labelled, else the validation split.
    """
    if y_test is not None:
        X_eval, y_eval, split = X_test, y_test, "test"
    elif y_valid is not None:
        X_eval, y_eval, split = X_valid, y_valid, "validation"
    else:
        X_eval = y_eval = split = None
    rows = []
    for i, m in enumerate(ensemble.members):
        rows.append({"member": i, "seed": m.seed, **{k: v for k, v in m.info.items()}})
    metrics: dict = {"eval_split": split}
    curves, dropout = None, None
    if y_valid is not None:
        valid_proba = ensemble.member_proba(X_valid, normalized=True)
        for row, p in zip(rows, valid_proba):
            row["valid_error"] = float(np.mean(np.argmax(p, axis=1) != y_valid))
    if split is None:
        return metrics, rows, curves, dropout
    proba = valid_proba if split == "validation" else ensemble.member_proba(X_eval, normalized=True)
    errors = np.array([np.mean(np.argmax(p, axis=1) != y_eval) for p in proba])
    for row, e in zip(rows, errors):
        row[f"{split}_error"] = float(e)
    curves = error_by_size(proba, y_eval)
    metrics.update({
        "eval_rows": int(len(y_eval)),
        "ensemble_error_soft": curves["soft"][-1], "ensemble_error_hard": curves["hard"][-1],
        "mean_member_error": float(errors.mean()), "std_member_error": float(errors.std()),
        "best_member_error": float(errors.min()), "best_member": int(errors.argmin()),
        "worst_member_error": float(errors.max())})
    if y_valid is not None and split == "test":
        pick = int(np.argmin([r["valid_error"] for r in rows]))
        metrics["member_chosen_on_validation"] = pick
        metrics["member_chosen_on_validation_error"] = float(errors[pick])
    if ensemble.spec.uses_dropout:
        dropout = dropout_comparison(ensemble, X_eval, y_eval, mc_samples, member=0)
        metrics["dropout_member0_weight_scaling_error"] = dropout["weight_scaling_error"]
        metrics["dropout_member0_mc_error"] = dropout["mc_error"][-1]
        metrics["dropout_mc_samples"] = dropout["samples"][-1]
    return metrics, rows, curves, dropout


def _raw_targets(split) -> np.ndarray:
    return np.asarray(split.y, dtype=np.float64).reshape(len(split.y), -1)


def size_rmse(member_values: np.ndarray, t: np.ndarray) -> dict[str, list]:
    """RMSE of the mean of the first k members' values, k = 1..M (values and targets in the targets' units)."""
    running = np.cumsum(np.asarray(member_values, dtype=np.float64), axis=0)
    sizes = range(1, len(running) + 1)
    return {"size": list(sizes),
            "rmse": [float(np.sqrt(np.mean((running[k - 1] / k - t) ** 2))) for k in sizes]}


def evaluate_regression_ensemble(ensemble: Ensemble, data):
    """``(metrics, member rows, RMSE-by-size curve)`` of a regression ensemble on ``data``'s (a PreparedData)
    held-out rows, against their raw targets: the test split when labelled, else the validation split."""
    from descend.data.targets import regression_metrics

    ds = data.dataset
    rows = [{"member": i, "seed": m.seed, **m.info} for i, m in enumerate(ensemble.members)]
    metrics: dict = {"eval_split": None, "task": "regression", "targets": list(ensemble.targets)}
    measured = {}
    for split, X, present in (("valid", data.X_valid, data.y_valid is not None),
                              ("test", data.X_test, data.y_test is not None)):
        if not present:
            continue
        t = _raw_targets(ds.validation if split == "valid" else ds.test)
        values = ensemble.member_values(X, normalized=True)
        member_metrics = [regression_metrics(v, t) for v in values]
        for row, m in zip(rows, member_metrics):
            row.update({f"{split}_{k}": m[k] for k in ("rmse", "mae", "r2")})
        measured[split] = (t, values, member_metrics)
    if not measured:
        return metrics, rows, None
    split = "test" if "test" in measured else "valid"
    t, values, member_metrics = measured[split]
    rmse = np.array([m["rmse"] for m in member_metrics])
    whole = regression_metrics(values.mean(axis=0), t)
    metrics.update({
        "eval_split": "test" if split == "test" else "validation", "eval_rows": int(len(t)),
        "ensemble_rmse": whole["rmse"], "ensemble_mae": whole["mae"], "ensemble_r2": whole["r2"],
        "mean_member_rmse": float(rmse.mean()), "std_member_rmse": float(rmse.std()),
        "best_member_rmse": float(rmse.min()), "best_member": int(rmse.argmin()),
        "worst_member_rmse": float(rmse.max()),
        "mean_member_mae": float(np.mean([m["mae"] for m in member_metrics])),
        "mean_member_r2": float(np.mean([m["r2"] for m in member_metrics]))})
    if split == "test" and "valid" in measured:
        pick = int(np.argmin([r["valid_rmse"] for r in rows]))
        metrics["member_chosen_on_validation"] = pick
        metrics["member_chosen_on_validation_rmse"] = float(rmse[pick])
    return metrics, rows, size_rmse(values, t)


def dropout_comparison(ensemble: Ensemble, X, y, samples: int, *, member: int = 0, seed: int = 0) -> dict:
    """One member's test error with weight scaling vs the mean of K Monte-Carlo dropout passes.

    Pass ``k`` uses the generator ``default_rng([seed, k])``, as
    ``descend.train.predict.mc_dropout_proba`` does, so the K-pass average here
    equals ``mc_dropout_proba(samples=K)``.
    """
    m = ensemble.members[member]
    x = np.asarray(X, dtype=np.float32)[:, m.features].astype(next(iter(m.params.values())).dtype, copy=False)
    spec = ensemble.spec
    deterministic = softmax(predict_logits(numpy_ops, spec, m.params, m.state, x))
    sizes = sorted({k for k in MC_SIZES if k <= samples} | {samples})
    total = np.zeros_like(deterministic)
    errors = []
    for k in range(1, samples + 1):
        total += softmax(predict_logits(numpy_ops, spec, m.params, m.state, x,
                                        key=np.random.default_rng([seed, k - 1]), mc_dropout=True))
        if k in sizes:
            errors.append(float(np.mean(np.argmax(total, axis=1) != y)))
    return {"member": member, "weight_scaling_error": float(np.mean(np.argmax(deterministic, axis=1) != y)),
            "samples": sizes, "mc_error": errors}


# ---------------------------------------------------------------------------- outputs


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


MEMBER_COLUMNS = ("member", "seed", "rows", "unique_rows", "features", "epochs", "steps", "stopped_early",
                  "best_valid_error", "valid_error", "test_error", "train_seconds")
REGRESSION_MEMBER_COLUMNS = ("member", "seed", "rows", "unique_rows", "features", "epochs", "steps", "stopped_early",
                             "best_valid_rmse", "valid_rmse", "valid_mae", "valid_r2", "test_rmse", "test_mae",
                             "test_r2", "train_seconds")


def _write_members_csv(path: Path, rows: list[dict], columns=MEMBER_COLUMNS) -> None:
    from descend.io.atomic import atomic_write_csv

    atomic_write_csv(path, columns, rows)


def _plot_by_size(sizes, lines, metrics: dict, single: tuple[float, float], title: str, ylabel: str, path) -> Path:
    """``lines`` (``(values, style, label)``) against the number of members, with the mean and best single member."""
    from descend.reports.plots import new_figure, save_figure

    fig, ax = new_figure()
    for values, style, label in lines:
        ax.plot(sizes, values, style, label=label)
    ax.axhline(single[0], color="0.4", ls=":", label="mean single member")
    ax.axhline(single[1], color="0.6", ls="-.", label="best single member")
    ax.set_xticks(sizes if len(sizes) <= 20 else sizes[:: math.ceil(len(sizes) / 20)])
    ax.set_title(f"{title} ({metrics['eval_split']} set)")
    ax.set_xlabel("members (first k)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return save_figure(fig, path)


def plot_error_by_size(curves: dict, metrics: dict, path) -> Path:
    """Error (%) of the first k members' soft and hard vote, with the mean and best single member."""
    lines = [([100 * e for e in curves["soft"]], "o-", "soft vote (mean probability)"),
             ([100 * e for e in curves["hard"]], "s--", "hard vote (majority)")]
    single = (100 * metrics["mean_member_error"], 100 * metrics["best_member_error"])
    return _plot_by_size(curves["size"], lines, metrics, single, "Ensemble error vs size", "error (%)", path)


def plot_dropout(dropout: dict, path) -> Path:
    """Monte-Carlo dropout error vs the number of passes, beside weight scaling."""
    from descend.reports.plots import new_figure, save_figure

    fig, ax = new_figure()
    ax.plot(dropout["samples"], [100 * e for e in dropout["mc_error"]], "o-", label="Monte-Carlo average")
    ax.axhline(100 * dropout["weight_scaling_error"], color="C1", ls="--", label="weight scaling (one pass)")
    ax.set_xscale("log")
    ax.set_title(f"Dropout as an ensemble: member {dropout['member']}")
    ax.set_xlabel("dropout passes averaged")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return save_figure(fig, path)


def write_report(run_dir: Path, cfg: EnsembleConfig, metrics: dict, rows: list[dict], curves, dropout) -> Path:
    """``report.html``: self-contained, everything escaped (as descend's run reports)."""
    from descend import __version__
    from descend.io.atomic import atomic_write_text
    from descend.reports.html import CSS, escape, image_figure, kv_table, rows_table

    title = f"descend ensemble: {run_dir.name}"
    parts = [f"<h1>{escape(title)}</h1>"]
    split = metrics.get("eval_split")
    if split:
        mean = metrics["mean_member_error"]

        def line(name, err, note=""):
            cut = 0.0 if mean == 0 else round(100 * (mean - err) / mean, 1)
            return {"model": name, f"{split} error (%)": round(100 * err, 3),
                    "error reduction vs mean member": f"{cut + 0.0:+.1f}%" if cut else "0.0%", "note": note}

        table = [line(f"ensemble of {cfg.members}, soft vote", metrics["ensemble_error_soft"],
                      "mean probability" + (" (the saved default)" if cfg.vote == "soft" else "")),
                 line(f"ensemble of {cfg.members}, hard vote", metrics["ensemble_error_hard"],
                      "majority of predicted classes" + (" (the saved default)" if cfg.vote == "hard" else "")),
                 line("best single member", metrics["best_member_error"],
                      f"member {metrics['best_member']}, chosen on the {split} set itself (optimistic)")]
        if "member_chosen_on_validation" in metrics:
            table.append(line("member chosen on validation", metrics["member_chosen_on_validation_error"],
                              f"member {metrics['member_chosen_on_validation']}"))
        table.append(line("mean single member", mean, f"std {100 * metrics['std_member_error']:.3f} points"))
        table.append(line("worst single member", metrics["worst_member_error"]))
        parts += [f"<h2>Ensemble vs single members ({escape(split)} set, {metrics['eval_rows']:,} rows)</h2>",
                  rows_table(table)]
        images = {"Error vs ensemble size": plot_error_by_size(curves, metrics, run_dir / "error_vs_size.png")}
        parts += ["<h2>Error vs ensemble size</h2>", "<div>", *(image_figure(c, p) for c, p in images.items()), "</div>",
                  rows_table([{"members": k, "soft error (%)": round(100 * s, 3), "hard error (%)": round(100 * h, 3)}
                               for k, s, h in zip(curves["size"], curves["soft"], curves["hard"])])]
        if dropout:
            parts += ["<h2>Dropout as an implicit ensemble</h2>",
                      f"<p>Member {dropout['member']} was trained with dropout (keep "
                      f"{escape(list(cfg.train.dropout_keep))}). Weight scaling (one deterministic pass) against the "
                      f"average of K passes with random dropout masks (Monte-Carlo dropout):</p>",
                      rows_table([{"inference": "weight scaling", f"{split} error (%)":
                                    round(100 * dropout["weight_scaling_error"], 3)}]
                                  + [{"inference": f"Monte-Carlo, {k} passes", f"{split} error (%)": round(100 * e, 3)}
                                     for k, e in zip(dropout["samples"], dropout["mc_error"])]),
                      image_figure("Monte-Carlo dropout vs weight scaling", plot_dropout(dropout, run_dir / "dropout.png"))]
    else:
        parts.append('<p class="note">The dataset has no labelled validation or test rows: nothing to evaluate.</p>')
    parts += ["<h2>Members</h2>", rows_table([{k: r.get(k) for k in MEMBER_COLUMNS if k in r} for r in rows]),
              "<h2>Run</h2>", kv_table({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}),
              "<h2>Configuration</h2>", kv_table(cfg.to_dict())]
    doc = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width,initial-scale=1">'
           f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts)
           + f"\n<footer>descend {escape(__version__)}</footer>\n</body></html>\n")
    return atomic_write_text(run_dir / "report.html", doc)


def plot_rmse_by_size(curves: dict, metrics: dict, path) -> Path:
    """RMSE of the mean of the first k members' values, with the mean and best single member."""
    lines = [(curves["rmse"], "o-", "ensemble (mean of the members' values)")]
    single = (metrics["mean_member_rmse"], metrics["best_member_rmse"])
    return _plot_by_size(curves["size"], lines, metrics, single, "Ensemble RMSE vs size", "RMSE (targets' units)",
                         path)


def write_regression_report(run_dir: Path, cfg: EnsembleConfig, metrics: dict, rows: list[dict], curves) -> Path:
    """``report.html`` of a regression ensemble: RMSE, MAE and R^2 of the ensemble and its members."""
    from descend import __version__
    from descend.io.atomic import atomic_write_text
    from descend.reports.html import CSS, escape, image_figure, kv_table, rows_table

    title = f"descend ensemble: {run_dir.name}"
    parts = [f"<h1>{escape(title)}</h1>"]
    split = metrics.get("eval_split")
    if split:
        mean = metrics["mean_member_rmse"]
        prefix = "test" if split == "test" else "valid"

        def line(name, rmse, mae=None, r2=None, note=""):
            cut = 0.0 if mean == 0 else round(100 * (mean - rmse) / mean, 1)
            return {"model": name, f"{split} RMSE": round(rmse, 6), "MAE": None if mae is None else round(mae, 6),
                    "R^2": None if r2 is None else round(r2, 6),
                    "RMSE reduction vs mean member": f"{cut + 0.0:+.1f}%" if cut else "0.0%", "note": note}

        best = rows[metrics["best_member"]]
        table = [line(f"ensemble of {cfg.members}", metrics["ensemble_rmse"], metrics["ensemble_mae"],
                      metrics["ensemble_r2"], "mean of the members' values (the saved ensemble)"),
                 line("best single member", metrics["best_member_rmse"], best[f"{prefix}_mae"], best[f"{prefix}_r2"],
                      f"member {metrics['best_member']}, chosen on the {split} set itself (optimistic)")]
        if "member_chosen_on_validation" in metrics:
            chosen = rows[metrics["member_chosen_on_validation"]]
            table.append(line("member chosen on validation", metrics["member_chosen_on_validation_rmse"],
                              chosen["test_mae"], chosen["test_r2"],
                              f"member {metrics['member_chosen_on_validation']}"))
        table.append(line("mean single member", mean, metrics["mean_member_mae"], metrics["mean_member_r2"],
                          f"std {metrics['std_member_rmse']:.4g}"))
        table.append(line("worst single member", metrics["worst_member_rmse"]))
        targets = ", ".join(metrics["targets"])
        parts += [f"<h2>Ensemble vs single members ({escape(split)} set, {metrics['eval_rows']:,} rows; "
                  f"targets {escape(targets)}, in their own units)</h2>", rows_table(table)]
        image = plot_rmse_by_size(curves, metrics, run_dir / "rmse_vs_size.png")
        parts += ["<h2>RMSE vs ensemble size</h2>", "<div>", image_figure("RMSE vs ensemble size", image), "</div>",
                  rows_table([{"members": k, "RMSE": round(r, 6)} for k, r in zip(curves["size"], curves["rmse"])])]
    else:
        parts.append('<p class="note">The dataset has no validation or test rows with targets: nothing to '
                     "evaluate.</p>")
    parts += ["<h2>Members</h2>",
              rows_table([{k: r.get(k) for k in REGRESSION_MEMBER_COLUMNS if k in r} for r in rows]),
              "<h2>Run</h2>", kv_table({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}),
              "<h2>Configuration</h2>", kv_table(cfg.to_dict())]
    doc = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width,initial-scale=1">'
           f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts)
           + f"\n<footer>descend {escape(__version__)}</footer>\n</body></html>\n")
    return atomic_write_text(run_dir / "report.html", doc)
