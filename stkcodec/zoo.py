"""The codec's models: a tokenizer, a prior and optionally an enhancement layer (quality levels
above 1), named by a folder or by a shipped model's name.

Shipped models live in `models/<name>/` (installed as `stkcodec.models`); `models/index.json`
names the default and gives each shipped model's codec id, so a file written by an older
default still finds the model that decodes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from importlib import resources
from pathlib import Path

from .errors import BadInputError, ModelMismatchError

DEFAULT = "default"
FRAME = (100, 150)  # pixels (rows, cols) that one tile covers: a whole SuperTuxKart frame


def models_dir() -> Path:
    return Path(str(resources.files("stkcodec.models")))


@functools.cache
def shipped() -> dict:
    """models/index.json: {"default": name, "models": {name: codec id hex}, "shares": {name: {file:
    the model whose copy it uses}}, "default_quality": {name: level}, "base_band": {name: {"fit":
    [...], "sd": dB}} (domain.Band, from benchmarks/unusual_images.py)}."""
    return json.loads((models_dir() / "index.json").read_text())


def shipped_name(model_id: bytes) -> str | None:
    """The shipped model whose codec id is `model_id`, if any."""
    return next((name for name, hex_id in shipped()["models"].items() if hex_id == model_id.hex()), None)


def resolve(model: str | Path | None) -> Path:
    """'default', a shipped model's name, or a folder holding tokenizer.pt and prior.pt -> that folder."""
    if model in (None, DEFAULT):
        model = shipped()["default"]
    folder = models_dir() / str(model) if str(model) in shipped()["models"] else Path(model)
    if not folder.is_dir():
        raise BadInputError(f"{model}: no such model (give 'default', a shipped model's name, "
                            "or a folder with tokenizer.pt and prior.pt)")
    for name in ("tokenizer.pt", "prior.pt"):
        model_file(folder, name)
    return folder


def optional_model_file(folder: Path, name: str) -> Path | None:
    """`model_file`, or None when the model has no such part (an enhancement layer is optional)."""
    try:
        return model_file(folder, name)
    except BadInputError:
        return None


def model_file(folder: Path, name: str) -> Path:
    """`folder/name`; for a shipped model that shares a part with another (index.json's "shares",
    e.g. a new prior over an older model's tokens), that model's file, so the package holds it once."""
    if (folder / name).is_file():
        return folder / name
    owner = shipped().get("shares", {}).get(folder.name, {}).get(name) if folder.parent == models_dir() else None
    if owner is not None and (models_dir() / owner / name).is_file():
        return models_dir() / owner / name
    raise BadInputError(f"{folder}: lacks {name}")


class CodecModel:
    """A tokenizer and a prior that were trained together, with one identity."""

    def __init__(self, tokenizer, prior, enhancer=None) -> None:
        from .exact import exact_prior  # here, not above: `stkc info` needs zoo without torch

        if prior.config.vocab_size != tokenizer.codebook_size:
            raise ModelMismatchError(
                f"prior predicts {prior.config.vocab_size} symbols, tokenizer makes {tokenizer.codebook_size}")
        trained_on = (prior.provenance.get("train") or {}).get("tokenizer_id")
        same_tokens = {tokenizer.model_id, *tokenizer.provenance.get("same_encoder_as", [])}
        if trained_on is not None and trained_on not in same_tokens:
            raise ModelMismatchError(f"prior was trained on tokens of tokenizer {trained_on[:12]}, "
                                     f"not of this one ({tokenizer.model_id[:12]})")
        if enhancer is not None:
            if enhancer.config.patch_size != tokenizer.config.patch_size:
                raise ModelMismatchError(f"enhancement layer of patch {enhancer.config.patch_size}, tokenizer's is "
                                         f"{tokenizer.config.patch_size}")
            over = (enhancer.provenance.get("train") or {}).get("tokenizer_id")
            if over is not None and over not in same_tokens:
                raise ModelMismatchError(f"enhancement layer was trained over tokenizer {over[:12]}, "
                                         f"not this one ({tokenizer.model_id[:12]})")
        self.tokenizer = tokenizer
        self.prior = prior
        self.enhancer = enhancer
        self.exact_prior = exact_prior(prior)
        parts = [tokenizer.model_id, prior.model_id] + ([enhancer.model_id] if enhancer is not None else [])
        self.model_id = hashlib.sha256(":".join(parts).encode()).digest()[:4]
        p = tokenizer.config.patch_size
        self.tile = (min(math.ceil(FRAME[0] / p), prior.config.max_rows),
                     min(math.ceil(FRAME[1] / p), prior.config.max_cols))
        self.default_quality = 1  # the level `compress` uses when not told (index.json's "default_quality")
        self.domain_limits = None  # domain.Limits of a shipped model (index.json's "base_band")

    @classmethod
    def load(cls, model: str | Path | None = None) -> "CodecModel":
        from .checkpoint import load_model

        folder = resolve(model)
        enhancer = optional_model_file(folder, "enhancer.pt")
        loaded = cls(load_model(model_file(folder, "tokenizer.pt"), kind="tokenizer"),
                     load_model(model_file(folder, "prior.pt"), kind="prior"),
                     load_model(enhancer, kind="enhancer") if enhancer is not None else None)
        expected = shipped()["models"].get(folder.name) if folder.parent == models_dir() else None
        if expected is not None and expected != loaded.model_id.hex():
            raise ModelMismatchError(f"{folder}: codec id {loaded.model_id.hex()}, models/index.json says {expected}")
        if expected is not None:
            loaded.default_quality = shipped().get("default_quality", {}).get(folder.name, 1)
            band = shipped().get("base_band", {}).get(folder.name)
            if band is not None:
                from .domain import Band, Limits

                loaded.domain_limits = Limits(Band(tuple(band["fit"]), band["sd"]))
        return loaded

    @property
    def levels(self) -> int:
        """How many quality levels the model codes: 1 (the base alone) up to this."""
        return 1 + (self.enhancer.config.levels if self.enhancer is not None else 0)
