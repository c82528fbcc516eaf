"""Checkpoints and model files: what they carry, how they are written and read safely.

A checkpoint is a plain dict of strings, numbers and tensors, so `torch.load(...,
weights_only=True)` reads it without unpickling arbitrary objects:

    format, format_version, kind, config, state_dict, model_id,
    step, metrics, provenance, and while training: optimizer, rng, elapsed_s (and the
    objective's own state, such as the tokenizer's k-means teacher).

`config` is the network's shape alone (what a decoder needs). How it was trained (the
objective's loss settings, the run's options and data) is in `provenance["recipe"]`, which
`--resume` reads back; files written before that split keep loss fields in `config`
(see `split_config`).

A model file (what `-o` writes and `models/` ships) is the same dict without the training
state. A model's id is a hash of its config as stored and its weights, not of the file's
bytes, so re-saving the same weights keeps the id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import BadInputError, ModelMismatchError, exists_error
from .outputs import atomic_write, cannot_write

FORMAT = "stkc-checkpoint"
FORMAT_VERSION = 1


# Where each kind of model lives: importing the module registers its class (ModelFile's
# __init_subclass__), so this module imports no network module, and a new kind adds one line.
KIND_MODULES = {"tokenizer": "stkcodec.tokenizer", "prior": "stkcodec.prior", "enhancer": "stkcodec.enhancer"}


def model_classes(kind: str) -> tuple[Callable[[Any], nn.Module], type]:
    """How a kind of model is built from its config, and that config's class."""
    if kind not in KIND_MODULES:
        raise ModelMismatchError(f"unknown model kind {kind!r}, expected one of {', '.join(map(repr, KIND_MODULES))}")
    if kind not in ModelFile.kinds:
        importlib.import_module(KIND_MODULES[kind])
    network = ModelFile.kinds[kind]
    return network.build, network.config_class


# Files written before the training recipe left the model config held these fields there too.
# They say how a model was trained, not what its network is: a loaded model drops them (its id
# still hashes the config as stored), and a resumed run takes them as its objective's settings.
LEGACY_RECIPE_FIELDS = {"tokenizer": ("commitment_weight", "entropy_weight", "entropy_weight_final",
                                      "entropy_decay_steps", "teacher_weight", "teacher_weight_final",
                                      "teacher_decay_steps")}
# What those files meant by a field they lack: it was added after they shipped.
LEGACY_DEFAULTS = {"tokenizer": {"prototypes": False}}
LEGACY_RECIPE_DEFAULTS = {"tokenizer": {"teacher_weight": 0.0, "teacher_weight_final": 0.0, "teacher_decay_steps": 0}}


def split_config(kind: str, stored: dict) -> tuple[dict, dict]:
    """A stored config -> (architecture, recipe): what builds the network, and the training
    settings an older file kept beside it (empty for files written since)."""
    legacy = LEGACY_RECIPE_FIELDS.get(kind, ())
    architecture = {**LEGACY_DEFAULTS.get(kind, {}), **{k: v for k, v in stored.items() if k not in legacy}}
    recipe = {k: v for k, v in stored.items() if k in legacy}
    if recipe:
        recipe = {**LEGACY_RECIPE_DEFAULTS.get(kind, {}), **recipe}
    return architecture, recipe


class ModelFile:
    """What a model read from a file knows about itself: its id and where it came from.

    The network classes inherit it; `from_checkpoint` is the one way a file becomes a model.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]
    kinds: ClassVar[dict[str, type]] = {}  # kind -> the class that builds it (registered by defining it)
    model_id: str | None = None  # compute_model_id of the file it was read from (None: never saved)
    provenance: Mapping[str, Any] = MappingProxyType({})  # the file's: training data, steps, same_encoder_as

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a class that names a kind builds it; its subclasses do not
            ModelFile.kinds[cls.kind] = cls

    @classmethod
    def build(cls, config) -> nn.Module:
        """The network for `config` (a kind made by several classes picks one here)."""
        return cls(config)

    @classmethod
    def from_checkpoint(cls, payload: dict, *, source: str = "model") -> nn.Module:
        """A ready model (eval mode) from a payload of `read_checkpoint`; `ModelFile` itself
        builds whatever kind the payload says, a subclass only its own kind."""
        kind = payload["kind"]
        if cls is not ModelFile and kind != cls.kind:
            raise ModelMismatchError(f"{source}: is a {kind!r} model, expected a {cls.kind!r} model")
        build, config_class = model_classes(kind)
        architecture, _ = split_config(kind, payload["config"])
        try:
            model = build(config_class(**architecture))
            model.load_state_dict(payload["state_dict"])
        except (TypeError, RuntimeError, ValueError) as error:
            raise BadInputError(f"{source}: weights do not fit a {kind} ({str(error).splitlines()[0]})") from None
        # ModelFile declares these two on every network class that inherits it
        model.model_id = payload["model_id"]
        model.provenance = MappingProxyType(dict(payload.get("provenance") or {}))
        return model.eval()


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
    """torch.save, written whole or not at all (outputs.atomic_write), folders created as needed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cannot_write(path, error) from None
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, buffer.getvalue(), force=True)  # an OS refusal is its OutputError


def save_model(model: nn.Module, path: str | Path, *, force: bool = True, half: bool = False, **extra: Any) -> dict:
    if not force and Path(path).exists():
        raise exists_error(path)
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


def load_model(path: str | Path, *, kind: str | None = None) -> nn.Module:
    """A ready model (eval mode) from a model file or checkpoint, with its `model_id` and `provenance`."""
    return ModelFile.from_checkpoint(read_checkpoint(path, kind=kind), source=str(path))
