"""Errors that mean "the user asked for something we cannot do", and the ones the CLI reports specially.

The CLI (`learnloop.cli.main`, the one place that prints errors) turns every `UserError` into one line on
stderr and exit code 2, `TrainingDiverged` into exit code 3, Ctrl-C into exit code 130 and a full disk
into exit code 1. Anything else is a bug in learnloop and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: bad recipe, key, value, path or file. Message is one line."""


class DataMissingError(UserError):
    """A dataset could not be found anywhere in the resolution order; the message names what to install."""


class CorruptFileError(UserError):
    """A data, run-folder or checkpoint file is truncated or malformed; the message names the file.

    `CorruptFileError(f"{path}: what is wrong")` is the whole interface; code that also knows the parts
    passes `path=` and `reason=` so a listing (`learnloop runs`) can show the short reason alone.
    """

    def __init__(self, message: str, *, path=None, reason: str | None = None):
        super().__init__(message)
        self.path = path
        self.reason = reason if reason is not None else message


class TrainingDiverged(Exception):
    """The loss (or a gradient) became NaN/Inf. Training stopped; the last good checkpoint is intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with the run folder it interrupted (None: it was not made yet).

    A `KeyboardInterrupt`, so code that catches Ctrl-C keeps working; the runtime may raise it (from the
    KeyboardInterrupt) to tell the CLI which folder `learnloop resume` should continue.
    """

    def __init__(self, folder=None):
        super().__init__(folder)
        self.folder = folder
