"""`stkc compress`, `stkc decompress`, `stkc info`, `stkc bench`."""

from __future__ import annotations

import sys

import click

from .cli_common import CONTEXT, MODEL_HELP, Failures, say, shown, tell
from .errors import StkcError


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
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInputError(f"{path}: is a folder") from None
    except OSError as error:
        raise BadInputError(f"{path}: cannot read ({error.strerror or error})") from None


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def check_output(target: str, inputs, force: bool, what: str) -> None:
    """Everything that can be known about an output before any work: see outputs.check_writable;
    `-` (stdout) must not be a terminal, as gzip refuses to print binary `what` there."""
    from pathlib import Path

    from .errors import OutputError
    from .outputs import check_writable

    if target != "-":
        check_writable(Path(target), force=force, inputs=inputs)
    elif stdout_is_terminal():
        raise OutputError(f"refusing to write {what} to a terminal (give -o FILE, or redirect stdout)")


def write_output(path: str, data: bytes, force: bool) -> None:
    from pathlib import Path

    from .outputs import atomic_write, cannot_write

    if path != "-":
        atomic_write(Path(path), data, force=force)
        return
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError as error:  # a full disk behind a redirect, a closed pipe
        raise cannot_write("stdout", error) from None


class TileBar:
    """The bar of a one-file run: it counts the image's steps (the prior's and the enhancement's
    tiles, the tokenizer's windows: `Codec.steps`), and shows only for an image large enough to
    wait for (a 150x100 frame is a few steps, a 4.5-megapixel photo hundreds)."""

    LARGE = 8  # steps

    def __init__(self, progress, task, label: str) -> None:
        self.progress, self.task, self.label = progress, task, label

    def expect(self, tiles: int) -> None:
        """`tiles` steps of the codec to come, and one more: what follows them (`stage`)."""
        if tiles + 1 >= self.LARGE:
            self.progress.update(self.task, total=tiles + 1, completed=0, visible=True,
                                 description=f"{self.label} (steps)")

    def stage(self, what: str) -> None:
        """The codec's steps are done; the bar says what the last step is (writing a large PNG
        takes seconds), and the caller's `self(1)` ends it."""
        self.progress.update(self.task, description=f"{self.label} ({what})")

    def __call__(self, tiles: int) -> None:
        self.progress.advance(self.task, tiles)


BATCH_PIXELS = 2**20  # a batch holds up to batch_size files of at most this many pixels in all (a larger file goes alone)


def run_batched(ctx, label: str, inputs, targets, *, force: bool, what: str, load, work, summary,
                batch_size: int, pixels=None) -> list[dict]:
    """Every output checked first; then, if any can be written, `load()` the codec and run
    `work(codec, list of (input, target, bytes), tiles, fail) -> list of (record, output bytes)`
    over batches of `batch_size`, writing each output as soon as it is ready (`tiles`: a TileBar
    for a one-file run, else None). `work` hands a bad file's error to `fail` and puts None in its
    place (the library's errors="collect"), and the rest go on; a run of several files ends with
    `summary(records)`, the seconds and the failures. `pixels(data)` (optional) says how many
    pixels a file holds, so that a batch of large images stays within BATCH_PIXELS: a batch's
    memory is its images'."""
    import time

    from .progress import make_progress

    started = time.perf_counter()
    seconds = dict.fromkeys(["load", "read", "code", "write"], 0.0)
    failures = Failures()
    pending = []
    for source, target in zip(inputs, targets):
        try:
            check_output(target, inputs, force, what)
            pending.append((source, target))
        except StkcError as error:
            failures.report(error)
    records, codec = [], None
    if pending:
        clock = time.perf_counter()
        codec = load()
        seconds["load"] = time.perf_counter() - clock
    single = len(inputs) == 1
    with make_progress(disable=ctx.obj["quiet"]) as progress:
        task = progress.add_task(label, total=len(pending), info="", visible=not single)
        tiles = TileBar(progress, task, label) if single else None

        def run(batch):
            clock = time.perf_counter()
            results = work(codec, batch, tiles, failures.report)
            seconds["code"] += time.perf_counter() - clock
            for (_, target, _), result in zip(batch, results):
                clock = time.perf_counter()
                try:
                    if result is not None:
                        write_output(target, result[1], force)
                        records.append(result[0])
                        say(ctx, result[0]["line"])
                except StkcError as error:
                    failures.report(error)
                seconds["write"] += time.perf_counter() - clock
                if not single:
                    progress.advance(task)

        batch, held = [], 0
        for source, target in pending:
            clock = time.perf_counter()
            try:
                data = read_input(source)
            except StkcError as error:
                failures.report(error)
                progress.advance(task)
                continue
            finally:
                seconds["read"] += time.perf_counter() - clock
            size = pixels(data) if pixels is not None else 0
            if batch and held + size > BATCH_PIXELS:
                run(batch)
                batch, held = [], 0
            batch.append((source, target, data))
            held += size
            if len(batch) == batch_size:
                run(batch)
                batch, held = [], 0
        if batch:
            run(batch)
    tell(ctx, "seconds: " + ", ".join(f"{stage} {value:.2f}" for stage, value in seconds.items()))
    if len(inputs) > 1:
        failed = f"; {len(failures.errors)} failed" if failures.errors else ""
        say(ctx, f"{summary(records)}, {time.perf_counter() - started:.1f} s{failed}")
    failures.exit(ctx)
    return records


def stkc_pixels(data: bytes) -> int:
    """How many pixels a .stkc file decodes to, from its header (0 if it has none: decoding says why)."""
    from .bitstream import parse

    try:
        header, _ = parse(data, max_pixels=2**62)
    except StkcError:
        return 0
    return header.width * header.height


MAX_PIXELS_OPTION = click.option("--max-pixels", type=click.IntRange(1), default=None,
                                 help="Refuse images of more pixels than this.  [default: 64 Mpx]")


def codec_options(function):
    """--model, --force, --json and --max-pixels, shared by compress and decompress."""
    for option in reversed([
        click.option("--model", default="default", show_default=True,
                     help=MODEL_HELP),
        click.option("--force", is_flag=True, help="Replace existing outputs (never an input)."),
        click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout."),
        MAX_PIXELS_OPTION,
        click.pass_context,
    ]):
        function = option(function)
    return function


def prepare(ctx: click.Context, inputs, output, suffix: str, model: str, as_json: bool, max_pixels: int | None,
            effort: int | None = None):
    """The output paths of a compress or decompress run, and how to load its codec (after the
    outputs are checked, since loading takes a while); `effort` is the encoder's (None: the default)."""
    targets = output_paths(inputs, output, suffix)
    if as_json and "-" in targets:
        raise click.UsageError("--json prints on stdout; give -o when writing to stdout")

    def load():
        from . import bitstream, zoo
        from .codec import Codec

        codec = Codec(model, max_pixels=max_pixels or bitstream.DEFAULT_MAX_PIXELS,
                      **({} if effort is None else {"effort": effort}))
        tell(ctx, f"model: {zoo.shipped_name(codec.model.model_id) or model} (codec id {codec.model.model_id.hex()})")
        return codec

    return targets, load


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".avif", ".gif", ".bmp", ".tif", ".tiff", ".jxl", ".ppm"}


def _is_input(output: str, inputs) -> bool:
    """Whether `output` names one of `inputs` (check_writable refuses that with its own message)."""
    from pathlib import Path

    target = Path(output).resolve()
    return any(source != "-" and (Path(source).resolve() == target or
                                  (target.exists() and Path(source).exists() and Path(source).samefile(target)))
               for source in inputs)


def refuse_suffixes(inputs, output: str | None, force: bool) -> None:
    """Mistakes `compress` would otherwise make silently: re-encoding a .stkc file (it was decoded
    once already and loses quality again; --force allows it), and writing .stkc bytes under an
    image's suffix."""
    from pathlib import Path

    from .errors import BadInputError

    for source in inputs:
        if source != "-" and Path(source).suffix.lower() == ".stkc" and not force:
            raise BadInputError(f"{source}: is a .stkc file already (did you mean decompress? --force "
                                "re-encodes it, losing quality again)")
    if output is not None and output != "-" and not Path(output).is_dir() and not _is_input(output, inputs):
        if Path(output).suffix.lower() in IMAGE_SUFFIXES:
            raise BadInputError(f"-o {output}: compress writes .stkc files, not {Path(output).suffix} "
                                "(did you mean decompress?)")


def emit_json(records: list[dict]) -> None:
    import json

    click.echo(json.dumps([{k: v for k, v in r.items() if k != "line"} for r in records], indent=2))


def bits_per_pixel(records: list[dict]) -> str:
    """Over all the pixels of a run: `bytes` is the .stkc size in the records of both commands."""
    pixels = sum(r["width"] * r["height"] for r in records)
    return f"{8 * sum(r['bytes'] for r in records) / max(pixels, 1):.3f} bpp"


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(),
              help="Output file (one input) or existing folder (several); '-' for stdout.  "
                   "[default: beside each input, its suffix replaced by .stkc; stdout for stdin]")
@click.option("-q", "--quality", type=int, default=None,
              help="Quality level: 1 is the base layer alone (smallest), higher levels add an enhancement "
                   "layer (sharper, larger).  [default: the model's, see stkc info or the README]")
@click.option("--target-bytes", type=click.IntRange(1), default=None,
              help="Per image, the largest level whose file fits in this many bytes (level 1 if none does).  "
                   "[default: none, -q decides]")
@click.option("--target-psnr", type=float, default=None,
              help="Per image, the smallest level that reaches this PSNR in dB (the highest if none does).  "
                   "[default: none, -q decides]")
@click.option("--effort", type=click.IntRange(0, 1), default=1, show_default=True,
              help="Encoder effort: 1 lets the encoder move a token whose latent lies near another to one the "
                   "prior codes cheaper (on valid frames about 1% smaller at the same PSNR); "
                   "0 codes the tokenizer's tokens as they are. Decoders read either.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Check each image against the game frames the model learnt (flat colour; a base layer far "
                   "poorer than its bits predict) and warn, with WebP's figures at the same PSNR, when it is "
                   "unlike them (measured on 100 valid frames: 3% longer at level 4, 12-25% at level 1).")
@codec_options
def compress(ctx: click.Context, inputs, output, quality, target_bytes, target_psnr, effort, check, model, force,
             as_json, max_pixels) -> None:
    """Compress images to .stkc files ('-' for stdin/stdout).

    The shipped models learnt SuperTuxKart frames. Other images (photos, screenshots, line art)
    cost more bytes than with WebP for the same quality; stkc warns when an image is unlike the
    frames (screenshots, diagrams, logos, text, line art; not photographs) and gives WebP's figures
    at the same PSNR (--no-check skips it; the README's table).
    Gray images come back gray; alpha is not kept."""
    from .domain import comparable
    from .imageio import image_pixels, open_image

    if sum(option is not None for option in (quality, target_bytes, target_psnr)) > 1:
        raise click.UsageError("give one of -q/--quality, --target-bytes and --target-psnr")
    refuse_suffixes(inputs, output, force)
    targets, load_codec = prepare(ctx, inputs, output, ".stkc", model, as_json, max_pixels, effort=effort)

    def load():
        codec = load_codec()
        if quality is not None:
            codec.check_quality(quality)
        return codec

    def warn(message: str) -> None:  # --quiet silences warnings too (`--json` keeps what they say)
        say(ctx, f"Warning: {message}")

    def work(codec, batch, tiles, fail):
        opened = []
        for source, _, data in batch:
            try:
                opened.append(open_image(data, max_pixels=codec.max_pixels, name=shown(source), on_warning=warn))
            except StkcError as error:
                fail(error)
                opened.append(None)
        readable = [k for k, image in enumerate(opened) if image is not None]
        images = [opened[k] for k in readable]
        compared = check and all(comparable(*image.size) for image in images)
        if tiles is not None:
            level = codec.levels if target_bytes or target_psnr else (quality or codec.model.default_quality)
            tiles.expect(sum(codec.steps(*image.size, level, encoding=True, reconstruct=compared) for image in images))
        encoded: list = [None] * len(batch)
        coded = codec.encode_many(images, quality=quality, target_bytes=target_bytes, target_psnr=target_psnr,
                                  names=[shown(batch[k][0]) for k in readable], errors="collect", on_tiles=tiles,
                                  reconstruct=compared)
        for k, result in zip(readable, coded):
            encoded[k] = result
        results = []
        for (source, target, data), image, result in zip(batch, opened, encoded):
            if isinstance(result, StkcError):
                fail(result)
            if image is None or result is None or isinstance(result, StkcError):
                results.append(None)
                continue
            from . import bitstream
            from .domain import MAX_PIXELS, MAX_SIDE, Limits, assess

            file = result.data
            header = bitstream.parse(file, max_pixels=codec.max_pixels)[0]
            level = header.quality
            bpp = 8 * len(file) / (image.width * image.height)
            if tiles is not None and compared:
                tiles.stage("checking against the frames")
            limits = codec.model.domain_limits or Limits()
            # WebP's figures for a warning, or for --json's records
            comparison, signals = assess(image, result, limits, header, compare=as_json) if compared else (None, None)
            if check and not compared:
                say(ctx, f"{shown(source)}: not compared with WebP (over {MAX_PIXELS / 1e6:.0f} Mpx or a side over "
                          f"{MAX_SIDE})")
            if tiles is not None:
                tiles(1)
            if target_bytes is not None and len(file) > target_bytes:
                warn(f"{shown(source)}: even level 1 takes {len(file)} B, more than --target-bytes {target_bytes}")
            record = {"input": source, "output": target, "width": image.width, "height": image.height,
                      "level": level, "bytes": len(file), "bpp": round(bpp, 4), "input_bytes": len(data),
                      "line": f"{shown(source)}: {image.width}x{image.height} -> {len(file)} B "
                              f"({bpp:.3f} bpp, level {level})"}
            if signals is not None:
                reasons = limits.reasons(signals)
                record.update({"unusual": bool(reasons), "unusual_reasons": reasons,
                               **(comparison.record() if comparison is not None else {}), **signals.record()})
                if reasons:
                    warn(limits.message(shown(source), level, comparison, signals))
            results.append((record, file))
        return results

    def summary(records):
        return (f"{len(records)} files, {sum(r['input_bytes'] for r in records):,} B -> "
                f"{sum(r['bytes'] for r in records):,} B ({bits_per_pixel(records)})")

    # 16 images a batch, as decompress: the prior's group steps run them at once (about 2x faster
    # than one by one with the 8-bit kernel)
    records = run_batched(ctx, "compress", inputs, targets, force=force, what="compressed data", load=load,
                          work=work, summary=summary, batch_size=16, pixels=image_pixels)
    if as_json:
        emit_json(records)


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(),
              help="Output file (one input) or existing folder (several); its suffix picks the format "
                   "(.png, .webp, .jpg...); '-' for stdout (PNG).  "
                   "[default: beside each input, its suffix replaced by .png; stdout for stdin]")
@codec_options
def decompress(ctx: click.Context, inputs, output, model, force, as_json, max_pixels) -> None:
    """Decode .stkc files to images ('-' for stdin/stdout, PNG)."""
    from pathlib import Path

    from . import bitstream
    from .imageio import encode_image, image_format

    targets, load = prepare(ctx, inputs, output, ".png", model, as_json, max_pixels)
    for target in targets:
        if target != "-":
            image_format(Path(target).suffix, target)  # refuses -o out.stkc before decoding

    def work(codec, batch, tiles, fail):
        if tiles is not None:
            try:
                headers = [bitstream.parse(data, max_pixels=codec.max_pixels, name=shown(source))[0]
                           for source, _, data in batch]
                tiles.expect(sum(codec.steps(h.width, h.height, h.quality, encoding=False) for h in headers))
            except StkcError:
                pass  # decompress_many reports it
        images = codec.decompress_many([data for _, _, data in batch], [shown(source) for source, _, _ in batch],
                                       errors="collect", on_tiles=tiles)
        results = []
        for (source, target, data), image in zip(batch, images):
            if isinstance(image, StkcError):
                fail(image)
                results.append(None)
                continue
            suffix = Path(target).suffix if target != "-" else ".png"
            if tiles is not None:
                tiles.stage(f"encoding {suffix.lstrip('.').upper()}")
            try:
                encoded = encode_image(image, suffix)
            except StkcError as error:
                fail(error)
                results.append(None)
                continue
            finally:
                if tiles is not None:
                    tiles(1)
            record = {"input": source, "output": target, "width": image.width, "height": image.height,
                      "bytes": len(data), "output_bytes": len(encoded),
                      "line": f"{shown(source)}: {len(data)} B -> {image.width}x{image.height} "
                              f"{shown(target, 'stdout')}"}
            results.append((record, encoded))
        return results

    def summary(records):
        return (f"{len(records)} files, {sum(r['bytes'] for r in records):,} B ({bits_per_pixel(records)}) -> "
                f"{sum(r['output_bytes'] for r in records):,} B")

    # decoding is batched (the prior's KV cache runs many files at once, about 3x faster than one
    # by one); 16 keeps most of that while the bar still moves every few seconds
    records = run_batched(ctx, "decompress", inputs, targets, force=force, what="image data", load=load,
                          work=work, summary=summary, batch_size=16, pixels=stkc_pixels)
    if as_json:
        emit_json(records)


@click.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
@MAX_PIXELS_OPTION
def info(file, as_json, max_pixels) -> None:
    """Show what a .stkc header says (no model needed)."""
    import json

    from . import bitstream, zoo

    header, _ = bitstream.parse(read_input(file), max_pixels=max_pixels or bitstream.DEFAULT_MAX_PIXELS, name=file)
    described = {**header.describe(), "shipped_model": zoo.shipped_name(header.model_id)}
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    described["shipped_model"] = described["shipped_model"] or "not a shipped model"
    if header.enhancement is not None:
        described["base_bytes"] = f"{header.base_bytes} (cut the file there for a level-1 file)"
    for key, value in described.items():
        text = "x".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"{key.replace('_', ' ')}: {text}")


@click.command("bench", context_settings=CONTEXT)
@click.argument("data_dir", required=False, type=click.Path())
@click.option("--codecs", default="jpeg,webp,avif,jxl,stkc", show_default=True,
              help="Comma-separated codecs to compare (jpeg, webp, avif, jxl, stkc).")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use N images, spread evenly over the sorted folder.  [default: all]")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--plot", type=click.Path(),
              help="Write a PSNR-vs-bpp plot here (PNG; needs the plot extra).  [default: no plot]")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.pass_context
def bench_command(ctx: click.Context, data_dir, codecs, limit, as_json, plot, model) -> None:
    """Rate-distortion and speed of stkc against JPEG, WebP, AVIF and JPEG XL.

    Runs on the images under DATA_DIR (recursive), or on the shipped sample frames without it.
    The report goes to stdout (with --json: the JSON, and the report to stderr).
    """
    import json
    from pathlib import Path

    from .bench import ALL_CODECS, find_frames, load_frames, run_bench, steps
    from .outputs import check_writable
    from rich.console import Console

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
        task = progress.add_task("bench", total=steps(chosen, frames, stkc_codec.levels if stkc_codec else 1),
                                 info=f"{len(frames)} images")
        report = run_bench(frames, chosen, stkc_codec, name=f"stkc bench on {data_dir or 'the sample frames'}",
                           on_step=lambda n: progress.advance(task, n),
                           on_codec=lambda name: progress.update(task, description=f"bench {name}"))
    if not as_json or not ctx.obj["quiet"]:  # the report is the output; beside --json, a note on stderr
        console = stderr_console if as_json else Console(highlight=False)
        for line in settings_lines(report):
            console.print(line, markup=False)
        console.print(results_table(report))
        for line in summary_lines(report):
            console.print(line, markup=False)
    if plot:
        plot_rd(report, plot)
        say(ctx, f"plot: {plot}")
    if as_json:
        click.echo(json.dumps(report, indent=2))
