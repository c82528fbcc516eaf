"""The library's exceptions. The CLI turns each into one line and its exit code.

A message may name a setting the user can change: `Option("max_pixels")` among its parts reads
`max_pixels=` in the library's message (`str(error)`) and `--max-pixels` in the CLI's
(`error.cli_message()`), so neither speaks the other's language.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """A setting named in a message: a keyword argument in the library, an option in the CLI."""

    name: str  # the keyword, e.g. "max_pixels"
    value: object = None  # shown after it, if any: force=True / --force, model='x' / --model x

    def library(self) -> str:
        return f"{self.name}=" if self.value is None else f"{self.name}={self.value!r}"

    def cli(self) -> str:
        flag = "--" + self.name.replace("_", "-")
        return flag if self.value is None or self.value is True else f"{flag} {self.value}"


class StkcError(Exception):
    """Base class of every error stkc reports to a user; its parts are text and `Option`s."""

    exit_code = 2

    def __init__(self, *parts: str | Option) -> None:
        super().__init__(*parts)
        self.parts = parts

    def __str__(self) -> str:
        return "".join(p.library() if isinstance(p, Option) else str(p) for p in self.parts)

    def cli_message(self) -> str:
        return "".join(p.cli() if isinstance(p, Option) else str(p) for p in self.parts)


class BadInputError(StkcError):
    """An input image or `.stkc` file that cannot be read: truncated, corrupt, foreign, too large."""

    exit_code = 2


class ModelMismatchError(StkcError):
    """A file or token set made by another model than the one offered to read it."""

    exit_code = 3


class OutputError(StkcError):
    """An output that cannot be written, or exists already (without `force`)."""

    exit_code = 4


def exists_error(path) -> OutputError:
    """The one message for an output that is there already."""
    return OutputError(f"{path}: exists (use ", Option("force", True), " to replace it)")
