"""What every `stkc` command shares: one-line errors with exit codes, and stderr messages."""

from __future__ import annotations

import sys

import click

from .errors import StkcError

CONTEXT = {"help_option_names": ["-h", "--help"]}


class UserError(click.ClickException):
    """A library error shown as one line, with its own exit code."""

    def __init__(self, error: StkcError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StkcError as error:
            raise UserError(error) from None
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)


def say(ctx: click.Context, message: str) -> None:
    if not ctx.obj["quiet"]:
        click.echo(message, err=True)


MODEL_HELP = "'default', a shipped model's name (stkc info shows it), or a folder with tokenizer.pt and prior.pt."
