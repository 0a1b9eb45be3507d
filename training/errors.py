"""The error the training side raises: the data, the settings or a download cannot be used; the message says why.

Only the `rendernet` command turns errors into messages and exit codes."""

from rendernet.errors import DataError


class TrainingError(DataError):
    """Training cannot go on as asked (no such folder, too few classes, an unknown option...)."""


class ConvertError(TrainingError):
    """A model `rendernet convert` cannot bring over, with the reason in one line; nothing is written."""
