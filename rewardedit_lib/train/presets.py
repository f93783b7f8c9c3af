"""The named training presets (``rewardedit train --profile NAME``), read from
``rewardedit_lib/profiles/train_presets.yaml`` beside the course profiles.

The file says why each preset holds its numbers (as comments beside them); this module reads it, checks it
against :class:`~rewardedit_lib.train.config.TrainConfig`'s fields and types, and builds configs from it.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .config import TrainConfig

#: The kit's toy stage-1 model (plain InstructPix2Pix on the flawed toy world), bundled so the course can
#: run the paper's comparison -- two stage-2 models from one stage-1 start -- in minutes on a CPU. Made by
#: ``python -m rewardedit_lib.toy_stage1`` (command, data and seed in its ``README.md``).
#: Runs record it in ``run.json`` by a digest of its weights, not by this path (``runs.BUNDLED_INIT``).
TOY_STAGE1 = Path(__file__).parents[1] / "assets" / "toy-stage1"
PRESETS_FILE = Path(__file__).parents[1] / "profiles" / "train_presets.yaml"


def load_presets(path: str | Path = PRESETS_FILE) -> dict[str, dict[str, Any]]:
    """``{name: {field: value}}`` from a presets file, in the file's order.

    An unknown field is an error naming the preset. A number that YAML reads as a string (``3e-4``; YAML
    wants ``3.0e-4``) is an error saying so; an int for a float field (``reward_lr_scale: 10``) becomes
    the float, so a config holds the same values (and records the same ``train_config.json``) whichever way
    the number was written.
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    known = {f.name: f for f in fields(TrainConfig)}
    out: dict[str, dict[str, Any]] = {}
    for name, values in data.items():
        values = values or {}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{path}: preset {name!r} has unknown training setting(s) {unknown}; "
                             f"known: {sorted(known)}")
        out[name] = {key: _typed(path, name, key, value, known[key].default) for key, value in values.items()}
    return out


def _typed(path: str | Path, name: str, key: str, value: Any, default: Any) -> Any:
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if numeric and isinstance(value, str):
        raise ValueError(f"{path}: {name}.{key} = {value!r} is a string, not a number; write a float with a "
                         f"decimal point (3.0e-4, not 3e-4)")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


#: Named presets (``rewardedit train --profile NAME``), as ``{name: {field: value}}``. Every field can still
#: be overridden.
PRESETS: dict[str, dict[str, Any]] = load_presets()


def preset(name: str, **changes: Any) -> TrainConfig:
    """The named preset as a :class:`TrainConfig`, with ``changes`` applied. A toy stage-2 run with no
    ``init`` starts from the bundled toy stage-1 model (:data:`TOY_STAGE1`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown training profile {name!r}; expected one of {', '.join(PRESETS)}")
    config = TrainConfig(**PRESETS[name]).updated(**changes)
    if config.model == "toy" and config.stage == 2 and config.init is None and TOY_STAGE1.is_dir():
        config.init = str(TOY_STAGE1)
    return config
