"""What a run shows: metrics, plots (PNG), a self-contained HTML report, Kaggle submissions,
predictions files.

``descend.reports.plots`` is not imported here: it pulls in matplotlib, which
commands that never plot need not load.
"""

from .html import write_report
from .metrics import confusion_matrix, error_rate, per_class_precision_recall
from .predictions import write_predictions
from .submission import read_submission, write_submission

__all__ = [
    "confusion_matrix",
    "error_rate",
    "per_class_precision_recall",
    "read_submission",
    "write_predictions",
    "write_submission",
    "write_report",
]
