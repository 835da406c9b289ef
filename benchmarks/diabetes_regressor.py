"""descend.MLPRegressor against scikit-learn's MLPRegressor on scikit-learn's bundled diabetes data.

Data: ``sklearn.datasets.load_diabetes`` (442 rows, 10 features, one target).
Protocol: 5-fold cross-validation (``KFold(5, shuffle=True, random_state=0)``,
the same folds for every model), R² on each held-out fold, inside a
``Pipeline(StandardScaler(), model)`` so the inputs are standardized with the
training folds' statistics alike.  Each model is run for every seed in
``--seeds`` (its ``random_state``); reported: the mean and standard deviation
of R² over the folds per seed, the mean over all seeds and folds, the median
epochs run, and the median of the five folds' total fit time over the seeds.

Models, with the same settings (hidden (100,), ReLU, Adam, lr 1e-3, batch 32,
at most 500 epochs, alpha 1e-4, tol 1e-4, 10 epochs without change, early
stopping off or on per ``--early-stopping``):

* ``sklearn``: scikit-learn's MLPRegressor, fitting ``y`` as given;
* ``sklearn+TTR``: the same wrapped in ``TransformedTargetRegressor(...,
  transformer=StandardScaler())``: standardized targets, as descend does
  inside, so this is the like-for-like comparison;
* ``descend``: ``descend.MLPRegressor`` (numpy engine, 1 thread) with those
  settings in its units: its loss is the mean squared error where
  scikit-learn's is half of it, so ``tol`` is doubled and ``l2 = 2 * alpha /
  batch_size`` (the same objective and stopping threshold); ``init="glorot"``,
  the Glorot-uniform weights scikit-learn draws for ReLU;
* ``descend, He init``: the same with descend's own default for ReLU
  (He-normal weights, about 3x the spread here), shown for reference.

Acceptance: descend's mean R² within 0.02 of, or above, scikit-learn's
(both rows).  Threads: one, set before NumPy is imported.

    python benchmarks/diabetes_regressor.py                   # prints a Markdown table
    python benchmarks/diabetes_regressor.py --write           # and replaces its section in docs/results.md
    python benchmarks/diabetes_regressor.py --seeds 0 --early-stopping on
    python benchmarks/diabetes_regressor.py --batch-size 59          # where both split the rows alike
    python benchmarks/diabetes_regressor.py --fixed-epochs 50 400    # R² after exactly N epochs, no stopping
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import warnings
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(hidden=(100,), activation="relu", lr=1e-3, batch_size=32, max_iter=500, alpha=1e-4, tol=1e-4,
                n_iter_no_change=10)
MODELS = ("sklearn", "sklearn+TTR", "descend", "descend, He init")
TOLERANCE = 0.02


def make_model(name: str, seed: int, early_stopping: bool, fixed_epochs: int | None = None):
    """The pipeline of model ``name`` and a function that reads the epochs run off a fitted pipeline."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPRegressor as SkMLP
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import descend

    s = dict(SETTINGS)
    if fixed_epochs:  # exactly this many epochs: the no-improvement rule can never fire
        s.update(max_iter=fixed_epochs, n_iter_no_change=10**6)
    if name.startswith("sklearn"):
        model = SkMLP(hidden_layer_sizes=s["hidden"], activation=s["activation"], solver="adam",
                      learning_rate_init=s["lr"], batch_size=s["batch_size"], max_iter=s["max_iter"],
                      alpha=s["alpha"], tol=s["tol"], n_iter_no_change=s["n_iter_no_change"],
                      early_stopping=early_stopping, random_state=seed)
        if name == "sklearn+TTR":
            model = TransformedTargetRegressor(model, transformer=StandardScaler())
    else:
        model = descend.MLPRegressor(hidden=s["hidden"], activation=s["activation"], optimizer="adam", lr=s["lr"],
                                     batch_size=s["batch_size"], epochs=s["max_iter"],
                                     l2=2 * s["alpha"] / s["batch_size"], tol=2 * s["tol"],
                                     n_iter_no_change=s["n_iter_no_change"], early_stopping=early_stopping,
                                     init="glorot" if name == "descend" else None, threads=1,
                                     random_state=seed)
    pipe = make_pipeline(StandardScaler(), model)

    def epochs(fitted) -> int:
        last = fitted.steps[-1][1]
        return getattr(last, "regressor_", last).n_iter_

    return pipe, epochs


def run(name: str, seed: int, early_stopping: bool, fixed_epochs: int | None = None) -> dict:
    from sklearn.datasets import load_diabetes
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold, cross_validate

    X, y = load_diabetes(return_X_y=True)
    pipe, epochs = make_model(name, seed, early_stopping, fixed_epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = cross_validate(pipe, X, y, cv=KFold(5, shuffle=True, random_state=0), scoring="r2",
                             return_estimator=True, n_jobs=1)
    return {"scores": [float(v) for v in out["test_score"]], "fit_s": float(np.sum(out["fit_time"])),
            "epochs": [epochs(e) for e in out["estimator"]]}


def markdown(results: dict, seeds, early_stopping: bool, command: str) -> str:
    import sklearn

    import descend

    lines = [f"Command: `{command}` ({'with' if early_stopping else 'without'} early stopping). "
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, 1 thread, Python {platform.python_version()}, "
             f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, descend {descend.__version__}.", "",
             "| model | " + " | ".join(f"R² seed {s} (mean ± std over folds)" for s in seeds) +
             " | mean R², all seeds and folds | median epochs | median fit s (5 folds) |",
             "|---" * (len(seeds) + 4) + "|"]
    means = {}
    for name in MODELS:
        runs = results[name]
        cells = [f"{np.mean(r['scores']):.4f} ± {np.std(r['scores']):.4f}" for r in runs]
        means[name] = float(np.mean([v for r in runs for v in r["scores"]]))
        epochs = statistics.median([e for r in runs for e in r["epochs"]])
        fit_s = statistics.median([r["fit_s"] for r in runs])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | **{means[name]:.4f}** | {epochs:g} | {fit_s:.2f} |")
    d = means["descend"]
    verdicts = [f"{ref}: {d - means[ref]:+.4f} ({'met' if d >= means[ref] - TOLERANCE else 'NOT met'})"
                for ref in ("sklearn", "sklearn+TTR")]
    lines += ["", f"Acceptance (descend's mean R² within {TOLERANCE} of, or above, scikit-learn's): "
              + "; ".join(verdicts) + "."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="models' random_state values")
    ap.add_argument("--early-stopping", choices=("off", "on", "both"), default="both")
    ap.add_argument("--write", action="store_true", help="replace this benchmark's section in docs/results.md")
    ap.add_argument("--batch-size", type=int, default=SETTINGS["batch_size"],
                    help="the shared batch size (both libraries' l2 / alpha follow it)")
    ap.add_argument("--fixed-epochs", type=int, nargs="+", metavar="N",
                    help="instead: mean R² of sklearn+TTR and descend after exactly N epochs each (no stopping rule)")
    args = ap.parse_args(argv)
    SETTINGS["batch_size"] = args.batch_size
    if args.fixed_epochs:
        for n in args.fixed_epochs:
            for seed in args.seeds:
                scores = {name: np.mean(run(name, seed, False, n)["scores"]) for name in ("sklearn+TTR", "descend")}
                print(f"{n} epochs, seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
        return 0
    command = "python benchmarks/diabetes_regressor.py" + " ".join(
        [""] + (["--seeds", *map(str, args.seeds)] if args.seeds != [0, 1, 2] else [])
        + ([f"--early-stopping {args.early_stopping}"] if args.early_stopping != "both" else [])
        + ([f"--batch-size {args.batch_size}"] if args.batch_size != 32 else [])
        + (["--write"] if args.write else []))
    tables = []
    for early in {"off": [False], "on": [True], "both": [False, True]}[args.early_stopping]:
        results = {}
        for name in MODELS:
            results[name] = []
            for seed in args.seeds:
                r = run(name, seed, early)
                results[name].append(r)
                print(f"early_stopping={early} {name:20s} seed {seed}: R² {np.mean(r['scores']):.4f}, "
                      f"fit {r['fit_s']:.2f} s, epochs {r['epochs']}", file=sys.stderr, flush=True)
        tables.append(markdown(results, args.seeds, early, command))
    text = "\n\n".join(tables)
    print(text)
    if args.write:
        from docsection import write_section

        write_section(ROOT / "docs" / "results.md", "diabetes-regressor", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
