"""The library's exceptions. The CLI turns each into one line and its exit code."""


class StkcError(Exception):
    """Base class of every error stkc reports to a user."""

    exit_code = 2


class BadInputError(StkcError):
    """An input image or `.stkc` file that cannot be read: truncated, corrupt, foreign, too large."""

    exit_code = 2


class ModelMismatchError(StkcError):
    """A file or token set made by another model than the one offered to read it."""

    exit_code = 3


class OutputError(StkcError):
    """An output that cannot be written, or exists already without `--force`."""

    exit_code = 4
