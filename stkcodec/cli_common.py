"""What every `stkc` command shares: one-line errors with exit codes, and stderr messages."""

from __future__ import annotations

import logging
import sys

import click

from .errors import StkcError
from .runtime import configure_threads

CONTEXT = {"help_option_names": ["-h", "--help"]}


class UserError(click.ClickException):
    """A library error shown as one line, with its own exit code."""

    def __init__(self, error: StkcError) -> None:
        super().__init__(error.cli_message())
        self.exit_code = error.exit_code


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            configure_threads()  # before any command imports torch (runtime.py says why)
            return super().invoke(ctx)
        except StkcError as error:
            raise UserError(error) from None
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)


class Failures:
    """The errors of a multi-file run: each one line as it happens, the worst exit code at the end."""

    def __init__(self) -> None:
        self.errors: list[StkcError] = []

    def report(self, error: StkcError) -> None:
        self.errors.append(error)
        click.echo(f"Error: {error.cli_message()}", err=True)

    def exit(self, ctx: click.Context) -> None:
        if self.errors:
            ctx.exit(max(error.exit_code for error in self.errors))


def say(ctx: click.Context, message: str) -> None:
    if not ctx.obj["quiet"]:
        click.echo(message, err=True)


def tell(ctx: click.Context, message: str) -> None:
    """A line for -v only: which model, how long each stage took."""
    if ctx.obj["verbose"]:
        say(ctx, message)


def shown(path: str, stream: str = "stdin") -> str:
    """How messages name a path: '-' is stdin (or stdout)."""
    return stream if path == "-" else path


def configure_logging(verbose: bool) -> None:
    """stkc's own loggers say more with -v; Pillow's stay at WARNING (its DEBUG is an EXIF dump)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("stkcodec").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("PIL").setLevel(logging.WARNING)


def set_output_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    flags = ctx.ensure_object(dict)
    flags.setdefault("verbose", False)
    flags.setdefault("quiet", False)
    if value:
        flags[param.name] = True
    configure_logging(flags["verbose"])


def add_output_flags(command: click.Command) -> None:
    """-v and --quiet on `command` and every subcommand, so they work before or after its name."""
    taken = {name for param in command.params for name in param.opts}
    for option in (click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=set_output_flag,
                                help="Say more: the model used, the time of each stage."),
                   click.Option(["--quiet"], is_flag=True, expose_value=False, callback=set_output_flag,
                                help="No progress bars or summaries on stderr (errors still show).")):
        if not taken & set(option.opts):
            command.params.append(option)
    for subcommand in getattr(command, "commands", {}).values():
        add_output_flags(subcommand)


MODEL_HELP = "'default', a shipped model's name (stkc info shows it), or a folder with tokenizer.pt and prior.pt."
