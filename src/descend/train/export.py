"""``descend export``: a saved model or ensemble file as an ONNX model."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from descend.errors import DescendError
from descend.io.onnx_export import DEFAULT_OPSET, check_opset, export_onnx
from descend.train.predict import load_classifier


@dataclass(frozen=True)
class ExportResult:
    path: Path
    kind: str          # "model" or "ensemble"
    opset: int
    vote: str | None   # an ensemble's voting rule in the graph


def export_file(model_path: str | Path, out: str | Path | None = None, *, opset: int = DEFAULT_OPSET,
                vote: str | None = None) -> ExportResult:
    """Write the ONNX model of ``model_path`` (a descend model or ensemble file) to ``out``.

    ``out`` defaults to ``model_path`` with the suffix ``.onnx``.  The opset is
    checked before the model is read, and nothing is written on any error.
    """
    if importlib.util.find_spec("onnx") is None:
        raise DescendError('descend export needs onnx: pip install "descend[export]"')
    check_opset(opset)
    model = load_classifier(model_path)
    target = Path(out) if out is not None else Path(model_path).with_suffix(".onnx")
    ensemble = hasattr(model, "members")
    used_vote = (vote or model.vote) if ensemble else None
    export_onnx(model, target, opset=opset, vote=vote)
    return ExportResult(target, "ensemble" if ensemble else "model", opset, used_vote)
