"""Classifier-free guidance of an edit, with the rewards: which UNet branches a denoising step runs, and how
their predictions combine.

What the paper does (InstructPix2Pix's two-scale guidance, diffusers' formula)::

    eps = eps(uncond) + g_text * (eps(full) - eps(image only)) + g_image * (eps(image only) - eps(uncond))

where *full* = instruction + source image, *image only* = empty instruction + source image, *uncond* = empty
instruction + zero image; every branch carries the same requested rewards.

Beyond the paper, a model trained with its rewards unknown wherever the instruction was dropped
(``TrainConfig.unknown_rewards_without_instruction``) is guided the way it was trained: the two branches
without the instruction get unknown rewards (``rewards_without_instruction="unknown"``). Text guidance then
amplifies the instruction *and* the requested rewards together, ``eps(full) - eps(image only)``, and the
branches it subtracts carry no reward the data never paired with an empty instruction.

Beyond the paper, optional **reward guidance** (``reward_guidance_scale`` > 0; default 0 = off): one more
branch, *full* with contrast rewards, and the term ``+ s * (eps(full) - eps(full, contrast))`` pushes the
sample away from the contrast. Two contrasts: low rewards (scores (0, 0, 0) and a feedback text naming
failures: what a bad edit looks like, scores the toy data never has for preserving and quality), or rewards
*unknown* (``low_reward_scores=None``; for a model trained with reward dropout: the average edit of the
training data, flaws included -- the classifier-free guidance of the rewards themselves).

Why a module of its own: the formula is the one place where inference differs from a single UNet call, and
notebook 03 shows its branches; the pipeline (:mod:`~rewardedit_lib.pipeline`) only batches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The paper's guidance scales (text, image).
DEFAULT_TEXT_GUIDANCE, DEFAULT_IMAGE_GUIDANCE = 7.5, 1.5
#: Reward guidance's contrast: low scores and a feedback text that names a failure in every perspective.
LOW_SCORES: tuple[float, float, float] = (0.0, 0.0, 0.0)
LOW_REWARD_TEXT = "; ".join([
    "The instruction was not followed.",
    "The unrelated details were changed.",
    "The image has obvious artifacts, noise and blur.",
])


@dataclass(frozen=True)
class Branch:
    """One classifier-free-guidance branch: which conditions its UNet call gets."""

    name: str
    instruction: bool  # the instruction (else the empty text)
    image: bool  # the source image (else zeros)
    rewards: str  # "requested" | "low" | "unknown"


REWARDS_WITHOUT_INSTRUCTION = ("requested", "unknown")


def guidance_branches(guidance_scale: float = DEFAULT_TEXT_GUIDANCE,
                      image_guidance_scale: float = DEFAULT_IMAGE_GUIDANCE,
                      reward_guidance_scale: float = 0.0,
                      rewards_without_instruction: str = "requested") -> tuple[Branch, ...]:
    """The UNet branches one denoising step runs, in batch order (diffusers' rule for when guidance is on:
    ``guidance_scale > 1 and image_guidance_scale >= 1``). ``rewards_without_instruction``: what the
    branches without the instruction carry, the requested rewards (the paper) or ``"unknown"``."""
    if rewards_without_instruction not in REWARDS_WITHOUT_INSTRUCTION:
        raise ValueError(f"rewards_without_instruction={rewards_without_instruction!r}: expected one of "
                         f"{', '.join(REWARDS_WITHOUT_INSTRUCTION)}")
    branches = [Branch("full", True, True, "requested")]
    if guidance_scale > 1.0 and image_guidance_scale >= 1.0:
        branches += [Branch("image only", False, True, rewards_without_instruction),
                     Branch("uncond", False, False, rewards_without_instruction)]
    if reward_guidance_scale != 0:
        branches.append(Branch("full, low rewards", True, True, "low"))
    return tuple(branches)


def combine_noise(preds: dict[str, torch.Tensor], guidance_scale: float, image_guidance_scale: float,
                  reward_guidance_scale: float = 0.0) -> torch.Tensor:
    """The guided noise from the branch predictions (keyed by :class:`Branch` names)."""
    full = preds["full"]
    if "uncond" in preds:
        uncond, image = preds["uncond"], preds["image only"]
        eps = uncond + guidance_scale * (full - image) + image_guidance_scale * (image - uncond)
    else:
        eps = full
    if "full, low rewards" in preds:
        eps = eps + reward_guidance_scale * (full - preds["full, low rewards"])
    return eps
