"""What decides a run: :class:`TrainConfig`, validated when it is made.

A bad value is refused at once, naming the field and what it expects, not found minutes into a run. The
config is what a run records (``train_config.json``, ``run.json``, each checkpoint's ``state.json``) and
what a resume is checked against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .. import models
from ..reward_modes import INJECTIONS, REWARD_MODES

STAGES = (1, 2)
PRECISIONS = ("no", "bf16", "fp16")
LR_SCHEDULES = ("constant", "constant_with_warmup", "cosine", "linear")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _one_of(options: tuple[str, ...]) -> str:
    """``"a, b or c"``: the allowed values as an error message lists them."""
    return f"{', '.join(options[:-1])} or {options[-1]}"


@dataclass
class TrainConfig:
    """Everything that decides a run. ``batch_size`` is the *global* batch of one optimizer step: over all
    processes and all gradient-accumulation micro-batches, so changing either leaves the run the same."""

    # what is trained
    model: str = "toy"  # "toy" | "sd15": the reward encoder's widths and the random-init fallback
    stage: int = 2
    rewards: str = "both"  # none | scores | text | both (stage 2); "none" = the no-reward baseline
    injection: str = "both"  # latent | time | both
    init: str | None = None  # a model folder or hub id to start from (see :func:`load_components`)
    zero_init_rewards: bool = False  # start the reward modules' outputs at zero (stage 2 = stage 1 at step 0)
    #: The reward's time-embedding vector is measured from a perfect edit's rewards ((5, 5, 5) in the
    #: inference feedback words): asked for a perfect edit, the UNet sees exactly its stage-1 time embedding.
    center_rewards: bool = False
    #: Rewards unknown (masked out) wherever the instruction is dropped, and so in the guidance branches
    #: without it at inference (recorded in the reward encoder's config): the data pairs a flaw's low reward
    #: with an instruction, never with the empty one that classifier-free guidance subtracts.
    unknown_rewards_without_instruction: bool = False
    reward_lr_scale: float = 1.0  # the new reward modules learn at lr x this (the UNet they join at lr)
    #: The first this many steps train only the reward modules (the UNet's lr is 0), so that the rewards learn
    #: to explain the data's flaws before the UNet can fold them into its average edit. The no-reward baseline
    #: under the same recipe idles those steps: it fine-tunes fewer steps on the flawed data, never more.
    reward_warmup_steps: int = 0
    # how long, how much
    max_steps: int = 300
    batch_size: int = 32
    grad_accum: int = 1
    # optimiser
    lr: float = 5e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False
    ema_decay: float | None = 0.9999  # None = no EMA
    ema_warmup: bool = True  # decay ramps up as 1 - (1 + step)^-ema_power: an EMA that is useful early on too
    #: how fast the warm-up ramps the decay: at step s the EMA averages over about (1 + s)^ema_power steps
    #: (diffusers' 2/3: 93 of 900 steps; 0.8: 230)
    ema_power: float = 2 / 3
    # conditioning
    conditioning_dropout: float = 0.05
    reward_dropout: float = 0.0
    # data
    resolution: int | None = None  # None = the images' own size (toy); sd15 trains at 256
    random_flip: bool = False  # off for the toy world: its instructions name left and right
    cache: bool = True  # precompute frozen parts (VAE latents, text embeddings) once
    missing_rewards: str = "error"  # "error" | "skip": a training folder without a rewards entry
    # precision and memory
    mixed_precision: str = "no"  # no | bf16 | fp16
    master_weights: bool = False  # bf16: the model's weights in bf16, an fp32 copy in the optimizer (no autocast)
    gradient_checkpointing: bool = False
    allow_tf32: bool = True
    channels_last: bool = True  # CUDA: NHWC activations (cuDNN's fast convolution layout)
    compile: bool = False  # torch.compile the model (GPU: pays after a warm-up of a minute or two)
    # torch.compile's mode: "reduce-overhead" replays each step as CUDA graphs -- the lever for a step that
    # waits on the host's kernel launches (the H100 profile: the GPU idle a third of each step at batch 32)
    compile_mode: str = "default"
    # bookkeeping
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    validate_every: int = 0  # 0 = only at the end
    validation_examples: int = 4
    validation_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # JSON gives a list back
        checks = [
            (self.model in models.MODEL_CONFIGS, "model", f"one of {models.MODEL_CONFIGS}"),
            (self.stage in STAGES, "stage", "1 or 2"),
            (self.rewards in REWARD_MODES, "rewards", _one_of(REWARD_MODES)),
            (self.injection in INJECTIONS, "injection", _one_of(INJECTIONS)),
            (self.max_steps >= 1, "max_steps", ">= 1"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.grad_accum >= 1 and self.batch_size % self.grad_accum == 0, "grad_accum",
             "a divisor of batch_size"),
            (self.lr > 0, "lr", "> 0"),
            (self.reward_lr_scale > 0, "reward_lr_scale", "> 0"),
            (0 <= self.reward_warmup_steps <= self.max_steps, "reward_warmup_steps", "in [0, max_steps]"),
            (self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}"),
            (0 <= self.conditioning_dropout <= 1 / 3, "conditioning_dropout", "in [0, 1/3]"),
            (0 <= self.reward_dropout <= 1, "reward_dropout", "in [0, 1]"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay", "in (0, 1) or None"),
            (0 < self.ema_power <= 1, "ema_power", "in (0, 1]"),
            (self.mixed_precision in PRECISIONS, "mixed_precision", f"one of {PRECISIONS}"),
            (not self.master_weights or (self.mixed_precision == "bf16" and not self.use_8bit_adam),
             "master_weights", "False unless mixed_precision='bf16' (and use_8bit_adam off)"),
            (self.missing_rewards in ("error", "skip"), "missing_rewards", "'error' or 'skip'"),
            (self.checkpoint_every >= 0 and self.keep_checkpoints >= 1, "checkpoint_every / keep_checkpoints",
             ">= 0 / >= 1"),
            (self.log_every >= 1, "log_every", ">= 1"),
            (self.compile_mode in COMPILE_MODES, "compile_mode", f"one of {COMPILE_MODES}"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name.split(' ')[0], None)!r}: expected {want}")

    @property
    def uses_rewards(self) -> bool:
        return self.stage == 2 and self.rewards != "none"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def updated(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` (``None`` values are ignored, so CLI flags that were not given keep the preset)."""
        known = {f.name for f in fields(self)}
        bad = sorted(k for k in changes if k not in known)
        if bad:
            raise ValueError(f"unknown training setting(s) {bad}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

