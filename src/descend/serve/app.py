"""The prediction service: a FastAPI app around one model file, reloaded when it changes.

Endpoints (the OpenAPI schema is at ``/openapi.json``):

- ``POST /predict``: a batch of images, as JSON ``{"images": [...]}`` (each a
  flat list of ``n_features`` values or, for image models, ``height`` rows of
  ``width`` values; raw pixel values 0..255, white ink on black as in MNIST) or
  as ``multipart/form-data`` PNG/JPEG uploads in the field ``images``
  (preprocessed as the web page does; see :mod:`descend.serve.preprocess`).
  Returns the class probabilities and labels, or for a regression model the
  predicted values in the targets' own units, named by target.
- ``GET /model``: the model's metadata (task, spec, classes or target names, data, metrics, file).
- ``GET /health``: liveness, the model generation being served, reload errors.
- ``GET /``: for image models the web page (draw a digit, or upload a face for
  FER2013 models); for models of plain feature rows, a short page describing the API.

The model file is a descend ``.safetensors`` model, run by descend, or a
``.onnx`` file written by ``descend export``, run by onnxruntime: both are
behind the same small interface (:class:`ServedModel`), so the API and the
page are the same.

Bad input never gets a 5xx: malformed JSON or multipart is 400, a body over
the size limit 413, an unsupported content type 415, well-formed input that
does not fit the model (wrong shape or type, NaN, out of range, an empty batch
or one over the batch limit) 422; every error is ``{"detail": "<one line>"}``.

Hot reload: a thread polls the file's identity (device, inode, mtime, size)
every ``reload_interval`` seconds.  A changed file is loaded completely and
checked with a test prediction *before* the reference to the served model is
swapped (one attribute assignment, atomic in Python); each request reads that
reference once, so requests in flight finish on the model they started with.
A file that fails to load leaves the old model serving and is reported by
``/health`` until a good file replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import numpy as np
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from descend import __version__
from descend.errors import DescendError, InputError
from descend.io.onnx_export import OnnxModel, load_onnx
from descend.model import MLP
from descend.serve.preprocess import decode_image, image_to_input
from descend.train.predict import load_trained

__all__ = ["ApiError", "ModelHolder", "Served", "create_app", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_REQUEST_BYTES"]

log = logging.getLogger("descend.serve")

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
PIXEL_RANGE = (0.0, 255.0)
STATIC = resources.files("descend.serve") / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ApiError(Exception):
    """An error the client caused: answered as ``{"detail": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- the served model and its reloading

class ServedModel(Protocol):
    """What the service needs of a model: a loaded descend model or an :class:`OnnxModel`."""

    classes: tuple[str, ...]
    n_features: int
    metadata: dict  # the model file's metadata: image_shape, dataset, training, metrics, normalization

    @property
    def spec(self) -> MLP: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...  # classifiers

    def predict_values(self, X: np.ndarray) -> np.ndarray: ...  # regression models: (rows, targets)


def model_task(model) -> str:
    """``classification`` or ``regression``: what the served model predicts (ONNX files are classifiers)."""
    return getattr(model, "task", "classification")


def model_outputs(model) -> tuple[str, ...]:
    """The names of the model's outputs: its classes, or a regression model's targets."""
    return tuple(model.targets) if model_task(model) == "regression" else tuple(model.classes)


def _read_model(path: Path) -> ServedModel:
    """An ONNX file (by its suffix) runs in onnxruntime; anything else is read as a descend model file."""
    return load_onnx(path) if path.suffix.lower() == ".onnx" else load_trained(path)


@dataclass(frozen=True)
class Served:
    """One loaded generation of the model file."""

    model: ServedModel
    generation: int
    sha256: str
    size: int
    mtime: float
    loaded_at: float
    signature: tuple
    versions: dict

    @property
    def image_shape(self) -> tuple[int, int] | None:
        shape = self.model.metadata.get("image_shape")
        try:
            h, w = (int(v) for v in shape)
        except (TypeError, ValueError):
            return None
        return (h, w) if h > 0 and w > 0 and h * w == self.model.n_features else None

    def ref(self) -> dict:
        return {"generation": self.generation, "sha256": self.sha256, "loaded_at": self.loaded_at}


def _signature(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _load(path: Path, generation: int) -> Served:
    """Load, hash and test-run the model file; the file must not change while we read it."""
    for _ in range(5):
        before = _signature(path)
        model = _read_model(path)
        data = path.read_bytes()
        after = _signature(path)
        if before == after:
            break
        time.sleep(0.05)  # replaced while we read it: read the new one
    else:  # pragma: no cover - a file rewritten continuously
        raise InputError(f"{path}: keeps changing while being read")
    try:
        if model_task(model) == "regression":
            values = model.predict_values(np.zeros((1, model.n_features)))
            if values.shape != (1, len(model.targets)):
                raise ValueError(f"{values.shape[1]} outputs for {len(model.targets)} targets")
        else:
            proba = model.predict_proba(np.zeros((1, model.n_features)))
            if proba.shape != (1, len(model.classes)):
                raise ValueError(f"{proba.shape[1]} outputs for {len(model.classes)} classes")
    except DescendError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot predict with this model file ({type(exc).__name__}: {exc})") from None
    versions = model.versions if isinstance(model, OnnxModel) else _header_versions(data)
    return Served(model, generation, hashlib.sha256(data).hexdigest(), len(data), os.stat(path).st_mtime,
                  time.time(), after, versions)


def _header_versions(data: bytes) -> dict:
    """Library versions that wrote the file, from the safetensors JSON header (empty if unreadable)."""
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        versions = json.loads(header["__metadata__"]["descend"]).get("versions") or {}
        return {str(k): str(v) for k, v in versions.items()}
    except Exception:
        return {}


class ModelHolder:
    """The model being served, swapped atomically when its file changes on disk."""

    def __init__(self, path: str | os.PathLike, *, reload_interval: float = 0.5,
                 log: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.reload_interval = float(reload_interval)
        self.log = log or (lambda line: logging.getLogger("descend.serve").warning(line))
        try:
            self.current: Served = _load(self.path, 1)
        except DescendError:
            raise
        except Exception as exc:
            raise InputError(f"{self.path}: cannot be served ({type(exc).__name__}: {exc})") from None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self._failed: tuple | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Reload if the file changed; True when a new model is now served."""
        with self._lock:
            self.last_check = time.time()
            try:
                sig = _signature(self.path)
            except OSError as exc:
                msg = f"{self.path}: {exc.strerror or exc}; still serving generation {self.current.generation}"
                if msg != self.last_error:
                    self.log(f"reload: {msg}")
                self.last_error = msg
                return False
            if sig == self.current.signature or sig == self._failed:
                if sig == self.current.signature:
                    self.last_error = None
                return False
            try:
                new = _load(self.path, self.current.generation + 1)
            except Exception as exc:  # never let a bad file stop the poller or the service
                self._failed = sig
                self.last_error = f"{exc}; still serving generation {self.current.generation}"
                self.log(f"reload failed: {self.last_error}")
                return False
            old, self.current = self.current, new  # the swap: in-flight requests keep `old`
            self._failed, self.last_error = None, None
            self.log(f"reloaded {self.path.name}: generation {new.generation}, sha256 {new.sha256[:12]} "
                     f"(was {old.sha256[:12]})")
            return True

    def start(self) -> None:
        if self.reload_interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="descend-serve-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.reload_interval):
            self.check()


# ---------------------------------------------------------------- request parsing

async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise ApiError(400, f"bad Content-Length header {length!r}") from None
        if n > limit:
            raise ApiError(413, f"request body is {n:,} bytes; the limit is {limit:,} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _type_name(v: Any) -> str:
    return {str: "a string", bool: "a boolean", type(None): "null", dict: "an object", list: "an array",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _where(i: int, j: int, shape: tuple[int, int] | None) -> str:
    return f"images[{i}][{j // shape[1]}][{j % shape[1]}]" if shape else f"images[{i}][{j}]"


def parse_json_images(payload: Any, served: Served, max_batch: int) -> np.ndarray:
    """(n, n_features) float64 rows from a decoded JSON body, or an ApiError saying what is wrong."""
    n_features, shape = served.model.n_features, served.image_shape
    expect = f"{n_features} values" + (f" ({shape[0]}x{shape[1]} image, or {shape[0]} rows of {shape[1]})"
                                       if shape else "")
    if not isinstance(payload, dict):
        raise ApiError(422, f'the body must be a JSON object {{"images": [...]}}, not {_type_name(payload)}')
    unknown = sorted(set(payload) - {"images"})
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; the body has one field, 'images'")
    if "images" not in payload:
        raise ApiError(422, "missing field 'images' (a list of images, each a list of pixel values)")
    images = payload["images"]
    if not isinstance(images, list):
        raise ApiError(422, f"'images' must be an array of images, not {_type_name(images)}")
    if not images:
        raise ApiError(422, "empty batch: 'images' holds no image")
    if len(images) > max_batch:
        raise ApiError(422, f"batch of {len(images):,} images; at most {max_batch:,} per request")
    rows = []
    for i, img in enumerate(images):
        if not isinstance(img, list):
            raise ApiError(422, f"images[{i}] must be an array of {expect}, not {_type_name(img)}")
        if img and isinstance(img[0], list):
            if shape is None:
                raise ApiError(422, f"images[{i}]: this model takes flat rows of {n_features} values, not 2-D arrays")
            if len(img) != shape[0] or any(not isinstance(r, list) or len(r) != shape[1] for r in img):
                bad = next((k for k, r in enumerate(img) if not isinstance(r, list) or len(r) != shape[1]), None)
                detail = "" if bad is None else (f"; row {bad} has {len(img[bad])} values" if isinstance(img[bad], list)
                                                 else f"; row {bad} is {_type_name(img[bad])}")
                raise ApiError(422, f"images[{i}]: got {len(img)} rows{detail}; the model expects "
                                    f"{shape[0]} rows of {shape[1]} values")
            flat = [v for r in img for v in r]
        else:
            flat = img
        if len(flat) != n_features:
            plural = "" if len(flat) == 1 else "s"
            raise ApiError(422, f"images[{i}] has {len(flat)} value{plural}; the model expects {expect}")
        kinds = set(map(type, flat))
        if not kinds <= {int, float}:
            j = next(k for k, v in enumerate(flat) if type(v) not in (int, float))
            raise ApiError(422, f"{_where(i, j, shape if img and isinstance(img[0], list) else None)} is "
                                f"{_type_name(flat[j])}; pixel values must be numbers")
        rows.append(flat)
    try:
        X = np.array(rows, dtype=np.float64)
    except OverflowError:
        raise ApiError(422, "a value is too large to be a number (integers beyond 1e308)") from None
    finite = np.isfinite(X)
    if not finite.all():
        i, j = (int(k) for k in np.argwhere(~finite)[0])
        raise ApiError(422, f"{_where(i, j, None)} is {X[i, j]}; values must be finite numbers")
    if shape is not None:
        lo, hi = PIXEL_RANGE
        outside = (X < lo) | (X > hi)
        if outside.any():
            i, j = (int(k) for k in np.argwhere(outside)[0])
            raise ApiError(422, f"{_where(i, j, None)} is {X[i, j]:g}; pixel values must be in [0, 255] "
                                f"(raw intensities, white ink on black, as in the training data)")
    return X


async def _parse_multipart(request: Request, body: bytes, max_batch: int) -> list[tuple[str, bytes]]:
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once():
        yield body
        yield b""

    parser = MultiPartParser(request.headers, once(), max_files=10 * max_batch + 10, max_fields=100,
                             max_part_size=max(len(body), 1))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise ApiError(422, f"too many files; at most {max_batch:,} images per request") from None
        raise ApiError(400, f"malformed multipart body: {exc.message}") from None
    except Exception as exc:  # python-multipart raises assorted errors on garbage
        raise ApiError(400, f"malformed multipart body ({type(exc).__name__}: {exc})") from None
    try:
        items = form.multi_items()
        unknown = sorted({k for k, _ in items if k != "images"})
        if unknown:
            raise ApiError(422, f"unknown form field(s) {', '.join(map(repr, unknown))}; "
                                f"upload the images in the field 'images'")
        files = [v for k, v in items if k == "images"]
        if not files:
            raise ApiError(422, "empty batch: no file in the form field 'images'")
        if len(files) > max_batch:
            raise ApiError(422, f"batch of {len(files):,} images; at most {max_batch:,} per request")
        out = []
        for i, f in enumerate(files):
            if isinstance(f, str):
                raise ApiError(422, f"images[{i}] is a text field; upload image files (PNG) in 'images'")
            out.append((f"images[{i}] ({f.filename})" if f.filename else f"images[{i}]", await f.read()))
        return out
    finally:
        await form.close()


def _images_to_rows(files: list[tuple[str, bytes]], served: Served, mode: str) -> tuple[np.ndarray, str]:
    shape = served.image_shape
    if shape is None:
        raise ApiError(422, f"this model takes rows of {served.model.n_features} features, not images; "
                            f'send JSON {{"images": [[...], ...]}}')
    rows, used = [], set()
    for name, data in files:
        try:
            gray = decode_image(data, name=name)
            x, m = image_to_input(gray, shape, mode)
        except InputError as exc:
            raise ApiError(422, str(exc)) from None
        rows.append(x.reshape(-1))
        used.add(m)
    return np.stack(rows), ",".join(sorted(used))


# ---------------------------------------------------------------- response models (for the OpenAPI schema)

class ModelRef(BaseModel):
    generation: int = Field(description="1 for the file loaded at start, +1 at each reload")
    sha256: str = Field(description="SHA-256 of the model file being served")
    loaded_at: float = Field(description="when this generation was loaded (Unix time)")


class PredictResponse(BaseModel):
    classes: list[str] = Field(description="class names, in the order of each probability row")
    labels: list[str] = Field(description="the most probable class of each image")
    indices: list[int] = Field(description="index of that class in `classes`")
    probabilities: list[list[float]] = Field(description="one row per image, summing to 1")
    model: ModelRef
    preprocess: str | None = Field(None, description="uploads only: the preprocessing applied")
    inputs: list[list[float]] | None = Field(
        None, description="uploads only: the input rows the network saw (0..255, white ink on black)")


class ValuesResponse(BaseModel):
    targets: list[str] = Field(description="target names, in the order of each row of `values`")
    values: list[list[float]] = Field(description="one row per input row: the predicted values, in the targets' "
                                                  "own units")
    predictions: list[dict[str, float]] = Field(description="the same values, one object per row keyed by target")
    model: ModelRef
    preprocess: str | None = Field(None, description="uploads only: the preprocessing applied")
    inputs: list[list[float]] | None = Field(None, description="uploads only: the input rows the network saw")


class ReloadInfo(BaseModel):
    enabled: bool
    interval_s: float
    last_check: float | None
    last_error: str | None


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: ModelRef
    uptime_s: float
    reload: ReloadInfo


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    task: Literal["classification", "regression"]
    classes: list[str]
    targets: list[str] | None = Field(None, description="a regression model's target names (its outputs)")
    n_features: int
    image_shape: list[int] | None
    input: dict[str, Any] = Field(description="what /predict accepts for this model")
    spec: dict[str, Any]
    layers: list[dict[str, Any]] = Field(description="the network's layers in order: name, layer, and where known "
                                                     "the output shape, parameters and multiply-adds per row")
    dataset: dict[str, Any] | None
    training: dict[str, Any] | None
    metrics: dict[str, Any] | None
    normalization: dict[str, Any] | None
    versions: dict[str, Any]
    runtime: Literal["descend", "onnxruntime"] = Field(description="what computes the predictions")
    file: dict[str, Any]


def layer_rows(model) -> list[dict]:
    """``/model``'s list of layers: each one's name and description, with shapes, parameters and multiply-adds
    when the network's input size is known."""
    spec = model.spec
    normalizer = getattr(model, "normalizer", None)
    n_in = (math.prod(spec.input_shape) if spec.input_shape else
            getattr(normalizer, "n_outputs", None) or model.n_features)
    try:
        return [{**r, "output": list(r["output"])} for r in spec.resolve(n_in, len(model_outputs(model))).summary()]
    except DescendError:
        return [{"name": name, "layer": layer.describe()} for name, layer in zip(spec.names, spec.layers)]


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong with the request, in one line")


def _jsonable(obj: Any) -> Any:
    from descend.io.rundir import to_jsonable

    return to_jsonable(obj)


# ---------------------------------------------------------------- the app

def create_app(model_path: str | os.PathLike, *, max_batch: int = DEFAULT_MAX_BATCH,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, reload_interval: float = 0.5,
               log: Callable[[str], None] | None = None) -> FastAPI:
    """The ASGI app serving ``model_path``; the reload thread runs while the app's lifespan does."""
    holder = ModelHolder(model_path, reload_interval=reload_interval, log=log)
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(title="descend serve", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # the Swagger/ReDoc pages load scripts from a CDN
                  description="Class probabilities (or a regression model's values) from a descend model file. "
                              "Pixel values are raw 0..255 intensities (white ink on black, as MNIST), like the "
                              "training data.")
    app.state.holder = holder
    app.state.max_batch = max_batch
    app.state.max_request_bytes = max_request_bytes

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    errors = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "malformed JSON or multipart body"), (413, "body over the size limit"),
        (415, "unsupported Content-Type"), (422, "input that does not fit the model"))}

    @app.get("/health", response_model=HealthResponse, summary="Liveness and the model generation served")
    def health() -> dict:
        served = holder.current
        return {"status": "ok", "model": served.ref(), "uptime_s": time.time() - started,
                "reload": {"enabled": holder.reload_interval > 0, "interval_s": holder.reload_interval,
                           "last_check": holder.last_check, "last_error": holder.last_error}}

    @app.get("/model", response_model=ModelInfo, summary="The model's metadata")
    def model_info() -> dict:
        served = holder.current
        m = served.model
        meta = m.metadata
        shape = served.image_shape
        if shape:
            inp = {"kind": "image", "height": shape[0], "width": shape[1], "range": list(PIXEL_RANGE),
                   "encoding": "raw pixel intensities 0..255, white ink on black (as MNIST)",
                   "uploads": "PNG/JPEG in multipart field 'images'",
                   "preprocess": "mnist" if shape == (28, 28) else "resize"}
        else:
            inp = {"kind": "features", "length": m.n_features, "range": None,
                   "encoding": "raw feature values, as in the training file"}
        inp["max_batch"] = max_batch
        inp["max_request_bytes"] = max_request_bytes
        regression = model_task(m) == "regression"
        body = {
            "task": model_task(m), "classes": [] if regression else list(m.classes),
            "targets": list(m.targets) if regression else None, "n_features": m.n_features,
            "image_shape": list(shape) if shape else None,
            "input": inp, "spec": m.spec.to_dict(), "layers": layer_rows(m), "dataset": meta.get("dataset"),
            "training": meta.get("training"), "metrics": meta.get("metrics"),
            "normalization": meta.get("normalization"), "versions": served.versions,
            "runtime": "onnxruntime" if isinstance(m, OnnxModel) else "descend",
            "file": {"name": holder.path.name, "size": served.size, "mtime": served.mtime, **served.ref()},
        }
        return _jsonable(body)

    @app.post("/predict", response_model=PredictResponse | ValuesResponse, response_model_exclude_none=True,
              summary="Class probabilities (a regression model: values) for a batch of images or rows",
              responses=errors)
    async def predict(request: Request, preprocess: Literal["auto", "mnist", "resize", "none"] = Query(
            "auto", description="for uploads: how an image becomes the model input (JSON input is used as is)")):
        served = holder.current  # this request uses this generation to the end, whatever reloads meanwhile
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "multipart/form-data") and not ctype.endswith("+json"):
            raise ApiError(415, f"unsupported Content-Type {ctype or '(none)'!r}: send application/json "
                                f'{{"images": [...]}} or multipart/form-data with image files in the field images')
        body = await _read_body(request, max_request_bytes)
        used = None
        if ctype == "multipart/form-data":
            files = await _parse_multipart(request, body, max_batch)
            X, used = await run_in_threadpool(_images_to_rows, files, served, preprocess)
        else:
            try:
                payload = json.loads(body)
            except RecursionError:
                raise ApiError(400, "malformed JSON: nested too deeply") from None
            except UnicodeDecodeError:
                raise ApiError(400, "malformed JSON: the body is not UTF-8 text") from None
            except ValueError as exc:  # JSONDecodeError, and ints of more than 4300 digits
                raise ApiError(400, f"malformed JSON: {exc}") from None
            X = parse_json_images(payload, served, max_batch)
        if model_task(served.model) == "regression":
            values = await run_in_threadpool(served.model.predict_values, X)
            targets = list(served.model.targets)
            out = {"targets": targets, "values": values.tolist(),
                   "predictions": [dict(zip(targets, map(float, row))) for row in values], "model": served.ref()}
        else:
            proba = await run_in_threadpool(served.model.predict_proba, X)
            idx = np.argmax(proba, axis=1)
            classes = list(served.model.classes)
            out = {"classes": classes, "labels": [classes[i] for i in idx], "indices": idx.tolist(),
                   "probabilities": proba.tolist(), "model": served.ref()}
        if used is not None:
            out["preprocess"] = used
            out["inputs"] = np.round(X, 4).tolist()
        return out

    def openapi() -> dict:
        """The schema of the model being served now: /predict's body names its input size."""
        served = holder.current
        if app.openapi_schema and app.state.schema_generation == served.generation:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["paths"]["/predict"]["post"]["requestBody"] = _request_body(served, max_batch)
        app.openapi_schema, app.state.schema_generation = schema, served.generation
        return schema

    app.openapi = openapi

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        served = holder.current
        # The drawing / upload page shows class probabilities of an image; other models get a page about the API.
        page = served.image_shape and model_task(served.model) == "classification"
        html = (STATIC / "index.html").read_text(encoding="utf-8") if page else _api_page(served, holder.path.name)
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                           "X-Content-Type-Options": "nosniff"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def _api_page(served: Served, name: str) -> str:
    """``/`` for a model that is not an image classifier: what it predicts and how to call the API (no scripts)."""
    from html import escape

    m = served.model
    n = m.n_features
    rows = f"{served.image_shape[0]}x{served.image_shape[1]} images" if served.image_shape else f"rows of {n} features"
    if model_task(m) == "regression":
        what = f"regression: the values of {', '.join(map(repr, m.targets))}, in the targets' own units"
    else:
        what = f"classification into {len(m.classes)} classes ({', '.join(map(str, m.classes))})"
    example = json.dumps({"images": [[0.0] * min(n, 4) + (["..."] if n > 4 else [])]}).replace('"..."', "...")
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>descend serve</title>'
            '<link rel="icon" href="data:,"><link rel="stylesheet" href="static/style.css"></head><body>\n'
            f"<header><h1>descend</h1><p>{escape(name)}: {escape(rows)} &rarr; {escape(what)}</p></header>\n"
            "<main><p>This model has no drawing page (it is not an image classifier). Call the API:</p>"
            f"<p><code>POST /predict</code> with JSON <code>{escape(example)}</code> (each entry {n} raw values, "
            "as in the training file).</p>\n"
            '<p><a href="model">GET /model</a> · <a href="health">GET /health</a> · '
            '<a href="openapi.json">openapi.json</a></p></main>\n</body></html>\n')


def _request_body(served: Served, max_batch: int) -> dict:
    n, shape = served.model.n_features, served.image_shape
    number: dict = {"type": "number"}
    if shape:
        number = {"type": "number", "minimum": PIXEL_RANGE[0], "maximum": PIXEL_RANGE[1]}
    row = {"type": "array", "items": number, "minItems": n, "maxItems": n,
           "description": f"{n} values" + (f", the {shape[0]}x{shape[1]} image row by row" if shape else "")}
    item: dict = row
    if shape:
        grid = {"type": "array", "minItems": shape[0], "maxItems": shape[0], "description": f"{shape[0]} rows",
                "items": {"type": "array", "items": number, "minItems": shape[1], "maxItems": shape[1]}}
        item = {"anyOf": [row, grid]}
    images = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": item}
    content = {"application/json": {"schema": {
        "type": "object", "required": ["images"], "additionalProperties": False,
        "properties": {"images": images}}}}
    if shape:
        content["multipart/form-data"] = {"schema": {
            "type": "object", "required": ["images"], "additionalProperties": False,
            "properties": {"images": {"type": "array", "minItems": 1, "maxItems": max_batch,
                                      "items": {"type": "string", "format": "binary"},
                                      "description": "PNG or JPEG files"}}}}
    return {"required": True, "content": content,
            "description": "raw pixel values 0..255 (white ink on black, as in the training data)" if shape
            else "raw feature values, as in the training file"}


def serve(model_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          max_batch: int = DEFAULT_MAX_BATCH, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
          reload_interval: float = 0.5, log_level: str = "warning", announce: Callable[[str], None] = print) -> None:
    """Serve ``model_path`` on ``host:port`` with uvicorn until Ctrl-C or SIGTERM.

    The socket is bound before the announcement, so ``--port 0`` (any free
    port) prints the real address.
    """
    import socket

    app = create_app(model_path, max_batch=max_batch, max_request_bytes=max_request_bytes,
                     reload_interval=reload_interval, log=lambda line: announce(f"descend: {line}"))
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise DescendError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise DescendError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    served = app.state.holder.current
    m = served.model
    shape = served.image_shape
    what = f"{shape[0]}x{shape[1]} images" if shape else f"rows of {m.n_features} features"
    outputs = (f"values of {', '.join(m.targets)}" if model_task(m) == "regression" else f"{len(m.classes)} classes")
    announce(f"descend: serving {Path(model_path).name} ({what} -> {outputs}) "
             f"on http://{shown}:{bound_port}/ ; POST /predict, GET /model, /health, /openapi.json; Ctrl-C to stop")
    if bound_host not in ("127.0.0.1", "::1", "localhost"):
        announce(f"descend: warning: listening on {bound_host}, reachable from other machines; "
                 "the service has no authentication")
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug", "trace"),
                            timeout_graceful_shutdown=5)
    server = _QuietServer(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    announce("descend: stopped")


class _QuietServer(uvicorn.Server):
    """uvicorn, but Ctrl-C / SIGTERM end in a graceful shutdown and a normal return (exit status 0)
    instead of re-raising the signal once shut down."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
