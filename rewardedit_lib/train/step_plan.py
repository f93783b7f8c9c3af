"""The per-step plan: every random choice of one optimizer step, a pure function of ``(seed, step)``.

Why: the data order, timesteps, noise, dropout masks and the torch RNG of every step are drawn from
generators seeded by the step number, for the *global* batch, and each process takes its slice. So a run
resumed from a checkpoint (``resume="latest"``), even after a ``kill -9``, ends with the same weights as an
uninterrupted one, and 2 processes train on exactly the batches 1 process would (the gradients are averaged
across processes: the same mean). Nothing here depends on what ran before: no iterator to restore.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TrainConfig


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by ``keys``: the same keys, the same numbers. The trainer's keys are
    ``(seed, purpose, ...)``: purpose 1 the example order (per epoch), 2 a step's plan (per step), 3 the torch
    RNG of a step on one process (per step and process: the model's dropout layers)."""
    seed = 0
    for k in keys:  # a simple, stable mix of the keys (never Python's salted hash)
        seed = (seed * 1_000_003 + int(k) + 0x9E3779B9) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def example_order(n: int, seed: int, start: int, count: int) -> torch.Tensor:
    """Examples ``start .. start+count-1`` of the run's stream: epoch after epoch, each a seeded permutation."""
    out, pos, got = [], start, 0
    while got < count:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=seeded_generator(seed, 1, epoch))
        take = perm[offset: offset + count - got]
        out.append(take)
        pos, got = pos + len(take), got + len(take)
    return torch.cat(out)


@dataclass
class StepPlan:
    """Every random choice of one optimizer step, for the global batch (each process takes its slice)."""

    indices: torch.Tensor  # (G,) example ids
    timesteps: torch.Tensor  # (G,)
    drop_text: torch.Tensor  # (G,) bool
    drop_image: torch.Tensor  # (G,) bool
    drop_reward: torch.Tensor  # (G,) bool
    flip: torch.Tensor  # (G,) bool
    generator_seed: int  # for the noise (and the latent sample) of the whole global batch

    def slice(self, lo: int, hi: int) -> "StepPlan":
        return StepPlan(self.indices[lo:hi], self.timesteps[lo:hi], self.drop_text[lo:hi], self.drop_image[lo:hi],
                        self.drop_reward[lo:hi], self.flip[lo:hi], self.generator_seed)


def plan_step(step: int, n_examples: int, config: TrainConfig, num_train_timesteps: int) -> StepPlan:
    """The plan of optimizer step ``step`` (counted from 0) over ``n_examples`` training examples."""
    g = seeded_generator(config.seed, 2, step)
    G, p = config.batch_size, config.conditioning_dropout
    indices = example_order(n_examples, config.seed, step * G, G)
    timesteps = torch.randint(0, num_train_timesteps, (G,), generator=g)
    u = torch.rand(G, generator=g)  # diffusers' InstructPix2Pix rule: text in [0, 2p), image in [p, 3p)
    drop_text, drop_image = u < 2 * p, (u >= p) & (u < 3 * p)
    drop_reward = torch.rand(G, generator=g) < config.reward_dropout
    flip = (torch.rand(G, generator=g) < 0.5) & torch.tensor(config.random_flip)
    return StepPlan(indices, timesteps, drop_text, drop_image, drop_reward, flip,
                    int(torch.randint(0, 2**62, (1,), generator=g)))
