"""Requests per second of ``descend serve`` on batches of 256 MNIST images: the native path vs the ONNX one.

One process, one model: a 784-500-300-10 ReLU network (descend's default
architecture) trained for one epoch on 2,000 MNIST rows, exported with
``descend export``.  Both services are real uvicorn servers on 127.0.0.1 in
threads of this process, called by one client that sends JSON bodies of 256
test images (raw pixel values), one request at a time.  The figure is
requests per second (each request is 256 images), the median of ``--repeats``
rounds; rounds alternate native and ONNX so that a change in the machine's
load affects both.  The model call alone (``predict_proba`` on the same 256
rows, what the request spends outside JSON parsing) is measured the same way.

Thread counts are set explicitly: ``--threads`` BLAS threads for NumPy (the
native path) via threadpoolctl, and the same number of onnxruntime intra-op
threads.

    DESCEND_MIRROR=/path/to/mirror python benchmarks/serve_onnx.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BATCH = 256


class Server:
    """uvicorn serving ``app`` on 127.0.0.1 and a free port, in a thread; stopped through its handle."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def train_model(folder: Path) -> Path:
    import descend.train.run as run_module
    from descend.data import load
    from descend.train import TrainConfig, run_training

    ds = load("mnist")
    np.savez(folder / "mnist2000.npz", X=ds.train.X[:2000].reshape(-1, 28, 28), y=ds.train.y[:2000],
             X_test=ds.test.X[:BATCH].reshape(-1, 28, 28), y_test=ds.test.y[:BATCH])
    run_module.write_reports = lambda *a, **k: None  # plots are not what is measured
    cfg = TrainConfig(dataset=str(folder / "mnist2000.npz"), hidden=(500, 300), epochs=1, engine="numpy",
                      threads=1, early_stopping="none")
    return run_training(cfg, out=folder / "run", progress=False).run_dir / "model.safetensors"


def rate(call, n: int) -> float:
    call()  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (native) = onnxruntime intra-op threads")
    p.add_argument("--repeats", type=int, default=5, help="rounds; the median is reported")
    p.add_argument("--requests", type=int, default=10, help="HTTP requests per round and path")
    p.add_argument("--calls", type=int, default=50, help="model calls per round and path")
    args = p.parse_args()

    import httpx
    from threadpoolctl import threadpool_info, threadpool_limits

    from descend.cli.main import main as descend
    from descend.data import load
    from descend.io.onnx_export import load_onnx
    from descend.serve.app import create_app
    from descend.train.predict import load_trained

    limits = threadpool_limits(args.threads)  # held until the end of the run
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path = train_model(tmp)
        onnx_path = tmp / "model.onnx"
        assert descend(["export", str(model_path), "-o", str(onnx_path)]) == 0
        X = load("mnist").test.X[:BATCH]
        body = {"images": X.astype(int).tolist()}
        native, onnx_model = load_trained(model_path), load_onnx(onnx_path, threads=args.threads)
        assert np.max(np.abs(native.predict_proba(X) - onnx_model.predict_proba(X))) < 1e-5

        apps = {"native": create_app(model_path, reload_interval=0), "onnx": create_app(onnx_path, reload_interval=0)}
        holder = apps["onnx"].state.holder  # the same file, with onnxruntime's thread count set explicitly
        holder.current = dataclasses.replace(holder.current, model=onnx_model)
        http = {k: [] for k in apps}
        model = {k: [] for k in apps}
        with Server(apps["native"]) as native_url, Server(apps["onnx"]) as onnx_url, \
                httpx.Client(timeout=60) as client:
            urls = {"native": native_url, "onnx": onnx_url}

            def post(url):
                r = client.post(url + "/predict", json=body)
                assert r.status_code == 200 and len(r.json()["labels"]) == BATCH

            for _ in range(args.repeats):
                for name, m in (("native", native), ("onnx", onnx_model)):
                    http[name].append(rate(lambda: post(urls[name]), args.requests))
                    model[name].append(rate(lambda: m.predict_proba(X), args.calls))

    import onnxruntime

    blas = sorted({f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()})
    del limits
    print(f"# {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"threads {args.threads} (BLAS: {', '.join(blas)}), median of {args.repeats} rounds")
    print("| path | HTTP requests/s (256 images each) | images/s | model calls/s (256 rows) |")
    print("|---|---|---|---|")
    for name in ("native", "onnx"):
        h, m = statistics.median(http[name]), statistics.median(model[name])
        print(f"| {name} | {h:.1f} | {h * BATCH:,.0f} | {m:.0f} |")
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    main()
