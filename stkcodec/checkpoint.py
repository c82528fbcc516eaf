"""Checkpoints and model files: what they carry, how they are written and read safely.

A checkpoint is a plain dict of strings, numbers and tensors, so `torch.load(...,
weights_only=True)` reads it without unpickling arbitrary objects:

    format, format_version, kind, config, state_dict, model_id,
    step, metrics, provenance, and while training: optimizer, rng, elapsed_s (and the
    objective's own state, such as the tokenizer's k-means teacher).

A model file (what `-o` writes and `models/` ships) is the same dict without the training
state. A model's id is a hash of its config and weights, not of the file's bytes, so
re-saving the same weights keeps the id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import BadInputError, ModelMismatchError, OutputError
from .imageio import default_file_mode

FORMAT = "stkc-checkpoint"
FORMAT_VERSION = 1
TRAINING_KEYS = ("optimizer", "rng", "elapsed_s", "objective")


def model_classes(kind: str) -> tuple[type[nn.Module], type]:
    """The (model class, config class) of a kind of model."""
    if kind == "tokenizer":
        from .tokenizer import Tokenizer, TokenizerConfig

        return Tokenizer, TokenizerConfig
    if kind == "prior":
        from .prior import Prior, PriorConfig

        return Prior, PriorConfig
    raise ModelMismatchError(f"unknown model kind {kind!r}, expected 'tokenizer' or 'prior'")


def compute_model_id(config: dict, state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of the config and every weight's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_payload(model: nn.Module, *, half: bool = False, **extra: Any) -> dict:
    """The dict a checkpoint or model file holds. `half` stores floating weights as float16
    (shipped model files: half the bytes; they load back into float32 modules)."""
    config = dataclasses.asdict(model.config)
    state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "config": config,
        "state_dict": state_dict,
        "model_id": compute_model_id(config, state_dict),
        **extra,
    }


def atomic_save(payload: dict, path: str | Path) -> None:
    """torch.save into a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, default_file_mode())
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_model(model: nn.Module, path: str | Path, *, force: bool = True, half: bool = False, **extra: Any) -> dict:
    if not force and Path(path).exists():
        raise OutputError(f"{path}: exists (use --force to replace it)")
    payload = model_payload(model, half=half, **extra)
    atomic_save(payload, path)
    return payload


def read_payload(path: str | Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            AttributeError, TypeError, KeyError, IndexError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInputError(f"{path}: not a file stkc can load ({first_line[:200]})") from None


def read_checkpoint(path: str | Path, *, kind: str | None = None) -> dict:
    """Load and validate a checkpoint or model file; never unpickles arbitrary objects."""
    payload = read_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadInputError(f"{path}: not a stkc model file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise BadInputError(
            f"{path}: model format version {payload.get('format_version')!r}, this stkc reads {FORMAT_VERSION}"
        )
    if kind is not None and payload.get("kind") != kind:
        raise ModelMismatchError(f"{path}: is a {payload.get('kind')!r} model, expected a {kind!r} model")
    config, state_dict = payload.get("config"), payload.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state_dict, dict):
        raise BadInputError(f"{path}: model file lacks its config or weights")
    if payload.get("model_id") != compute_model_id(config, state_dict):
        raise ModelMismatchError(f"{path}: weights do not match the model id the file claims")
    return payload


def build_model(payload: dict, *, source: str = "model") -> nn.Module:
    model_class, config_class = model_classes(payload["kind"])
    try:
        config = config_class(**payload["config"])
        model = model_class(config)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, ValueError) as error:
        raise BadInputError(f"{source}: weights do not fit a {payload['kind']} ({str(error).splitlines()[0]})") from None
    model.model_id = payload["model_id"]
    model.provenance = payload.get("provenance") or {}
    return model.eval()


def load_model(path: str | Path, *, kind: str | None = None) -> nn.Module:
    """A ready model (eval mode) from a model file or checkpoint, with `.model_id` set."""
    return build_model(read_checkpoint(path, kind=kind), source=str(path))
