"""`stkc train tokenizer|prior|enhancer|int8`, `stkc tokenize`, `stkc generate`.

Defaults shown in -h come from the configs' dataclasses (one place for each); with `--resume`,
an option left out takes the checkpoint's value, and one given overrides it.
"""

from __future__ import annotations

import dataclasses
import importlib

import click
from click.core import ParameterSource

from .cli_common import CONTEXT, MODEL_HELP, Failures, Group, say

LEAD_PAIRS = 256  # training pairs whose anchors' bits pick an enhancer's leading channels


class ConfigOption(click.Option):
    """An option whose default is a config field's, looked up when first needed: the configs'
    modules import torch, which commands that never train should not pay for."""

    def get_default(self, ctx: click.Context, call: bool = True):
        return super().get_default(ctx, call=True)  # -h shows the value, not "(dynamic)"


def config_option(*names: str, **options):
    """click.option with a ConfigOption: its default is `default(...)`'s."""
    return click.option(*names, cls=ConfigOption, **options)


def default(module: str, config: str, name: str):
    """The default of field `name` of stkcodec.<module>.<config>, as a lazy click default."""

    def lookup():
        config_class = getattr(importlib.import_module(f"stkcodec.{module}"), config)
        return {f.name: f.default for f in dataclasses.fields(config_class)}[name]

    return lookup


def training_options(default_output: str, **defaults):
    """The options every `stkc train` command has; `defaults` replaces TrainConfig's for this kind."""

    def run_default(name: str):
        if name in defaults:
            return lambda: defaults[name]
        return default("train", "TrainConfig", name)

    options = [
        click.option("-o", "--output", default=default_output, show_default=True, type=click.Path(),
                     help="Where to write the final model (with --resume: the checkpoint's run's)."),
        click.option("--force", is_flag=True, help="Replace an existing output."),
        click.option("--steps", type=click.IntRange(1), help="Train for this many steps."),
        click.option("--minutes", type=click.FloatRange(0, min_open=True), help="Train for this many minutes."),
        config_option("--batch-size", type=click.IntRange(1), default=run_default("batch_size"), show_default=True,
                     help="Crops per step (per process under torchrun)."),
        config_option("--lr", type=click.FloatRange(0, min_open=True), default=run_default("lr"), show_default=True,
                     help="Peak learning rate (warm-up, then cosine decay to 10%)."),
        click.option("--resume", type=click.Path(),
                     help="Continue from a checkpoint (or a model file): its data, duration and options unless given."),
        config_option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=run_default("device"),
                     show_default=True, help="Where to train."),
        config_option("--seed", type=int, default=run_default("seed"), show_default=True,
                     help="Seeds the model's start and the batches."),
        config_option("--checkpoint-dir", default=run_default("checkpoint_dir"), show_default=True,
                     help="Folder for each run's folder (checkpoint.pt, best.pt, metrics.jsonl)."),
        config_option("--checkpoint-minutes", type=click.FloatRange(0, min_open=True),
                     default=run_default("checkpoint_minutes"), show_default=True,
                     help="Validate and save a checkpoint this often."),
        config_option("--valid-limit", type=click.IntRange(1), default=run_default("valid_limit"), show_default=True,
                     help="Validate on at most this many items at each checkpoint."),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def chosen_options(ctx: click.Context, resuming: bool) -> dict:
    """A new run takes every option (defaults included); a resumed one only those given on the
    command line: the rest comes from its checkpoint."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {name: value for name, value in ctx.params.items()
            if value is not None and (not resuming or ctx.get_parameter_source(name) in given)}


def make_train_config(ctx: click.Context, resumed, chosen: dict, **fixed):
    """The run's options: the checkpoint's (when resumed), overridden by those given."""
    from .cli_resume import settle
    from .train import TrainConfig, check_output

    run_config, _ = settle(TrainConfig, resumed.run if resumed else None, {**chosen, **fixed})
    if resumed and "output" not in resumed.run and "output" not in chosen:
        run_config = dataclasses.replace(run_config, output=ctx.params["output"])
    run_config = dataclasses.replace(run_config, resume=resumed.path if resumed else None, quiet=ctx.obj["quiet"])
    check_output(run_config.output, force=ctx.params["force"])  # before any long work
    return run_config


def data_source(option, resumed, split: str, key: str, flag: str, *, required: bool):
    """An input given on the command line, or the one the resumed run used."""
    if option is not None:
        return option
    saved = resumed.data(split, key) if resumed else None
    if saved is None and required:
        raise click.UsageError(f"give {flag} (or --resume a checkpoint that names it)")
    return saved


@click.group(cls=Group, context_settings=CONTEXT)
def train() -> None:
    """Train a tokenizer, a prior or an enhancement layer."""


def _tokenizer_options(function):
    def shape(name: str):
        return default("tokenizer", "TokenizerConfig", name)

    def loss(name: str):
        return default("objectives", "TokenizerLoss", name)

    options = [
        click.option("--data", type=click.Path(), help="Folder of training images (recursive)."),
        click.option("--valid", type=click.Path(), help="Folder of validation images (picks best.pt)."),
        click.option("--strict-data", is_flag=True,
                     help="Stop at an unreadable training image instead of skipping it with a warning."),
        config_option("--patch-size", type=click.IntRange(1, 32), default=shape("patch_size"), show_default=True,
                     help="Pixels per side of the patch each token codes."),
        config_option("--bits", type=click.IntRange(1, 20), default=shape("bits"), show_default=True,
                     help="Bits per token (2**bits codes)."),
        config_option("--encoder-channels", type=click.IntRange(1), default=shape("encoder_channels"),
                     show_default=True, help="Width of the encoder."),
        config_option("--encoder-blocks", type=click.IntRange(0), default=shape("encoder_blocks"), show_default=True,
                     help="Residual blocks of the encoder."),
        config_option("--decoder-channels", type=click.IntRange(1), default=shape("decoder_channels"),
                     show_default=True, help="Width of the decoder."),
        config_option("--decoder-blocks", type=click.IntRange(0), default=shape("decoder_blocks"), show_default=True,
                     help="Residual blocks of the decoder."),
        config_option("--prototypes/--no-prototypes", default=shape("prototypes"), show_default=True,
                     help="The encoder also sees each patch's soft assignment to 2**bits prototype patches, "
                          "started at k-means centroids."),
        config_option("--commitment-weight", type=click.FloatRange(0), default=loss("commitment_weight"),
                     show_default=True, help="Weight of BSQ's commitment term (latent to its code)."),
        config_option("--entropy-weight", type=click.FloatRange(0), default=loss("entropy_weight"), show_default=True,
                     help="Weight of BSQ's entropy term at the start (keeps the codebook in use)..."),
        config_option("--entropy-weight-final", type=click.FloatRange(0), default=loss("entropy_weight_final"),
                     show_default=True, help="...falling linearly to this weight..."),
        config_option("--entropy-decay-steps", type=click.IntRange(0), default=loss("entropy_decay_steps"),
                     show_default=True, help="...over this many steps."),
        config_option("--teacher-weight", type=click.FloatRange(0), default=loss("teacher_weight"), show_default=True,
                     help="Weight at the start of the k-means teacher, which pulls the encoder's bits towards "
                          "k-means cells of the patches (0: no teacher)..."),
        config_option("--teacher-weight-final", type=click.FloatRange(0), default=loss("teacher_weight_final"),
                     show_default=True, help="...moving linearly to this weight..."),
        config_option("--teacher-decay-steps", type=click.IntRange(0), default=loss("teacher_decay_steps"),
                     show_default=True, help="...over this many steps."),
        click.option("--decoder-only", is_flag=True,
                     help="With --resume: train the decoder alone; tokens, and a prior trained on them, stay valid."),
        click.option("--encoder-from", type=click.Path(),
                     help="Keep this tokenizer's encoder (frozen) and train a new decoder, of any shape, for its tokens."),
        click.option("--decoder-from", type=click.Path(),
                     help="Start the decoder from this tokenizer's (same width); extra --decoder-blocks start as "
                          "the identity. With --encoder-from the same file: a deeper decoder for the same tokens."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@train.command("tokenizer", context_settings=CONTEXT)
@_tokenizer_options
@training_options("tokenizer.pt")
@click.pass_context
def train_tokenizer(ctx: click.Context, **options) -> None:
    """Train the patch auto-encoder (BSQ tokenizer) on a folder of images."""
    import torch

    from .checkpoint import load_model
    from .data import ImageFolder
    from .finetune import encoder_modules, keep_encoder_of, same_encoder_provenance, start_decoder_from
    from .objectives import TokenizerLoss, TokenizerObjective
    from .tokenizer import Tokenizer, TokenizerConfig
    from .cli_resume import Resumed, settle
    from .train import train as run

    if options["decoder_only"] and not options["resume"]:
        raise click.UsageError("--decoder-only needs --resume: the tokenizer whose encoder to keep")
    resumed = Resumed.read(options["resume"], "tokenizer") if options["resume"] else None
    chosen = chosen_options(ctx, resumed is not None)
    config, _ = settle(TokenizerConfig, resumed and resumed.architecture, chosen, fixed=True, what=options["resume"])
    loss, changed = settle(TokenizerLoss, resumed and resumed.loss, chosen)
    if changed:
        say(ctx, "resuming with other loss weights: "
                 + ", ".join(f"{k} {resumed.loss[k]} -> {getattr(loss, k)}" for k in changed))
    freeze = options["decoder_only"] or options["encoder_from"]
    run_config = make_train_config(ctx, resumed, chosen, **({"frozen": encoder_modules(config)} if freeze else {}))
    torch.manual_seed(run_config.seed)
    model = Tokenizer(config)
    kept_from = []
    if options["encoder_from"]:
        kept_from = keep_encoder_of(model, load_model(options["encoder_from"], kind="tokenizer"))
    if options["decoder_from"]:
        start_decoder_from(model, load_model(options["decoder_from"], kind="tokenizer"))
    provenance = same_encoder_provenance(kept_from, resumed and resumed.state) if run_config.frozen else {}
    data = data_source(options["data"], resumed, "train", "folder", "--data", required=True)
    valid = data_source(options["valid"], resumed, "valid", "folder", "--valid", required=False)
    strict = options["strict_data"] or bool(resumed and "strict_data" not in chosen and resumed.data("train", "strict"))

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    train_data = ImageFolder(data, strict=strict, on_skip=warn)
    valid_data = ImageFolder(valid, strict=strict, on_skip=warn) if valid else None
    say(ctx, f"tokenizer: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_data)} training images")
    objective = TokenizerObjective(loss, patch_size=config.patch_size, bits=config.bits)
    run(model, objective, train_data, valid_data, run_config, state=resumed and resumed.state,
        provenance=provenance, log=lambda m: say(ctx, m))


@train.command("prior", context_settings=CONTEXT)
@click.option("--tokens", "tokens_path", type=click.Path(), help="Tokens from `stkc tokenize`.")
@click.option("--valid-tokens", type=click.Path(), help="Validation tokens (same tokenizer; picks best.pt).")
@config_option("--d-model", "d_model", type=click.IntRange(8),
              default=default("prior", "PriorConfig", "d_model"), show_default=True, help="Width of the transformer.")
@config_option("--layers", "n_layers", type=click.IntRange(1),
              default=default("prior", "PriorConfig", "n_layers"), show_default=True, help="Transformer blocks.")
@config_option("--heads", "n_heads", type=click.IntRange(1),
              default=default("prior", "PriorConfig", "n_heads"), show_default=True,
              help="Attention heads (must divide --d-model).")
@config_option("--schedule", default=default("prior", "PriorConfig", "schedule"), show_default=True,
              help="Order of prediction: 'raster' (one token at a time) or a group schedule such as "
                   "'bayer8:1,2,4,8' (stkcodec/schedule.py).")
@click.option("--start-from", type=click.Path(),
              help="Start from the weights of another prior of the same shape (its schedule may differ); "
                   "weights it lacks, such as a group prior's query vector, start fresh.")
@training_options("prior.pt")
@click.pass_context
def train_prior(ctx: click.Context, tokens_path, valid_tokens, **options) -> None:
    """Train the autoregressive prior on token grids."""
    import torch

    from .checkpoint import load_model, model_classes
    from .data import load_tokens
    from .finetune import start_weights
    from .objectives import PriorObjective
    from .prior import PriorConfig
    from .cli_resume import Resumed, settle
    from .train import train as run

    resumed = Resumed.read(options["resume"], "prior") if options["resume"] else None
    chosen = chosen_options(ctx, resumed is not None)
    start_from = chosen.pop("start_from", None)
    tokens_path = data_source(tokens_path, resumed, "train", "tokens_file", "--tokens", required=True)
    valid_tokens = data_source(valid_tokens, resumed, "valid", "tokens_file", "--valid-tokens", required=False)
    train_data = load_tokens(tokens_path)
    valid_data = load_tokens(valid_tokens, tokenizer_id=train_data.source["tokenizer_id"]) if valid_tokens else None
    shape = {**chosen, "vocab_size": train_data.source["vocab_size"]}
    config, _ = settle(PriorConfig, resumed and resumed.architecture, shape, fixed=True, what=options["resume"])
    if config.d_model % config.n_heads:
        raise click.BadParameter(f"--d-model {config.d_model} is not a multiple of --heads {config.n_heads}")
    run_config = make_train_config(ctx, resumed, chosen)
    torch.manual_seed(run_config.seed)
    build, _ = model_classes("prior")
    model = build(config)
    if start_from and not resumed:
        start_weights(model, load_model(start_from, kind="prior"), start_from)
    say(ctx, f"prior: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_data)} training grids "
             f"of {tuple(train_data.tokens.shape[1:])}")
    run(model, PriorObjective(), train_data, valid_data, run_config, state=resumed and resumed.state,
        log=lambda m: say(ctx, m))


@train.command("enhancer", context_settings=CONTEXT)
@click.option("--data", type=click.Path(), help="Folder of training frames (recursive).")
@click.option("--valid", type=click.Path(), help="Folder of validation frames (picks best.pt).")
@click.option("--frames", type=click.IntRange(1), default=None,
              help="Use this many training frames, spread over the sorted folder.  [default: all]")
@click.option("--mirrored/--no-mirrored", default=True, show_default=True,
              help="Also train on every frame flipped left to right (its own base reconstruction).")
@click.option("--augmented", type=click.IntRange(0), default=0, show_default=True,
              help="Also train on this many frames drawn from the whole folder, each under a random colour "
                   "transform and zoom (data.ColourAugment; seeded, the same every run).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(),
              help="The base layer's tokenizer.  [default: the default model's]")
@click.option("--pairs-cache", type=click.Path(),
              help="Keep the frames' base reconstructions in this file, and reuse it when it exists.")
@config_option("--lambdas", default=lambda: ",".join(map(str, default("objectives", "EnhancerLoss", "lambdas")())),
              show_default=True, help="One rate-distortion trade-off per enhancement level (quality 2, 3, ...), "
                                      "loss = bits per pixel + λ·255²·MSE.")
@config_option("--latent-channels", type=click.IntRange(1),
              default=default("enhancer", "EnhancerConfig", "latent_channels"), show_default=True,
              help="Channels of the coded latent per token cell.")
@config_option("--width", type=click.IntRange(1), default=default("enhancer", "EnhancerConfig", "width"),
              show_default=True, help="Width of the encoder and decoder.")
@config_option("--encoder-blocks", type=click.IntRange(1),
              default=default("enhancer", "EnhancerConfig", "encoder_blocks"), show_default=True,
              help="Residual blocks of the encoder (with --start-from, blocks it lacks start as the identity).")
@config_option("--decoder-blocks", type=click.IntRange(1),
              default=default("enhancer", "EnhancerConfig", "decoder_blocks"), show_default=True,
              help="Residual blocks of the decoder (with --start-from, blocks it lacks start as the identity).")
@config_option("--context-width", type=click.IntRange(1),
              default=default("enhancer", "EnhancerConfig", "context_width"), show_default=True,
              help="Width of the context network (the exact, integer part).")
@config_option("--base-context/--no-base-context", "base_context", default=True, show_default=True,
              help="The entropy model also reads the base tokens (an embedding and a small integer network).")
@config_option("--distribution", type=click.Choice(["gaussian", "laplace"]),
              default=default("enhancer", "EnhancerConfig", "distribution"), show_default=True,
              help="The family of the coding tables (with --start-from a Gaussian model, a Laplace one starts "
                   "from its scales moved to match).")
@click.option("--leading-channels", type=click.IntRange(1), default=None,
              help="Code this many channels of each half of the checkerboard first, and the others given "
                   "them (four passes; with --start-from, the channels on which its anchors spend most bits; "
                   "without this option, --start-from keeps its model's own).")
@click.option("--keep-transforms", is_flag=True,
              help="Train the entropy model and gains only: E and D stay as they are (with --start-from; a "
                   "shipped file can then borrow them from the model it started from).")
@click.option("--start-from", type=click.Path(),
              help="Start from a trained enhancer's weights (a new run: the shared tensors copied, new levels "
                   "extended from its last, a new base network starting at zero).")
@training_options("enhancer.pt", batch_size=8, lr=1e-3)
@click.pass_context
def train_enhancer(ctx: click.Context, data, valid, frames, mirrored, augmented, tokenizer_path, pairs_cache, lambdas,
                   base_context, leading_channels, keep_transforms, start_from, **options) -> None:
    """Train the enhancement layer (quality levels above 1) over a tokenizer's base layer."""
    from pathlib import Path

    import torch

    from .checkpoint import load_model
    from .data import BasePairs
    from .enhancer import TRANSFORMS, Enhancer, EnhancerConfig, leading_channels as choose_leading
    from .objectives import EnhancerLoss, EnhancerObjective
    from .progress import make_progress
    from .cli_resume import Resumed, settle
    from .train import train as run
    from .zoo import model_file, resolve

    resumed = Resumed.read(options["resume"], "enhancer") if options["resume"] else None
    if resumed and start_from:
        raise click.UsageError("--start-from begins a new run; --resume goes on with one: give one of them")
    if resumed and (leading_channels or keep_transforms):
        raise click.UsageError("--leading-channels and --keep-transforms shape a new run; --resume goes on with "
                               "one as it began")
    if keep_transforms and not start_from:
        raise click.UsageError("--keep-transforms keeps the E and D of --start-from: give it")
    chosen = chosen_options(ctx, resumed is not None)
    chosen.pop("leading_channels", None), chosen.pop("keep_transforms", None)
    if "lambdas" in chosen or not resumed:
        try:
            values = tuple(float(v) for v in lambdas.split(","))
        except ValueError:
            raise click.BadParameter(f"{lambdas!r}: numbers separated by commas", param_hint="--lambdas") from None
        if not values or any(v <= 0 for v in values):
            raise click.BadParameter("every λ must be above 0", param_hint="--lambdas")
    else:
        values = tuple(resumed.loss["lambdas"])
    chosen["lambdas"], chosen["levels"] = values, len(values)
    # a resumed run keeps its tokenizer, frames and cache unless told otherwise
    tokenizer_path = data_source(tokenizer_path, resumed, "train", "tokenizer_file", "--tokenizer", required=False)
    tokenizer_path = str(tokenizer_path or model_file(resolve(None), "tokenizer.pt"))
    tokenizer = load_model(tokenizer_path, kind="tokenizer")
    if "base_context" in chosen:
        chosen["token_values"] = 2**tokenizer.config.bits if chosen.pop("base_context") else 0
    config, _ = settle(EnhancerConfig, resumed and resumed.architecture, chosen, fixed=True, what=options["resume"])
    loss, _ = settle(EnhancerLoss, resumed and resumed.loss, chosen)
    if leading_channels is not None and leading_channels >= config.latent_channels:
        raise click.BadParameter(f"at most {config.latent_channels - 1} (of {config.latent_channels} channels)",
                                 param_hint="--leading-channels")
    run_config = make_train_config(ctx, resumed, chosen, weight_decay=0.0, warmup_steps=100,
                                   **({"frozen": TRANSFORMS} if keep_transforms else {}))
    data = data_source(data, resumed, "train", "folder", "--data", required=True)
    valid = data_source(valid, resumed, "valid", "folder", "--valid", required=False)
    pairs_cache = data_source(pairs_cache, resumed, "train", "pairs_file", "--pairs-cache", required=False)
    if resumed and "frames" not in chosen:
        frames = resumed.data("train", "frames") if resumed.data("train", "limit") is not None else frames
    if resumed and "mirrored" not in chosen and resumed.data("train", "mirrored") is not None:
        mirrored = resumed.data("train", "mirrored")
    if resumed and "augmented" not in chosen:
        augmented = resumed.data("train", "augmented") or 0

    def pairs_of(folder, limit, flip, cache, extra=0):
        if cache and Path(cache).exists():
            pairs = BasePairs.load(cache, tokenizer_id=tokenizer.model_id)
            wanted = None if limit is None else limit * (2 if flip else 1) + extra
            if wanted is not None and len(pairs) != wanted:
                raise click.UsageError(f"{cache} holds {len(pairs)} pairs; --frames, --mirrored and --augmented ask "
                                       f"for {wanted}: give another --pairs-cache, or remove that file")
        else:
            with make_progress(disable=ctx.obj["quiet"]) as progress:
                task = progress.add_task("base layer", total=None, info=str(folder))
                pairs = BasePairs.build(tokenizer, folder, limit=limit, mirrored=flip, augmented=extra,
                                        on_batch=lambda n: progress.advance(task, n))
            if cache:
                pairs.save(cache)
        pairs.source = {**pairs.source, "folder": str(Path(folder).resolve()), "tokenizer_id": tokenizer.model_id,
                        "tokenizer_file": str(Path(tokenizer_path).resolve()), "limit": limit, "mirrored": flip,
                        **({"augmented": extra} if extra else {}),
                        **({"pairs_file": str(Path(cache).resolve())} if cache else {})}
        return pairs

    train_data = pairs_of(data, frames, mirrored, pairs_cache, augmented)
    valid_data = pairs_of(valid, run_config.valid_limit, False, None) if valid else None
    torch.manual_seed(run_config.seed)
    trained = load_model(start_from, kind="enhancer") if start_from else None
    if leading_channels:
        if trained is None:  # a new model's channels are alike
            lead = tuple(range(leading_channels))
        else:
            batch = next(train_data.batches(LEAD_PAIRS, limit=LEAD_PAIRS))
            lead = choose_leading(trained.channel_bits(batch.pairs[:, :3], batch.pairs[:, 3:], batch.tokens),
                                  leading_channels)
        config = dataclasses.replace(config, leading_channels=lead)
        say(ctx, f"leading channels: {', '.join(map(str, lead))}")
    elif trained is not None:  # without the option, a model started from keeps the channels it codes first
        config = dataclasses.replace(config, leading_channels=trained.config.leading_channels)
    model = Enhancer(config)
    provenance = {"base_tokenizer_id": tokenizer.model_id}
    if trained is not None:
        try:
            kept = model.adopt(trained, list(values))
        except ValueError as error:
            raise click.UsageError(f"--start-from {start_from}: {error} (give --distribution "
                                   f"{trained.config.distribution})") from None
        provenance["started_from"] = {"file": str(Path(start_from).resolve()), "model_id": trained.model_id,
                                      **({"kept_transforms": True} if keep_transforms else {})}
        say(ctx, f"starting from {start_from} ({trained.model_id[:8]}); new: {', '.join(kept) or 'nothing'}")
    say(ctx, f"enhancer: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_data)} training "
             f"frames, levels 2-{config.levels + 1}")
    run(model, EnhancerObjective(loss, adopted=bool(start_from)), train_data, valid_data, run_config,
        state=resumed and resumed.state, provenance=provenance, log=lambda m: say(ctx, m))


@train.command("compact", context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The compact model file to write (.pt).")
@click.option("--borrow-from", "lender", type=click.Path(),
              help="Leave out the tensors this model file holds too, bit for bit, and borrow them from it "
                   "(it must stay where it is relative to the output, e.g. a shipped model's folder beside it).")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.pass_context
def train_compact(ctx: click.Context, model_path, output, lender, force) -> None:
    """Store a model file's weights losslessly compressed (each tensor's bytes shuffled, then
    zlib): the same weights bit for bit and the same model id, about 13% fewer bytes (how the
    shipped models fit their budget). MODEL may be compact already."""
    from pathlib import Path

    from .checkpoint import atomic_save, borrowing_payload, compact_payload, read_checkpoint
    from .outputs import check_writable

    check_writable(Path(output), force=force, inputs=[model_path, *([lender] if lender else [])])
    payload = read_checkpoint(model_path)
    if {"optimizer", "rng"} & set(payload):
        raise click.UsageError(f"{model_path}: a training checkpoint; compact a model file (-o of stkc train)")
    before = Path(model_path).stat().st_size
    if lender:
        payload = borrowing_payload(payload, lender, output)
    atomic_save(compact_payload(payload), output)
    after = Path(output).stat().st_size
    lent = f", {len(payload['borrowed']['names'])} tensors borrowed from {lender}" if lender else ""
    say(ctx, f"{output}: {payload['kind']} {payload['model_id'][:12]}, {after:,} bytes ({before:,} before){lent}")


@train.command("retire", context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The decode-only model file to write (.pt).")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.pass_context
def train_retire(ctx: click.Context, model_path, output, force) -> None:
    """Write a decode-only copy of an enhancement layer or tokenizer: without its encoder's
    weights (compact, the same model id). It decodes every file the model wrote, at every level,
    bit for bit; compressing with it is refused (an enhancement layer's, above level 1). How
    earlier shipped models make room for new ones. A file that borrows tensors keeps borrowing
    those it still needs from the same file: retire a borrower before its lender."""
    from pathlib import Path

    from .checkpoint import (atomic_save, borrowing_payload, compact_payload, decoding_payload, read_checkpoint,
                             read_payload)
    from .outputs import check_writable

    check_writable(Path(output), force=force, inputs=[model_path])
    payload = read_checkpoint(model_path)
    borrowed = read_payload(model_path).get("borrowed")
    if {"optimizer", "rng"} & set(payload):
        raise click.UsageError(f"{model_path}: a training checkpoint; retire a model file (-o of stkc train)")
    if payload["kind"] not in ("enhancer", "tokenizer"):
        raise click.UsageError(f"{model_path}: a {payload['kind']} model; the decoder needs all of it")
    kept = decoding_payload(payload)
    if borrowed is not None:  # it borrows what it keeps from the same lender, which may be retired after it
        kept = borrowing_payload(kept, Path(model_path).parent / str(borrowed["file"]), output)
    atomic_save(compact_payload(kept), output)
    say(ctx, f"{output}: decode-only {payload['kind']} {payload['model_id'][:12]}, {Path(output).stat().st_size:,} "
             f"bytes ({Path(model_path).stat().st_size:,} before), {len(kept['retired']['names'])} encoder tensors "
             "left out")


@train.command("int8", context_settings=CONTEXT)
@click.argument("prior_path", metavar="PRIOR", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Folder of training frames to calibrate on (recursive).")
@click.option("--frames", type=click.IntRange(1), default=256, show_default=True,
              help="How many of them, spread over the sorted folder.")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(),
              help="The tokenizer whose tokens the prior reads.  [default: the default model's]")
@click.option("-o", "--output", required=True, type=click.Path(), help="The int8 prior to write (.pt).")
@click.option("--force", is_flag=True, help="Replace an existing output.")
@click.pass_context
def train_int8(ctx: click.Context, prior_path, data, frames, tokenizer_path, output, force) -> None:
    """Give a trained prior the int8 arithmetic: a new prior whose exact twin takes its products
    in float32 (about 2.5x faster products), with no training: each product's step is calibrated
    on the token grids of a few hundred training frames."""
    import time
    from pathlib import Path

    import torch

    from .checkpoint import load_model, save_model
    from .data import spread_frames
    from .outputs import check_writable
    from .prior import calibrate_int8
    from .zoo import model_file, resolve

    started = time.perf_counter()
    check_writable(Path(output), force=force, inputs=[p for p in (prior_path, tokenizer_path) if p])
    prior = load_model(prior_path, kind="prior")
    if prior.config.arithmetic != "float64":
        raise click.UsageError(f"{prior_path}: already has the {prior.config.arithmetic} arithmetic")
    tokenizer = load_model(tokenizer_path or model_file(resolve(None), "tokenizer.pt"), kind="tokenizer")
    if tokenizer.codebook_size != prior.config.vocab_size:
        raise click.UsageError(f"the tokenizer makes {tokenizer.codebook_size} symbols, the prior predicts "
                               f"{prior.config.vocab_size}")
    images = spread_frames(data, frames)
    with torch.inference_mode():
        grids = torch.cat([tokenizer.encode_index(images[start : start + 32]) for start in range(0, len(images), 32)])
    model = calibrate_int8(prior, grids)
    provenance = {**prior.provenance, "int8": {"from_model_id": prior.model_id, "from_file": str(Path(prior_path).resolve()),
                                               "frames": str(Path(data).resolve()), "grids": len(grids),
                                               "tokenizer_id": tokenizer.model_id}}
    payload = save_model(model, output, half=True, provenance=provenance)
    say(ctx, f"{output}: int8 prior {payload['model_id'][:12]} calibrated on {len(grids)} frames, "
             f"{time.perf_counter() - started:.1f} s")


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
    import time
    from pathlib import Path

    from .checkpoint import atomic_save, load_model
    from .data import find_images, tokenize_folder
    from .outputs import check_writable
    from .progress import make_progress
    from .zoo import model_file, resolve

    started = time.perf_counter()
    check_writable(Path(output), force=force, inputs=[tokenizer_path] if tokenizer_path else [])
    tokenizer = load_model(tokenizer_path or model_file(resolve(None), "tokenizer.pt"), kind="tokenizer")
    count = len(find_images(data_dir))
    with make_progress(disable=ctx.obj["quiet"]) as progress:
        task = progress.add_task("tokenize", total=count * (2 if mirrored else 1), info="")
        payload = tokenize_folder(tokenizer, data_dir, mirrored=mirrored, on_batch=lambda n: progress.advance(task, n))
    atomic_save(payload, output)
    grids = payload["tokens"]
    say(ctx, f"{output}: {len(grids)} grids of {grids.shape[1]}x{grids.shape[2]} tokens "
             f"(tokenizer {tokenizer.model_id[:12]}), {Path(output).stat().st_size:,} B, "
             f"{time.perf_counter() - started:.1f} s")


@click.command(context_settings=CONTEXT)
@click.option("-n", "--count", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="How many frames to draw.")
@click.option("-o", "--output", "output_dir", default="generated", show_default=True, type=click.Path(),
              help="Folder for the PNG files.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed draws the same frames.")
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Below 1: safer, blander frames; above 1: wilder ones.")
@click.option("--top-k", type=click.IntRange(1), default=None,
              help="Draw each token from the k likeliest only.  [default: all]")
@click.option("--sheet", type=click.Path(), help="Also write all images as one contact sheet (PNG).")
@click.option("--model", default="default", show_default=True, help=MODEL_HELP)
@click.option("--force", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def generate(ctx: click.Context, count, output_dir, seed, temperature, top_k, sheet, model, force) -> None:
    """Sample new images from the prior."""
    import time
    from pathlib import Path

    from .errors import StkcError
    from .generate import contact_sheet, generate_images
    from .imageio import encode_image
    from .outputs import atomic_write, cannot_write, check_writable
    from .progress import make_progress
    from .zoo import CodecModel

    started = time.perf_counter()
    folder = Path(output_dir)
    targets = [folder / f"{index:04d}.png" for index in range(count)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cannot_write(folder, error) from None
    for target in targets + ([Path(sheet)] if sheet else []):
        check_writable(target, force=force)
    codec_model = CodecModel.load(model)
    with make_progress(disable=ctx.obj["quiet"]) as progress:
        task = progress.add_task("generate", total=codec_model.tile[0], info=f"{count} images")
        images = generate_images(codec_model, count, seed=seed, temperature=temperature, top_k=top_k,
                                 on_row=lambda: progress.advance(task))
    outputs = list(zip(targets, images)) + ([(Path(sheet), contact_sheet(images))] if sheet else [])
    failures, written = Failures(), 0
    for target, image in outputs:
        try:
            data = encode_image(image, ".png")
            atomic_write(target, data, force=force)
            written += len(data)
        except StkcError as error:  # the other images are still written
            failures.report(error)
    say(ctx, f"{count} images in {folder}" + (f", sheet {sheet}" if sheet else "") +
        f", {written:,} B, {time.perf_counter() - started:.1f} s" +
        (f"; {len(failures.errors)} not written" if failures.errors else ""))
    failures.exit(ctx)
