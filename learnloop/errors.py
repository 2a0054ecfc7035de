"""Errors that mean "the user asked for something we cannot do".

The CLI turns every `UserError` into one line on stderr and exit code 2 (see `learnloop.cli`).
Anything else is a bug in learnloop and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: bad recipe, key, value, path or file. Message is one line."""


class DataMissingError(UserError):
    """A dataset could not be found anywhere in the resolution order; the message names what to install."""


class CorruptFileError(UserError):
    """A data or checkpoint file is truncated or malformed; the message names the file."""


class TrainingDiverged(Exception):
    """The loss (or a gradient) became NaN/Inf. Training stopped; the last good checkpoint is intact."""
