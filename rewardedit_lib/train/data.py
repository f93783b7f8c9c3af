"""The training data: triplets read from an InstructPix2Pix folder (with their rewards) and turned into
tensors, the frozen parts precomputed once.

What is never computed: the frozen parts run once, before training, when ``cache=True`` (VAE latents and
text embeddings; the toy world has no VAE) -- and nothing whose output is unused (the reference runs a
CLIP ViT-H image encoder every step and never reads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from diffusers.image_processor import VaeImageProcessor

from .. import text
from ..formats import DataError, Loaded, Triplet, read_instructpix2pix
from .components import Components
from .config import TrainConfig
from .errors import TrainingError


def load_triplets(data_dir: str | Path, rewards_path: str | Path | None, config: TrainConfig) -> list[Triplet]:
    """The training triplets, with rewards when the run uses them.

    A folder without a rewards entry is an error naming it (``missing_rewards="error"``), or is skipped and
    reported (``"skip"``). Stage 1 and the no-reward baseline need no rewards file.
    """
    if config.uses_rewards and rewards_path is None:
        raise TrainingError("stage 2 with rewards needs a rewards file (--rewards REWARDS.json); "
                            "the no-reward baseline is --rewards-mode none")
    loaded: Loaded[list[Triplet]] = read_instructpix2pix(
        data_dir, rewards=rewards_path if config.uses_rewards else None, require_rewards=config.uses_rewards,
        on_error="skip" if config.missing_rewards == "skip" else "raise")
    if loaded.skipped:
        print(f"[train] {loaded.report()}")
    if not loaded.items:
        raise TrainingError(f"no training triplets in {data_dir}")
    return loaded.items


#: Images <-> tensors in training, through diffusers' ``VaeImageProcessor`` as the inference pipeline's
#: ``image_processor``: ``preprocess`` (RGB uint8 -> [-1, 1]: ``x / 255 * 2 - 1``, bit for bit the old
#: ``x / 127.5 - 1``), ``resize`` and ``postprocess`` (the validation grids). ``resample="bicubic"``: the
#: resampling training always used (the processor's default is lanczos). ``do_resize=False``: ``preprocess``
#: leaves the size alone; :func:`image_tensor` resizes and crops first.
IMAGE_PROCESSOR = VaeImageProcessor(vae_scale_factor=1, resample="bicubic", do_resize=False)


def image_tensor(image, resolution: int | None) -> torch.Tensor:
    """A PIL image -> (3, H, W) float in [-1, 1]; resized (shorter side, bicubic) and centre-cropped to a square.

    The size and the crop are computed here, not by the processor's ``resize_mode="crop"``: that one floors the
    longer side (this rounds it) and centres an odd margin the other way, so a non-square image would come out
    shifted or scaled by a pixel."""
    image = image.convert("RGB")
    if resolution is not None:
        w, h = image.size
        s = resolution / min(w, h)
        if s != 1:
            image = IMAGE_PROCESSOR.resize(image, height=max(resolution, round(h * s)),
                                           width=max(resolution, round(w * s)))
        w, h = image.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    return IMAGE_PROCESSOR.preprocess(image)[0]


class TrainingData:
    """The triplets as tensors, the frozen parts precomputed.

    Text: each distinct instruction's hidden states and each distinct feedback text's pooled vector, once.
    Images: with a VAE and ``cache=True``, the source latent (the mode, unscaled, as the pipeline reads it)
    and the edited latent's mean and std (a fresh sample each step, as the uncached recipe draws one); in
    pixel space (toy) the images themselves. With ``cache=False`` the images are read and VAE-encoded per
    step (the reference recipe, for comparison).

    ``store``: where the caches live -- the training device, or the CPU when they would not fit beside the
    run (:func:`rewardedit_lib.memory.cache_device`: ~20K distinct instructions are 2.2 GiB); a micro-batch
    then gathers its rows (about 1 MB) and copies them over. Not pinned: pinning gigabytes of a Colab host
    would speed up a copy that already takes well under a millisecond.
    """

    def __init__(self, triplets: Sequence[Triplet], comp: Components, config: TrainConfig,
                 device: torch.device, batch: int = 16, store: torch.device | None = None):
        self.triplets = list(triplets)
        self.config = config
        self.device = device
        self.store = store or device
        self.vae = comp.vae
        self.scaling = comp.vae.config.scaling_factor if comp.vae is not None else 1.0
        self.n = len(self.triplets)
        # half precision only where the model runs under autocast (a float32 run needs float32 inputs)
        dtype = torch.float16 if device.type == "cuda" and config.mixed_precision != "no" else torch.float32
        with torch.no_grad():
            instructions = sorted({t.instruction for t in self.triplets})
            self._instr_index = {s: i for i, s in enumerate(instructions)}
            self.hidden = self._encode(comp, instructions, batch, pooled=False, dtype=dtype)
            self.null_hidden = text.encode_text(comp.tokenizer, comp.text_encoder, [""], device).hidden_states.to(dtype)
            self.instr_idx = torch.tensor([self._instr_index[t.instruction] for t in self.triplets], device=self.store)
            self.scores = self.pooled = self.fb_idx = None
            if config.uses_rewards:
                self.scores = torch.tensor([list(t.rewards.scores) for t in self.triplets], dtype=torch.float32,
                                           device=device)
                feedbacks = sorted({t.rewards.text for t in self.triplets})
                fb_index = {s: i for i, s in enumerate(feedbacks)}
                self.pooled = self._encode(comp, feedbacks, batch, pooled=True, dtype=dtype)
                self.fb_idx = torch.tensor([fb_index[t.rewards.text] for t in self.triplets], device=self.store)
            self.source = self.edited = None
            if config.cache:
                self.source, self.edited = self._encode_images(range(self.n), batch, to=self.store)
            #: The size the UNet denoises (pixels for toy, VAE latents for sd15): the shape of the step's noise.
            self.latent_hw = tuple((self.source if self.source is not None
                                    else self._encode_images([0], 1)[0]).shape[-2:])

    def _encode(self, comp: Components, texts: list[str], batch: int, pooled: bool, dtype: torch.dtype) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch):
            enc = text.encode_text(comp.tokenizer, comp.text_encoder, texts[i:i + batch], self.device)
            out.append((enc.pooled if pooled else enc.hidden_states).to(self.store, dtype))
        return torch.cat(out)

    def text(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(instruction hidden states, pooled feedback or None) of a micro-batch, on the training device."""
        i = indices.to(self.store)
        hidden = self.hidden[self.instr_idx[i]].to(self.device, non_blocking=True)
        pooled = self.pooled[self.fb_idx[i]].to(self.device, non_blocking=True) if self.pooled is not None else None
        return hidden, pooled

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.triplets[index]
        try:
            return image_tensor(t.load_source(), self.config.resolution), image_tensor(t.load_edited(), self.config.resolution)
        except (OSError, ValueError) as err:
            raise DataError(t.id, "image", f"cannot read: {err}") from err

    @torch.no_grad()
    def _encode_images(self, indices: Sequence[int], batch: int,
                       to: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, edited) for ``indices``: pixels, or (with a VAE) source mode and edited [mean | std];
        each chunk moved ``to`` the cache's device as it is made."""
        src_all, ed_all = [], []
        indices = list(indices)
        for i in range(0, len(indices), batch):
            pairs = [self._load(j) for j in indices[i:i + batch]]
            src = torch.stack([p[0] for p in pairs]).to(self.device)
            ed = torch.stack([p[1] for p in pairs]).to(self.device)
            if self.vae is not None:
                vdt = self.vae.dtype
                src = self.vae.encode(src.to(vdt)).latent_dist.mode()
                dist = self.vae.encode(ed.to(vdt)).latent_dist
                ed = torch.cat([dist.mean, dist.std], dim=1)
                if self.device.type == "cuda":
                    src, ed = src.half(), ed.half()
            src_all.append(src.to(to or self.device))
            ed_all.append(ed.to(to or self.device))
        return torch.cat(src_all), torch.cat(ed_all)

    def images(self, indices: torch.Tensor, eps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(source latent, edited latent scaled) for a micro-batch; with a VAE the edited latent is the sample
        ``mean + std * eps`` (``eps``: standard normal, one per example, drawn by the caller)."""
        if self.source is not None:
            src, ed = self.source[indices.to(self.source.device)], self.edited[indices.to(self.edited.device)]
        else:
            src, ed = self._encode_images(indices.tolist(), len(indices))
        if self.vae is not None:
            mean, std = ed.float().chunk(2, dim=1)
            ed = (mean + std * eps.to(mean.device)) * self.scaling
        return src.float(), ed.float()
