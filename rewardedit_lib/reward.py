"""The multi-reward conditioning of the paper, composed onto a stock diffusers ``UNet2DConditionModel``.

Why composition: the reference code forks diffusers' 1,300-line UNet to add a few modules. Here the UNet
stays exactly the class diffusers ships (its weights load, save and convert as usual), and the reward
enters through two forward hooks on modules the UNet already has:

* on ``unet.time_embedding``: the reward vector (scores MLP + feedback-text linear) is added to the time
  embedding, before the UNet's own time activation -- where the reference adds it;
* on ``unet.conv_in``: right after the input convolution, the feature map attends to the reward tokens
  ([reward token, text token]) in one transformer layer, with a residual -- the "latent space" injection.

What the paper's SD 1.5 model uses (widths for SD 1.5: time embedding 1280, first block 320, CLIP 768):

==================  ===========================================================  ==========
reference name      here                                                         parameters
==================  ===========================================================  ==========
add_time_proj       ``score_proj``: sinusoidal, 256-d per score, 3 scores -> 768  0
add_embedding       ``score_to_time``: MLP 768 -> 1280 -> 1280                    2,624,000
add_embedding2      ``score_to_token``: MLP 768 -> 320 -> 320                      348,800
text_linear2        ``text_to_time``: Linear 768 -> 1280 (pooled feedback)          984,320
text_linear         ``text_to_token``: Linear 768 -> 320                           246,080
proj_deal           ``latent.norm / proj_in / proj_out``                           206,080
ca                  ``latent.attn``: one BERT-style cross-attention layer           617,600
==================  ===========================================================  ==========

One config switches what the ablations need: which rewards (``none`` / ``scores`` / ``text`` / ``both``)
and where (``latent`` / ``time`` / ``both``). ``rewards="none"`` builds nothing: the model is exactly
stage-1 InstructPix2Pix.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from .reward_modes import INJECTIONS, REWARD_MODES, reward_routes  # the switches' names (torch-free module)

REWARD_SUBFOLDER = "reward_encoder"
UNET_SUBFOLDER = "unet"


@dataclass
class RewardConditions:
    """What the encoder hands the UNet: a vector for the time path and tokens for the latent path."""

    time: torch.Tensor | None  # (B, time_embed_dim)
    tokens: torch.Tensor | None  # (B, n_tokens, block_dim): [reward token][, text token]
    #: (B,) 1 where the rewards are known, 0 where they are not (reward dropout in training; ``None`` = all
    #: known). An unknown reward adds nothing: the UNet computes exactly what it would without the encoder.
    known: torch.Tensor | None = None


class RewardCrossAttention(nn.Module):
    """One BERT-style cross-attention layer: latent tokens (queries) attend to the reward tokens.

    Post-LayerNorm residual blocks as in BERT (the reference's ``ca``): attention -> dense -> dropout ->
    LayerNorm(x + .), then feed-forward (GELU) -> dropout -> LayerNorm(h + .). Attention runs through
    ``scaled_dot_product_attention`` (fused kernels where available).
    """

    def __init__(self, dim: int, heads: int = 8, ff_dim: int | None = None, eps: float = 1e-12, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ff_in = nn.Linear(dim, ff_dim or dim)
        self.ff_out = nn.Linear(ff_dim or dim, dim)
        self.ff_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, return_weights: bool = False):
        b, n, c = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, h, c // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(context)), split(self.value(context))
        weights = None
        if return_weights:  # the explicit form, to look at (notebook 03); same result as the fused kernel
            weights = torch.softmax(q @ k.transpose(-1, -2) / (c // h) ** 0.5, dim=-1)
            a = weights @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout.p if self.training else 0.0)
        a = a.transpose(1, 2).reshape(b, n, c)
        y = self.attn_norm(x + self.dropout(self.attn_out(a)))
        y = self.ff_norm(y + self.dropout(self.ff_out(F.gelu(self.ff_in(y)))))
        return (y, weights) if return_weights else y


class LatentRewardAttention(nn.Module):
    """GroupNorm -> 1x1 conv -> tokens -> cross-attention to the reward tokens -> 1x1 conv, plus a residual."""

    def __init__(self, dim: int, heads: int = 8, groups: int = 32, eps: float = 1e-12, ff_dim: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(dim, dim, kernel_size=1)
        self.attn = RewardCrossAttention(dim, heads, ff_dim, eps, dropout)
        self.proj_out = nn.Conv2d(dim, dim, kernel_size=1)
        self.last_weights: torch.Tensor | None = None  # filled when record_weights is True (notebook 03)
        self.record_weights = False

    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        x = self.proj_in(self.norm(h)).flatten(2).transpose(1, 2)  # (B, H*W, C)
        if self.record_weights:
            x, w = self.attn(x, tokens.to(x.dtype), return_weights=True)
            self.last_weights = w.detach()
        else:
            x = self.attn(x, tokens.to(x.dtype))
        x = x.transpose(1, 2).reshape(b, c, height, width)
        return h + self.proj_out(x)


class RewardEncoder(ModelMixin, ConfigMixin):
    """Turns (three scores, the pooled feedback-text embedding) into the UNet's extra conditions.

    Scores may be floats: the sinusoidal embedding is defined between integers too, which the reward knob
    of notebook 06 uses. ``text_embeds`` is the pooled output of the same frozen CLIP text encoder that
    reads the instruction, run on the three feedback texts joined by "; ".

    ``unknown_without_instruction`` records how the model was trained and is to be guided: its rewards were
    unknown (masked out) wherever the instruction was dropped, so the guidance branches without the
    instruction ("image only", "uncond") get unknown rewards too (:func:`~rewardedit_lib.guidance.guidance_branches`).
    The encoder's own computation does not read it; it travels in this config so that the trained model and
    its inference agree.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, rewards: str = "both", injection: str = "both", time_embed_dim: int = 1280,
                 block_dim: int = 320, text_dim: int = 768, score_embed_dim: int = 256, num_scores: int = 3,
                 heads: int = 8, norm_groups: int = 32, layer_norm_eps: float = 1e-12, ff_dim: int | None = None,
                 dropout: float = 0.1, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                 zero_init: bool = False, centered: bool = False, unknown_without_instruction: bool = False):
        super().__init__()
        if rewards not in REWARD_MODES:
            raise ValueError(f"rewards={rewards!r}: expected one of {', '.join(REWARD_MODES)}")
        if injection not in INJECTIONS:
            raise ValueError(f"injection={injection!r}: expected one of {', '.join(INJECTIONS)}")
        self.use_scores, self.use_text, self.to_time, self.to_latent = reward_routes(rewards, injection)
        if self.use_scores:
            self.score_proj = Timesteps(score_embed_dim, flip_sin_to_cos, freq_shift)
            if self.to_time:
                self.score_to_time = TimestepEmbedding(score_embed_dim * num_scores, time_embed_dim)
            if self.to_latent:
                self.score_to_token = TimestepEmbedding(score_embed_dim * num_scores, block_dim)
        if self.use_text:
            if self.to_time:
                self.text_to_time = nn.Linear(text_dim, time_embed_dim)
            if self.to_latent:
                self.text_to_token = nn.Linear(text_dim, block_dim)
        if self.to_latent:
            self.latent = LatentRewardAttention(block_dim, heads, norm_groups, layer_norm_eps, ff_dim, dropout)
        if centered:
            # The rewards a perfect edit is annotated with (set by the trainer, saved with the weights).
            self.register_buffer("reference_scores", torch.full((num_scores,), 5.0))
            self.register_buffer("reference_text", torch.zeros(text_dim))
        if zero_init:
            self.zero_outputs()

    @torch.no_grad()
    def zero_outputs(self) -> None:
        """Zero the last layer of every path into the UNet, so a fresh stage-2 model starts exactly as its
        stage-1 model (the paper starts from random init; the toy profile converges faster this way)."""
        for name in ("text_to_time",):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight), nn.init.zeros_(getattr(self, name).bias)
        if hasattr(self, "score_to_time"):
            nn.init.zeros_(self.score_to_time.linear_2.weight), nn.init.zeros_(self.score_to_time.linear_2.bias)
        if hasattr(self, "latent"):
            nn.init.zeros_(self.latent.proj_out.weight), nn.init.zeros_(self.latent.proj_out.bias)

    @torch.no_grad()
    def set_reference(self, scores: torch.Tensor, text_embeds: torch.Tensor | None) -> None:
        """The rewards of a perfect edit, at which a ``centered`` encoder adds nothing to the time embedding."""
        if not self.config.centered:
            raise ValueError("set_reference: this reward encoder is not centered (config centered=False)")
        self.reference_scores.copy_(scores.reshape(-1))
        if text_embeds is not None:
            self.reference_text.copy_(text_embeds.reshape(-1))

    def embed_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, 3) scores -> (B, 3 * score_embed_dim) sinusoidal embedding."""
        b = scores.shape[0]
        return self.score_proj(scores.reshape(-1).float()).reshape(b, -1)

    def forward(self, scores: torch.Tensor | None = None, text_embeds: torch.Tensor | None = None) -> RewardConditions:
        conditions = self._encode(scores, text_embeds)
        if self.config.centered and conditions.time is not None:
            # The time path measured from a perfect edit's rewards: at (5, 5, 5) in the perfect words the UNet's
            # time embedding is exactly its stage-1 one, so the rewards of perfect edits cannot blur its sense of
            # the noise level (a (5, 5, 5) vector as long as the time embedding itself does, uncentered).
            ref = self._encode(self.reference_scores[None], self.reference_text[None] if self.use_text else None)
            conditions.time = conditions.time - ref.time
        return conditions

    def _encode(self, scores: torch.Tensor | None, text_embeds: torch.Tensor | None) -> RewardConditions:
        time, tokens = None, []
        if self.use_scores:
            if scores is None:
                raise ValueError("this model is conditioned on reward scores: pass reward_scores (B, 3)")
            if scores.ndim != 2 or scores.shape[1] != self.config.num_scores:
                raise ValueError(f"reward_scores must have shape (B, {self.config.num_scores}), got {tuple(scores.shape)}")
            e = self.embed_scores(scores).to(self.dtype)
            if self.to_time:
                time = self.score_to_time(e)
            if self.to_latent:
                tokens.append(self.score_to_token(e))
        if self.use_text:
            if text_embeds is None:
                raise ValueError("this model is conditioned on reward feedback text: pass reward_text_embeds")
            t = text_embeds.to(self.dtype)
            if self.to_time:
                time = self.text_to_time(t) if time is None else time + self.text_to_time(t)
            if self.to_latent:
                tokens.append(self.text_to_token(t))
        return RewardConditions(time, torch.stack(tokens, dim=1) if tokens else None)


class RewardUNet(nn.Module):
    """A stock ``UNet2DConditionModel`` and a :class:`RewardEncoder`, composed with two forward hooks.

    ``forward`` takes the UNet's own arguments plus ``reward_scores`` (B, 3) and ``reward_text_embeds``
    (B, text_dim). Without a reward encoder (or with ``rewards="none"``) it is the plain UNet.
    """

    def __init__(self, unet: UNet2DConditionModel, reward: RewardEncoder | None = None):
        super().__init__()
        self.unet = unet
        self.reward = reward if reward is not None and reward.config.rewards != "none" else None
        self._conditions: RewardConditions | None = None
        self._hooks = []
        if self.reward is not None:
            if self.reward.to_time:
                self._hooks.append(unet.time_embedding.register_forward_hook(self._add_to_time_embedding))
            if self.reward.to_latent:
                self._hooks.append(unet.conv_in.register_forward_hook(self._inject_into_latent))

    # -- the two hooks ----------------------------------------------------------------------------
    def _current(self) -> RewardConditions:
        if self._conditions is None:
            raise RuntimeError("this UNet is reward-conditioned: call it through RewardUNet(...) with reward_scores / "
                               "reward_text_embeds, not the inner unet directly")
        return self._conditions

    @staticmethod
    def _match_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
        if x.shape[0] == batch:
            return x
        if batch % x.shape[0]:
            raise ValueError(f"reward batch {x.shape[0]} does not divide the UNet batch {batch}")
        return x.repeat_interleave(batch // x.shape[0], dim=0)

    def _known(self, batch: int, ndim: int, dtype: torch.dtype) -> torch.Tensor | None:
        known = self._current().known
        if known is None:
            return None
        return self._match_batch(known, batch).to(dtype).reshape(batch, *([1] * (ndim - 1)))

    def _add_to_time_embedding(self, module, inputs, emb: torch.Tensor) -> torch.Tensor:
        add = self._match_batch(self._current().time, emb.shape[0]).to(emb.dtype)
        known = self._known(emb.shape[0], add.ndim, emb.dtype)
        return emb + (add if known is None else add * known)

    def _inject_into_latent(self, module, inputs, h: torch.Tensor) -> torch.Tensor:
        tokens = self._match_batch(self._current().tokens, h.shape[0])
        out = self.reward.latent(h, tokens)
        known = self._known(h.shape[0], h.ndim, h.dtype)
        return out if known is None else h + (out - h) * known

    @contextmanager
    def conditioned(self, conditions: RewardConditions) -> Iterator[None]:
        self._conditions = conditions
        try:
            yield
        finally:
            self._conditions = None

    # -- the module API ---------------------------------------------------------------------------
    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                reward_scores: torch.Tensor | None = None, reward_text_embeds: torch.Tensor | None = None,
                reward_known: torch.Tensor | None = None, **unet_kwargs):
        """``reward_known`` (B,): 0 marks an example whose rewards are unknown (its scores / text are then
        ignored); a model trained with reward dropout learns to edit in that case too."""
        if self.reward is None:
            return self.unet(sample, timestep, encoder_hidden_states, **unet_kwargs)
        conditions = self.reward(reward_scores, reward_text_embeds)
        if reward_known is not None:
            conditions.known = reward_known
        with self.conditioned(conditions):
            return self.unet(sample, timestep, encoder_hidden_states, **unet_kwargs)

    def reward_parameters(self) -> int:
        return 0 if self.reward is None else sum(p.numel() for p in self.reward.parameters())

    def save_pretrained(self, path: str | Path, **kwargs) -> Path:
        """Write ``unet/`` (the diffusers layout, loadable by any diffusers code) and ``reward_encoder/``."""
        path = Path(path)
        self.unet.save_pretrained(path / UNET_SUBFOLDER, **kwargs)
        if self.reward is not None:
            self.reward.save_pretrained(path / REWARD_SUBFOLDER, **kwargs)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "RewardUNet":
        """Load what :meth:`save_pretrained` wrote (or a diffusers pipeline folder: no reward_encoder/ = stage 1)."""
        path = Path(path)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder=UNET_SUBFOLDER, **kwargs)
        reward = None
        if (path / REWARD_SUBFOLDER).is_dir():
            reward = RewardEncoder.from_pretrained(path, subfolder=REWARD_SUBFOLDER, **kwargs)
        return cls(unet, reward)
