"""How `stkc train --resume` merges a checkpoint's recipe with the options given: the CLI's
side of resuming (train.py only restores what a checkpoint holds)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from .checkpoint import read_checkpoint
from .modelfile import split_config
from .errors import ModelMismatchError
from .train import NOT_RESUMED


def settle(config_class: type, saved: Mapping[str, Any] | None, given: Mapping[str, Any], *,
           fixed: bool = False, what: str = "") -> tuple[Any, list[str]]:
    """A config from a resumed run's saved one (None: a new run, the class's defaults) and the
    options given on the command line, which override it. Returns (config, the fields that
    changed). With `fixed` (a model's shape) a change is refused."""
    names = {f.name for f in dataclasses.fields(config_class)}
    base = {k: v for k, v in (saved or {}).items() if k in names}
    given = {k: v for k, v in given.items() if k in names}
    changed = sorted(k for k, v in given.items() if saved is not None and k in base and base[k] != v)
    if fixed and changed:
        raise ModelMismatchError(f"{what}: its model config differs from the one asked for ({', '.join(changed)})")
    merged = {**base, **given}
    if "frozen" in merged:
        merged["frozen"] = tuple(merged["frozen"])
    return config_class(**merged), changed


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint (or model file) to resume says: the model's shape, its loss settings,
    the run's options and where its data came from. Given options override all but the shape."""

    path: str
    state: dict
    architecture: dict
    loss: dict | None
    run: dict

    @classmethod
    def read(cls, path: str, kind: str) -> "Resumed":
        state = read_checkpoint(path, kind=kind)
        architecture, legacy_recipe = split_config(kind, state["config"])
        recipe = (state.get("provenance") or {}).get("recipe") or {}
        run = {k: v for k, v in (recipe.get("run") or {}).items() if k not in NOT_RESUMED}
        return cls(str(path), state, architecture, recipe.get("loss") or legacy_recipe or None, run)

    def data(self, split: str, key: str) -> Any:
        """What the provenance says of a split ("train", "valid"): its folder, tokens file..."""
        return ((self.state.get("provenance") or {}).get(split) or {}).get(key)
