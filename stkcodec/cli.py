"""The `stkc` command: parses options, calls the library, prints. No model math here.

The commands live in cli_codec.py and cli_train.py; cli_common.py has what they share.
"""

from __future__ import annotations

import logging

import click

from . import __version__
from .cli_codec import bench_command, compress, decompress, info
from .cli_common import CONTEXT, Group
from .cli_train import generate, tokenize, train


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="stkc")
@click.option("-v", "--verbose", is_flag=True, help="Say more about what happens.")
@click.option("--quiet", is_flag=True, help="No progress bars or summaries on stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """stkc: a learned image codec for SuperTuxKart frames."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")
    ctx.obj = {"verbose": verbose, "quiet": quiet}


for command in (compress, decompress, info, bench_command, tokenize, train, generate):
    main.add_command(command)
