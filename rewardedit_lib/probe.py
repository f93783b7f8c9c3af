"""Loss probes: does a trained model use its reward conditions, and does asking for the best reward help?

The judged benchmark answers the question that matters (are the edits better?), but at toy scale its
yes-rates move by several points between runs that differ only in float rounding. A loss probe asks a
narrower question with far less noise: the training loss of one model under different reward conditions,
on the *same* triplets, timesteps and noise (so every difference is the conditions' doing):

* ``"as annotated"``: the rewards the judge gave each triplet, as in training;
* ``"shuffled"``: another triplet's rewards (a permutation). If the model ignores its rewards, the two are
  equal to the last digit; a model that uses them predicts its training targets better with their own;
* ``"perfect"``: (5, 5, 5) and the perfect-score feedback text, the inference condition.

On triplets whose edit is known to be perfect (the toy world can make a held-out set with every flaw rate
at 0), ``"perfect"`` is the right condition, and comparing models on it asks whether conditioning on the
best reward predicts good edits better than the no-reward baseline does -- the paper's effect, at the loss
level. Losses are reported per noise level: the rewards can only matter where the image is not yet decided
(high noise); at low noise every model mostly copies its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from diffusers import DDPMScheduler

from . import text
from .formats import read_instructpix2pix
from .pipeline import DEFAULT_REWARD_TEXT, PERFECT_SCORES, RewardEditPipeline
from .train import image_tensor, training_target

CONDITIONS: tuple[str, ...] = ("as annotated", "shuffled", "perfect")
NO_REWARDS = "no rewards"


@dataclass
class LossProbe:
    """Mean training loss per reward condition and noise level (``edges``: timestep bin edges)."""

    edges: list[int]
    losses: dict[str, list[float]]  # condition -> mean loss per bin
    overall: dict[str, float]  # condition -> mean loss over all triplets
    n: int  # triplets probed
    per_item: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # condition -> (n,) losses
    timesteps: torch.Tensor | None = field(default=None, repr=False)  # (n,): each triplet's noise level
    ids: list[str] = field(default_factory=list, repr=False)  # each triplet's id, in the order of per_item

    def bins(self) -> list[str]:
        return [f"t {a}-{b - 1}" for a, b in zip(self.edges[:-1], self.edges[1:])]

    def rows(self, label: str = "") -> list[list[str]]:
        """Table rows (label, condition, overall, one column per bin), for :func:`viz.text_table`."""
        return [[label, c, f"{self.overall[c]:.5f}", *(f"{v:.5f}" for v in self.losses[c])] for c in self.losses]

    def to_json(self) -> dict:
        return {"edges": self.edges, "losses": self.losses, "overall": self.overall, "n": self.n}


def _load(model: str | Path | RewardEditPipeline) -> RewardEditPipeline:
    from .evaluate import load_model  # evaluate imports the judge stack; only needed here

    return load_model(model, device=None)


@torch.no_grad()
def loss_by_noise(model: str | Path | RewardEditPipeline, data_dir: str | Path,
                  rewards_path: str | Path | None = None, *, conditions: Sequence[str] = CONDITIONS,
                  bins: int = 4, seed: int = 0, batch: int = 64, limit: int | None = None,
                  resolution: int | None = None, device: str | torch.device | None = None) -> LossProbe:
    """The model's training loss on ``data_dir``'s triplets, per reward condition and noise level.

    Every condition (and every model probed with the same ``seed`` on the same data) sees the same
    timesteps and noise per triplet, so differences are paired. A model without reward modules is probed
    once (condition ``"no rewards"``). ``"as annotated"`` and ``"shuffled"`` need ``rewards_path``;
    ``"perfect"`` does not. ``limit``: probe the first N triplets only. ``resolution``: resize as the
    training run did (``TrainConfig.resolution``; None keeps the stored size, as the toy profiles train).
    """
    pipe = _load(model)
    dev = torch.device(device) if device is not None else next(pipe.reward_unet.parameters()).device
    pipe = pipe.to(dev)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"conditions: unknown {unknown}; expected some of {list(CONDITIONS)}")
    if not pipe.uses_rewards:
        conditions = (NO_REWARDS,)
    elif rewards_path is None and any(c != "perfect" for c in conditions):
        raise ValueError("rewards_path is needed for the 'as annotated' and 'shuffled' conditions "
                         "(a RewardEdit_20K.json for data_dir); or pass conditions=('perfect',)")
    loaded = read_instructpix2pix(data_dir, rewards=rewards_path if pipe.uses_rewards else None,
                                  require_rewards=pipe.uses_rewards and rewards_path is not None)
    triplets = loaded.items[:limit] if limit else loaded.items
    if not triplets:
        raise ValueError(f"data_dir={str(data_dir)!r}: no triplets to probe")
    n = len(triplets)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    T = noise_sched.config.num_train_timesteps
    g = torch.Generator().manual_seed(seed)
    timesteps = torch.randint(0, T, (n,), generator=g)
    # "shuffled": every triplet gets another triplet's rewards (one random cycle through all of them)
    order = torch.randperm(n, generator=g)
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = torch.roll(order, -1)
    unet = pipe.reward_unet.eval()
    per: dict[str, list[torch.Tensor]] = {c: [] for c in conditions}
    scores = feedback = None
    if pipe.uses_rewards and rewards_path is not None:
        scores = torch.tensor([list(t.rewards.scores) for t in triplets], dtype=torch.float32)
        feedback = [t.rewards.text for t in triplets]
    perfect = None
    if "perfect" in conditions:  # one constant condition: encoded once, repeated per batch
        perfect = pipe.encode_rewards(PERFECT_SCORES, DEFAULT_REWARD_TEXT, 1, dev)
    for lo in range(0, n, batch):
        chunk = triplets[lo:lo + batch]
        idx = torch.arange(lo, lo + len(chunk))
        src = torch.stack([image_tensor(t_.load_source(), resolution) for t_ in chunk]).to(dev)
        tgt = torch.stack([image_tensor(t_.load_edited(), resolution) for t_ in chunk]).to(dev)
        if pipe.vae is not None:  # latent models: the source latent as the pipeline reads it, the target's mean
            src = pipe.encode_source(src.to(pipe.vae.dtype))
            tgt = pipe.vae.encode(tgt.to(pipe.vae.dtype)).latent_dist.mean * pipe.vae.config.scaling_factor
        src, tgt = src.float(), tgt.float()
        # one noise draw per triplet, keyed by (seed, index): the same whatever the batch size
        noise = torch.stack([torch.randn(tgt.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
                             for i in idx]).to(dev)
        t = timesteps[idx].to(dev)
        x = torch.cat([noise_sched.add_noise(tgt, noise, t), src], dim=1)
        hidden = text.encode_text(pipe.tokenizer, pipe.text_encoder, [t_.instruction for t_ in chunk], dev).hidden_states
        target = training_target(noise_sched, tgt, noise, t)
        for c in conditions:
            kw = {}
            if c == "perfect":
                s, e = perfect
                kw = dict(reward_scores=s.expand(len(chunk), -1),
                          reward_text_embeds=e.expand(len(chunk), -1) if e is not None else None)
            elif c in ("as annotated", "shuffled"):
                j = idx if c == "as annotated" else perm[idx]
                s, e = pipe.encode_rewards(scores[j], [feedback[int(k)] for k in j], len(chunk), dev)
                kw = dict(reward_scores=s, reward_text_embeds=e)
            pred = unet(x.to(unet.dtype), t, hidden.to(unet.dtype), **kw, return_dict=False)[0]
            per[c].append(((pred.float() - target) ** 2).mean(dim=(1, 2, 3)).cpu())
    edges = [round(i * T / bins) for i in range(bins + 1)]
    per_item = {c: torch.cat(v) for c, v in per.items()}
    in_bin = [(timesteps >= a) & (timesteps < b) for a, b in zip(edges[:-1], edges[1:])]
    losses = {c: [float(v[m].mean()) if m.any() else float("nan") for m in in_bin] for c, v in per_item.items()}
    return LossProbe(edges, losses, {c: float(v.mean()) for c, v in per_item.items()}, n, per_item, timesteps,
                     [t_.id for t_ in triplets])
