"""Training a tokenizer from parts of others: a kept encoder, a decoder grown from a smaller one.

The training side's model surgery; `Tokenizer` itself is only the network. A kept encoder is
frozen by the training loop (`TrainConfig.frozen` names its modules), so every image keeps its
tokens and a prior trained on them stays valid; the provenance says which tokenizers make the
same tokens (`same_encoder_as`), which is what lets `CodecModel` pair such a prior with it.
"""

from __future__ import annotations

import torch

from .errors import ModelMismatchError
from .tokenizer import Tokenizer, TokenizerConfig


def encoder_modules(config: TokenizerConfig) -> tuple[str, ...]:
    """The names of the modules that turn pixels into tokens (what to freeze to keep them)."""
    return tuple(name for name in Tokenizer.ENCODER_SIDE if name != "prototypes" or config.prototypes)


def _require_same(model: Tokenizer, other: Tokenizer, fields: tuple[str, ...], what: str) -> None:
    differ = [f for f in fields if getattr(model.config, f) != getattr(other.config, f)]
    if differ:
        raise ModelMismatchError(f"{what} has another {', '.join(differ)}")


def tokens_of(other: Tokenizer) -> list[str]:
    """The ids of the tokenizers whose tokens `other` makes: itself and those it kept the encoder of."""
    return [other.model_id, *other.provenance.get("same_encoder_as", [])]


@torch.no_grad()
def keep_encoder_of(model: Tokenizer, other: Tokenizer) -> list[str]:
    """Copy `other`'s encoder (same patch, bits and encoder shape) into `model`, whatever its
    decoder. Returns the ids of the tokenizers whose tokens `model` now makes; freeze
    `encoder_modules(model)` while training to keep it so."""
    _require_same(model, other, Tokenizer.ENCODER_FIELDS, "the encoder to keep")
    for name in encoder_modules(model.config):
        getattr(model, name).load_state_dict(getattr(other, name).state_dict())
    return tokens_of(other)


@torch.no_grad()
def start_decoder_from(model: Tokenizer, other: Tokenizer) -> None:
    """Start `model`'s decoder from `other`'s, which has the same patch, bits and width and at
    most as many residual blocks: its blocks come first, and each extra block starts as the
    identity (its last convolution zero), so the grown model decodes exactly as `other`
    until training moves it."""
    _require_same(model, other, ("patch_size", "bits", "decoder_channels"), "the decoder to start from")
    if other.config.decoder_blocks > model.config.decoder_blocks:
        raise ModelMismatchError(f"the decoder to start from has {other.config.decoder_blocks} blocks, "
                                 f"more than {model.config.decoder_blocks}")
    model.from_latent.load_state_dict(other.from_latent.state_dict())
    model.to_pixels.load_state_dict(other.to_pixels.state_dict())
    for index, block in enumerate(model.decoder):
        if index < len(other.decoder):
            block.load_state_dict(other.decoder[index].state_dict())
        else:
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()


def same_encoder_provenance(kept_from: list[str], resumed: dict | None) -> dict:
    """What a run with a frozen encoder records: the ids of the tokenizers that make the same
    tokens: those it kept the encoder of, and when resumed, those the resumed file names, and
    that file's own model when it is a finished model (a checkpoint's is this run's)."""
    ids = list(kept_from)
    if resumed is not None:
        own = [] if "optimizer" in resumed else [resumed["model_id"]]
        ids = [*own, *(resumed.get("provenance") or {}).get("same_encoder_as", []), *ids]
    return {"same_encoder_as": list(dict.fromkeys(ids))}


def start_weights(model: torch.nn.Module, other: torch.nn.Module, name: str) -> list[str]:
    """Copy `other`'s weights into `model` wherever a weight of the same name and shape exists
    (a group prior from a raster one: the same embeddings and blocks, read in a new order).
    Returns the names that start fresh; refuses models that share no weight or differ in shape."""
    own = model.state_dict()
    theirs = other.state_dict()
    mismatched = [key for key in theirs if key in own and own[key].shape != theirs[key].shape]
    if mismatched or not set(own) & set(theirs):
        raise ModelMismatchError(f"{name}: weights do not fit this model ({', '.join(mismatched[:3]) or 'none shared'})")
    model.load_state_dict({key: value.float() for key, value in theirs.items() if key in own}, strict=False)
    return sorted(set(own) - set(theirs))
