"""``descend pca``: principal components of a dataset or a .npy file, without the covariance matrix."""

from __future__ import annotations

import argparse
import sys

from descend.cli.main import HelpFormatter, positive_int


def _shape(text: str) -> tuple[int, int]:
    try:
        h, w = (int(t) for t in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an image shape like 28x28, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected an image shape like 28x28, got {text!r}")
    return h, w


def register(sub) -> None:
    from descend.pca.solver import METHODS
    from descend.pca.ops import PCA_ENGINES
    from descend.pca.run import NORMALIZATIONS

    p = sub.add_parser(
        "pca", help="principal components by gradient ascent, never forming the covariance matrix",
        description="Find the first K principal components of DATASET's training rows (mnist, fashion-mnist, a "
                    "data file) or of a 2-D .npy file (memory-mapped and read in row chunks: it may be larger than "
                    "memory). Prints variances (N-1 denominator) and explained-variance ratios; writes "
                    "pca.safetensors, eigenvalues.csv, summary.json and three plots.",
        formatter_class=HelpFormatter)
    p.add_argument("dataset", help="dataset name, data file, or FILE.npy")
    p.add_argument("-k", "--components", dest="k", type=positive_int, required=True, help="number of components")
    p.add_argument("--method", choices=METHODS, default="block",
                   help="block: k vectors at once (fast); gd: the curriculum's gradient ascent with deflation; "
                        "exact: covariance + eigh (reference, small D)")
    p.add_argument("--engine", choices=PCA_ENGINES, default="numpy", help="array library of the matrix products")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="where to compute")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="precision of the matrix products (default: float32; float64 for exact)")
    p.add_argument("--tol", type=float, default=None,
                   help="block: largest relative residual (default 1e-5); gd: change of v per step (default 1e-6)")
    p.add_argument("--max-iter", type=positive_int, default=None,
                   help="block: iterations (default 300); gd: steps per component (default 10000)")
    p.add_argument("--lr", type=float, default=10.0, help="gd: learning rate, relative to the current variance")
    p.add_argument("--oversample", type=int, default=None, help="block: extra vectors (default max(k, 10))")
    p.add_argument("--chunk-rows", type=positive_int, default=None, help="rows per chunk (default: ~64 MiB)")
    p.add_argument("--no-cache", dest="cache", action="store_false", default=None,
                   help="re-read in-memory data every pass instead of keeping a centered copy")
    p.add_argument("--threads", type=positive_int, default=None, help="compute threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting vectors")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="scale",
                   help="scale: uint8 data / 255 (as descend train); none: raw values")
    p.add_argument("--labels", default=None, metavar="FILE.npy", help="class ids of a .npy input's rows (plot colours)")
    p.add_argument("--image-shape", type=_shape, default=None, metavar="HxW",
                   help="draw components as HxW images (default: the dataset's, or square when D is a square)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    p.add_argument("--out", default=None, help="output directory (default: runs/<date>-pca-<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from descend.pca.run import format_table, run_pca

    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result, out = run_pca(
        args.dataset, args.k, method=args.method, out=args.out, normalize=args.normalize, labels=args.labels,
        image_shape=args.image_shape, plots=args.plots, log=log, engine=args.engine, device=args.device,
        dtype=args.dtype, tol=args.tol, max_iter=args.max_iter, lr=args.lr, oversample=args.oversample,
        chunk_rows=args.chunk_rows, cache=args.cache, threads=args.threads, seed=args.seed)
    print(format_table(result))
    print(f"total variance {result.total_variance:.6g}; {result.n_components} components explain "
          f"{result.explained_variance_ratio.sum():.2%}")
    print(f"descend: wrote {out}", file=sys.stderr)
    return 0
