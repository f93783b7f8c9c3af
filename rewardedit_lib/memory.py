"""GPU memory of a Stable Diffusion training run, planned in bytes before it starts -- and where the
trainer's resident caches go.

Why: the ``sd15-t4`` preset's peak of 12.45 GiB (benchmarks/README.md) was measured on 32 synthetic
triplets with 2 distinct instructions. The trainer caches every distinct instruction's CLIP hidden states
(77 x 768 half floats, 118 KB each) and every triplet's VAE latents; on RewardEdit20K's ~20K triplets and
~20K distinct instructions that is 2.7 GiB more, and 12.45 + 2.7 GiB no longer fits a 16 GB T4 (about 15
GiB usable, less the allocator's slack). The plan below decides, from the real counts, whether the caches
stay on the GPU or move to host memory, where a micro-batch gathers about 1 MB of them per step.

What is exact and what is measured. Weights, gradients, the optimizer's state (8-bit AdamW: one byte per
state for tensors of 4,096 elements or more, as bitsandbytes does, plus one fp32 absmax per 256), the EMA
copy, the autocast half copies of the weights and the caches are counted from the model's own tensors and
the data's counts. Two numbers are calibrated on the one measurement there is (sd15-t4 at 256 px on an H100,
micro-batch 8: 12.45 GiB, 16: 12.76 GiB): the activations per sample with gradient checkpointing (the
difference of the two, per sample) and a fixed workspace (the rest: temporaries of the backward pass,
clipping, the optimizer step). Activations without checkpointing are an estimate (8x), not measured.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

GIB = 2**30
#: bitsandbytes keeps tensors smaller than this in 32-bit state (its ``min_8bit_size``).
BNB_MIN_8BIT_SIZE = 4096
#: bitsandbytes' blockwise quantisation: one fp32 absmax per block of this many values, per state.
BNB_BLOCK = 256
#: The measurement the plan is calibrated on (benchmarks/README.md, H100, 2026-11-27): sd15-t4 at 256 px.
MEASURED_T4_PEAK = {8: 12.45 * GIB, 16: 12.76 * GIB}
#: Activations per sample at 256 px with gradient checkpointing: (16 - 8 samples) apart in the measurement.
ACTIVATION_BYTES_CHECKPOINTED = round((MEASURED_T4_PEAK[16] - MEASURED_T4_PEAK[8]) / 8)
#: Without checkpointing every block keeps its activations: an estimate (not measured on a GPU here).
NO_CHECKPOINTING_FACTOR = 8
#: The measured peak less everything counted exactly (tests/test_memory.py recomputes it).
WORKSPACE_BYTES = 2_630_284_000
#: A 16 GB T4 as nvidia-smi reports it (15,360 MiB); torch sees a little less.
T4_BYTES = 15 * GIB
#: Plan to at most this share of the GPU: the CUDA context and the caching allocator's slack need the rest.
USABLE_FRACTION = 0.9
#: CLIP ViT-L/14's text encoder: tokens per instruction, hidden width (the sd15 models' text encoder).
CLIP_TOKENS, CLIP_WIDTH = 77, 768


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes on the GPU at the training peak, by part, and where the caches are."""

    trainable_params: int
    weights: int
    grads: int
    optimizer: int
    ema: int
    autocast_copies: int
    activations: int
    workspace: int
    caches: int
    caches_on_gpu: bool
    gpu_bytes: int | None  # the GPU's size the placement was decided for (None: not decided for a GPU)

    @property
    def gpu_total(self) -> int:
        """Bytes on the GPU at the peak, caches included when they stay there."""
        return (self.weights + self.grads + self.optimizer + self.ema + self.autocast_copies + self.activations
                + self.workspace + (self.caches if self.caches_on_gpu else 0))

    @property
    def host_caches(self) -> int:
        """Bytes of the caches in host memory (0 when they stay on the GPU)."""
        return 0 if self.caches_on_gpu else self.caches

    @property
    def budget(self) -> int | None:
        return None if self.gpu_bytes is None else int(self.gpu_bytes * USABLE_FRACTION)

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.gpu_total <= self.budget

    def rows(self) -> list[list[str]]:
        """``[part, GiB]`` rows for a table (notebook 04)."""
        parts = [("weights", self.weights), ("gradients", self.grads), ("optimizer state", self.optimizer),
                 ("EMA copy", self.ema), ("autocast half copies", self.autocast_copies),
                 ("activations", self.activations), ("workspace (calibrated)", self.workspace),
                 (f"caches ({'GPU' if self.caches_on_gpu else 'host memory'})", self.caches),
                 ("GPU total", self.gpu_total)]
        return [[name, f"{b / GIB:.2f}"] for name, b in parts]


@functools.lru_cache(maxsize=8)
def model_tensor_sizes(name: str = "sd15", stage: int = 2, rewards: str = "both",
                       injection: str = "both") -> tuple[int, ...]:
    """The element count of every trainable tensor of a model config, built on the meta device (no memory,
    no download): what :func:`plan_memory` counts bytes from."""
    from . import models

    with torch.device("meta"):
        model = models.build(name, stage=stage, rewards=rewards, injection=injection)
    return tuple(p.numel() for p in model.parameters() if p.requires_grad)


def cache_bytes(n_triplets: int, n_instructions: int, n_feedbacks: int, *, resolution: int = 256,
                half: bool = True, latent_channels: int = 4, vae_factor: int = 8,
                text_tokens: int = CLIP_TOKENS, text_width: int = CLIP_WIDTH) -> int:
    """Bytes of :class:`~rewardedit_lib.train.TrainingData`'s caches: per distinct instruction its hidden
    states, per distinct feedback text its pooled vector, per triplet the source latent and the edited
    latent's mean and std (half precision on a GPU), and the per-triplet indices and scores."""
    text_el = 2 if half else 4
    side = resolution // vae_factor
    latents = n_triplets * 3 * latent_channels * side * side * 2
    text = n_instructions * text_tokens * text_width * text_el + n_feedbacks * text_width * text_el
    return latents + text + n_triplets * (8 + 8 + 3 * 4)


def plan_memory(config: Any, n_triplets: int, n_instructions: int, n_feedbacks: int, *,
                gpu_bytes: int | None = None, sizes: Sequence[int] | None = None) -> MemoryPlan:
    """The peak GPU bytes of training ``config`` (a :class:`~rewardedit_lib.train.TrainConfig` of an sd15
    model) on this many triplets / distinct instructions / distinct feedback texts. With ``gpu_bytes`` the
    caches stay on the GPU only if everything then fits :data:`USABLE_FRACTION` of it; without, they stay."""
    sizes = tuple(sizes) if sizes is not None else model_tensor_sizes(config.model, config.stage, config.rewards,
                                                                       config.injection)
    n = sum(sizes)
    half = config.mixed_precision != "no"
    if config.master_weights:  # bf16 weights and grads on the model, fp32 copies of both in the optimizer
        weights, grads = 6 * n, 6 * n
    else:
        weights, grads = 4 * n, 4 * n
    if config.use_8bit_adam:
        optimizer = sum(2 * s + 2 * 4 * -(-s // BNB_BLOCK) if s >= BNB_MIN_8BIT_SIZE else 8 * s for s in sizes)
    else:
        optimizer = 8 * n
    ema = 4 * n if config.ema_decay is not None else 0
    autocast = 2 * n if half and not config.master_weights else 0
    micro = config.batch_size // config.grad_accum
    per_sample = ACTIVATION_BYTES_CHECKPOINTED * ((config.resolution or 256) / 256) ** 2
    if not config.gradient_checkpointing:
        per_sample *= NO_CHECKPOINTING_FACTOR
    caches = cache_bytes(n_triplets, n_instructions, n_feedbacks if config.uses_rewards else 0,
                         resolution=config.resolution or 256, half=half)
    plan = MemoryPlan(n, weights, grads, optimizer, ema, autocast, round(micro * per_sample), WORKSPACE_BYTES,
                      caches, True, gpu_bytes)
    if gpu_bytes is not None and not plan.fits:
        plan = MemoryPlan(**{**plan.__dict__, "caches_on_gpu": False})
    return plan


def cache_device(config: Any, triplets: Sequence[Any], device: torch.device, *,
                 sizes: Sequence[int] | None = None, gpu_bytes: int | None = None,
                 log: Callable[[str], None] = print) -> torch.device:
    """Where :class:`~rewardedit_lib.train.TrainingData` keeps its caches: the training device, or the CPU
    when :func:`plan_memory` says they would not fit beside the run on this GPU. Only sd15 runs on CUDA are
    planned (a toy run's caches are a few MB)."""
    if device.type != "cuda" or config.model != "sd15" or not config.cache:
        return device
    if gpu_bytes is None:
        gpu_bytes = torch.cuda.get_device_properties(device).total_memory
    n_instr = len({t.instruction for t in triplets})
    n_fb = len({t.rewards.text for t in triplets if t.rewards is not None})
    plan = plan_memory(config, len(triplets), n_instr, n_fb, gpu_bytes=gpu_bytes, sizes=sizes)
    where = "the GPU" if plan.caches_on_gpu else "host memory"
    log(f"[train] memory plan: {plan.gpu_total / GIB:.2f} GiB on the GPU of {gpu_bytes / GIB:.1f} GiB "
        f"(budget {plan.budget / GIB:.1f}); caches of {len(triplets)} triplets / {n_instr} instructions "
        f"({plan.caches / GIB:.2f} GiB) in {where}")
    if not plan.fits:
        log(f"[train] warning: the plan exceeds this GPU's budget even with the caches in host memory; "
            f"lower batch_size / raise grad_accum, or use the sd15-t4 preset")
    return device if plan.caches_on_gpu else torch.device("cpu")
