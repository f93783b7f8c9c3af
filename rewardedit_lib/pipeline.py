"""Inference with reward conditions: diffusers' InstructPix2Pix pipeline, plus the rewards.

Why a subclass of ``StableDiffusionInstructPix2PixPipeline``: loading, saving, devices, offloading, the
image processor and the prompt checks are diffusers' own; only the denoising loop changes, because every
UNet call now also carries rewards. What the paper does at inference (and what the defaults do):

* Euler-ancestral, 30 steps, text guidance 7.5, image guidance 1.5 (diffusers' formula, in
  :mod:`~rewardedit_lib.guidance`);
* the same rewards in all three branches: scores (5, 5, 5) and, as feedback text, the sentence the training
  data uses for a perfect score (``"There are no noticeable negative aspects."`` three times, joined by
  "; ") -- not the reference code's ``"None; None; None"``, a text the model never saw in training.

Beyond the paper, optional **reward guidance** (:mod:`~rewardedit_lib.guidance`; default off).

Two configs, one pipeline: ``sd15`` denoises VAE latents (64 x 64 for a 512 px image); ``toy`` has no VAE
and denoises pixels directly (the "latents" are the image in [-1, 1], the source image is concatenated as
it is). A stage-1 model (no reward encoder) runs through the same code and ignores the rewards.

The UNet stays the stock diffusers class: the pipeline registers ``unet`` and ``reward_encoder`` as
separate components (so the folder holds ``unet/`` and ``reward_encoder/`` beside ``text_encoder/``,
``tokenizer/``, ``scheduler/`` and ``vae/``) and composes them with :class:`~rewardedit_lib.reward.RewardUNet`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from . import hub, models, text
from .guidance import (DEFAULT_IMAGE_GUIDANCE, DEFAULT_TEXT_GUIDANCE, LOW_REWARD_TEXT, LOW_SCORES, Branch,
                       combine_noise, guidance_branches)
from .reward import REWARD_SUBFOLDER, RewardEncoder, RewardUNet

#: The feedback text for a perfect score, as the training data writes it (the default ``reward_text``;
#: defined beside the configs' table, :data:`~rewardedit_lib.models.CONFIG_SETTINGS`).
DEFAULT_REWARD_TEXT = models.DEFAULT_REWARD_TEXT
PERFECT_SCORES: tuple[float, float, float] = (5.0, 5.0, 5.0)
#: The paper's number of denoising steps (sd15's in :data:`~rewardedit_lib.models.CONFIG_SETTINGS`; its
#: guidance scales: :mod:`~rewardedit_lib.guidance`).
DEFAULT_STEPS = models.CONFIG_SETTINGS["sd15"].num_inference_steps

#: Noise schedules per config, read from :data:`~rewardedit_lib.models.CONFIG_SETTINGS` (which says why).
#: The trainer noises with the schedule a model folder carries
#: (``DDPMScheduler.from_config(pipe.scheduler.config)``), so training and inference always agree.
SCHEDULER_CONFIGS: dict[str, dict[str, Any]] = {
    name: dict(s.noise_schedule) for name, s in models.CONFIG_SETTINGS.items()}
#: Stable Diffusion 1.5's VAE (for a randomly initialised sd15 pipeline: shapes and timings, no download).
SD15_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
#: sd15 edits at 512 px (the paper); the toy world keeps its images' own size (32 px). From the table.
DEFAULT_RESOLUTION: dict[str, int | None] = {
    name: s.default_resolution for name, s in models.CONFIG_SETTINGS.items()}


@dataclass
class EditConditions:
    """Everything a denoising step feeds the UNet, for all branches stacked branch-major (B per branch)."""

    branches: tuple[Branch, ...]
    prompt_embeds: torch.Tensor  # (n * B, L, D)
    image_latents: torch.Tensor  # (n * B, C, h, w): the source (zeros in "uncond")
    reward_scores: torch.Tensor | None  # (n * B, 3)
    reward_text_embeds: torch.Tensor | None  # (n * B, text_dim)
    reward_known: torch.Tensor | None = None  # (n * B,): 0 = rewards unknown (``reward_scores=None``)

    @property
    def batch_size(self) -> int:
        return self.prompt_embeds.shape[0] // len(self.branches)


def _as_rows(value, batch: int, what: str) -> list:
    """One value for every prompt (a single value is shared; a list must have one per prompt)."""
    if len(value) != batch:
        raise ValueError(f"{what}: got {len(value)} values for {batch} prompt(s)")
    return list(value)


def _scores_tensor(scores, batch: int) -> torch.Tensor:
    t = torch.as_tensor(scores, dtype=torch.float32)
    if t.ndim == 1:
        if t.shape[0] != 3:
            raise ValueError(f"reward_scores: expected 3 scores (following, preserving, quality), got {tuple(t.shape)}")
        t = t[None].expand(batch, 3)
    if t.ndim != 2 or t.shape != (batch, 3):
        raise ValueError(f"reward_scores: expected shape (3,) or ({batch}, 3), got {tuple(t.shape)}")
    return t


def instruct_pix2pix_size(width: int, height: int, resolution: int, multiple: int = 64) -> tuple[int, int]:
    """InstructPix2Pix's resize rule (its ``edit_cli.py``): scale so the longer side is ``resolution``, round
    the shorter side *up* to a multiple of ``multiple`` (64 for SD: the latent must halve three times), the
    longer side down (768 x 512 at 512 -> 576 x 384)."""
    factor = resolution / max(width, height)
    factor = math.ceil(min(width, height) * factor / multiple) * multiple / min(width, height)
    def side(x: int) -> int:
        return max(multiple, int(x * factor) // multiple * multiple)

    return side(width), side(height)


def _existing_composition(unet: UNet2DConditionModel) -> RewardUNet | None:
    """The :class:`RewardUNet` whose hooks already sit on ``unet`` (one UNet must never be hooked twice:
    the rewards would be added twice)."""
    for module in (unet.time_embedding, unet.conv_in):
        for hook in module._forward_hooks.values():
            owner = getattr(hook, "__self__", None)
            if isinstance(owner, RewardUNet):
                return owner
    return None


def compose(unet: UNet2DConditionModel, reward_encoder: RewardEncoder | None) -> RewardUNet:
    """The UNet with its reward encoder (reusing a composition that already exists for the pair)."""
    existing = _existing_composition(unet)
    wanted = reward_encoder if reward_encoder is not None and reward_encoder.config.rewards != "none" else None
    if existing is not None:
        if existing.reward is wanted:
            return existing
        raise ValueError("this UNet is already composed with another reward encoder (its hooks are on it); "
                         "pass that encoder, or a fresh copy of the UNet")
    return RewardUNet(unet, wanted)


class RewardEditPipeline(StableDiffusionInstructPix2PixPipeline):
    """InstructPix2Pix with multi-reward conditions (the paper's inference), for ``sd15`` and ``toy``.

    Components: ``vae`` (``None`` for the pixel-space toy), ``text_encoder``, ``tokenizer``, ``unet`` (a
    stock ``UNet2DConditionModel``), ``scheduler``, ``reward_encoder`` (``None`` for stage 1). Call it as
    diffusers' pipeline, plus ``reward_scores``, ``reward_text`` and ``reward_guidance_scale``.

    Five settings travel with a model (in ``model_index.json``): ``default_resolution``;
    ``default_reward_text``, the feedback text used when a call passes none (``None``: the training data's
    perfect-score sentence; the reference's weights record the ``"None; None; None"`` they were evaluated
    with); ``model_config``, the config it was built as ("toy" or "sd15"; folders written before it was
    recorded are told apart by their VAE); ``config_settings``, that config's entry of
    :data:`~rewardedit_lib.models.CONFIG_SETTINGS` when the folder was built (sampler, noise schedule, default
    edit settings, resolution, feedback texts, judging protocol; ``None`` in folders written before it was
    recorded: the kit reads the table, never a folder's copy); and ``failure_reward_text``, the failure
    sentence its training data uses most in each perspective (recorded by the trainer; ``None``: the generic
    :data:`~rewardedit_lib.guidance.LOW_REWARD_TEXT`), which the reward knob and low-reward guidance ask for:
    a model hears low rewards in the words it was trained on. Every latent-space (sd15) pipeline samples with
    Euler-ancestral, the paper's sampler, on the noise schedule of the scheduler it was given: a model trained
    from an SD 1.5 folder would otherwise keep that folder's PNDM. Assign ``pipe.scheduler`` after construction to sample otherwise on purpose.
    """

    model_cpu_offload_seq = "text_encoder->reward_encoder->unet->vae"
    _optional_components = ["vae", "reward_encoder", "safety_checker", "feature_extractor", "image_encoder"]

    def __init__(self, vae: AutoencoderKL | None, text_encoder, tokenizer, unet: UNet2DConditionModel, scheduler,
                 reward_encoder: RewardEncoder | None = None, safety_checker=None, feature_extractor=None,
                 image_encoder=None, requires_safety_checker: bool = False, default_resolution: int | None = None,
                 default_reward_text: str | None = None, failure_reward_text: str | None = None,
                 model_config: str | None = None, config_settings: dict[str, Any] | None = None):
        if vae is not None:
            scheduler = paper_sampler(scheduler)
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                         safety_checker=safety_checker, feature_extractor=feature_extractor,
                         image_encoder=image_encoder, requires_safety_checker=requires_safety_checker)
        self.register_modules(reward_encoder=reward_encoder)
        self.register_to_config(default_resolution=default_resolution, default_reward_text=default_reward_text,
                                failure_reward_text=failure_reward_text, model_config=model_config,
                                config_settings=config_settings)
        if vae is None:  # pixel space: one "latent" pixel per image pixel, values in [-1, 1]
            self.vae_scale_factor = 1
            self.image_processor = VaeImageProcessor(vae_scale_factor=1)
        self._composed: RewardUNet | None = None

    # -- the model ---------------------------------------------------------------------------------
    @property
    def reward_unet(self) -> RewardUNet:
        """``unet`` and ``reward_encoder`` composed (rebuilt if either component was replaced)."""
        c = self._composed
        wanted = self.reward_encoder if self.reward_encoder is not None and \
            self.reward_encoder.config.rewards != "none" else None
        if c is None or c.unet is not self.unet or c.reward is not wanted:
            self._composed = compose(self.unet, self.reward_encoder)
        return self._composed

    @property
    def inference_reward_text(self) -> str:
        """The feedback text a call without ``reward_text`` feeds: the model's recorded default, else the
        training data's perfect-score sentence (:data:`DEFAULT_REWARD_TEXT`)."""
        return getattr(self.config, "default_reward_text", None) or DEFAULT_REWARD_TEXT

    @property
    def low_reward_text(self) -> str:
        """The feedback text of low rewards: the model's recorded ``failure_reward_text`` (its training data's
        most frequent failure sentence per perspective, joined by "; "), else :data:`LOW_REWARD_TEXT`."""
        return getattr(self.config, "failure_reward_text", None) or LOW_REWARD_TEXT

    @property
    def uses_rewards(self) -> bool:
        return self.reward_unet.reward is not None

    @property
    def rewards_without_instruction(self) -> str:
        """What the guidance branches without the instruction carry: ``"unknown"`` for a model trained with its
        rewards unknown wherever the instruction was dropped (recorded in its reward encoder's config), else the
        requested rewards (the paper)."""
        reward = self.reward_unet.reward
        return "unknown" if reward is not None and reward.config.unknown_without_instruction else "requested"

    @property
    def latent_channels(self) -> int:
        return self.unet.config.out_channels

    # -- conditions --------------------------------------------------------------------------------
    def encode_source(self, image: torch.Tensor) -> torch.Tensor:
        """Source image (B, 3, H, W) in [-1, 1] -> what the UNet concatenates: the VAE latent's mode (not
        scaled, as InstructPix2Pix trains it), or the image itself in pixel space."""
        if self.vae is None:
            return image
        return self.vae.encode(image).latent_dist.mode()

    def _image_tensor(self, image, resolution: int | None, height: int | None, width: int | None) -> torch.Tensor:
        resolution = resolution if resolution is not None else self.config.default_resolution
        if height is None and width is None and resolution is not None:
            first = image[0] if isinstance(image, list) else image
            if isinstance(first, PIL.Image.Image):
                w, h = first.size
            elif isinstance(first, np.ndarray):
                h, w = first.shape[-3:-1] if first.ndim >= 3 and first.shape[-1] in (1, 3, 4) else first.shape[-2:]
            else:
                h, w = first.shape[-2:]
            width, height = instruct_pix2pix_size(w, h, resolution, 8 * self.vae_scale_factor)
        return self.image_processor.preprocess(image, height=height, width=width)

    def encode_rewards(self, scores, feedback: str | Sequence[str], batch: int,
                       device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3) scores and the (B, text_dim) pooled feedback embedding (``None`` if the model reads no text)."""
        s = _scores_tensor(scores, batch).to(device)
        texts = [feedback] * batch if isinstance(feedback, str) else _as_rows(feedback, batch, "reward_text")
        if not self.reward_unet.reward.use_text:
            return s, None
        pooled = text.encode_text(self.tokenizer, self.text_encoder, texts, device).pooled
        return s, pooled

    def prepare_conditions(self, prompt: str | list[str] | None, image, reward_scores=PERFECT_SCORES,
                           reward_text: str | Sequence[str] | None = None, *,
                           guidance_scale: float = DEFAULT_TEXT_GUIDANCE,
                           image_guidance_scale: float = DEFAULT_IMAGE_GUIDANCE, reward_guidance_scale: float = 0.0,
                           low_reward_scores=LOW_SCORES, low_reward_text: str | Sequence[str] | None = None,
                           negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                           prompt_embeds: torch.Tensor | None = None, resolution: int | None = None,
                           height: int | None = None, width: int | None = None) -> EditConditions:
        """Encode instruction, source image and rewards once, for every branch of :func:`guidance_branches`."""
        device = self._execution_device
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        batch = len(prompts) if prompts is not None else prompt_embeds.shape[0]
        if reward_guidance_scale and not self.uses_rewards:
            warnings.warn("reward_guidance_scale is ignored: this model has no reward encoder (stage 1)", stacklevel=3)
            reward_guidance_scale = 0.0
        branches = guidance_branches(guidance_scale, image_guidance_scale, reward_guidance_scale,
                                     self.rewards_without_instruction)
        n = num_images_per_prompt

        def per_image(x: torch.Tensor) -> torch.Tensor:  # prompt i's n images sit together, as diffusers orders them
            return x.repeat_interleave(n, dim=0)

        dtype = self.unet.dtype  # the UNet reads the text states in its own precision
        cond = prompt_embeds if prompt_embeds is not None else \
            text.encode_text(self.tokenizer, self.text_encoder, prompts, device).hidden_states
        cond = cond.to(device, dtype)
        negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) or negative_prompt is None \
            else _as_rows(negative_prompt, batch, "negative_prompt")
        uncond = None
        if any(not b.instruction for b in branches):  # "" is the null text InstructPix2Pix trains with
            uncond = text.encode_text(self.tokenizer, self.text_encoder, [x or "" for x in negatives],
                                      device).hidden_states.to(dtype)

        pixels = self._image_tensor(image, resolution, height, width).to(device=device, dtype=dtype)
        if pixels.shape[0] not in (1, batch):
            raise ValueError(f"{pixels.shape[0]} images for {batch} prompts: pass one image, or one per prompt")
        source = self.encode_source(pixels.to(self.vae.dtype) if self.vae is not None else pixels).to(dtype)
        source = source.expand(batch, *source.shape[1:]) if source.shape[0] == 1 else source

        scores = texts = low_scores = low_texts = known = None
        if self.uses_rewards and reward_scores is None:  # rewards unknown: the reward encoder adds nothing
            scores, texts = self.encode_rewards(LOW_SCORES, "", batch, device)
            known = torch.zeros(len(branches) * batch * n, device=device)
            if any(b.rewards == "low" for b in branches):
                raise ValueError("reward guidance needs known rewards: pass reward_scores, or reward_guidance_scale=0")
        elif self.uses_rewards:
            feedback = self.inference_reward_text if reward_text is None else reward_text
            scores, texts = self.encode_rewards(reward_scores, feedback, batch, device)
            known_in = {"requested": 1.0, "unknown": 0.0, "low": 1.0}  # an unknown branch's rows are masked out
            if any(b.rewards == "low" for b in branches):
                if low_reward_scores is None:  # the contrast is "rewards unknown"
                    low_scores, low_texts, known_in["low"] = scores, texts, 0.0
                else:
                    low_texts = self.low_reward_text if low_reward_text is None else low_reward_text
                    low_scores, low_texts = self.encode_rewards(low_reward_scores, low_texts, batch, device)
            if any(known_in[b.rewards] == 0.0 for b in branches):
                known = torch.cat([torch.full((batch * n,), known_in[b.rewards], device=device) for b in branches])

        parts: dict[str, list[torch.Tensor]] = {"p": [], "i": [], "s": [], "t": []}
        for b in branches:
            parts["p"].append(per_image(cond if b.instruction else uncond))
            parts["i"].append(per_image(source if b.image else torch.zeros_like(source)))
            if scores is not None:
                parts["s"].append(per_image(low_scores if b.rewards == "low" else scores))
                if texts is not None:
                    parts["t"].append(per_image(low_texts if b.rewards == "low" else texts))
        return EditConditions(branches, torch.cat(parts["p"]), torch.cat(parts["i"]),
                              torch.cat(parts["s"]) if parts["s"] else None,
                              torch.cat(parts["t"]).to(dtype) if parts["t"] else None, known)

    # -- one step ----------------------------------------------------------------------------------
    def branch_noise(self, latents: torch.Tensor, t, conditions: EditConditions,
                     cross_attention_kwargs: dict | None = None) -> dict[str, torch.Tensor]:
        """The UNet's noise prediction of every branch, in one batched call (keyed by branch name)."""
        n = len(conditions.branches)
        x = self.scheduler.scale_model_input(torch.cat([latents] * n), t)
        x = torch.cat([x, conditions.image_latents], dim=1)
        rewards = {} if not self.uses_rewards else dict(reward_scores=conditions.reward_scores,
                                                        reward_text_embeds=conditions.reward_text_embeds,
                                                        reward_known=conditions.reward_known)
        eps = self.reward_unet(x, t, conditions.prompt_embeds, **rewards, cross_attention_kwargs=cross_attention_kwargs,
                               return_dict=False)[0]
        return {b.name: e for b, e in zip(conditions.branches, eps.chunk(n))}

    def predict_noise(self, latents: torch.Tensor, t, conditions: EditConditions,
                      guidance_scale: float = DEFAULT_TEXT_GUIDANCE,
                      image_guidance_scale: float = DEFAULT_IMAGE_GUIDANCE, reward_guidance_scale: float = 0.0,
                      cross_attention_kwargs: dict | None = None) -> torch.Tensor:
        """The guided noise of one denoising step (:func:`combine_noise` of :meth:`branch_noise`)."""
        preds = self.branch_noise(latents, t, conditions, cross_attention_kwargs)
        return combine_noise(preds, guidance_scale, image_guidance_scale, reward_guidance_scale)

    # -- the call ----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, image=None, reward_scores=PERFECT_SCORES,
                 reward_text: str | Sequence[str] | None = None, num_inference_steps: int = DEFAULT_STEPS,
                 guidance_scale: float = DEFAULT_TEXT_GUIDANCE, image_guidance_scale: float = DEFAULT_IMAGE_GUIDANCE,
                 reward_guidance_scale: float = 0.0, low_reward_scores=LOW_SCORES,
                 low_reward_text: str | Sequence[str] | None = None, negative_prompt: str | list[str] | None = None,
                 num_images_per_prompt: int = 1, eta: float = 0.0,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
                 prompt_embeds: torch.Tensor | None = None, resolution: int | None = None, height: int | None = None,
                 width: int | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 cross_attention_kwargs: dict | None = None):
        """Edit ``image`` by ``prompt`` under reward conditions.

        ``reward_scores``: three scores (following, preserving, quality), or one triple per prompt; floats
        are allowed; ``None`` = rewards unknown (meaningful for a model trained with reward dropout).
        ``reward_text``: the feedback text (default: :attr:`inference_reward_text`), one string or one per
        prompt. ``reward_guidance_scale`` > 0 adds the contrast branch: ``low_reward_scores`` /
        ``low_reward_text`` (default :attr:`low_reward_text`), or rewards unknown where ``low_reward_scores``
        is ``None``. ``resolution``: edit size (InstructPix2Pix's rule, longer side about this many pixels); ``None`` = the pipeline's default (512 for sd15, the image's own
        size for toy); ``height`` / ``width`` set it exactly. ``output_type``: "pil", "np", "pt" or "latent".
        The same ``generator`` gives the same images.
        """
        if image is None:
            raise ValueError("`image` (the source image to edit) is required")
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in ("latents",)]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs: only 'latents' is available, got {bad}")
        self._guidance_scale, self._image_guidance_scale = guidance_scale, image_guidance_scale
        conditions = self.prepare_conditions(
            prompt, image, reward_scores, reward_text, guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale, reward_guidance_scale=reward_guidance_scale,
            low_reward_scores=low_reward_scores, low_reward_text=low_reward_text, negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt, prompt_embeds=prompt_embeds, resolution=resolution,
            height=height, width=width)
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        b = conditions.batch_size
        shape = (b, self.latent_channels, *conditions.image_latents.shape[-2:])
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=conditions.prompt_embeds.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma
        extra = self.prepare_extra_step_kwargs(generator, eta)

        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                noise = self.predict_noise(latents, t, conditions, guidance_scale, image_guidance_scale,
                                           reward_guidance_scale, cross_attention_kwargs)
                latents = self.scheduler.step(noise, t, latents, **extra, return_dict=False)[0]
                if callback_on_step_end is not None:
                    out = callback_on_step_end(self, i, t, {"latents": latents})
                    latents = out.pop("latents", latents)
                bar.update()

        if output_type == "latent":
            images = latents
        else:
            pixels = latents if self.vae is None else \
                self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor, return_dict=False)[0]
            images = self.image_processor.postprocess(pixels.float().clamp(-1, 1), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, None)
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: RewardUNet, tokenizer, text_encoder, scheduler=None, vae: AutoencoderKL | None = None,
                   name: str = "toy") -> "RewardEditPipeline":
        """A pipeline around a :class:`RewardUNet` (e.g. the one a trainer just trained)."""
        settings = models.config_settings(name)
        scheduler = scheduler or scheduler_for(name)
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=model.unet, scheduler=scheduler,
                   reward_encoder=model.reward, default_resolution=settings.default_resolution, model_config=name,
                   config_settings=settings.to_json())
        pipe._composed = model
        return pipe

    @classmethod
    def from_instruct_pix2pix(cls, pretrained: str | Path = hub.INSTRUCTPIX2PIX_MODEL,
                              reward_encoder: RewardEncoder | str | Path | None = "auto",
                              scheduler: str | None = "euler_ancestral", resolution: int | None = 512,
                              torch_dtype: torch.dtype | None = None, **kwargs) -> "RewardEditPipeline":
        """The sd15 pipeline from a diffusers InstructPix2Pix folder or hub id (e.g. a stage-1 model), with a
        reward encoder for stage 2.

        ``pretrained``: a folder, or a hub id ``owner/name[/subfolder]``, downloaded first with only the files
        the kit reads (:func:`hub.resolve_model`), e.g. :data:`hub.RELEASED_STAGE2`, the authors' weights.

        The reference code's folders (the released weights) load with their rewards: a ``unet/`` whose
        weights carry the reference's reward modules (``add_embedding``, ``text_linear``, ``proj_deal``,
        ``ca`` ...) is converted into the stock UNet and a :class:`RewardEncoder`
        (:func:`models.load_reference_unet`), and the model records the feedback text the reference samples
        with (:data:`hub.REFERENCE_REWARD_TEXT`) as its ``default_reward_text``. A UNet weight key that is
        neither the stock UNet's nor a reward module's is an error naming it (diffusers would only log it).

        ``reward_encoder`` (for kit folders): ``"auto"`` = the folder's ``reward_encoder/`` if it has one (a
        folder this class saved lists it in ``model_index.json``; a plain InstructPix2Pix folder with a
        ``reward_encoder/`` added beside works too), else none (stage 1); a path to a saved
        :class:`RewardEncoder` (the folder itself, or one holding ``reward_encoder/``); a module; or ``None``.
        The safety checker is not loaded. ``scheduler``: every sd15 pipeline samples with Euler-ancestral
        (see the class); ``"euler_ancestral"`` also converts a pixel-space model's scheduler where it can,
        ``None`` leaves a pixel-space model's as it is.
        """
        if scheduler not in ("euler_ancestral", None):
            raise ValueError(f"scheduler={scheduler!r}: use 'euler_ancestral', or None to keep a pixel-space "
                             f"model's")
        folder = hub.resolve_model(pretrained)
        explicit = reward_encoder if isinstance(reward_encoder, RewardEncoder) else None
        reference = None
        if "unet" not in kwargs and (folder / "unet" / "config.json").exists():
            if models.inspect_unet_folder(folder / "unet")["reward"]:
                if reward_encoder != "auto":
                    raise ValueError(f"{folder / 'unet'} carries the reference's reward modules; "
                                     f"reward_encoder={reward_encoder!r} would replace or drop them "
                                     f"(pass reward_encoder='auto')")
                reference = models.load_reference_unet(folder / "unet", torch_dtype)
                kwargs.update(unet=reference.unet, reward_encoder=reference.reward)
        if explicit is not None:
            kwargs["reward_encoder"] = explicit
        pipe = cls.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False, torch_dtype=torch_dtype, **kwargs)
        if reference is None and explicit is None and pipe.reward_encoder is None and reward_encoder is not None:
            enc = _load_reward_encoder(folder if reward_encoder == "auto" else reward_encoder,
                                       required=reward_encoder != "auto", torch_dtype=torch_dtype)
            if enc is not None:
                pipe.register_modules(reward_encoder=enc.to(pipe.unet.device))
        if scheduler == "euler_ancestral":
            pipe.scheduler = paper_sampler(pipe.scheduler)
        name = "toy" if pipe.vae is None else "sd15"
        pipe.register_to_config(default_resolution=resolution, model_config=name,
                                config_settings=models.config_settings(name).to_json())
        if reference is not None:
            pipe.register_to_config(default_reward_text=hub.REFERENCE_REWARD_TEXT)
        return pipe


def _load_reward_encoder(where: str | Path, required: bool, torch_dtype=None) -> RewardEncoder | None:
    kw = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    path = Path(where)
    if path.is_dir():
        if (path / REWARD_SUBFOLDER / "config.json").exists():
            return RewardEncoder.from_pretrained(path, subfolder=REWARD_SUBFOLDER, **kw)
        if (path / "config.json").exists() and required:
            return RewardEncoder.from_pretrained(path, **kw)
        if required:
            raise FileNotFoundError(f"no reward encoder in {path} (expected config.json or {REWARD_SUBFOLDER}/)")
        return None
    try:  # a hub id
        return RewardEncoder.from_pretrained(str(where), subfolder=REWARD_SUBFOLDER, **kw)
    except (OSError, EnvironmentError, ValueError):
        if required:
            raise
        return None


# --------------------------------------------------------------------------------------------------
# Randomly initialised pipelines (no download)
# --------------------------------------------------------------------------------------------------
#: The DDIM ``eta`` an edit uses per model config: how much fresh noise each step adds (0: deterministic
#: DDIM; 1: ancestral, the DDPM posterior). The paper samples with Euler-ancestral, which sd15 uses (it takes
#: no eta); the toy model predicts the clean image, which Euler-ancestral does not implement, so the toy runs
#: DDIM and eta 1 makes it ancestral too. Read from :data:`~rewardedit_lib.models.CONFIG_SETTINGS` (the
#: measurement behind the toy's 1 is there).
SAMPLER_ETA: dict[str, float] = {name: s.eta for name, s in models.CONFIG_SETTINGS.items()}


def paper_sampler(scheduler):
    """Euler-ancestral (the paper's sampler) on ``scheduler``'s noise schedule. Returned as it is: ``None``,
    a scheduler that already is Euler-ancestral, and one whose model predicts something Euler-ancestral does
    not implement (the toy's "sample")."""
    if scheduler is None or isinstance(scheduler, EulerAncestralDiscreteScheduler):
        return scheduler
    if scheduler.config.get("prediction_type", "epsilon") not in ("epsilon", "v_prediction"):
        return scheduler
    return EulerAncestralDiscreteScheduler.from_config(scheduler.config)


def scheduler_for(name: str = "toy"):
    """The inference scheduler of a config on the config's noise schedule (both from
    :data:`~rewardedit_lib.models.CONFIG_SETTINGS`): Euler-ancestral (the paper's) for sd15; DDIM for toy,
    because diffusers' Euler-ancestral does not implement "sample" prediction (edits pass
    :data:`SAMPLER_ETA`'s 1.0 to make its steps ancestral)."""
    settings = models.config_settings(name)
    return _SAMPLERS[settings.sampler](**settings.noise_schedule)


#: The sampler classes :data:`~rewardedit_lib.models.CONFIG_SETTINGS` names.
_SAMPLERS = {cls.__name__: cls for cls in (DDIMScheduler, EulerAncestralDiscreteScheduler)}


def random_pipeline(name: str = "toy", seed: int = 0, stage: int = 2, rewards: str = "both",
                    injection: str = "both", device: torch.device | str | None = None,
                    **reward_overrides: Any) -> RewardEditPipeline:
    """A pipeline of config ``name`` with random weights and the offline toy tokenizer.

    ``toy``: the pixel-space toy UNet, a tiny CLIP text encoder (width 64), no VAE. ``sd15``: Stable
    Diffusion 1.5's UNet, VAE and CLIP ViT-L/14 text-encoder shapes (width 768, 12 layers) over the toy
    vocabulary -- real shapes and costs without a download, for notebooks and benchmarks; to edit real
    photos load weights with :meth:`RewardEditPipeline.from_instruct_pix2pix`. ``device``: where to build
    (on a GPU, SD 1.5's weights initialise in seconds).
    """
    with torch.device(device or "cpu"):
        model = models.build(name, stage=stage, rewards=rewards, injection=injection, seed=seed, **reward_overrides)
        if not models.config_settings(name).latent_space:
            tokenizer, encoder = text.toy_text_encoder(seed)
            vae = None
        else:
            tokenizer, encoder = text.toy_text_encoder(seed, hidden_size=768, layers=12, heads=12)
            torch.manual_seed(seed)
            vae = AutoencoderKL(**SD15_VAE_CONFIG).eval()
    pipe = RewardEditPipeline.from_model(model.eval(), tokenizer, encoder, scheduler_for(name), vae, name)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def toy_pipeline(seed: int = 0, stage: int = 2, rewards: str = "both", injection: str = "both",
                 **reward_overrides: Any) -> RewardEditPipeline:
    """The toy pipeline with random weights: pixel space, 32 px, runs on a CPU."""
    return random_pipeline("toy", seed, stage, rewards, injection, **reward_overrides)


# --------------------------------------------------------------------------------------------------
# Looking inside one step (notebook 03)
# --------------------------------------------------------------------------------------------------
def one_step_inputs(pipe: RewardEditPipeline, image, prompt: str, reward_scores=PERFECT_SCORES,
                    reward_text: str | None = None, timestep: int = 500,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, EditConditions]:
    """The inputs of one UNet call without guidance, as training sees it: the source noised to ``timestep``
    (the trainer noises the edited image; the source stands in for it here), its timestep, its conditions."""
    conditions = pipe.prepare_conditions(prompt, image, reward_scores, reward_text, guidance_scale=1.0)
    source = conditions.image_latents
    if pipe.vae is not None:
        source = source * pipe.vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(source.shape, generator=g).to(source.device, source.dtype)
    t = torch.tensor([timestep], device=source.device)
    noisy = DDPMScheduler.from_config(pipe.scheduler.config).add_noise(source, noise, t)
    return noisy, t, conditions


_ROLE = {
    "reward.score_proj": "sinusoidal embedding of each score (then concatenated)",
    "reward.score_to_time": "MLP: scores -> time-embedding width",
    "reward.score_to_token": "MLP: scores -> the reward token",
    "reward.text_to_time": "Linear: pooled feedback -> time-embedding width",
    "reward.text_to_token": "Linear: pooled feedback -> the text token",
    "unet.conv_in": "conv_in on [noisy | source]",
    "reward.latent.norm": "GroupNorm",
    "reward.latent.proj_in": "1x1 conv in (then flattened to tokens)",
    "reward.latent.attn": "cross-attention: latent tokens -> [reward, text] tokens",
    "reward.latent.proj_out": "1x1 conv out (added back: residual)",
    "unet.time_proj": "sinusoidal embedding of the timestep",
    "unet.time_embedding": "time MLP (+ rewards, by hook)",
    "unet.mid_block": "middle block",
    "unet.conv_out": "output: predicted noise",
}


def _shape(x) -> tuple[int, ...] | None:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return tuple(x[0].shape)
    return None


@torch.no_grad()
def trace_shapes(pipe: RewardEditPipeline, image, prompt: str, reward_scores=PERFECT_SCORES,
                 reward_text: str | None = None, timestep: int = 500) -> list[tuple[str, str, str, str]]:
    """The tensors through each module for one example and one UNet call (no guidance), in call order:
    ``(module, role, input shape, output shape)``. The text-encoder rows come first."""
    feedback = pipe.inference_reward_text if reward_text is None else reward_text
    ids_i, ids_f = text.tokenize(pipe.tokenizer, prompt), text.tokenize(pipe.tokenizer, feedback)
    hidden, _ = text.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
    _, pooled = text.encode_text(pipe.tokenizer, pipe.text_encoder, feedback)
    fmt = lambda s: "x".join(map(str, s)) if s else "-"  # noqa: E731
    rows = [("tokenizer", "instruction -> token ids", "1 text", fmt(ids_i.shape)),
            ("text_encoder", "hidden states -> UNet cross-attention", fmt(ids_i.shape), fmt(hidden.shape)),
            ("tokenizer", "feedback text -> token ids", "1 text", fmt(ids_f.shape)),
            ("text_encoder", "pooled (end-of-text token) -> reward encoder", fmt(ids_f.shape), fmt(pooled.shape))]
    noisy, t, cond = one_step_inputs(pipe, image, prompt, reward_scores, reward_text, timestep)
    model = pipe.reward_unet
    names = ["reward.score_proj", "reward.score_to_time", "reward.score_to_token", "reward.text_to_time",
             "reward.text_to_token", "unet.time_proj", "unet.time_embedding", "unet.conv_in", "reward.latent.norm",
             "reward.latent.proj_in", "reward.latent.attn", "reward.latent.proj_out"]
    names += [f"unet.down_blocks.{i}" for i in range(len(model.unet.down_blocks))] + ["unet.mid_block"]
    names += [f"unet.up_blocks.{i}" for i in range(len(model.unet.up_blocks))] + ["unet.conv_out"]
    modules = dict(model.named_modules())
    calls: list[tuple[str, str, str, str]] = []
    handles = []
    for name in names:
        if name not in modules:
            continue

        def hook(module, args, kwargs, out, name=name):
            inp = _shape(args[0]) if args else _shape(kwargs.get("hidden_states"))
            role = _ROLE.get(name) or ("down block" if "down_blocks" in name else "up block")
            calls.append((name, role, fmt(inp), fmt(_shape(out))))

        # prepend: run before RewardUNet's own hooks, so conv_in is listed before the reward attention it feeds
        handles.append(modules[name].register_forward_hook(hook, with_kwargs=True, prepend=True))
    x = torch.cat([noisy, cond.image_latents], dim=1)
    try:
        rewards = {} if not pipe.uses_rewards else dict(reward_scores=cond.reward_scores,
                                                        reward_text_embeds=cond.reward_text_embeds)
        both = f"{fmt(noisy.shape)} + {fmt(cond.image_latents.shape)}"
        rows.append(("(input)", "[noisy | source] concatenated", both, fmt(x.shape)))
        model(x, t, cond.prompt_embeds, **rewards)
    finally:
        for h in handles:
            h.remove()
    return rows + calls


@torch.no_grad()
def reward_attention(pipe: RewardEditPipeline, image, prompt: str, reward_scores=PERFECT_SCORES,
                     reward_text: str | None = None, timestep: int = 500) -> torch.Tensor:
    """Attention of the latent tokens over the reward tokens in one UNet call (no guidance):
    ``(heads, H, W, n_tokens)`` for the first example, tokens in the order [reward token, text token]."""
    model = pipe.reward_unet
    if model.reward is None or not model.reward.to_latent:
        raise ValueError("this model has no latent-space reward attention (stage 1, or injection='time')")
    noisy, t, cond = one_step_inputs(pipe, image, prompt, reward_scores, reward_text, timestep)
    latent = model.reward.latent
    latent.record_weights, latent.last_weights = True, None
    try:
        model(torch.cat([noisy, cond.image_latents], dim=1), t, cond.prompt_embeds,
              reward_scores=cond.reward_scores, reward_text_embeds=cond.reward_text_embeds)
    finally:
        latent.record_weights = False
    w = latent.last_weights[0]  # (heads, H*W, n_tokens)
    h, wd = noisy.shape[-2:]  # conv_in keeps the spatial size
    return w.reshape(w.shape[0], h, wd, w.shape[-1]).float().cpu()
