"""The trainer: one run of stage 1 (InstructPix2Pix) or stage 2 (multi-reward), one code path on accelerate.

The objective, step by step, is in the package's docstring (:mod:`rewardedit_lib.train`); this module runs
it. :meth:`Trainer._setup` builds the model, the optimizer (the new reward modules at their own learning
rate), the LR schedule, the EMA and the cached data; :meth:`Trainer._step` is one optimizer step of the plan
:func:`~rewardedit_lib.train.step_plan.plan_step` draws; :meth:`Trainer.train` loops over the steps, logs,
checkpoints, validates and saves the final model.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.utils import make_image_grid
from PIL import Image, ImageOps

from .. import dataset, memory, models, runtime, text
from ..plumbing import atomic_write_json
from ..pipeline import PERFECT_SCORES, SAMPLER_ETA, RewardEditPipeline
from ..precision import MasterWeights
from ..reward import RewardUNet
from . import checkpoints, metrics
from .checkpoints import MODEL_SUBDIR, find_checkpoint, list_checkpoints
from .components import Components, load_components
from .config import TrainConfig
from .data import IMAGE_PROCESSOR, TrainingData, image_tensor, load_triplets
from .errors import TrainingError
from .step_plan import StepPlan, plan_step, seeded_generator


@dataclass
class TrainResult:
    """What a run reached: its folder, the final model's folder (``None`` on processes other than 0), the
    steps done, the wall time and speed of this call's training loop, the last loss, the step it resumed from
    and the log rows."""

    out_dir: Path
    model_dir: Path | None
    steps: int
    wall_s: float
    images_per_s: float
    final_loss: float | None
    resumed_from: int = 0
    metrics: list[dict] = field(default_factory=list)


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict under the scheduler's ``prediction_type`` (the loss probe uses it too)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise TrainingError(f"unsupported prediction_type {kind!r} in the model's scheduler config")


def _idle_until(first_step: int, lr_lambda):
    """An lr multiplier that is 0 before ``first_step`` and ``lr_lambda``'s after (a plain function, so the
    scheduler's state_dict leaves it out: it is rebuilt from the config on resume)."""

    def multiplier(step: int) -> float:
        return 0.0 if step < first_step else lr_lambda(step)

    return multiplier


def _make_optimizer(params, config: TrainConfig, fused: bool):
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise TrainingError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from err
        return bnb.optim.AdamW8bit(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay,
                                   eps=config.adam_eps)
    kw = {"fused": True} if fused else {}
    return torch.optim.AdamW(params, lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay,
                             eps=config.adam_eps, **kw)


def _grid(rows: list[list[Image.Image]], pad: int = 2) -> Image.Image:
    """Equal-sized images in rows, on white with ``pad`` pixels around each: diffusers' ``make_image_grid``
    (which has no gaps) of the images each padded right and below, then the grid padded left and above."""
    tiles = [ImageOps.expand(im, (0, 0, pad, pad), fill="white") for row in rows for im in row]
    return ImageOps.expand(make_image_grid(tiles, rows=len(rows), cols=len(rows[0])), (pad, pad, 0, 0), fill="white")


class Trainer:
    """One training run. ``Trainer(config, data_dir, out_dir, rewards_path).train(resume=None)``."""

    def __init__(self, config: TrainConfig, data_dir: str | Path, out_dir: str | Path,
                 rewards_path: str | Path | None = None, *, progress: bool = True,
                 step_callback: Callable[[int, dict], None] | None = None, components: Components | None = None):
        """``components``: a model (and its frozen parts) built by the caller instead of from ``config.init``
        -- for benchmarks and experiments with configs the presets do not name."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.config = config
        self.data_dir, self.out_dir = Path(data_dir), Path(out_dir)
        self.rewards_path = rewards_path
        self.progress = progress
        self.step_callback = step_callback
        self._components = components
        self.master: MasterWeights | None = None  # set up in _setup when config.master_weights
        # torchrun on a machine without a GPU: accelerate joins the process group (gloo) only when told cpu=True.
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        # master weights: the model itself is bf16, so nothing is left for autocast to cast
        self.accelerator = Accelerator(mixed_precision="no" if config.master_weights else config.mixed_precision,
                                       cpu=multi_cpu,
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
        if self.accelerator.num_processes > 1 and config.batch_size % (self.accelerator.num_processes * config.grad_accum):
            raise TrainingError(f"batch_size={config.batch_size} must split evenly over "
                                f"{self.accelerator.num_processes} processes x grad_accum={config.grad_accum}")

    # -- setup -------------------------------------------------------------------------------------
    def _setup(self) -> None:
        acc, config = self.accelerator, self.config
        device = acc.device
        if device.type == "cuda" and config.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        triplets = load_triplets(self.data_dir, self.rewards_path, config)
        comp = self._components or load_components(config, device)
        comp.model.to(device)
        comp.text_encoder.to(device)
        if comp.vae is not None:
            comp.vae.to(device)
        self.comp = comp
        reward = comp.model.reward
        if reward is not None and reward.config.centered:  # (a resumed run loads the same values)
            perfect = text.encode_text(comp.tokenizer, comp.text_encoder, [models.DEFAULT_REWARD_TEXT], device).pooled
            reward.set_reference(torch.tensor(PERFECT_SCORES, dtype=torch.float32, device=device),
                                 perfect if reward.use_text else None)
        self.noise_scheduler = DDPMScheduler.from_config(comp.scheduler.config)
        self.data = TrainingData(triplets, comp, config, device, store=memory.cache_device(config, triplets, device))
        #: the words this model hears low rewards in, recorded with it (the knob and low-reward guidance use them)
        self.failure_text = dataset.common_failure_text(t.rewards for t in triplets if t.rewards is not None) \
            if config.uses_rewards else None
        if self._parks_frozen:
            self._park_frozen()  # cached: the VAE and text encoder are needed again only for validation
        model = comp.model.train()
        if config.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
        if device.type == "cuda" and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        raw = model
        # With master weights the optimizer, clipping and EMA work on fp32 copies of the (now bf16) params.
        self.master = MasterWeights(params, torch.bfloat16) if config.master_weights else None
        if self.master is not None:
            raw.to(torch.bfloat16)  # the few parameters and buffers that are not trained, too
        opt_params = self.master.tensors if self.master is not None else params
        # CUDA graphs reuse their output buffers: each step must tell them a new step began (see _step).
        self._cudagraphs = config.compile and config.compile_mode == "reduce-overhead" and device.type == "cuda"
        if config.compile:  # the whole composed model: the reward hooks are traced with the UNet
            model = torch.compile(model, mode=None if config.compile_mode == "default" else config.compile_mode)
        groups: Any = [{"params": opt_params}]
        if (config.reward_lr_scale != 1.0 or config.reward_warmup_steps) and raw.reward is not None:
            new = {id(p) for p in raw.reward.parameters()}
            groups = [{"params": [q for p, q in zip(params, opt_params) if id(p) not in new]},
                      {"params": [q for p, q in zip(params, opt_params) if id(p) in new],
                       "lr": config.lr * config.reward_lr_scale}]
        self.optimizer = _make_optimizer(groups, config, fused=device.type == "cuda")
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(config.lr_schedule, self.optimizer, num_warmup_steps=config.warmup_steps,
                                          num_training_steps=config.max_steps)
        if config.reward_warmup_steps:  # group 0 is the UNet (the whole model for the baseline): idle at first
            sched = self.lr_scheduler
            sched.lr_lambdas[0] = _idle_until(config.reward_warmup_steps, sched.lr_lambdas[0])
            self.optimizer.param_groups[0]["lr"] = sched.base_lrs[0] * sched.lr_lambdas[0](sched.last_epoch)
        self.ema = None
        if config.ema_decay is not None:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(opt_params, decay=config.ema_decay, use_ema_warmup=config.ema_warmup,
                                power=config.ema_power,
                                foreach=device.type == "cuda")
        self.model, self.optimizer = acc.prepare(model, self.optimizer)
        self.raw_model: RewardUNet = raw
        self.params = opt_params  # what the optimizer, clipping and EMA update (the fp32 master copy if any)

    @property
    def _parks_frozen(self) -> bool:
        """Whether the frozen parts live on the CPU between validations: on a GPU, once cached."""
        return self.config.cache and self.accelerator.device.type == "cuda"

    def _park_frozen(self) -> None:
        """Move the frozen VAE and text encoder to the CPU (GPU memory for a bigger batch on a small card)."""
        self.comp.text_encoder.to("cpu")
        if self.comp.vae is not None:
            self.comp.vae.to("cpu")

    @contextmanager
    def _frozen_on_device(self) -> Iterator[None]:
        """The frozen parts on the training device for the duration (validation, saving), parked again after."""
        device = self.accelerator.device
        parked = self._parks_frozen
        if parked:
            self.comp.text_encoder.to(device)
            if self.comp.vae is not None:
                self.comp.vae.to(device)
        try:
            yield
        finally:
            if parked:
                self._park_frozen()

    # -- checkpoints -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None}

    def save_checkpoint(self, step: int) -> Path | None:
        """Write the checkpoint of ``step`` (process 0; the others wait for it): the weights in full
        precision (the fp32 master copy, when there is one) and :meth:`_state`."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None

        def save_model(folder: Path) -> None:
            with self._full_precision():
                self.raw_model.save_pretrained(folder)

        return checkpoints.write_checkpoint(self.out_dir, step, self.config, save_model, self._state)

    def load_checkpoint(self, path: Path) -> int:
        """Load a checkpoint into the set-up run (weights, optimizer, LR schedule, EMA, loss scaler); returns
        its step, the first step still to train."""
        step, loaded = checkpoints.read_checkpoint(path, self.config)
        with self._full_precision():  # into the fp32 master copy, when there is one
            self.raw_model.unet.load_state_dict(loaded.unet.state_dict())
            if self.raw_model.reward is not None:
                self.raw_model.reward.load_state_dict(loaded.reward.state_dict())
        blob = torch.load(path / checkpoints.TRAINING_STATE_FILE, map_location=self.accelerator.device,
                          weights_only=False)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.lr_scheduler.load_state_dict(blob["lr_scheduler"])
        if self.ema is not None and blob["ema"] is not None:
            self.ema.load_state_dict(blob["ema"])
            self.ema.to(self.accelerator.device)
        if self.accelerator.scaler is not None and blob["scaler"] is not None:
            self.accelerator.scaler.load_state_dict(blob["scaler"])
        return step

    # -- one step ----------------------------------------------------------------------------------
    def _micro_loss(self, plan: StepPlan, noise: torch.Tensor, latent_eps: torch.Tensor | None) -> torch.Tensor:
        data, device = self.data, self.accelerator.device
        idx = plan.indices.to(device)
        src, target_latent = data.images(plan.indices, latent_eps)
        src, target_latent = src.to(device), target_latent.to(device)
        flip = plan.flip.to(device)
        if flip.any():
            src = torch.where(flip[:, None, None, None], src.flip(-1), src)
            target_latent = torch.where(flip[:, None, None, None], target_latent.flip(-1), target_latent)
        t = plan.timesteps.to(device)
        noise = noise.to(device)
        noisy = self.noise_scheduler.add_noise(target_latent, noise, t)
        hidden, pooled = data.text(plan.indices)
        hidden = torch.where(plan.drop_text.to(device)[:, None, None], data.null_hidden.expand_as(hidden), hidden)
        src = src * (~plan.drop_image.to(device))[:, None, None, None].to(src.dtype)
        kwargs: dict[str, Any] = {}
        if self.raw_model.reward is not None:
            kwargs["reward_scores"] = data.scores[idx]
            kwargs["reward_text_embeds"] = pooled
            unknown = plan.drop_reward
            if self.raw_model.reward.config.unknown_without_instruction:
                unknown = unknown | plan.drop_text  # guided as trained: no rewards in the branches without it
            if self.config.reward_dropout > 0 or unknown.any():
                kwargs["reward_known"] = (~unknown.to(device)).float()
        x = torch.cat([noisy, src], dim=1)
        if self.master is not None:  # no autocast: the inputs in the weights' precision
            x, hidden = x.to(self.master.dtype), hidden.to(self.master.dtype)
        if device.type == "cuda" and self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.accelerator.autocast():
            pred = self.model(x, t, hidden, **kwargs, return_dict=False)[0]
        target = training_target(self.noise_scheduler, target_latent, noise, t)
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def _step(self, step: int) -> torch.Tensor:
        """One optimizer step; returns the global batch's mean loss (the same on every process) as a
        0-d tensor on the device: reading it waits for the GPU, so the loop reads losses only when it
        logs or saves, and the CPU queues the next step while the GPU works on this one."""
        acc, config = self.accelerator, self.config
        plan = plan_step(step, self.data.n, config, self.noise_scheduler.config.num_train_timesteps)
        # Drawn for the whole global batch, then sliced: the same numbers whatever the process count.
        g = torch.Generator().manual_seed(plan.generator_seed)
        shape = (config.batch_size, self.raw_model.unet.config.out_channels, *self.data.latent_hw)
        noise = torch.randn(shape, generator=g)
        latent_eps = torch.randn(shape, generator=g) if self.data.vae is not None else None
        per_proc = config.batch_size // acc.num_processes
        lo = acc.process_index * per_proc
        micro = per_proc // config.grad_accum
        # Dropout layers inside the model draw from torch's global RNG: seed it per (step, process).
        torch.manual_seed(seeded_generator(config.seed, 3, step, acc.process_index).initial_seed())
        total = torch.zeros((), device=acc.device)
        for k in range(config.grad_accum):
            a, b = lo + k * micro, lo + (k + 1) * micro
            sub = plan.slice(a, b)
            ctx = acc.no_sync(self.model) if k < config.grad_accum - 1 else nullcontext()
            with ctx:
                if self._cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()
                loss = self._micro_loss(sub, noise[a:b], latent_eps[a:b] if latent_eps is not None else None)
                acc.backward(loss / config.grad_accum)
            total += loss.detach() / config.grad_accum
        mean_loss = acc.reduce(total, reduction="mean")
        if self.master is not None:
            self.master.grads_from_model()
        if config.max_grad_norm:
            acc.clip_grad_norm_(self.params, config.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.master is not None:
            self.master.copy_to_model()
        if self.ema is not None:
            self.ema.step(self.params)
        return mean_loss

    # -- validation and the final model ------------------------------------------------------------
    def _pipeline(self) -> RewardEditPipeline:
        pipe = RewardEditPipeline.from_model(self.raw_model, self.comp.tokenizer, self.comp.text_encoder,
                            type(self.comp.scheduler).from_config(self.comp.scheduler.config), self.comp.vae,
                            self.config.model)
        if self.failure_text is not None:
            pipe.register_to_config(failure_reward_text=self.failure_text)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _full_precision(self):
        """The model holds the fp32 master weights for the duration (a no-op without master weights)."""
        return self.master.full_precision() if self.master is not None else nullcontext()

    @contextmanager
    def _eval_weights(self) -> Iterator[None]:
        """The weights to validate and save in the model for the duration: full precision (the fp32 master
        copy, which is what the EMA tracks) and the EMA's values (nothing changes without EMA)."""
        with self._full_precision():
            if self.ema is None:
                yield
                return
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
            try:
                yield
            finally:
                self.ema.restore(self.params)

    @torch.no_grad()
    def validate(self, step: int) -> Path | None:
        """Save ``samples/step-NNNNNN.png``: one row per example, source | training target | edit (best reward)."""
        if not self.accelerator.is_main_process or self.config.validation_examples <= 0:
            return None
        k = min(self.config.validation_examples, self.data.n)
        examples = [self.data.triplets[i] for i in range(k)]
        self.raw_model.eval()
        try:
            with self._eval_weights(), self._frozen_on_device():
                pipe = self._pipeline()
                res = self.config.resolution
                # the training tensors, as images: IMAGE_PROCESSOR.postprocess (the pipeline's own, too)
                srcs = IMAGE_PROCESSOR.postprocess(torch.stack([image_tensor(t.load_source(), res) for t in examples]))
                tgts = IMAGE_PROCESSOR.postprocess(torch.stack([image_tensor(t.load_edited(), res) for t in examples]))
                outs = pipe([t.instruction for t in examples], srcs,
                            num_inference_steps=self.config.validation_steps, eta=SAMPLER_ETA[self.config.model],
                            output_type="pil", height=srcs[0].height, width=srcs[0].width,
                            generator=torch.Generator().manual_seed(self.config.seed)).images
        finally:
            self.raw_model.train()
        path = self.out_dir / "samples" / f"step-{step:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        f = max(1, 96 // srcs[0].height)  # toy images are 32 px: upscale (nearest) so the grid is readable
        rows = [[im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST) for im in row]
                for row in zip(srcs, tgts, outs)]
        _grid(rows).save(path)
        return path

    def save_model(self) -> Path | None:
        """The final model as a full pipeline folder (EMA weights when EMA is on)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        out = self.out_dir / MODEL_SUBDIR
        tmp = self.out_dir / f"{MODEL_SUBDIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with self._eval_weights(), self._frozen_on_device():
            self._pipeline().save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        return out

    def _agree(self, flag: bool) -> bool:
        """Process 0's ``flag`` on every process (one tiny broadcast; no communication with one process)."""
        if self.accelerator.num_processes == 1:
            return flag
        from accelerate.utils import broadcast

        t = torch.tensor([float(flag)], device=self.accelerator.device)
        return bool(broadcast(t, from_process=0).item())

    # -- the loop ----------------------------------------------------------------------------------
    def train(self, resume: str | None = None, time_limit_s: float | None = None) -> TrainResult:
        """Run to ``config.max_steps``, or (``time_limit_s``) stop at the first step boundary after that many
        seconds since this call (setup included): a rented GPU's session ends on the clock, not on a step
        count. A stopped run saves a checkpoint, the model and ``summary.json`` (``"stopped_early": true``)
        at the step it reached: it *is* the first steps of the full run (same data order, noise and LR
        schedule), and ``resume="latest"`` finishes it. Without ``progress`` no library progress bar shows
        either (loading and saving weights)."""
        with nullcontext() if self.progress else runtime.quiet_loading():
            return self._train(resume, time_limit_s)

    def _train(self, resume: str | None, time_limit_s: float | None) -> TrainResult:
        acc, config = self.accelerator, self.config
        t_call = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._setup()
        start = 0
        if resume:
            checkpoint = find_checkpoint(self.out_dir, resume)
            start = self.load_checkpoint(checkpoint)
            if acc.is_main_process:
                print(f"[train] resumed at step {start} from {checkpoint}")
        if acc.is_main_process:
            atomic_write_json(self.out_dir / "train_config.json",
                              {**config.to_json(), "data_dir": str(self.data_dir),
                               "rewards_path": str(self.rewards_path) if self.rewards_path else None,
                               "num_processes": acc.num_processes, "examples": self.data.n,
                               "cache_device": str(self.data.store)}, indent=1, trailing_newline=False)
            metrics.truncate_metrics(self.out_dir, start)
        history = metrics.read_metrics(self.out_dir) if acc.is_main_process else []
        bar = None
        if self.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.max_steps, initial=start, desc=f"stage {config.stage} ({config.rewards})",
                       dynamic_ncols=True)
        t0, seen, last_loss, window = time.perf_counter(), 0, None, []
        window_t = time.perf_counter()
        pending: list[torch.Tensor] = []  # losses on the device, not yet read (see _step)
        done, checkpointed = start, None  # checkpointed: the step of the last checkpoint this loop saved
        for step in range(start, config.max_steps):
            pending.append(self._step(step))
            done = step + 1
            seen += config.batch_size
            # every process decides alike (process 0's clock), so none waits for a step the others skip; with
            # several processes the clock is read only at log steps, where the loop syncs anyway
            out_of_time = time_limit_s is not None and done < config.max_steps and \
                (acc.num_processes == 1 or done % config.log_every == 0) and \
                self._agree(time.perf_counter() - t_call >= time_limit_s)
            last = done == config.max_steps or out_of_time
            logs = done % config.log_every == 0 or last
            saves = bool(config.checkpoint_every and done % config.checkpoint_every == 0) or \
                bool(config.validate_every and done % config.validate_every == 0)
            shows = bar is not None and (done % max(1, config.log_every // 5) == 0)
            if not (logs or saves or shows or last):
                continue
            losses = torch.stack(pending).float().cpu().tolist()  # one wait for the GPU
            first = done - len(losses)
            pending = []
            bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
            if bad is not None:
                if bar is not None:
                    bar.close()
                last = list_checkpoints(self.out_dir)
                where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was saved yet"
                raise TrainingError(f"the loss became {losses[bad]} at step {first + bad + 1}: training stopped "
                                    f"and nothing after step {first + bad} was saved; {where}. Lower the learning "
                                    f"rate (lr={config.lr}) or use bf16 instead of fp16, then resume.")
            last_loss = losses[-1]
            window.extend(losses)
            if bar is not None:
                bar.update(len(losses))
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.1f}")
            if logs:
                now = time.perf_counter()
                row = {"step": done, "loss": float(np.mean(window)), "lr": self.lr_scheduler.get_last_lr()[0],
                       "images_per_s": len(window) * config.batch_size / max(now - window_t, 1e-9),
                       "epoch": done * config.batch_size / self.data.n}
                window, window_t = [], now
                if acc.is_main_process:
                    metrics.append_metrics(self.out_dir, row)
                    history.append(row)
                if self.step_callback is not None:
                    self.step_callback(done, row)
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                self.save_checkpoint(done)
                checkpointed = done
            if config.validate_every and done % config.validate_every == 0 and done < config.max_steps:
                self.validate(done)
            if out_of_time:
                if acc.is_main_process:
                    print(f"[train] time limit of {time_limit_s:.0f} s reached: stopped at step {done} of "
                          f"{config.max_steps}; --resume latest continues")
                break
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
        if checkpointed != done:  # the last step, or where a time limit stopped, unless saved above
            self.save_checkpoint(done)
        self.validate(done)
        model_dir = self.save_model()
        result = TrainResult(self.out_dir, model_dir, done, wall,
                             seen / wall if wall > 0 else 0.0, last_loss, start, history)
        if acc.is_main_process:
            # the wall time of all the parts of a resumed run (each part's summary carries the sum so far)
            previous = metrics.read_summary(self.out_dir) if start else {}
            total = wall + (previous.get("wall_s_total", previous.get("wall_s", 0.0))
                            if previous.get("steps") == start else 0.0)
            atomic_write_json(self.out_dir / metrics.SUMMARY_FILE,
                              {"steps": result.steps, "resumed_from": start, "wall_s": round(wall, 2),
                               "wall_s_total": round(total, 2),
                               "images_per_s": round(result.images_per_s, 2), "final_loss": last_loss,
                               "device": str(acc.device), "num_processes": acc.num_processes,
                               "stopped_early": done < config.max_steps}, indent=1, trailing_newline=False)
        acc.wait_for_everyone()
        return result


def train(config: TrainConfig, data_dir: str | Path, out_dir: str | Path, rewards_path: str | Path | None = None,
          resume: str | None = None, progress: bool = True, time_limit_s: float | None = None,
          step_callback: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train one model (see :mod:`rewardedit_lib.train`); ``resume="latest"`` continues the newest checkpoint;
    ``time_limit_s`` stops (resumably) at the first step boundary after that many seconds; ``step_callback``
    gets ``(step, metrics row)`` at every logged step (e.g. :func:`~rewardedit_lib.train.metrics.loss_lines`)."""
    return Trainer(config, data_dir, out_dir, rewards_path, progress=progress,
                   step_callback=step_callback).train(resume=resume, time_limit_s=time_limit_s)
