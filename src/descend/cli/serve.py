"""``descend serve``: a prediction service and a draw-a-digit web page for a model file."""

from __future__ import annotations

import sys

from descend.cli.main import HelpFormatter
from descend.errors import DescendError, require


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over HTTP, with a page to draw a digit",
        description="Serve MODEL over HTTP: POST /predict (JSON pixel arrays 0..255 or PNG uploads), "
                    "GET /model, GET /health, the OpenAPI schema at /openapi.json, and at / a page to draw "
                    "a digit (or upload a face for FER2013 models; models of feature rows get a page describing "
                    "the API). A regression model answers with its predicted values, named by target. "
                    "MODEL.onnx (written by descend export) is "
                    "run by onnxruntime behind the same API. The model file is reloaded when it changes on disk.",
        formatter_class=HelpFormatter)
    p.add_argument("model", help="model.safetensors written by descend train, or MODEL.onnx written by descend export")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 exposes the service to the network)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0 = any free port)")
    p.add_argument("--max-batch", type=int, default=256, metavar="N", help="most images in one request")
    p.add_argument("--max-request-mb", type=float, default=8.0, metavar="MB", help="largest request body")
    p.add_argument("--reload-interval", type=float, default=0.5, metavar="S",
                   help="seconds between checks of the model file for changes (0 = never reload)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (info logs every request)")
    p.set_defaults(func=run)


def run(args) -> int:
    require(0 <= args.port <= 65535, "port", "in [0, 65535]", args.port)
    require(args.max_batch >= 1, "max_batch", ">= 1", args.max_batch)
    require(args.max_request_mb > 0, "max_request_mb", "> 0", args.max_request_mb)
    require(args.reload_interval >= 0, "reload_interval", ">= 0 (0 = never)", args.reload_interval)
    try:
        from descend.serve.app import serve
    except ImportError as exc:
        raise DescendError(f"descend serve needs its web libraries ({exc.name} is missing): "
                           'pip install "descend[serve]"') from None
    serve(args.model, host=args.host, port=args.port, max_batch=args.max_batch,
          max_request_bytes=int(args.max_request_mb * 1024 * 1024), reload_interval=args.reload_interval,
          log_level=args.log_level, announce=lambda line: print(line, file=sys.stderr, flush=True))
    return 0
