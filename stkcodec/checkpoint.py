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

A *compact* model file (`compact_payload`, `stkc train compact`) holds the same weights
losslessly compressed: `state_dict` is empty and `compact` holds each tensor's name, dtype and
shape, and one uint8 tensor, the zlib stream of every tensor's bytes (sorted by name) each
byte-shuffled (its elements' first bytes, then their second bytes, ...: the sign and exponent
bytes of float16 weights compress well apart from their mantissas, as in Blosc and HDF5's
shuffle filter). Reading one restores the tensors bit for bit before the id is checked.

A model file may *borrow* tensors from another model file of the same kind (`borrowing_payload`,
`stkc train compact --borrow-from`): `borrowed` names that file (a path relative to the
borrower's folder), its model id and the tensors taken from it, which the borrower does not
store. An enhancement layer trained with E and D kept (`--keep-transforms`) ships as its entropy
model alone, beside the model it started from. Reading one reads the lender (which may not
borrow in turn), checks its id, and takes the tensors; the borrower's own id then covers them.

A model file may be *decode-only* (`decoding_payload`, `stkc train retire`): the tensors only
its encoder uses are left out (a model class names them: `ModelFile.ENCODER_ONLY`), and `retired`
lists them with the id of what is kept (`kept_id`, compute_model_id of the config and the stored
tensors), which loading checks in place of `model_id`: the model keeps its id (the files it wrote
name it), the stored weights stay checked, and the model's `retired` names what it cannot do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import BadInputError, ModelMismatchError, exists_error
from .modelfile import ModelFile, split_config
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


# The in-place initialisers a network's constructor runs (torch's layers' reset_parameters, our
# own _init): every weight they fill is then replaced by the file's, so loading skips them.
INITIALISERS = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
                "trunc_normal_", "zeros_", "ones_", "constant_")


@contextlib.contextmanager
def initialisers_skipped():
    """Builds networks with their weights left as allocated (torch.empty), for `load_state_dict`
    to fill: a random initialisation costs as much as loading (0.3 s of the default model's 1.1)."""
    saved = {name: getattr(nn.init, name) for name in INITIALISERS}
    try:
        for name in INITIALISERS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def from_payload(payload: dict, *, kind: str | None = None, source: str = "model") -> nn.Module:
    """A ready model (eval mode) from a payload of `read_checkpoint` (or `model_payload`): of
    whatever kind it says, or refused unless it is of `kind`."""
    found = payload["kind"]
    if kind is not None and found != kind:
        raise ModelMismatchError(f"{source}: is a {found!r} model, expected a {kind!r} model")
    build, config_class = model_classes(found)
    architecture, _ = split_config(found, payload["config"])
    try:
        with initialisers_skipped():
            model = build(config_class(**architecture))
        retired = tuple((payload.get("retired") or {}).get("names", ()))
        state = model.unpacked(payload["state_dict"])
        if retired:  # a decode-only file: its encoder's weights stay as built, and unused
            if not all(name.split(".")[0] in model.ENCODER_ONLY for name in retired):
                raise ValueError("a retired tensor its decoder needs")
            own = model.state_dict()
            state = {**{name: own[name] for name in retired if name in own}, **state}
        model.load_state_dict(state)
        model.retired = retired
    except (TypeError, RuntimeError, ValueError) as error:
        raise BadInputError(f"{source}: weights do not fit a {found} ({str(error).splitlines()[0]})") from None
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
    state_dict = model.packed(state_dict)
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


COMPACT_LEVEL = 9  # zlib's level for compact files (decompression is as fast at any level)
MAX_COMPACT_BYTES = 1 << 30  # a compact file's weights may not expand past this


def _shuffled(tensor: torch.Tensor) -> bytes:
    """A tensor's bytes with its elements' k-th bytes together, for k = 0, 1, ..."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return data.reshape(-1, tensor.element_size()).t().contiguous().numpy().tobytes()


def compact_payload(payload: dict) -> dict:
    """A model file's payload with its weights stored compact (see the module's docstring)."""
    state_dict = payload["state_dict"]
    names = sorted(state_dict)
    blob = zlib.compress(b"".join(_shuffled(state_dict[name]) for name in names), COMPACT_LEVEL)
    return {**payload, "state_dict": {},
            "compact": {"names": names, "dtypes": [str(state_dict[n].dtype).removeprefix("torch.") for n in names],
                        "shapes": [list(state_dict[n].shape) for n in names],
                        "data": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}}


def expand_payload(payload: dict, source: str = "model") -> dict:
    """The inverse of `compact_payload` (a payload that is not compact is returned as it is)."""
    compact = payload.get("compact")
    if compact is None:
        return payload
    try:
        names, dtypes, shapes, data = compact["names"], compact["dtypes"], compact["shapes"], compact["data"]
        kinds = [getattr(torch, dtype) for dtype in dtypes]
        if not all(isinstance(kind, torch.dtype) for kind in kinds) or not len(names) == len(kinds) == len(shapes):
            raise ValueError("names, dtypes and shapes disagree")
        if not all(isinstance(d, int) and d >= 0 for shape in shapes for d in shape):
            raise ValueError("a shape that is not a list of sizes")
        elements = [torch.empty(0, dtype=kind).element_size() for kind in kinds]
        sizes = [math.prod(shape) * element for shape, element in zip(shapes, elements)]
        if sum(sizes) > MAX_COMPACT_BYTES:
            raise ValueError(f"{sum(sizes):,} bytes of weights")
        expander = zlib.decompressobj()
        raw = expander.decompress(data.numpy().tobytes(), sum(sizes))
        if len(raw) != sum(sizes) or expander.unconsumed_tail or not expander.eof:
            raise ValueError("the weights' stream has not the length their shapes say")
    except (KeyError, TypeError, ValueError, AttributeError, zlib.error) as error:
        raise BadInputError(f"{source}: damaged compact weights ({error})") from None
    state_dict, offset, everything = {}, 0, np.frombuffer(bytearray(raw), dtype=np.uint8)  # writable
    for name, kind, shape, size, element in zip(names, kinds, shapes, sizes, elements):
        unshuffled = np.ascontiguousarray(everything[offset : offset + size].reshape(element, -1).T).reshape(-1)
        state_dict[name] = torch.from_numpy(unshuffled).view(kind).reshape(shape)
        offset += size
    return {key: value for key, value in payload.items() if key != "compact"} | {"state_dict": state_dict}


def borrowing_payload(payload: dict, lender: str | Path, path: str | Path) -> dict:
    """A model file's payload (to be written at `path`) without the tensors that equal the
    lender model file's (the same name, dtype, shape and bytes): those are borrowed from it."""
    theirs = read_checkpoint(lender)
    if "borrowed" in read_payload(lender):
        raise BadInputError(f"{lender}: borrows tensors itself; lend from the file that holds them")
    if theirs["kind"] != payload["kind"]:
        raise ModelMismatchError(f"{lender}: is a {theirs['kind']!r} model, this one a {payload['kind']!r} model")
    own, lent = payload["state_dict"], theirs["state_dict"]
    names = sorted(name for name, tensor in own.items() if name in lent and _same_tensor(tensor, lent[name]))
    if not names:
        raise BadInputError(f"{lender}: holds none of this model's tensors")
    relative = Path(os.path.relpath(Path(lender).resolve(), Path(path).resolve().parent)).as_posix()
    return {**payload, "state_dict": {k: v for k, v in own.items() if k not in names},
            "borrowed": {"file": relative, "model_id": theirs["model_id"], "names": names}}


def decoding_payload(payload: dict) -> dict:
    """A model file's payload without the tensors only its encoder uses (see the module's
    docstring): it decodes what the model wrote, bit for bit, and encodes no more."""
    if "retired" in payload:
        return payload
    model_classes(payload["kind"])  # registers the kind's class
    network = ModelFile.kinds[payload["kind"]]
    names = sorted(name for name in payload["state_dict"] if name.split(".")[0] in network.ENCODER_ONLY)
    if not names:
        raise BadInputError(f"a {payload['kind']} model has no encoder-only weights to leave out")
    kept = {name: tensor for name, tensor in payload["state_dict"].items() if name not in names}
    return {**payload, "state_dict": kept,
            "retired": {"names": names, "kept_id": compute_model_id(payload["config"], kept)}}


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a.view(torch.uint8) if a.dim() else a,
                                                                          b.view(torch.uint8) if b.dim() else b))


def lend_tensors(payload: dict, path: str | Path) -> dict:
    """A borrowing payload (see the module's docstring) with its borrowed tensors in place; any
    other payload as it is."""
    borrowed = payload.get("borrowed")
    if borrowed is None:
        return payload
    try:
        file, model_id, names = str(borrowed["file"]), str(borrowed["model_id"]), list(borrowed["names"])
    except (KeyError, TypeError) as error:
        raise BadInputError(f"{path}: damaged list of borrowed tensors ({error})") from None
    if Path(file).is_absolute():
        raise BadInputError(f"{path}: borrows from an absolute path ({file})")
    lender = Path(path).parent / file
    if not lender.is_file():
        raise BadInputError(f"{path}: borrows tensors from {file}, which is not beside it (copy the two together)")
    stored = read_payload(lender)
    if isinstance(stored, dict) and "borrowed" in stored:
        raise BadInputError(f"{path}: borrows from {file}, which borrows in turn")
    theirs = read_checkpoint(lender)
    if theirs["model_id"] != model_id or theirs["kind"] != payload.get("kind"):
        raise ModelMismatchError(f"{path}: borrows from model {model_id[:12]}, and {file} is another")
    missing = [name for name in names if name not in theirs["state_dict"]]
    if missing or any(name in payload["state_dict"] for name in names):
        raise BadInputError(f"{path}: its borrowed tensors do not fit {file}")
    state_dict = {**payload["state_dict"], **{name: theirs["state_dict"][name] for name in names}}
    return {key: value for key, value in payload.items() if key != "borrowed"} | {"state_dict": state_dict}


def read_checkpoint(path: str | Path, *, kind: str | None = None) -> dict:
    """Load and validate a checkpoint or model file (compact or borrowing or not); never unpickles
    arbitrary objects."""
    payload = read_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadInputError(f"{path}: not a stkc model file")
    payload = lend_tensors(expand_payload(payload, str(path)), path)
    if payload.get("format_version") != FORMAT_VERSION:
        raise BadInputError(
            f"{path}: model format version {payload.get('format_version')!r}, this stkc reads {FORMAT_VERSION}"
        )
    if kind is not None and payload.get("kind") != kind:
        raise ModelMismatchError(f"{path}: is a {payload.get('kind')!r} model, expected a {kind!r} model")
    config, state_dict = payload.get("config"), payload.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state_dict, dict):
        raise BadInputError(f"{path}: model file lacks its config or weights")
    retired = payload.get("retired")
    if retired is not None:
        if not isinstance(retired, dict) or retired.get("kept_id") != compute_model_id(config, state_dict):
            raise ModelMismatchError(f"{path}: weights do not match the ids the decode-only file claims")
        names = retired.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) and n not in state_dict for n in names):
            raise BadInputError(f"{path}: damaged list of retired tensors")
    elif payload.get("model_id") != compute_model_id(config, state_dict):
        raise ModelMismatchError(f"{path}: weights do not match the model id the file claims")
    return payload


def load_model(path: str | Path, *, kind: str | None = None) -> nn.Module:
    """A ready model (eval mode) from a model file or checkpoint, with its `model_id` and `provenance`."""
    return from_payload(read_checkpoint(path, kind=kind), source=str(path))
