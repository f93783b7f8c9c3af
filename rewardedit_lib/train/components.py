"""The model a run starts from, and the frozen parts around it (text encoder, VAE, the noise schedule).

Stage 1 starts from a text-to-image model (its ``conv_in`` widened) or an InstructPix2Pix one; stage 2
starts from a stage-1 model and adds the reward modules -- the paper's two-stage recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import models
from ..pipeline import RewardEditPipeline, random_pipeline
from ..reward import RewardUNet
from .config import TrainConfig
from .errors import TrainingError


@dataclass
class Components:
    """What training needs: the trainable model and the frozen parts around it."""

    model: RewardUNet
    tokenizer: Any
    text_encoder: Any
    vae: Any | None
    scheduler: Any  # the inference scheduler saved with the model (its config is the noise schedule)


def _reward_init(config: TrainConfig) -> dict[str, bool]:
    """The new reward modules' construction switches a config asks for."""
    return {**({"zero_init": True} if config.zero_init_rewards else {}),
            **({"centered": True} if config.center_rewards else {}),
            **({"unknown_without_instruction": True} if config.unknown_rewards_without_instruction else {})}


def load_components(config: TrainConfig, device: torch.device | str = "cpu") -> Components:
    """Build or load the model a run starts from.

    * ``init=None``: random init of config ``config.model`` (toy: the tiny CLIP text encoder; sd15: SD 1.5's
      shapes, random weights -- for tests and benchmarks only).
    * stage 1 from a folder or hub id: a text-to-image Stable Diffusion folder (``conv_in`` is widened, the
      new channels start at zero) or an InstructPix2Pix folder (its 8-channel UNet continues).
    * stage 2 from a stage-1 folder (what a stage-1 run writes to ``model/``, or the reference's
      ``stage1_instruct_pix2pix``): the reward modules are added (none for ``rewards="none"``). A folder that
      already has a ``reward_encoder/`` continues it.
    """
    if config.init is None:
        pipe = random_pipeline(config.model, seed=config.seed, stage=config.stage, rewards=config.rewards,
                               injection=config.injection, device=device,
                               **(_reward_init(config) if config.stage == 2 else {}))
        return Components(pipe.reward_unet, pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.scheduler)
    try:
        pipe = RewardEditPipeline.from_instruct_pix2pix(config.init, reward_encoder="auto", scheduler=None,
                                                        resolution=None, torch_dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise TrainingError(f"init={config.init!r}: cannot load a model folder from it ({err})") from err
    unet, reward = pipe.unet, pipe.reward_encoder
    if unet.config.in_channels == unet.config.out_channels:  # a text-to-image UNet
        if config.stage == 2:
            raise TrainingError(f"init={config.init!r} is a text-to-image model: train stage 1 from it first")
        model = models.stage1_from_text_to_image(unet)
    elif reward is not None:
        if config.stage == 1:
            raise TrainingError(f"init={config.init!r} already has reward modules: it is a stage-2 model")
        if reward.config.rewards != config.rewards or reward.config.injection != config.injection:
            raise TrainingError(f"init={config.init!r} has rewards={reward.config.rewards!r} "
                                f"injection={reward.config.injection!r}, the config asks for "
                                f"rewards={config.rewards!r} injection={config.injection!r}")
        if reward.config.unknown_without_instruction != config.unknown_rewards_without_instruction:
            raise TrainingError(f"init={config.init!r} has unknown_without_instruction="
                                f"{reward.config.unknown_without_instruction} in its reward encoder, the config asks "
                                f"for unknown_rewards_without_instruction={config.unknown_rewards_without_instruction}")
        model = RewardUNet(unet, reward)
    elif config.stage == 2:
        model = models.stage2_from_stage1(RewardUNet(unet), config.model, config.rewards, config.injection,
                                          seed=config.seed + 1,
                                          **_reward_init(config))
    else:
        model = RewardUNet(unet)
    te = pipe.text_encoder.requires_grad_(False).eval()
    vae = pipe.vae.requires_grad_(False).eval() if pipe.vae is not None else None
    return Components(model.to(device), pipe.tokenizer, te.to(device), vae.to(device) if vae is not None else None,
                      pipe.scheduler)

