"""Checkpoints: where they live, how one is written so that a ``kill -9`` never leaves a half one, which
are complete, and the checks before a run resumes from one.

A run's folder holds ``checkpoints/checkpoint-NNNNNN/`` (the last ``keep_checkpoints``), each with
``model/`` (the trained model, full precision), ``training_state.pt`` (optimizer, LR schedule, EMA, loss
scaler) and ``state.json`` (the step and the config). A checkpoint is written as ``checkpoint-NNNNNN.tmp``
and renamed when complete, so a folder without the suffix is always whole; ``state.json`` is what marks it.

Why not accelerate's ``save_state``/``load_state`` with ``ProjectConfiguration(total_limit=...)`` (checked in
accelerate 1.16's source, ``accelerate/accelerator.py``, and by a kill -9): ``Accelerator.save_state`` writes
straight into the final ``checkpoints/checkpoint_<n>`` (``os.makedirs(output_dir, exist_ok=True)``: no
temporary name, no rename, no mark of completion), and ``total_limit`` deletes the oldest checkpoints
*before* the new one is written; ``Accelerator.load_state()`` takes the highest-numbered folder, whole or
not. Killed during a save (in the ``register_save_state_pre_hook`` where a ``from_pretrained`` folder would
be written), ``total_limit=1`` left one empty ``checkpoint_1`` and no whole checkpoint, and ``load_state()``
failed (``FileNotFoundError: .../checkpoint_1/pytorch_model.bin``); here the last whole checkpoint survives
and ``latest`` passes over the ``.tmp``. Nor does it fit the rest: ``total_limit`` applies only with
``automatic_checkpoint_naming``, whose folders count saves (``checkpoint_<iteration>``; a new process must be
told the count, else ``save_state`` refuses the existing name), not steps; the weights are a state dict
(``model.safetensors``; with master weights the bf16 model, not the fp32 copy) unless a hook writes a
``from_pretrained`` folder; and the settings a resume must match (:data:`RESUME_MUST_MATCH`) have no place
there. Its RNG files are not needed (each step's randomness and the example order are functions of seed and
step: :mod:`.step_plan`). The EMA could be registered (``register_for_checkpointing``), but that alone
would not make this simpler.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from ..plumbing import atomic_write_json, read_json
from ..reward import UNET_SUBFOLDER, RewardUNet
from .config import TrainConfig
from .errors import TrainingError

CHECKPOINT_PREFIX = "checkpoint-"
#: The model's folder: a run's final model (``out_dir/model``) and each checkpoint's weights.
MODEL_SUBDIR = "model"
STATE_FILE = "state.json"
TRAINING_STATE_FILE = "training_state.pt"
#: The settings a resumed run must share with its checkpoint (a difference is refused, naming them).
RESUME_MUST_MATCH = ("model", "stage", "rewards", "injection", "batch_size", "seed", "lr", "reward_lr_scale",
                     "reward_warmup_steps", "center_rewards", "unknown_rewards_without_instruction",
                     "lr_schedule", "warmup_steps", "conditioning_dropout", "reward_dropout", "ema_decay",
                     "ema_power")


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder still being written has a ``.tmp`` suffix: ignored)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
            and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / STATE_FILE).exists()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def find_checkpoint(out_dir: str | Path, resume: str) -> Path:
    """``resume``: ``"latest"`` or a checkpoint folder."""
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).exists():
            raise TrainingError(f"--resume {resume}: not a complete checkpoint (no {STATE_FILE})")
        return path
    found = list_checkpoints(out_dir)
    if not found:
        raise TrainingError(f"--resume latest: no checkpoint in {Path(out_dir) / 'checkpoints'}")
    return found[-1]


def write_checkpoint(out_dir: str | Path, step: int, config: TrainConfig, save_model: Callable[[Path], None],
                     training_state: Callable[[], dict[str, Any]]) -> Path:
    """Write ``checkpoints/checkpoint-{step:06d}``: ``save_model(folder)`` writes the weights into
    ``model/``, ``training_state()`` gives what ``training_state.pt`` holds; then drop all but the newest
    ``config.keep_checkpoints``. Returns the checkpoint's folder."""
    root = Path(out_dir) / "checkpoints"
    final = root / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = root / f"{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / MODEL_SUBDIR)
    torch.save(training_state(), tmp / TRAINING_STATE_FILE)
    atomic_write_json(tmp / STATE_FILE, {"step": step, "config": config.to_json()}, indent=1, trailing_newline=False)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a checkpoint exists only once it is complete (kill -9 safe)
    for old in list_checkpoints(out_dir)[:-config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path, config: TrainConfig) -> tuple[int, RewardUNet]:
    """The step a checkpoint reached and its weights, after checking that it is complete and was trained with
    ``config``'s :data:`RESUME_MUST_MATCH` settings. The optimizer's state is read by the trainer
    (:data:`TRAINING_STATE_FILE`), which knows where each part goes."""
    missing = [name for name in (STATE_FILE, TRAINING_STATE_FILE, f"{MODEL_SUBDIR}/{UNET_SUBFOLDER}")
               if not (path / name).exists()]
    if missing:  # else diffusers reads the folder name as a Hub id and reports a network error
        raise TrainingError(f"--resume {path}: the checkpoint is incomplete (missing {', '.join(missing)}); "
                            f"resume from another checkpoint or delete this one")
    state = read_json(path / STATE_FILE)
    saved = TrainConfig.from_json(state["config"])
    same = {k for k in RESUME_MUST_MATCH if getattr(saved, k) != getattr(config, k)}
    if same:
        raise TrainingError(f"--resume {path}: the checkpoint was trained with different "
                            f"{', '.join(sorted(same))}; resume with the same settings")
    return int(state["step"]), RewardUNet.from_pretrained(path / MODEL_SUBDIR)
