"""`ModelFile`, the class every network inherits (its kind registers itself), and how a stored
config splits into architecture and (older files') recipe.

The networks import this module, never checkpoint.py; this module imports none of them
(checkpoint.py imports a kind's module by name when it first reads a file of that kind).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from torch import nn

from .errors import BadInputError

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

    The network classes inherit it; `checkpoint.from_payload` is the one way a file becomes a model.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]
    kinds: ClassVar[dict[str, type]] = {}  # kind -> the class that builds it (registered by defining it)
    model_id: str | None = None  # compute_model_id of the file it was read from (None: never saved)
    provenance: Mapping[str, Any] = MappingProxyType({})  # the file's: training data, steps, same_encoder_as
    ENCODER_ONLY: ClassVar[tuple[str, ...]] = ()  # modules only encoding uses (a decode-only file leaves them out)
    retired: tuple[str, ...] = ()  # the tensors a decode-only file left out (checkpoint.decoding_payload)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a class that names a kind builds it; its subclasses do not
            ModelFile.kinds[cls.kind] = cls

    @classmethod
    def build(cls, config) -> nn.Module:
        """The network for `config` (a kind made by several classes picks one here)."""
        return cls(config)

    def check_encodes(self) -> None:
        """Refuses to run the encoder of a decode-only model (its weights were left out)."""
        if self.retired:
            raise BadInputError(f"this {self.kind} model is decode-only: its encoder was retired to keep the shipped "
                                "models small (use the default model to compress)")

    def packed(self, state: dict) -> dict:
        """The weights as the model's file stores them (`checkpoint.model_payload`): as they are,
        unless a network keeps some in a smaller form (`unpacked` undoes it)."""
        return state

    def unpacked(self, stored: dict) -> dict:
        """A file's stored weights -> the network's state dict (`checkpoint.from_payload`)."""
        return stored
