"""The codec's models: a tokenizer and a prior, named by a directory or the shipped default."""

from __future__ import annotations

import hashlib
import math
from importlib import resources
from pathlib import Path

from .checkpoint import load_model
from .errors import BadInputError, ModelMismatchError
from .exact import ExactPrior

DEFAULT = "default"
FRAME = (100, 150)  # pixels (rows, cols) that one tile covers: a whole SuperTuxKart frame


def default_model_dir() -> Path:
    return Path(str(resources.files("stkcodec.models")))


def resolve(model: str | Path | None) -> Path:
    """A model name ('default') or a folder holding tokenizer.pt and prior.pt -> that folder."""
    folder = default_model_dir() if model in (None, DEFAULT) else Path(model)
    if not folder.is_dir():
        raise BadInputError(f"{model}: no such model (give 'default' or a folder with tokenizer.pt and prior.pt)")
    for name in ("tokenizer.pt", "prior.pt"):
        if not (folder / name).is_file():
            raise BadInputError(f"{folder}: lacks {name}")
    return folder


class CodecModel:
    """A tokenizer and a prior that were trained together, with one identity."""

    def __init__(self, tokenizer, prior) -> None:
        if prior.config.vocab_size != tokenizer.codebook_size:
            raise ModelMismatchError(
                f"prior predicts {prior.config.vocab_size} symbols, tokenizer makes {tokenizer.codebook_size}")
        trained_on = (getattr(prior, "provenance", {}).get("train") or {}).get("tokenizer_id")
        if trained_on is not None and trained_on != tokenizer.model_id:
            raise ModelMismatchError(f"prior was trained on tokens of tokenizer {trained_on[:12]}, "
                                     f"not of this one ({tokenizer.model_id[:12]})")
        self.tokenizer = tokenizer
        self.prior = prior
        self.exact_prior = ExactPrior(prior)
        digest = hashlib.sha256(f"{tokenizer.model_id}:{prior.model_id}".encode()).digest()
        self.model_id = digest[:4]
        p = tokenizer.config.patch_size
        self.tile = (min(math.ceil(FRAME[0] / p), prior.config.max_rows),
                     min(math.ceil(FRAME[1] / p), prior.config.max_cols))

    @classmethod
    def load(cls, model: str | Path | None = None) -> "CodecModel":
        folder = resolve(model)
        return cls(load_model(folder / "tokenizer.pt", kind="tokenizer"), load_model(folder / "prior.pt", kind="prior"))
