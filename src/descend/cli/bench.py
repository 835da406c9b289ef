"""``descend bench``: one configuration on several engines and devices."""

from __future__ import annotations

import sys

from descend.cli.main import HelpFormatter
from descend.cli.train import LAYERS_HELP, _batch, _hidden, _typed, network_values
from descend.engines import DEVICES, ENGINES
from descend.experiments.bench import parse_list, run_bench, table
from descend.io.rundir import make_run_dir
from descend.optim import OPTIMIZERS
from descend.train import TrainConfig


def register(sub) -> None:
    p = sub.add_parser("bench", help="time one configuration on several engines and devices",
                       description="Train one configuration on each chosen engine and device in this process and "
                                   "print compile time, seconds per epoch, samples/s, test error and the ratio to "
                                   "the fastest; write bench.csv and bench.png.",
                       formatter_class=HelpFormatter)
    p.add_argument("dataset", nargs="?", default="mnist", help="dataset name or file")
    p.add_argument("--engines", default="all", help=f"'all' or a comma-separated subset of {', '.join(ENGINES)}")
    p.add_argument("--devices", default="cpu", help="comma-separated subset of cpu, gpu")
    p.add_argument("--hidden", type=_hidden, default=(300,), help="hidden layer sizes")
    p.add_argument("--layers", default=None, metavar="TOKENS", help=LAYERS_HELP)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum", metavar="NAME", help="optimizer")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum")
    p.add_argument("--batch-size", type=_batch, default=500, help="mini-batch size")
    p.add_argument("--epochs", type=int, default=4, help="epochs per engine (the first includes compilation)")
    p.add_argument("--threads", type=int, default=None, help="compute threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and batch order")
    p.add_argument("--out", default=None, help="output directory (default: runs/<date>-bench)")
    p.set_defaults(func=run)


def run(args) -> int:
    engines = parse_list(args.engines, ENGINES, "engines")
    devices = parse_list(args.devices, tuple(d for d in DEVICES if d != "auto"), "devices")
    network = network_values({"hidden": args.hidden, "layers": args.layers}, _typed(getattr(args, "argv", ())))
    cfg = TrainConfig(dataset=args.dataset, **network, optimizer=args.optimizer, lr=args.lr,
                      momentum=args.momentum, batch_size=args.batch_size, epochs=args.epochs,
                      schedule="constant", threads=args.threads, seed=args.seed)
    out = make_run_dir("runs", "bench") if args.out is None else __import__("pathlib").Path(args.out)
    rows = run_bench(cfg, engines, devices, out, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(table(rows))
    print(f"descend: wrote {out / 'bench.csv'} and {out / 'bench.png'}", file=sys.stderr)
    return 0
