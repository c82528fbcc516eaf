"""`stkc train tokenizer|prior`, `stkc tokenize`, `stkc generate`."""

from __future__ import annotations

import click

from .cli_common import CONTEXT, MODEL_HELP, Group, say


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


@click.group(cls=Group, context_settings=CONTEXT)
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
@click.option("--commitment-weight", type=click.FloatRange(0), default=0.25, show_default=True,
              help="Weight of BSQ's commitment term (latent to its code).")
@click.option("--entropy-weight", type=click.FloatRange(0), default=0.01, show_default=True,
              help="Weight of BSQ's entropy term at the start (keeps the codebook in use).")
@click.option("--entropy-weight-final", type=click.FloatRange(0), default=0.01, show_default=True,
              help="...falling linearly to this weight...")
@click.option("--entropy-decay-steps", type=click.IntRange(0), default=600, show_default=True,
              help="...over this many steps.")
@click.option("--prototypes/--no-prototypes", default=True, show_default=True,
              help="The encoder also sees each patch's soft assignment to 2**bits prototype patches, "
                   "started at k-means centroids.")
@click.option("--teacher-weight", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Weight at the start of the k-means teacher, which pulls the encoder's bits towards "
                   "k-means cells of the patches (0: no teacher)...")
@click.option("--teacher-weight-final", type=click.FloatRange(0), default=0.0, show_default=True,
              help="...moving linearly to this weight...")
@click.option("--teacher-decay-steps", type=click.IntRange(0), default=1500, show_default=True,
              help="...over this many steps.")
@click.option("--decoder-only", is_flag=True,
              help="With --resume: train the decoder alone; tokens, and a prior trained on them, stay valid.")
@click.option("--encoder-from", type=click.Path(),
              help="Keep this tokenizer's encoder (frozen) and train a new decoder, of any shape, for its tokens.")
@click.option("--decoder-from", type=click.Path(),
              help="Start the decoder from this tokenizer's (same width); extra --decoder-blocks start as "
                   "the identity. With --encoder-from the same file: a deeper decoder for the same tokens.")
@training_options
@click.pass_context
def train_tokenizer(ctx: click.Context, data, valid, patch_size, bits, encoder_channels, encoder_blocks,
                    decoder_channels, decoder_blocks, commitment_weight, entropy_weight, entropy_weight_final,
                    entropy_decay_steps, prototypes, teacher_weight, teacher_weight_final, teacher_decay_steps, decoder_only,
                    encoder_from, decoder_from, **options) -> None:
    """Train the patch auto-encoder (BSQ tokenizer) on a folder of images."""
    import torch

    from .checkpoint import load_model
    from .data import ImageFolder
    from .objectives import TokenizerObjective
    from .tokenizer import Tokenizer, TokenizerConfig
    from .train import train as run

    config = TokenizerConfig(patch_size=patch_size, bits=bits, encoder_channels=encoder_channels,
                             encoder_blocks=encoder_blocks, decoder_channels=decoder_channels,
                             decoder_blocks=decoder_blocks, commitment_weight=commitment_weight,
                             entropy_weight=entropy_weight,
                             entropy_weight_final=entropy_weight_final, entropy_decay_steps=entropy_decay_steps,
                             prototypes=prototypes, teacher_weight=teacher_weight, teacher_weight_final=teacher_weight_final,
                             teacher_decay_steps=teacher_decay_steps)
    torch.manual_seed(options["seed"])
    model = Tokenizer(config)
    if decoder_only:
        if not options["resume"]:
            raise click.UsageError("--decoder-only needs --resume: the tokenizer whose encoder to keep")
        model.freeze_encoder()
    if encoder_from:
        model.keep_encoder_of(load_model(encoder_from, kind="tokenizer"))
    if decoder_from:
        model.start_decoder_from(load_model(decoder_from, kind="tokenizer"))
    train_data = ImageFolder(data)
    valid_data = ImageFolder(valid) if valid else None
    say(ctx, f"tokenizer: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_data)} training images")
    run(model, TokenizerObjective.from_config(config), train_data, valid_data,
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


@click.command(context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Tokens file to write (.pt).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(), help="Tokenizer model (default: the shipped one).")
@click.option("--mirrored", is_flag=True,
              help="Also tokenize every image flipped left to right: twice the grids for training a prior.")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.pass_context
def tokenize(ctx: click.Context, data_dir, output, tokenizer_path, mirrored, force) -> None:
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
        task = progress.add_task("tokenize", total=count * (2 if mirrored else 1), info="")
        payload = tokenize_folder(tokenizer, data_dir, mirrored=mirrored, on_batch=lambda n: progress.advance(task, n))
    atomic_save(payload, output)
    grids = payload["tokens"]
    say(ctx, f"{output}: {len(grids)} grids of {grids.shape[1]}x{grids.shape[2]} tokens "
             f"(tokenizer {tokenizer.model_id[:12]})")


@click.command(context_settings=CONTEXT)
@click.option("-n", "--count", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("-o", "--output", "output_dir", default="generated", show_default=True, type=click.Path(),
              help="Folder for the PNG files.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True)
@click.option("--top-k", type=click.IntRange(1), default=None)
@click.option("--sheet", type=click.Path(), help="Also write all images as one contact sheet (PNG).")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
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
