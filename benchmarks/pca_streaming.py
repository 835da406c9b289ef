"""Out-of-core PCA: the top components of a float32 .npy far larger than the memory it may use.

1. Generates ``--rows x --features`` float32 rows (default 20,000 x 100,000:
   8 GB) into a ``.npy`` file, chunk by chunk (never more than one chunk in
   memory): ``--planted`` directions ``w_i`` (random orthonormal) with standard
   deviations ``s_i = 20 * 0.9**i`` plus N(0, 1) noise in every feature, so
   the top components are well separated from each other and from the noise
   bulk (whose largest sample eigenvalue is about (1 + sqrt(D/N))^2 = 10.5).
2. Runs ``descend.pca.fit(path, k)`` in a child process under
   ``/usr/bin/time -v`` and records its peak resident memory (``Maximum
   resident set size``) and wall time.
3. Verifies the result in a second child (also under ``/usr/bin/time -v``):
   one more chunked pass in float64 computes every component's relative
   residual ``||C v - lambda v|| / lambda`` (with the eigengaps, a bound on the
   angle to the true component: ``sin(angle) <= residual * lambda / gap``),
   and the angle to the planted direction is reported for information (the
   sample components differ from the population ones by sampling noise).
4. Deletes the file (``--keep`` keeps it).

    OMP_NUM_THREADS=2 python benchmarks/pca_streaming.py                   # the 8 GB acceptance run
    OMP_NUM_THREADS=2 python benchmarks/pca_streaming.py --rows 2000 --features 20000   # a quick try
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, n: int, d: int, planted: int, seed: int, chunk: int = 500) -> np.ndarray:
    """Write the .npy chunk by chunk; return the planted directions (planted x d)."""
    rng = np.random.default_rng(seed)
    W, _ = np.linalg.qr(rng.standard_normal((d, planted)))
    s = 20.0 * 0.9 ** np.arange(planted)
    need = n * d * 4 + (1 << 30)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        sys.exit(f"pca_streaming: {path.parent} has {free / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB needed")
    Wt = (W * s).T.astype(np.float32)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for a in range(0, n, chunk):
            c = min(chunk, n - a)
            rows = rng.standard_normal((c, d), dtype=np.float32)
            rows += rng.standard_normal((c, planted), dtype=np.float32) @ Wt
            f.write(rows.tobytes())
    return W.T


def timed(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` under /usr/bin/time -v; its stdout (JSON) plus peak RSS and wall time."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"pca_streaming: child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(peak_rss_mib=rss / 1024, wall_s=seconds, time_v=proc.stderr)
    return out


def child_fit(args) -> None:
    from descend import pca

    log = (lambda line: print(line, file=sys.stderr, flush=True))
    r = pca.fit(args.path, args.k, args.method, engine=args.engine, chunk_rows=args.chunk_rows, log=log)
    np.save(args.path + ".components.npy", r.components)
    print(json.dumps({"eigenvalues": r.explained_variance.tolist(), "ratio": r.explained_variance_ratio.tolist(),
                      "passes": r.n_passes, "fit_s": r.seconds, "converged": r.converged,
                      "solver_residuals": r.residuals.tolist(), "chunk_rows": args.chunk_rows}))


def child_verify(args) -> None:
    from descend.pca.data import as_source, column_stats
    from descend.pca.ops import CovarianceOperator

    V = np.load(args.path + ".components.npy").T
    src = as_source(args.path)
    stats = column_stats(src, rows=args.chunk_rows)
    op = CovarianceOperator(src, stats, dtype="float64", chunk_rows=args.chunk_rows)
    CV = op(V)
    lam = np.einsum("ij,ij->j", V, CV)
    res = np.linalg.norm(CV - V * lam, axis=0) / lam
    print(json.dumps({"eigenvalues_f64": lam.tolist(), "residuals_f64": res.tolist()}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--features", type=int, default=100_000)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--planted", type=int, default=10)
    ap.add_argument("--method", default="block")
    ap.add_argument("--engine", default="numpy")
    ap.add_argument("--chunk-rows", type=int, default=None)
    ap.add_argument("--path", default="/tmp/descend-pca-stream.npy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--reuse", action="store_true", help="use an existing file at --path (same shape and seed)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", choices=("fit", "verify"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "fit":
        return child_fit(args)
    if args.child == "verify":
        return child_verify(args)

    path = Path(args.path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_NUM_THREADS", "2")
    t = time.perf_counter()
    if args.reuse and path.exists():
        rng = np.random.default_rng(args.seed)
        planted, _ = np.linalg.qr(rng.standard_normal((args.features, args.planted)))
        planted = planted.T
        print(f"reusing {path}", file=sys.stderr)
    else:
        planted = generate(path, args.rows, args.features, args.planted, args.seed)
        print(f"generated {path}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
    try:
        base = [sys.executable, str(Path(__file__).resolve()), "--path", str(path), "-k", str(args.k),
                "--method", args.method, "--engine", args.engine]
        if args.chunk_rows:
            base += ["--chunk-rows", str(args.chunk_rows)]
        fit = timed(base + ["--child", "fit"], env)
        comps = np.load(str(path) + ".components.npy")
        verify = timed(base + ["--child", "verify"], env)
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
        Path(str(path) + ".components.npy").unlink(missing_ok=True)
    from descend.pca.solver import principal_angles, relative_gaps

    m = min(args.k, args.planted)
    to_planted = principal_angles(comps[:m], planted[:m])
    lam = np.asarray(verify["eigenvalues_f64"])
    gaps = relative_gaps(lam)
    bound = np.minimum(np.asarray(verify["residuals_f64"]) / np.maximum(gaps[:len(lam)], 1e-300), 1.0)
    size_gb = args.rows * args.features * 4 / 1e9
    print("\n| data | k | method | passes | fit wall s | peak RSS (MiB) | max residual (float64) "
          "| max angle bound | max angle to planted |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.rows} x {args.features} float32 ({size_gb:.1f} GB) | {args.k} | {args.method} | {fit['passes']} "
          f"| {fit['wall_s']:.0f} | {fit['peak_rss_mib']:.0f} | {max(verify['residuals_f64']):.1e} "
          f"| {bound[:-1].max() if len(bound) > 1 else bound.max():.1e} | {to_planted.max():.1e} |")
    print(f"verification pass: peak RSS {verify['peak_rss_mib']:.0f} MiB, {verify['wall_s']:.0f} s", file=sys.stderr)
    print("eigenvalues:", " ".join(f"{v:.4g}" for v in fit["eigenvalues"]), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "child"}, "fit": fit, "verify": verify,
                       "angle_to_planted": to_planted.tolist(), "angle_bound": bound.tolist()}, f, indent=1)


if __name__ == "__main__":
    main()
