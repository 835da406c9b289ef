"""Errors a user can cause, reported as one line with exit status 2.

Everything that is the user's fault (a malformed file, a bad option, a
diverging learning rate) raises a subclass of :class:`DescendError`; the CLI
prints ``descend: <message>`` and exits 2 without a traceback.  Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class DescendError(Exception):
    """Base class of errors whose message is meant for the user."""

    exit_code = 2


class InputError(DescendError, ValueError):
    """A file or array handed to descend is malformed.

    The message names the file (or argument), the row when there is one, and
    the problem: ``train.csv: row 17: label 12 out of range [0, 9]``.
    """


class ConfigError(DescendError, ValueError):
    """An option has a value it cannot take.

    Messages follow scikit-learn's style and quote what was received:
    "`momentum` must be in [0, 1). Received: momentum=1.5".
    """


class DivergenceError(DescendError, FloatingPointError):
    """Training produced a non-finite loss; the diverged weights are not saved.

    Raised by the fit loop, it carries the optimizer ``step`` and the ``loss``
    that went non-finite, and in ``result`` the training state before the
    steps that diverged (a ``FitResult``).
    """

    def __init__(self, message: str, *, step: int | None = None, loss: float | None = None, result=None):
        super().__init__(message)
        self.step, self.loss, self.result = step, loss, result


class EngineNotInstalled(DescendError, ImportError):
    """An optional engine was asked for but its library is missing."""


class DownloadError(DescendError, OSError):
    """No mirror could provide a verified copy of a dataset file."""


def require(condition: bool, name: str, expectation: str, value) -> None:
    """Raise ConfigError("`name` must be expectation. Received: name=value")."""
    if not condition:
        raise ConfigError(f"`{name}` must be {expectation}. Received: {name}={value!r}")
