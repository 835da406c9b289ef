"""``make gpu-check``: CPU against GPU on one machine, written to gpu-check.json and gpu-check.md.

One run (under 8 minutes on one modern GPU) records:

1. the machine: GPU model, driver and memory (``nvidia-smi``), and each GPU
   library's version and what it sees (``jax.devices()``, ``torch.cuda``,
   ``tf.config``), TensorFloat-32 settings included;
2. the ``gpu``-marked tests (``pytest -m gpu`` over the test files that have
   them): pass, fail and skip counts and each test's outcome;
3. ``descend bench mnist --engines jax,torch,tensorflow --devices cpu,gpu``
   (the 784-300-10 MLP, momentum, batch 500);
4. the curriculum's CPU-against-GPU configuration (784-300-10 ReLU, plain
   SGD, batch 500, 20 epochs, per-pixel standardization) trained by the fit
   loop on each engine and device: training seconds, seconds per warm epoch,
   the first epoch's extra (compilation), the test error, and the CPU/GPU
   speedup per engine.

A measurement that cannot be made (no GPU, an engine's CPU-only build, no
data) is recorded as not available, with the reason; nothing here raises.

``--dry-run`` runs the same steps on the CPU with tiny sizes (a generated
160-row dataset of 64 features, a 16-unit hidden layer, batch 20, 2 epochs)
and finishes in well under a minute; CI runs it so this script cannot rot.

``--install`` (what ``make gpu-check`` passes) first installs the GPU builds
when any is missing: ``descend[cuda,torch]`` (JAX's CUDA plugin; PyPI's Linux
PyTorch wheel is its CUDA build), ``tensorflow[and-cuda]`` and pytest, over
any CPU-only torch or tensorflow-cpu it finds.  With a
folder of wheels (``--wheels``, default ``wheels/``) pip installs from it
alone, so a machine that reaches no package index can run the check; the
folder is filled elsewhere with
``pip download -d wheels ".[cuda,torch]" "tensorflow[and-cuda]" pytest setuptools wheel``.
Everything runs from this checkout's ``src/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("jax", "torch", "tensorflow")
DEVICES = ("cpu", "gpu")
NOT_AVAILABLE = "not available on this machine"


@dataclass(frozen=True)
class Sizes:
    """What one run trains: the full check's, or the dry run's tiny stand-ins."""

    dataset: str  # a dataset name, or "" for the generated dry-run file
    hidden: int
    batch: int
    curriculum_epochs: int
    bench_epochs: int
    lr: float
    tests_timeout_s: int
    bench_timeout_s: int
    budget_s: int  # no curriculum run starts after this many seconds of the check


FULL = Sizes(dataset="mnist", hidden=300, batch=500, curriculum_epochs=20, bench_epochs=4, lr=0.1,
             tests_timeout_s=240, bench_timeout_s=120, budget_s=420)
DRY = Sizes(dataset="", hidden=16, batch=20, curriculum_epochs=2, bench_epochs=2, lr=0.1,
            tests_timeout_s=120, bench_timeout_s=120, budget_s=300)


def not_available(reason: str) -> str:
    return f"{NOT_AVAILABLE}: {reason}"


def child_env() -> dict:
    """The environment of the tests and of ``descend bench``: this checkout's code first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def run_child(cmd: list[str], timeout_s: int, log: Path) -> tuple[int | None, str]:
    """Run ``cmd`` with its output in ``log``; ``(exit status or None on timeout, stdout)``."""
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"$ {' '.join(cmd)}\ntimed out after {timeout_s} s\n{exc.stdout or ''}{exc.stderr or ''}")
        return None, ""
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, proc.stdout


# 0. Installing the GPU builds ---------------------------------------------------------------------------

def dist_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_only_builds() -> list[str]:
    """Installed CPU-only builds that a GPU build must replace (pip counts them as satisfying its pins)."""
    torch = dist_version("torch")
    return ([f"torch {torch}"] if torch and "+cpu" in torch else []) + \
        ([f"tensorflow-cpu {dist_version('tensorflow-cpu')}"] if dist_version("tensorflow-cpu") else [])


def missing_gpu_builds() -> list[str]:
    """The GPU libraries this interpreter lacks (a CPU-only build counts as missing)."""
    missing = [m for m in ("numpy", "safetensors", "rich", "matplotlib", "threadpoolctl", "pytest")
               if importlib.util.find_spec(m) is None]
    if not (dist_version("jax-cuda12-plugin") or dist_version("jax-cuda13-plugin")):
        missing.append("jax's CUDA plugin")
    torch = dist_version("torch")
    if torch is None or "+cpu" in torch:
        missing.append("a CUDA build of torch")
    if dist_version("tensorflow") is None:
        missing.append("tensorflow (with CUDA)")
    return missing


def install_command(wheels: Path, replace_cpu_builds: bool) -> list[str]:
    """pip's command for the GPU builds: from ``wheels`` alone when it holds wheels, else from the index."""
    reqs = [f"{ROOT}[cuda,torch]", "tensorflow[and-cuda]>=2.16", "pytest>=8"]
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    if replace_cpu_builds:
        cmd.append("--ignore-installed")
    if wheels.is_dir() and any(wheels.glob("*.whl")):
        return cmd + ["--no-index", "--find-links", str(wheels)] + reqs
    return cmd + ["--timeout", "30", "--retries", "1"] + reqs


def install(wheels: Path, out: Path) -> dict:
    missing, replacing = missing_gpu_builds(), cpu_only_builds()
    if not missing:
        return {"status": "nothing to install: every GPU build is present"}
    cmd = install_command(wheels, bool(replacing))
    code, _ = run_child(cmd, 1200, out / "install.log")
    importlib.invalidate_caches()
    status = "installed" if code == 0 else (f"pip failed (exit {code}; see install.log); continuing with what is "
                                            f"installed. Without network, put the wheels in {wheels}")
    return {"status": status, "missing": missing, "replaced": replacing, "command": " ".join(cmd)}


# 1. The machine ----------------------------------------------------------------------------------------

def nvidia_smi() -> dict:
    if not shutil.which("nvidia-smi"):
        return {"status": not_available("nvidia-smi not found")}
    fields = "name,driver_version,memory.total,compute_cap"
    try:
        proc = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"status": not_available(f"nvidia-smi failed: {exc}")}
    if proc.returncode != 0:
        return {"status": not_available(f"nvidia-smi exit {proc.returncode}: {proc.stderr.strip()[:200]}")}
    gpus = [dict(zip(fields.split(","), (v.strip() for v in line.split(","))))
            for line in proc.stdout.strip().splitlines()]
    return {"status": "ok", "gpus": gpus}


def jax_info() -> dict:
    import jax
    import jaxlib

    info = {"version": jax.__version__, "jaxlib": jaxlib.__version__,
            "devices": [str(d) for d in jax.devices()],
            "default_matmul_precision": str(jax.config.jax_default_matmul_precision)}
    from importlib import metadata

    for dist in ("jax-cuda12-plugin", "jax-cuda13-plugin"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        info["gpu"] = [str(d) for d in jax.devices("gpu")]
    except RuntimeError as exc:
        info["gpu"] = not_available(str(exc).splitlines()[0][:200])
    return info


def torch_info() -> dict:
    import torch

    info = {"version": torch.__version__, "cuda_build": torch.version.cuda,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    if torch.cuda.is_available():
        info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        why = "a CPU-only build of torch" if torch.version.cuda is None else "torch.cuda.is_available() is False"
        info["gpu"] = not_available(why)
    return info


def tensorflow_info() -> dict:
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    return {"version": tf.__version__, "cuda_build": build.get("cuda_version"),
            "cudnn_build": build.get("cudnn_version"),
            "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "gpu": [d.name for d in gpus] if gpus else not_available("TensorFlow lists no GPU")}


def machine() -> dict:
    import numpy

    info = {"descend": str(ROOT / "src"), "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "numpy": numpy.__version__,
            "nvidia_smi": nvidia_smi()}
    for name, probe in (("jax", jax_info), ("torch", torch_info), ("tensorflow", tensorflow_info)):
        info[name] = guarded(probe)
    return info


def guarded(step, *args) -> dict:
    """``step(*args)``, or what went wrong: one section failing never stops the others."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001 - recorded, and the check goes on
        return {"status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


# 2. The gpu-marked tests -------------------------------------------------------------------------------

def gpu_test_files() -> list[str]:
    marked = re.compile(r"pytest\.mark\.gpu\b")
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if marked.search(p.read_text()))


def gpu_tests(sizes: Sizes, out: Path) -> dict:
    files = gpu_test_files()
    junit = out / "gpu-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
           f"--junitxml={junit}", *files]
    code, _ = run_child(cmd, sizes.tests_timeout_s, out / "gpu-tests.log")
    result = {"command": "pytest -m gpu " + " ".join(files), "exit_status": code,
              "passed": 0, "failed": 0, "skipped": 0, "tests": []}
    if code is None or not junit.is_file():
        result["status"] = "error: pytest timed out or wrote no report; see gpu-tests.log"
        return result
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = ("skipped" if tag == "skipped" else "failed"), node.get("message", "")
        result[outcome] += 1
        result["tests"].append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                                "message": message[:300]})
    result["status"] = "ok" if code == 0 else f"failed (pytest exit {code}; see gpu-tests.log)"
    return result


# 3. descend bench --------------------------------------------------------------------------------------

def bench(sizes: Sizes, dataset: str, out: Path) -> dict:
    args = ["bench", dataset, "--engines", ",".join(ENGINES), "--devices", ",".join(DEVICES),
            "--epochs", str(sizes.bench_epochs), "--out", str(out / "bench")]
    if sizes is DRY:
        args += ["--hidden", str(sizes.hidden), "--batch-size", str(sizes.batch)]
    code, table = run_child([sys.executable, "-m", "descend", *args], sizes.bench_timeout_s, out / "bench.log")
    result = {"command": "descend " + " ".join(args), "exit_status": code, "rows": []}
    csv_path = out / "bench" / "bench.csv"
    if code != 0 or not csv_path.is_file():
        result["status"] = "error: descend bench failed or timed out; see bench.log"
        return result
    import csv

    for row in csv.DictReader(csv_path.open()):
        entry = {"engine": row["engine"], "device": row["device"]}
        if row["status"] == "ok":
            entry.update({k: float(row[k]) for k in ("compile_s", "epoch_s", "samples_per_s", "test_error", "ratio")})
            entry["status"] = "ok"
        elif row["status"].startswith("diverged"):
            entry["status"] = f"failed: {row['status']}"
        else:
            entry["status"] = not_available(row["status"])
        result["rows"].append(entry)
    result["status"] = "ok"
    result["table"] = table.strip()
    return result


# 4. The curriculum's configuration ---------------------------------------------------------------------

def curriculum_config(sizes: Sizes, dataset: str):
    from descend.train import TrainConfig

    return TrainConfig(dataset=dataset, hidden=(sizes.hidden,), activation="relu", optimizer="sgd", lr=sizes.lr,
                       batch_size=sizes.batch, epochs=sizes.curriculum_epochs, schedule="constant",
                       normalize="standardize", early_stopping="none", seed=0)


def load_data(cfg):
    from descend.data import Normalizer, load

    ds = load(cfg.dataset, seed=cfg.seed)
    norm = Normalizer(cfg.normalize).fit(ds.train.X)
    return norm.transform(ds.train.X), ds.train.y, norm.transform(ds.test.X), ds.test.y


def train_once(engine_name: str, device: str, cfg, data) -> dict:
    """The fit loop's training of ``cfg`` on (engine, device), timed; no evaluation between epochs."""
    from descend.engines import get_engine
    from descend.errors import DescendError
    from descend.model import MLP, init_params
    from descend.train import fit, fit_options
    from descend.train.loop import evaluate

    X, y, Xt, yt = data
    try:
        engine = get_engine(engine_name, device=device, dtype=cfg.dtype)
    except DescendError as exc:
        return {"status": not_available(str(exc))}
    if engine.device != device:
        return {"status": not_available(f"{engine_name} has no {device}")}
    spec = MLP(hidden=cfg.hidden, activation=cfg.activation)
    params = init_params(spec, X.shape[1], int(y.max()) + 1, key=cfg.seed, dtype=cfg.dtype)
    Xd, yd = engine.asarray(X), engine.put_labels(y)
    started = time.perf_counter()
    result = fit(engine, spec, fit_options(cfg), Xd, yd, params=params, model_state={})
    train_s = time.perf_counter() - started
    ends = [0.0] + [row["time"] for row in result.history]
    epochs = [b - a for a, b in zip(ends[:-1], ends[1:])]
    epoch_s = statistics.median(epochs[1:] or epochs)
    _, test_error = evaluate(engine, spec, engine.put_tree(result.params), engine.put_tree(result.model_state),
                             engine.asarray(Xt), yt)
    return {"status": "ok", "train_s": train_s, "epoch_s": epoch_s, "first_epoch_extra_s": max(epochs[0] - epoch_s, 0),
            "final_cost": float(result.history[-1]["train_cost"]), "test_error": float(test_error)}


def curriculum(sizes: Sizes, dataset: str, deadline: float) -> dict:
    cfg = curriculum_config(sizes, dataset)
    data = load_data(cfg)
    runs = []
    for engine_name in ENGINES:
        for device in DEVICES:
            if time.perf_counter() > deadline:
                runs.append({"engine": engine_name, "device": device,
                             "status": "not run: the check's time budget was spent before it"})
            else:
                measured = guarded(train_once, engine_name, device, cfg, data)
                runs.append({"engine": engine_name, "device": device, **measured})
    speedups = []
    for engine_name in ENGINES:
        cpu, gpu = (next(r for r in runs if r["engine"] == engine_name and r["device"] == d) for d in DEVICES)
        if cpu["status"] == gpu["status"] == "ok":
            speedups.append({"engine": engine_name, "status": "ok", "speedup": cpu["train_s"] / gpu["train_s"],
                             "epoch_speedup": cpu["epoch_s"] / gpu["epoch_s"]})
        else:
            why = gpu["status"] if cpu["status"] == "ok" else cpu["status"]
            speedups.append({"engine": engine_name, "status": why})
    return {"config": {"hidden": list(cfg.hidden), "activation": cfg.activation, "optimizer": cfg.optimizer,
                       "lr": cfg.lr, "batch_size": cfg.batch_size, "epochs": cfg.epochs, "normalize": cfg.normalize,
                       "train_rows": int(len(data[1])), "features": int(data[0].shape[1]), "dtype": cfg.dtype},
            "status": "ok", "runs": runs, "speedups": speedups}


# The report -------------------------------------------------------------------------------------------

def dry_run_dataset(path: Path) -> Path:
    """160 training and 40 test rows of 64 pixels in [0, 255], 10 classes, each class a brighter stripe."""
    import numpy as np

    rng = np.random.default_rng(0)

    def rows(n):
        y = rng.integers(0, 10, n)
        X = rng.integers(0, 120, (n, 64))
        for shift in range(6):
            X[np.arange(n), y * 6 + shift] += 120
        return X.astype(np.uint8), y

    (X, y), (Xt, yt) = rows(160), rows(40)
    np.savez(path, X=X, y=y, X_test=Xt, y_test=yt)
    return path


def markdown(report: dict) -> str:
    lines = [f"# GPU check{' (dry run: tiny sizes, CPU only)' if report['dry_run'] else ''}", "",
             f"{report['finished']}, {report['seconds']:.0f} s, `{report['command']}`"]
    if "install" in report:
        lines += ["", f"Install: {report['install'].get('status')}"]
    for title, key, render in (("Machine and libraries", "machine", machine_md),
                               ("gpu-marked tests", "gpu_tests", tests_md), ("descend bench", "bench", bench_md),
                               ("The curriculum's configuration", "curriculum", curriculum_md)):
        lines += ["", f"## {title}", ""]
        section = report[key]
        try:
            lines += render(section)
        except (KeyError, TypeError, ValueError):  # a section that failed early has only its status
            lines.append(str(section.get("status")))
    return "\n".join(lines) + "\n"


def machine_md(m: dict) -> list[str]:
    smi = m["nvidia_smi"]
    gpus = "; ".join(f"{g.get('name')} (driver {g.get('driver_version')}, {g.get('memory.total')}, "
                     f"compute {g.get('compute_cap')})" for g in smi.get("gpus", [])) or smi["status"]
    lines = ["| item | value |", "|---|---|", f"| GPU | {gpus} |", f"| CPU | {m['cpu']}, {m['cpus']} cores |",
             f"| Python, NumPy | {m['python']}, {m['numpy']} |", f"| descend | {m['descend']} |"]
    for name in ENGINES:
        info = m[name]
        details = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("version", "gpu", "status"))
        lines.append(f"| {name} | {info.get('version', info.get('status'))}"
                     f"{' (' + details + ')' if details else ''}; GPU: {gpu_text(info.get('gpu', ''))} |")
    return lines


def tests_md(t: dict) -> list[str]:
    lines = [f"`{t['command']}`: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped ({t['status']})",
             "", "| test | outcome | message |", "|---|---|---|"]
    return lines + [f"| {c['test']} | {c['outcome']} | {c['message']} |" for c in t["tests"]]


def table_md(rows: list[dict], columns: tuple[tuple[str, str], ...]) -> list[str]:
    """(engine, device) rows as a markdown table; a row not measured shows its status instead of figures."""
    head = ["engine", "device", *(title for title, _ in columns)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [fmt.format(**r) for _, fmt in columns] if r["status"] == "ok" else \
            [r["status"]] + [""] * (len(columns) - 1)
        lines.append("| " + " | ".join([r["engine"], r["device"], *cells]) + " |")
    return lines


BENCH_COLUMNS = (("compile (s)", "{compile_s:.2f}"), ("s/epoch", "{epoch_s:.4f}"),
                 ("samples/s", "{samples_per_s:,.0f}"), ("test error", "{test_error:.2%}"), ("x fastest", "{ratio:.2f}"))
CURRICULUM_COLUMNS = (("training (s)", "{train_s:.2f}"), ("s/epoch", "{epoch_s:.4f}"),
                      ("first epoch extra (s)", "{first_epoch_extra_s:.2f}"), ("test error", "{test_error:.2%}"))


def bench_md(b: dict) -> list[str]:
    return [f"`{b['command']}` ({b['status']})", ""] + table_md(b["rows"], BENCH_COLUMNS)


def curriculum_md(c: dict) -> list[str]:
    cfg = c["config"]
    lines = [f"{cfg['features']}-{'-'.join(map(str, cfg['hidden']))}-10 {cfg['activation']}, {cfg['optimizer']} "
             f"lr {cfg['lr']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, {cfg['normalize']}, "
             f"{cfg['train_rows']:,} training rows, {cfg['dtype']}; the fit loop, data put on the device first, "
             "no evaluation between epochs; training seconds include compilation.", ""]
    lines += table_md(c["runs"], CURRICULUM_COLUMNS)
    lines += ["", "| engine | CPU/GPU speedup (training s) | CPU/GPU speedup (s/epoch) |", "|---|---|---|"]
    for s in c["speedups"]:
        lines.append(f"| {s['engine']} | {s['speedup']:.1f}x | {s['epoch_speedup']:.1f}x |" if s["status"] == "ok"
                     else f"| {s['engine']} | {s['status']} | |")
    return lines


def gpu_text(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/gpu-check", help="output directory")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny sizes")
    parser.add_argument("--install", action="store_true", help="install missing GPU builds first")
    parser.add_argument("--wheels", default=str(ROOT / "wheels"), help="a folder of wheels to install from")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT / "src"))
    command = " ".join(["python", "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    report = {"dry_run": args.dry_run, "command": command}
    if args.install and not args.dry_run:
        report["install"] = guarded(install, Path(args.wheels), out)
    measuring = time.perf_counter()  # the time budget counts from here: installing is not part of it
    from descend.experiments.bench import share_gpu_memory

    share_gpu_memory()
    sizes = DRY if args.dry_run else FULL
    dataset = str(dry_run_dataset(out / "dry-run-data.npz")) if args.dry_run else sizes.dataset
    report["machine"] = guarded(machine)
    report["gpu_tests"] = guarded(gpu_tests, sizes, out)
    report["bench"] = guarded(bench, sizes, dataset, out)
    report["curriculum"] = guarded(curriculum, sizes, dataset, measuring + sizes.budget_s)
    report["seconds"] = time.perf_counter() - started
    report["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    from descend.io.atomic import atomic_write_text

    atomic_write_text(out / "gpu-check.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(out / "gpu-check.md", markdown(report))
    print(f"gpu-check: wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
