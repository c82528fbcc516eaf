"""The `stkc` command: parses options, calls the library, prints. No model math here."""

from __future__ import annotations

import logging
import sys

import click

from . import __version__
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


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="stkc")
@click.option("-v", "--verbose", is_flag=True, help="Say more about what happens.")
@click.option("--quiet", is_flag=True, help="No progress bars or summaries on stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """stkc: a learned image codec for SuperTuxKart frames."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")
    ctx.obj = {"verbose": verbose, "quiet": quiet}


def say(ctx: click.Context, message: str) -> None:
    if not ctx.obj["quiet"]:
        click.echo(message, err=True)


def training_options(function):
    options = [
        click.option("-o", "--output", default=None, help="Where to write the final model."),
        click.option("--steps", type=click.IntRange(1), help="Train for this many steps."),
        click.option("--minutes", type=click.FloatRange(0, min_open=True), help="Train for this many minutes."),
        click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True),
        click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-3, show_default=True),
        click.option("--resume", type=click.Path(), help="Continue from a checkpoint (or a model file)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--checkpoint-dir", default="checkpoints", show_default=True),
        click.option("--checkpoint-minutes", type=click.FloatRange(0, min_open=True), default=3.0, show_default=True),
        click.option("--valid-limit", type=click.IntRange(1), default=256, show_default=True,
                     help="Validate on at most this many items at each checkpoint."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def make_train_config(ctx: click.Context, default_output: str, **options):
    from .train import TrainConfig

    return TrainConfig(
        steps=options["steps"], minutes=options["minutes"], batch_size=options["batch_size"], lr=options["lr"],
        seed=options["seed"], device=options["device"], output=options["output"] or default_output,
        checkpoint_dir=options["checkpoint_dir"], checkpoint_minutes=options["checkpoint_minutes"],
        valid_limit=options["valid_limit"], resume=options["resume"], quiet=ctx.obj["quiet"],
    )


@main.group(cls=Group, context_settings=CONTEXT)
def train() -> None:
    """Train a tokenizer or a prior."""


@train.command("tokenizer", context_settings=CONTEXT)
@click.option("--data", required=True, type=click.Path(), help="Folder of training images (recursive).")
@click.option("--valid", type=click.Path(), help="Folder of validation images.")
@click.option("--patch-size", type=click.IntRange(1, 32), default=5, show_default=True)
@click.option("--bits", type=click.IntRange(1, 20), default=10, show_default=True)
@click.option("--encoder-channels", type=click.IntRange(1), default=96, show_default=True)
@click.option("--encoder-blocks", type=click.IntRange(0), default=2, show_default=True)
@click.option("--decoder-channels", type=click.IntRange(1), default=160, show_default=True)
@click.option("--decoder-blocks", type=click.IntRange(0), default=4, show_default=True)
@click.option("--entropy-weight", type=click.FloatRange(0), default=0.1, show_default=True,
              help="Weight of BSQ's entropy term (keeps the codebook in use).")
@training_options
@click.pass_context
def train_tokenizer(ctx: click.Context, data, valid, patch_size, bits, encoder_channels, encoder_blocks,
                    decoder_channels, decoder_blocks, entropy_weight, **options) -> None:
    """Train the patch auto-encoder (BSQ tokenizer) on a folder of images."""
    import torch

    from .data import ImageFolder
    from .objectives import TokenizerObjective
    from .tokenizer import Tokenizer, TokenizerConfig
    from .train import train as run

    config = TokenizerConfig(patch_size=patch_size, bits=bits, encoder_channels=encoder_channels,
                             encoder_blocks=encoder_blocks, decoder_channels=decoder_channels,
                             decoder_blocks=decoder_blocks, entropy_weight=entropy_weight)
    torch.manual_seed(options["seed"])
    model = Tokenizer(config)
    train_data = ImageFolder(data)
    valid_data = ImageFolder(valid) if valid else None
    say(ctx, f"tokenizer: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_data)} training images")
    run(model, TokenizerObjective(commitment_weight=config.commitment_weight, entropy_weight=config.entropy_weight), train_data, valid_data,
        make_train_config(ctx, "tokenizer.pt", **options), log=lambda m: say(ctx, m))


@train.command("prior", context_settings=CONTEXT)
@click.option("--tokens", "tokens_path", required=True, type=click.Path(), help="Tokens from `stkc tokenize`.")
@click.option("--valid-tokens", type=click.Path(), help="Validation tokens (same tokenizer).")
@click.option("--d-model", type=click.IntRange(8), default=128, show_default=True)
@click.option("--layers", type=click.IntRange(1), default=4, show_default=True)
@click.option("--heads", type=click.IntRange(1), default=4, show_default=True)
@training_options
@click.pass_context
def train_prior(ctx: click.Context, tokens_path, valid_tokens, d_model, layers, heads, **options) -> None:
    """Train the autoregressive prior on token grids."""
    import torch

    from .data import load_tokens
    from .objectives import PriorObjective
    from .prior import Prior, PriorConfig
    from .train import train as run

    train_data = load_tokens(tokens_path)
    valid_data = load_tokens(valid_tokens, tokenizer_id=train_data.source["tokenizer_id"]) if valid_tokens else None
    if d_model % heads:
        raise click.BadParameter(f"--d-model {d_model} is not a multiple of --heads {heads}")
    config = PriorConfig(vocab_size=train_data.source["vocab_size"], d_model=d_model, n_layers=layers, n_heads=heads)
    torch.manual_seed(options["seed"])
    model = Prior(config)
    say(ctx, f"prior: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_data)} training grids "
             f"of {tuple(train_data.tokens.shape[1:])}")
    run(model, PriorObjective(), train_data, valid_data, make_train_config(ctx, "prior.pt", **options),
        log=lambda m: say(ctx, m))


@main.command(context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Tokens file to write (.pt).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(), help="Tokenizer model (default: the shipped one).")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.pass_context
def tokenize(ctx: click.Context, data_dir, output, tokenizer_path, force) -> None:
    """Tokenize every image under DATA_DIR (for `stkc train prior`)."""
    from pathlib import Path

    from .checkpoint import atomic_save, load_model
    from .data import find_images, tokenize_folder
    from .imageio import check_writable
    from .progress import make_progress
    from .zoo import resolve

    check_writable(Path(output), force=force)
    tokenizer = load_model(tokenizer_path or resolve(None) / "tokenizer.pt", kind="tokenizer")
    count = len(find_images(data_dir))
    with make_progress(disable=ctx.obj["quiet"]) as progress:
        task = progress.add_task("tokenize", total=count, info="")
        payload = tokenize_folder(tokenizer, data_dir, on_batch=lambda n: progress.advance(task, n))
    atomic_save(payload, output)
    grids = payload["tokens"]
    say(ctx, f"{output}: {len(grids)} grids of {grids.shape[1]}x{grids.shape[2]} tokens "
             f"(tokenizer {tokenizer.model_id[:12]})")


@main.command(context_settings=CONTEXT)
@click.option("-n", "--count", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("-o", "--output", "output_dir", default="generated", show_default=True, type=click.Path(),
              help="Folder for the PNG files.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(1), default=None)
@click.option("--sheet", type=click.Path(), help="Also write all images as one contact sheet (PNG).")
@click.option("--model", default="default", show_default=True, help="'default' or a folder with tokenizer.pt, prior.pt.")
@click.option("--force", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def generate(ctx: click.Context, count, output_dir, seed, temperature, top_k, sheet, model, force) -> None:
    """Sample new images from the prior."""
    from pathlib import Path

    from .generate import contact_sheet, generate_images
    from .imageio import atomic_write, check_writable, encode_image
    from .progress import make_progress
    from .zoo import CodecModel

    folder = Path(output_dir)
    targets = [folder / f"{index:04d}.png" for index in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets + ([Path(sheet)] if sheet else []):
        check_writable(target, force=force)
    codec_model = CodecModel.load(model)
    with make_progress(disable=ctx.obj["quiet"]) as progress:
        task = progress.add_task("generate", total=codec_model.tile[0], info=f"{count} images")
        images = generate_images(codec_model, count, seed=seed, temperature=temperature, top_k=top_k,
                                 on_row=lambda: progress.advance(task))
    for target, image in zip(targets, images):
        atomic_write(target, encode_image(image, ".png"), force=force)
    if sheet:
        atomic_write(Path(sheet), encode_image(contact_sheet(images), ".png"), force=force)
    say(ctx, f"{count} images in {folder}" + (f", sheet {sheet}" if sheet else ""))


def output_paths(inputs: tuple[str, ...], output: str | None, suffix: str) -> list[str]:
    """Where each input's result goes: '-' for stdout, a file, or a file in the -o folder."""
    from pathlib import Path

    if len(inputs) == 1 and (output is None or not Path(output).is_dir()):
        if output is not None:
            return [output]
        return ["-"] if inputs[0] == "-" else [str(Path(inputs[0]).with_suffix(suffix))]
    if "-" in inputs:
        raise click.UsageError("'-' (stdin) works with a single input only")
    if output is not None and not Path(output).is_dir():
        raise click.UsageError(f"-o {output}: with several inputs, -o must be an existing folder")
    targets = [str(Path(output) / Path(p).with_suffix(suffix).name) if output else str(Path(p).with_suffix(suffix))
               for p in inputs]
    if len(set(targets)) != len(targets):
        raise click.UsageError("two inputs would write the same output; use separate folders")
    return targets


def read_input(path: str) -> bytes:
    from .errors import BadInputError

    if path == "-":
        return click.get_binary_stream("stdin").read()
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInputError(f"{path}: is a folder") from None
    except OSError as error:
        raise BadInputError(f"{path}: cannot read ({error.strerror or error})") from None


def write_output(path: str, data: bytes, force: bool) -> None:
    from pathlib import Path

    from .imageio import atomic_write

    if path == "-":
        stream = click.get_binary_stream("stdout")
        stream.write(data)
        stream.flush()
    else:
        atomic_write(Path(path), data, force=force)


def run_batched(ctx, label: str, inputs, targets, force: bool, work) -> list[dict]:
    """Run `work(list of (input, target, bytes)) -> list of (record, output bytes)` over batches,
    writing each output as soon as it is ready; a bad file is reported and the rest go on."""
    from pathlib import Path

    from .errors import StkcError
    from .imageio import check_writable
    from .progress import make_progress

    records, failures = [], []
    pending = []
    for source, target in zip(inputs, targets):
        try:
            if target != "-":
                check_writable(Path(target), force=force)
            pending.append((source, target, read_input(source)))
        except StkcError as error:
            failures.append(error)
            click.echo(f"Error: {error}", err=True)
    with make_progress(disable=ctx.obj["quiet"] or len(inputs) < 2) as progress:
        task = progress.add_task(label, total=len(pending), info="")
        for start in range(0, len(pending), 64):
            batch = pending[start : start + 64]
            try:
                results = work(batch)
            except StkcError:  # retry one by one so one bad file does not sink its batch
                results = []
                for item in batch:
                    try:
                        results.extend(work([item]))
                    except StkcError as single:
                        failures.append(single)
                        click.echo(f"Error: {single}", err=True)
                        results.append(None)
            for item, result in zip(batch, results):
                if result is None:
                    continue
                record, data = result
                try:
                    write_output(item[1], data, force)
                except StkcError as error:
                    failures.append(error)
                    click.echo(f"Error: {error}", err=True)
                    continue
                records.append(record)
                say(ctx, record["line"])
            progress.advance(task, len(batch))
    if failures:
        ctx.exit(max(error.exit_code for error in failures))
    return records


def emit_json(records: list[dict]) -> None:
    import json

    click.echo(json.dumps([{k: v for k, v in r.items() if k != "line"} for r in records], indent=2))


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(), help="Output file (one input) or folder (several).")
@click.option("--model", default="default", show_default=True, help="'default' or a folder with tokenizer.pt, prior.pt.")
@click.option("--force", is_flag=True, help="Replace existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout.")
@click.option("--max-pixels", type=click.IntRange(1), default=None, help="Refuse larger images (default 64 Mpx).")
@click.pass_context
def compress(ctx: click.Context, inputs, output, model, force, as_json, max_pixels) -> None:
    """Compress images to .stkc files ('-' for stdin/stdout)."""
    from . import bitstream
    from .codec import Codec
    from .imageio import open_image

    limit = max_pixels or bitstream.DEFAULT_MAX_PIXELS
    targets = output_paths(inputs, output, ".stkc")
    if as_json and "-" in targets:
        raise click.UsageError("--json prints on stdout; give -o when compressing to stdout")
    codec = Codec(model, max_pixels=limit)

    def work(batch):
        images = [open_image(data, max_pixels=limit, name=source) for source, _, data in batch]
        files = codec.compress_many(images)
        results = []
        for (source, target, data), image, file in zip(batch, images, files):
            bpp = 8 * len(file) / (image.width * image.height)
            record = {"input": source, "output": target, "width": image.width, "height": image.height,
                      "bytes": len(file), "bpp": round(bpp, 4), "input_bytes": len(data),
                      "line": f"{source}: {image.width}x{image.height} -> {len(file)} B ({bpp:.3f} bpp)"}
            results.append((record, file))
        return results

    records = run_batched(ctx, "compress", inputs, targets, force, work)
    if as_json:
        emit_json(records)


@main.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(), help="Output file (one input) or folder (several); "
              "the suffix picks the format (PNG by default).")
@click.option("--model", default="default", show_default=True, help="'default' or a folder with tokenizer.pt, prior.pt.")
@click.option("--force", is_flag=True, help="Replace existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout.")
@click.option("--max-pixels", type=click.IntRange(1), default=None, help="Refuse larger images (default 64 Mpx).")
@click.pass_context
def decompress(ctx: click.Context, inputs, output, model, force, as_json, max_pixels) -> None:
    """Decode .stkc files to images ('-' for stdin/stdout, PNG)."""
    from pathlib import Path

    from . import bitstream
    from .codec import Codec
    from .imageio import encode_image

    limit = max_pixels or bitstream.DEFAULT_MAX_PIXELS
    targets = output_paths(inputs, output, ".png")
    if as_json and "-" in targets:
        raise click.UsageError("--json prints on stdout; give -o when decompressing to stdout")
    codec = Codec(model, max_pixels=limit)

    def work(batch):
        images = codec.decompress_many([data for _, _, data in batch], [source for source, _, _ in batch])
        results = []
        for (source, target, data), image in zip(batch, images):
            encoded = encode_image(image, Path(target).suffix if target != "-" else ".png")
            record = {"input": source, "output": target, "width": image.width, "height": image.height,
                      "bytes": len(data), "line": f"{source}: {len(data)} B -> {image.width}x{image.height} {target}"}
            results.append((record, encoded))
        return results

    records = run_batched(ctx, "decompress", inputs, targets, force, work)
    if as_json:
        emit_json(records)


@main.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
@click.option("--max-pixels", type=click.IntRange(1), default=None, help="Refuse larger images (default 64 Mpx).")
def info(file, as_json, max_pixels) -> None:
    """Show what a .stkc header says (no model needed)."""
    import json

    from . import bitstream

    header, _ = bitstream.parse(read_input(file), max_pixels=max_pixels or bitstream.DEFAULT_MAX_PIXELS, name=file)
    described = header.describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    for key, value in described.items():
        shown = "x".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key.replace('_', ' ')}: {shown}")


@main.command("bench", context_settings=CONTEXT)
@click.argument("data_dir", required=False, type=click.Path())
@click.option("--codecs", default="jpeg,webp,avif,jxl,stkc", show_default=True,
              help="Comma-separated codecs to compare (jpeg, webp, avif, jxl, stkc).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N images.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--plot", type=click.Path(), help="Write a PSNR-vs-bpp plot here (PNG; needs the plot extra).")
@click.option("--model", default="default", show_default=True, help="'default' or a folder with tokenizer.pt, prior.pt.")
@click.pass_context
def bench_command(ctx: click.Context, data_dir, codecs, limit, as_json, plot, model) -> None:
    """Rate-distortion and speed of stkc against JPEG, WebP, AVIF and JPEG XL.

    Runs on the images under DATA_DIR (recursive), or on the shipped sample frames without it.
    """
    import json
    from pathlib import Path

    from .bench import ALL_CODECS, find_frames, load_frames, run_bench, steps
    from .imageio import check_writable
    from .progress import make_progress, stderr_console
    from .rdplot import plot_rd, require_matplotlib, results_table, settings_lines, summary_lines

    chosen = list(dict.fromkeys(name.strip().lower() for name in codecs.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in ALL_CODECS]
    if unknown or not chosen:
        raise click.BadParameter(f"unknown codec {', '.join(unknown) or '(none given)'}; choose from "
                                 f"{', '.join(ALL_CODECS)}", param_hint="--codecs")
    if plot:  # before the run, not after minutes of it
        require_matplotlib()
        check_writable(Path(plot), force=True)
    frames = load_frames(find_frames(data_dir, limit))
    stkc_codec = None
    if "stkc" in chosen:
        from .codec import Codec

        stkc_codec = Codec(model)
    with make_progress(disable=ctx.obj["quiet"]) as progress:
        task = progress.add_task("bench", total=steps(chosen, frames), info=f"{len(frames)} images")
        report = run_bench(frames, chosen, stkc_codec, name=f"stkc bench on {data_dir or 'the sample frames'}",
                           on_step=lambda n: progress.advance(task, n))
    if not ctx.obj["quiet"]:
        for line in settings_lines(report):
            say(ctx, line)
        stderr_console.print(results_table(report))
        for line in summary_lines(report):
            say(ctx, line)
    if plot:
        plot_rd(report, plot)
        say(ctx, f"plot: {plot}")
    if as_json:
        click.echo(json.dumps(report, indent=2))
