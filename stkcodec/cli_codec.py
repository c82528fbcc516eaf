"""`stkc compress`, `stkc decompress`, `stkc info`, `stkc bench`."""

from __future__ import annotations

import click

from .cli_common import CONTEXT, MODEL_HELP, say


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


def codec_options(function):
    """--model, --force, --json and --max-pixels, shared by compress and decompress."""
    for option in reversed([
        click.option("--model", default="default", show_default=True,
                     help=MODEL_HELP),
        click.option("--force", is_flag=True, help="Replace existing outputs."),
        click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout."),
        click.option("--max-pixels", type=click.IntRange(1), default=None, help="Refuse larger images (default 64 Mpx)."),
        click.pass_context,
    ]):
        function = option(function)
    return function


def prepare(inputs, output, suffix: str, model: str, as_json: bool, max_pixels: int | None):
    """The output paths and the codec of a compress or decompress run."""
    from . import bitstream
    from .codec import Codec

    targets = output_paths(inputs, output, suffix)
    if as_json and "-" in targets:
        raise click.UsageError("--json prints on stdout; give -o when writing to stdout")
    return targets, Codec(model, max_pixels=max_pixels or bitstream.DEFAULT_MAX_PIXELS)


def emit_json(records: list[dict]) -> None:
    import json

    click.echo(json.dumps([{k: v for k, v in r.items() if k != "line"} for r in records], indent=2))


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(), help="Output file (one input) or folder (several).")
@codec_options
def compress(ctx: click.Context, inputs, output, model, force, as_json, max_pixels) -> None:
    """Compress images to .stkc files ('-' for stdin/stdout)."""
    from .imageio import open_image

    targets, codec = prepare(inputs, output, ".stkc", model, as_json, max_pixels)
    limit = codec.max_pixels

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


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(), help="Output file (one input) or folder (several); "
              "the suffix picks the format (PNG by default).")
@codec_options
def decompress(ctx: click.Context, inputs, output, model, force, as_json, max_pixels) -> None:
    """Decode .stkc files to images ('-' for stdin/stdout, PNG)."""
    from pathlib import Path

    from .imageio import encode_image

    targets, codec = prepare(inputs, output, ".png", model, as_json, max_pixels)

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


@click.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
@click.option("--max-pixels", type=click.IntRange(1), default=None, help="Refuse larger images (default 64 Mpx).")
def info(file, as_json, max_pixels) -> None:
    """Show what a .stkc header says (no model needed)."""
    import json

    from . import bitstream, zoo

    header, _ = bitstream.parse(read_input(file), max_pixels=max_pixels or bitstream.DEFAULT_MAX_PIXELS, name=file)
    described = {**header.describe(), "shipped_model": zoo.shipped_name(header.model_id)}
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    for key, value in described.items():
        shown = "x".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key.replace('_', ' ')}: {shown}")


@click.command("bench", context_settings=CONTEXT)
@click.argument("data_dir", required=False, type=click.Path())
@click.option("--codecs", default="jpeg,webp,avif,jxl,stkc", show_default=True,
              help="Comma-separated codecs to compare (jpeg, webp, avif, jxl, stkc).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use N images, spread evenly over the sorted folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--plot", type=click.Path(), help="Write a PSNR-vs-bpp plot here (PNG; needs the plot extra).")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
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
