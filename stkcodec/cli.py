"""The `stkc` command: parses options, calls the library, prints. No model math here.

The commands live in cli_codec.py and cli_train.py; cli_common.py has what they share.
"""

from __future__ import annotations

from .runtime import prefer_sleeping_threads

prefer_sleeping_threads()  # before torch is imported: spinning threads made two stkc processes 4x slower

import click  # noqa: E402

from . import __version__  # noqa: E402
from .cli_codec import bench_command, compress, decompress, info  # noqa: E402
from .cli_common import CONTEXT, Group, add_output_flags  # noqa: E402
from .cli_train import generate, tokenize, train  # noqa: E402


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="stkc")
def main() -> None:
    """stkc: a learned image codec for SuperTuxKart frames."""


for command in (compress, decompress, info, bench_command, tokenize, train, generate):
    main.add_command(command)
add_output_flags(main)
