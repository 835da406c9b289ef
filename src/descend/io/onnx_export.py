"""ONNX export of a trained model or ensemble, and an onnxruntime-backed model that reads it back.

The graph is built with ``onnx.helper`` from descend's own network spec and
takes what ``descend predict`` takes: raw rows of ``n_features`` float32 values
(pixel values 0..255, or a CSV's feature values).  Inside it:

1. the normalization fitted on the training rows (``(x - offset) / scale`` in
   float32), and the PCA projection when the model has one (in float64, then
   float32, as :meth:`Normalizer.transform` computes it);
2. each network, with dropout removed (inverted dropout is the identity at
   inference) and batch norm folded into the dense or conv layer before it:
   ``W' = W * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``
   per output unit or channel (a batch norm after any other layer becomes a
   ``BatchNormalization`` node).  A network on images reshapes the rows to
   NHWC and transposes them to ONNX's NCHW once; convolutions take the HWIO
   kernels as OIHW with "same" padding's ``(k-1)//2`` zeros before and ``k//2``
   after; pooling windows are valid ones (no padding, so no padded pixel is
   ever averaged); a flatten transposes back to NHWC first, so the dense
   weights see the pixels in descend's height, width, channel order;
3. softmax.  An ensemble gathers each member's input columns, and combines the
   members' probabilities as the ensemble does: their mean (soft vote), or
   ``(votes + mean / 2) / (members + 1 / 2)`` (hard vote: each member's argmax
   is one vote; the half vote spread by the mean probability only breaks ties).

Outputs: ``probabilities`` and ``logits`` (for an ensemble, the log of its
combined probabilities, whose softmax gives them back).  The file's
``metadata_props`` hold the classes, the input and image shape, the descend
version, the SHA-256 of the training config (canonical JSON: sorted keys, no
spaces) and the source model file's JSON metadata.

A network is a sequence of :class:`Step` (one per layer); a layer type is one
entry in :data:`EMITTERS` (how it becomes ONNX nodes) and, when it folds
away at inference, in :func:`inference_steps`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from descend.errors import ConfigError, InputError
from descend.backend.windows import conv_pads
from descend.model.layers import (
    BN_EPS,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool2D,
)
from descend.model.network import MLP, Network

__all__ = ["MIN_OPSET", "DEFAULT_OPSET", "OnnxModel", "Step", "build_onnx", "config_digest", "export_onnx",
           "inference_steps", "load_onnx", "network_steps"]

MIN_OPSET = 13      # Softmax over one axis (not over the flattened trailing dims) is opset 13's definition
DEFAULT_OPSET = 17  # widely read by current runtimes
FORMAT = "descend-onnx"
INPUT, PROBABILITIES, LOGITS = "input", "probabilities", "logits"


def max_opset() -> int:
    import onnx

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> int:
    """``opset`` if this exporter and the installed onnx support it, else a ConfigError naming the range."""
    top = max_opset()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= top:
        raise ConfigError(f"`opset` must be an integer in [{MIN_OPSET}, {top}] (the opsets this export supports "
                          f"with onnx installed here). Received: opset={opset!r}")
    return opset


def config_digest(config: Mapping[str, Any] | None) -> str | None:
    """SHA-256 of the training config as canonical JSON (sorted keys, no spaces, UTF-8); None without one."""
    if config is None:
        return None
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- the network as layer steps

@dataclass(frozen=True)
class Step:
    """One layer of a network as the exporter sees it: its kind, a name for its nodes, its arrays and option."""

    kind: str
    name: str
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    option: Any = None


def network_steps(spec: Network, params: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]) -> list[Step]:
    """The layers of a network in the order its forward pass applies them (training-time form).

    A network on images starts with an ``image`` step: the rows reshaped to its input shape.
    """
    if spec.task != "classification":
        raise ConfigError(f"descend export writes classifiers only; exporting a {spec.task} model is not "
                          f"supported yet")
    steps = [Step("image", "image", option=tuple(spec.input_shape))] if spec.image_input else []
    for name, layer in zip(spec.names, spec.layers):
        if isinstance(layer, Dropout):
            steps.append(Step("dropout", name, option=layer.keep))
        elif isinstance(layer, (Dense, Conv2D)):
            steps.append(Step("dense" if isinstance(layer, Dense) else "conv", name,
                              {"W": params[f"{name}.W"], "b": params[f"{name}.b"] if layer.bias else None},
                              option=None if isinstance(layer, Dense) else (layer.stride, layer.padding)))
        elif isinstance(layer, BatchNorm):
            steps.append(Step("batchnorm", name, {"gamma": params[f"{name}.gamma"], "beta": params[f"{name}.beta"],
                                                  "mean": state[f"{name}.mean"], "var": state[f"{name}.var"]}))
        elif isinstance(layer, Activation):
            steps.append(Step("activation", name, option=layer.name))
        elif isinstance(layer, (MaxPool2D, AvgPool2D)):
            steps.append(Step("maxpool" if isinstance(layer, MaxPool2D) else "avgpool", name,
                              option=(layer.size, layer.stride)))
        elif isinstance(layer, GlobalAvgPool):
            steps.append(Step("gap", name))
        elif isinstance(layer, Flatten):
            if spec.image_input:  # rows that are not images are vectors already
                steps.append(Step("flatten", name))
        else:
            raise ConfigError(f"ONNX export does not support {layer.describe()} layers")
    return steps


FOLDS_BATCHNORM = ("dense", "conv")  # layers whose output a batch norm right after them folds into


def _fold_batchnorm(layer: Step, bn: Step) -> Step:
    """The dense or conv layer that computes ``batchnorm(layer(x))`` with the running statistics.

    Both kernels keep their output units on the last axis (dense ``(in, out)``, conv HWIO), so ``s`` scales it.
    """
    W = np.asarray(layer.arrays["W"])
    a = {k: np.asarray(v, np.float64) for k, v in bn.arrays.items()}
    s = a["gamma"] / np.sqrt(a["var"] + BN_EPS)
    b = np.zeros(W.shape[-1]) if layer.arrays.get("b") is None else np.asarray(layer.arrays["b"], np.float64)
    return replace(layer, name=f"{layer.name}+{bn.name}",
                   arrays={"W": (W.astype(np.float64) * s).astype(W.dtype),
                           "b": ((b - a["mean"]) * s + a["beta"]).astype(W.dtype)})


def inference_steps(steps: list[Step]) -> list[Step]:
    """``steps`` at inference: dropout removed, each batch norm folded into the dense or conv layer before it.

    An image reshape that a flatten undoes right away (a network of dense layers on images) is dropped too.
    """
    out: list[Step] = []
    for step in steps:
        if step.kind == "dropout":
            continue
        if step.kind == "batchnorm" and out and out[-1].kind in FOLDS_BATCHNORM:
            out[-1] = _fold_batchnorm(out[-1], step)
            continue
        if step.kind == "flatten" and out and out[-1].kind == "image":
            out.pop()
            continue
        out.append(step)
    return out


# ---------------------------------------------------------------- graph building

class _Graph:
    """Nodes and initializers of one ONNX graph; every value gets a unique, readable name."""

    def __init__(self, reserved: tuple[str, ...] = ()):
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set(reserved)

    def _unique(self, name: str) -> str:
        out, k = name, 1
        while out in self._names:
            k += 1
            out = f"{name}_{k}"
        self._names.add(out)
        return out

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        from onnx import helper

        out = self._unique(name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def cast(self, x: str, dtype: np.dtype, name: str) -> str:
        from onnx import helper

        return self.op("Cast", [x], name, to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def _dense(g: _Graph, x: str, step: Step, prefix: str) -> str:
    y = g.op("MatMul", [x, g.const(f"{prefix}{step.name}.W", step.arrays["W"])], f"{prefix}{step.name}.matmul")
    if step.arrays.get("b") is None:
        return y
    return g.op("Add", [y, g.const(f"{prefix}{step.name}.b", step.arrays["b"])], f"{prefix}{step.name}")


_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
NCHW, NHWC = [0, 3, 1, 2], [0, 2, 3, 1]  # Transpose perms: descend's NHWC to ONNX's NCHW, and back


def _activation(g: _Graph, x: str, step: Step, prefix: str) -> str:
    return g.op(_ACTIVATIONS[step.option], [x], f"{prefix}{step.name}.{step.option}")


def _image(g: _Graph, x: str, step: Step, prefix: str) -> str:
    shape = g.const(f"{prefix}image.shape", np.asarray([-1, *step.option], np.int64))
    x = g.op("Reshape", [x, shape], f"{prefix}image.nhwc")
    return g.op("Transpose", [x], f"{prefix}image.nchw", perm=NCHW)


def _conv(g: _Graph, x: str, step: Step, prefix: str) -> str:
    W = np.asarray(step.arrays["W"])
    k, stride, padding = W.shape[0], *step.option
    lo, hi = conv_pads(k, padding)
    inputs = [x, g.const(f"{prefix}{step.name}.W", W.transpose(3, 2, 0, 1))]  # HWIO -> OIHW
    if step.arrays.get("b") is not None:
        inputs.append(g.const(f"{prefix}{step.name}.b", step.arrays["b"]))
    return g.op("Conv", inputs, f"{prefix}{step.name}", kernel_shape=[k, k], strides=[stride, stride],
                pads=[lo, lo, hi, hi], dilations=[1, 1], group=1)


def _pool(g: _Graph, x: str, step: Step, prefix: str) -> str:
    size, stride = step.option
    if step.kind == "maxpool":
        return g.op("MaxPool", [x], f"{prefix}{step.name}", kernel_shape=[size, size], strides=[stride, stride])
    return g.op("AveragePool", [x], f"{prefix}{step.name}", kernel_shape=[size, size], strides=[stride, stride],
                count_include_pad=0)


def _gap(g: _Graph, x: str, step: Step, prefix: str) -> str:
    x = g.op("GlobalAveragePool", [x], f"{prefix}{step.name}.pool")  # (n, c, 1, 1)
    return g.op("Flatten", [x], f"{prefix}{step.name}", axis=1)


def _flatten(g: _Graph, x: str, step: Step, prefix: str) -> str:
    x = g.op("Transpose", [x], f"{prefix}{step.name}.nhwc", perm=NHWC)
    return g.op("Flatten", [x], f"{prefix}{step.name}", axis=1)


def _batchnorm(g: _Graph, x: str, step: Step, prefix: str) -> str:
    """A batch norm that follows no dense or conv layer: per channel (axis 1) of an image or per feature."""
    names = [g.const(f"{prefix}{step.name}.{k}", step.arrays[k]) for k in ("gamma", "beta", "mean", "var")]
    return g.op("BatchNormalization", [x, *names], f"{prefix}{step.name}", epsilon=BN_EPS)


# How each inference-time layer kind becomes nodes: (graph, input value, step, name prefix) -> output value.
# Values between an ``image`` step and a ``flatten`` or ``gap`` are NCHW images; the others are (n, features).
EMITTERS: dict[str, Callable[[_Graph, str, Step, str], str]] = {
    "dense": _dense, "activation": _activation, "image": _image, "conv": _conv, "maxpool": _pool,
    "avgpool": _pool, "gap": _gap, "flatten": _flatten, "batchnorm": _batchnorm}
# onnxruntime's CPU kernels for these are float32 only (a float64 graph would be valid ONNX it cannot run)
FLOAT32_ONLY = ("conv", "avgpool", "gap")


def _network(g: _Graph, x: str, steps: list[Step], prefix: str, dtype) -> str:
    for step in inference_steps(steps):
        emit = EMITTERS.get(step.kind)
        if emit is None:
            raise ConfigError(f"layer {step.name!r} of kind {step.kind!r} has no ONNX export")
        if step.kind in FLOAT32_ONLY and np.dtype(dtype) != np.float32:
            raise ConfigError(f"ONNX export of layer {step.name!r} ({step.kind}) needs a float32 model "
                              f"(onnxruntime runs convolution and average pooling in float32 only); "
                              f"this one is {np.dtype(dtype).name}")
        x = emit(g, x, step, prefix)
    return x


def _normalize(g: _Graph, x: str, normalizer) -> str:
    """The Normalizer's transform: float32 ``(x - offset) / scale``, then the float64 projection if any."""
    if normalizer.method != "none":
        x = g.op("Sub", [x, g.const("normalizer.offset", np.asarray(normalizer.offset, np.float32))], "normalize.sub")
        x = g.op("Div", [x, g.const("normalizer.scale", np.asarray(normalizer.scale, np.float32))], "normalize")
    if normalizer.pca is None:
        return x
    std = np.sqrt(np.maximum(normalizer.pca_variance, 0.0))
    std[std == 0] = 1.0
    x = g.op("Sub", [g.cast(x, np.float64, "pca.f64"), g.const("pca.mean", normalizer.pca_mean)], "pca.center")
    x = g.op("MatMul", [x, g.const("pca.W", normalizer.pca_components.T / std)], "pca.project")
    return g.cast(x, np.float32, "pca")


def _vote(g: _Graph, member_logits: list[str], member_proba: list[str], vote: str, n_classes: int, dtype) -> str:
    m = len(member_proba)
    total = member_proba[0] if m == 1 else g.op("Sum", member_proba, "ensemble.sum")
    mean = g.op("Div", [total, g.const("ensemble.members", np.asarray(m, dtype))], "ensemble.mean")
    if vote == "soft":
        return mean
    depth = g.const("vote.depth", np.asarray(n_classes, np.int64))
    one_zero = g.const("vote.values", np.asarray([0.0, 1.0], np.float32))
    ballots = []
    for i, z in enumerate(member_logits):  # argmax of logits = argmax of probabilities, with fewer float32 ties
        idx = g.op("ArgMax", [z], f"member{i}.vote", axis=1, keepdims=0)
        ballots.append(g.op("OneHot", [idx, depth, one_zero], f"member{i}.ballot", axis=-1))
    votes = ballots[0] if m == 1 else g.op("Sum", ballots, "ensemble.votes")
    if np.dtype(dtype) != np.float32:
        votes = g.cast(votes, dtype, "ensemble.votes.cast")
    half_mean = g.op("Mul", [mean, g.const("vote.half", np.asarray(0.5, dtype))], "ensemble.half_mean")
    share = g.op("Add", [votes, half_mean], "ensemble.tally")
    return g.op("Div", [share, g.const("vote.total", np.asarray(m + 0.5, dtype))], "ensemble.hard")


def _members(model) -> list[tuple[Mapping, Mapping, np.ndarray | None]]:
    """``(params, state, feature columns or None)`` for each network of a loaded model or ensemble."""
    if hasattr(model, "members"):
        return [(m.params, m.state, np.asarray(m.features, np.int64)) for m in model.members]
    return [(model.params, model.state, None)]


def build_onnx(model, *, opset: int = DEFAULT_OPSET, vote: str | None = None):
    """The ``onnx.ModelProto`` of a loaded model or ensemble (``descend.train.predict.load_classifier``'s result).

    ``vote`` overrides an ensemble's own voting rule.
    """
    import onnx
    from onnx import helper

    from descend import __version__

    check_opset(opset)
    ensemble = hasattr(model, "members")
    if vote is not None and not ensemble:
        raise ConfigError(f"`vote` applies to ensembles; this file holds a single model. Received: vote={vote!r}")
    vote = (vote or model.vote) if ensemble else None
    if vote not in (None, "soft", "hard"):
        raise ConfigError(f"`vote` must be one of ('soft', 'hard'). Received: vote={vote!r}")
    members = _members(model)
    dtype = np.dtype(members[0][0]["dense0.W"].dtype)
    n_classes = len(model.classes)

    g = _Graph(reserved=(INPUT, PROBABILITIES, LOGITS))
    x = _normalize(g, INPUT, model.normalizer)
    if dtype != np.float32:
        x = g.cast(x, dtype, "normalized")
    logits, proba = [], []
    for i, (params, state, features) in enumerate(members):
        prefix = f"member{i}/" if ensemble else ""
        xi = x if features is None else g.op("Gather", [x, g.const(f"{prefix}features", features)],
                                             f"{prefix}columns", axis=1)
        logits.append(_network(g, xi, network_steps(model.spec, params, state), prefix, dtype))
        proba.append(g.op("Softmax", [logits[-1]], f"{prefix}softmax", axis=1))
    if ensemble:
        combined = _vote(g, logits, proba, vote, n_classes, dtype)
        g.nodes.append(helper.make_node("Identity", [combined], [PROBABILITIES], name=PROBABILITIES))
        g.nodes.append(helper.make_node("Log", [combined], [LOGITS], name=LOGITS))
    else:
        g.nodes.append(helper.make_node("Identity", [proba[0]], [PROBABILITIES], name=PROBABILITIES))
        g.nodes.append(helper.make_node("Identity", [logits[0]], [LOGITS], name=LOGITS))

    elem = helper.np_dtype_to_tensor_dtype(dtype)
    graph = helper.make_graph(
        g.nodes, "descend_ensemble" if ensemble else "descend_model",
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["N", int(model.n_features)])],
        [helper.make_tensor_value_info(PROBABILITIES, elem, ["N", n_classes]),
         helper.make_tensor_value_info(LOGITS, elem, ["N", n_classes])],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="descend", producer_version=__version__,
                                   ir_version=helper.find_min_ir_version_for(opsets),
                                   doc_string="raw rows in (pixel values 0..255, or the training file's feature "
                                              "values); class probabilities and logits out")
    helper.set_model_props(onnx_model, _metadata_props(model, vote, opset, __version__))
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def _metadata_props(model, vote: str | None, opset: int, version: str) -> dict[str, str]:
    meta = dict(model.metadata or {})
    shape = meta.get("image_shape")
    props = {
        "format": FORMAT,
        "kind": "ensemble" if vote else "model",
        "classes": json.dumps(list(model.classes), ensure_ascii=False),
        "n_features": str(int(model.n_features)),
        "input_shape": json.dumps([int(model.n_features)]),
        "image_shape": json.dumps([int(v) for v in shape] if shape else None),
        "descend_version": version,
        "opset": str(opset),
        "config_sha256": config_digest((meta.get("training") or {}).get("config")) or "",
        "descend_metadata": json.dumps(meta, ensure_ascii=False, allow_nan=False),
    }
    if vote:
        props["vote"] = vote
    return props


def export_onnx(model, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, vote: str | None = None) -> Path:
    """Write :func:`build_onnx`'s model to ``path`` atomically (no half-written file on failure)."""
    from descend.io.atomic import atomic_write_bytes

    return atomic_write_bytes(path, build_onnx(model, opset=opset, vote=vote).SerializeToString())


# ---------------------------------------------------------------- reading an export back

@dataclass(eq=False)
class OnnxModel:
    """An exported model run by onnxruntime, with the interface of a loaded descend model.

    ``classes``, ``n_features``, ``metadata`` (the source model file's),
    ``spec`` and ``predict_proba(X)`` on raw rows.
    """

    session: Any
    classes: tuple[str, ...]
    n_features: int
    metadata: dict
    props: dict
    versions: dict

    @property
    def spec(self) -> MLP:
        meta = self.metadata
        return MLP.from_dict(meta.get("spec") or (meta.get("ensemble") or {}).get("spec") or {})

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (float64, as the native model returns them) for raw rows ``X``."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            shape = "x".join(map(str, X.shape))
            raise InputError(f"input has shape {shape}; the model expects rows of {self.n_features} features")
        (proba,) = self.session.run([PROBABILITIES], {INPUT: X.astype(np.float32)})
        return proba.astype(np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)


def load_onnx(path: str | os.PathLike, *, threads: int | None = None) -> OnnxModel:
    """An :class:`OnnxModel` for a file written by ``descend export``; other files raise one InputError line.

    ``threads`` sets onnxruntime's intra-op threads (None: its default).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError(f'{path}: running an ONNX model needs onnxruntime: pip install "descend[export]"') from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a valid ONNX model ({first})") from None
    props = dict(session.get_modelmeta().custom_metadata_map)
    if props.get("format") != FORMAT:
        raise InputError(f"{path}: an ONNX model without descend's metadata (not written by descend export)")
    try:
        classes = tuple(json.loads(props["classes"]))
        n_features = int(props["n_features"])
        metadata = json.loads(props.get("descend_metadata") or "{}")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: corrupt descend metadata in the ONNX model ({exc})") from None
    versions = {"descend": props.get("descend_version", ""), "onnxruntime": ort.__version__,
                "opset": props.get("opset", "")}
    return OnnxModel(session, classes, n_features, metadata, props, versions)
