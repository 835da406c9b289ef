"""Files a run reads and writes: atomic writes, model files, checkpoints, run directories.

Nothing here unpickles: model files and checkpoints are safetensors + JSON.
"""

from .atomic import atomic_path, atomic_write_bytes, atomic_write_csv, atomic_write_text
from .modelfile import ModelFile, load_checkpoint, load_model, save_checkpoint, save_model
from .rundir import make_run_dir, read_json, to_jsonable, write_json

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_text",
    "ModelFile",
    "load_model",
    "save_model",
    "load_checkpoint",
    "save_checkpoint",
    "make_run_dir",
    "read_json",
    "write_json",
    "to_jsonable",
]
