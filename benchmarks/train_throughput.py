"""Training throughput: the kit's trainer against the reference recipe, in the same run (issue #7).

Both train the stage-2 (multi-reward) SD 1.5 model, random init (no download), at 256 px on the same
synthetic triplets, for ``--steps`` optimizer steps after ``--warmup`` steps that are not timed:

* **kit**: :class:`rewardedit_lib.train.Trainer` itself -- the code path ``rewardedit train`` runs: latents
  and text embeddings cached before training, bf16 autocast where the GPU has it (else fp16 with a scaler),
  SDPA attention, channels_last, fused AdamW, EMA with foreach updates, no checkpointing.
* **reference**: the paper's released recipe as we measured it: fp16 autocast with gradient checkpointing;
  every step VAE-encodes both images and runs the CLIP text encoder (instruction and feedback); a CLIP
  ViT-H/14 image encoder runs every step and its output is never used; AdamW; EMA.

Prints images/s and peak memory for each, and the ratio, at each ``--batch``. Targets (issue #7, one H100):
>= 5x at batch 32 and >= 4x at batch 4.

    python benchmarks/train_throughput.py                       # CUDA: sd15 shapes at 256 px, batch 4 and 32
    python benchmarks/train_throughput.py --compile --batch 32  # the kit with torch.compile (warm-up untimed)
    python benchmarks/train_throughput.py --profile sd15-t4 --no-reference --batch 8 16   # T4 memory
    python benchmarks/train_throughput.py --tiny --batch 2      # CPU smoke test: sd15-shaped but narrow

Also printed: the model FLOPs per training image (``torch.utils.flop_counter``, forward + backward of the
trained model) and the model FLOP utilisation they give against the GPU's spec-sheet dense bf16 peak; and
peak allocated memory (``torch.cuda.max_memory_allocated``) both in steady state and over the whole run,
caching the latents included -- the number a 16 GB card must hold.

CPU timings are a smoke test: the reference recipe's fp16 has no fast CPU kernels, so its ratio there means
nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402

from rewardedit_lib import formats, models, text  # noqa: E402
from rewardedit_lib import train as T  # noqa: E402
from rewardedit_lib.pipeline import SCHEDULER_CONFIGS, SD15_VAE_CONFIG, scheduler_for  # noqa: E402
from rewardedit_lib.reward import RewardUNet  # noqa: E402
from rewardedit_lib.toy.text_encoder import toy_text_encoder  # noqa: E402

#: --tiny: SD 1.5's block layout at a fraction of its width, a small VAE, a 2-layer CLIP, a small ViT.
TINY_UNET = dict(models.UNET_CONFIGS["sd15"], block_out_channels=(32, 64, 128, 128), cross_attention_dim=64)
TINY_VAE = dict(SD15_VAE_CONFIG, block_out_channels=(32, 32, 64, 64), layers_per_block=1)
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
             patch_size=14, image_size=224, projection_dim=1024)
TINY_VIT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=14,
                image_size=224, projection_dim=64)


def build_components(tiny: bool, device: torch.device, seed: int = 0) -> T.Components:
    """The stage-2 sd15 model (or its tiny twin) with its frozen VAE and text encoder, random weights."""
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else models.UNET_CONFIGS["sd15"]))
        stage1 = models.stage1_from_text_to_image(unet)
        model = models.stage2_from_stage1(stage1, "sd15", **({"text_dim": 64} if tiny else {}))
        tok, te = toy_text_encoder(seed, **({} if tiny else dict(hidden_size=768, layers=12, heads=12)))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE_CONFIG)).eval().requires_grad_(False)
    return T.Components(model, tok, te.to(device), vae, scheduler_for("sd15"))


def write_data(root: Path, n: int, resolution: int, seed: int = 0) -> tuple[Path, Path]:
    """``n`` synthetic triplets (smooth random images) in the InstructPix2Pix layout, and their rewards."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    triplets, images, rewards = [], {}, {}
    for i in range(n):
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        src = np.asarray(Image.fromarray(low).resize((resolution, resolution), Image.BICUBIC))
        edt = np.clip(src.astype(int) + rng.integers(-40, 40, (1, 1, 3)), 0, 255).astype(np.uint8)
        triplets.append(formats.Triplet(f"t{i:05d}", f"make the picture {['warmer', 'cooler'][i % 2]}",
                                        Image.fromarray(src), Image.fromarray(edt), seed=i))
        rewards[f"t{i:05d}"] = formats.Rewards.perfect() if i % 3 else formats.Rewards(
            formats.Reward(2, "The picture was made only slightly warmer."), formats.Reward(5, formats.PERFECT_FEEDBACK),
            formats.Reward(3, "The image has some grainy noise."))
    formats.write_instructpix2pix(root / "data", triplets)
    formats.write_rewards(root / "rewards.json", rewards)
    return root / "data", root / "rewards.json"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------------------------------
# Model FLOPs (for the utilisation figure)
# --------------------------------------------------------------------------------------------------
#: Dense bf16/fp16 tensor-core peaks from the vendors' spec sheets (no sparsity), FLOP/s.
PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12, "T4": 65e12, "A10": 125e12}


def spec_peak(name: str) -> float | None:
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def train_flops_per_image(comp: T.Components, resolution: int, device: torch.device) -> float:
    """FLOPs of one training example through the trained model (forward + backward, the reward encoder
    included; the cached VAE and text encoder excluded, as the kit never runs them in a step), counted by
    ``torch.utils.flop_counter`` on a batch of 2."""
    from torch.utils.flop_counter import FlopCounterMode

    model = comp.model
    cfg = model.unet.config
    size = resolution // 8 if comp.vae is not None else resolution
    x = torch.randn(2, cfg.in_channels, size, size, device=device)
    hidden = torch.randn(2, 77, cfg.cross_attention_dim, device=device)
    kw = {}
    if model.reward is not None:
        kw = dict(reward_scores=torch.full((2, 3), 5.0, device=device),
                  reward_text_embeds=torch.randn(2, model.reward.config.text_dim, device=device))
    with FlopCounterMode(display=False) as counter:
        out = model(x, torch.tensor([10, 500], device=device), hidden, **kw, return_dict=False)[0]
        out.float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


# --------------------------------------------------------------------------------------------------
# The kit
# --------------------------------------------------------------------------------------------------
def run_kit(comp: T.Components, data: Path, rewards: Path, batch: int, steps: int, warmup: int, resolution: int,
            device: torch.device, out: Path, profile: str = "sd15", compile: bool = False,
            changes: dict | None = None, trace: int = 0, log=print) -> dict:
    """The kit's Trainer on ``profile``. Timed from the end of step ``warmup`` to the end of step
    ``warmup + steps`` (``steps`` a multiple of ``warmup``: the trainer reports at its log steps only, and
    reads the loss there, as a real run does)."""
    if device.type == "cpu":
        precision = "no"
    elif profile == "sd15-t4":
        precision = "fp16"  # what a T4 runs
    else:
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if (changes or {}).get("master_weights"):
        precision = "bf16"  # bf16 weights, fp32 master copy (a CPU runs it too, slowly)
    steps = -(-steps // warmup) * warmup
    overrides = dict(ema_decay=0.9999) if profile == "sd15" else {}
    config = T.preset(profile, batch_size=batch, grad_accum=1, max_steps=warmup + steps, resolution=resolution,
                      random_flip=False, mixed_precision=precision, checkpoint_every=0, log_every=warmup,
                      validate_every=0, validation_examples=0, compile=compile, **{**overrides, **(changes or {})})
    marks: dict[int, float] = {}
    steady: list[float] = []

    def on_step(step: int, row: dict) -> None:
        sync(device)
        marks[step] = time.perf_counter()
        if step == warmup and device.type == "cuda":
            steady.append(torch.cuda.max_memory_allocated(device))
            torch.cuda.reset_peak_memory_stats(device)

    reset_peak(device)  # the whole run: model, caching the latents, optimizer state, steps
    trainer = T.Trainer(config, data, out, rewards, progress=False, step_callback=on_step, components=comp)
    trainer.save_model = lambda: None  # not part of a training step
    trainer.save_checkpoint = lambda step: None
    trainer.validate = lambda step: None
    prof = None
    if trace:  # torch.profiler over `trace` steps after the warm-up: where a step's time goes
        from torch.profiler import ProfilerActivity, profile, schedule

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        prof = profile(activities=acts, schedule=schedule(wait=warmup, warmup=1, active=trace, repeat=1))
        prof.start()
        inner = trainer._step

        def traced(step: int):
            loss = inner(step)
            prof.step()
            return loss

        trainer._step = traced
    trainer.train()
    if prof is not None:
        prof.stop()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        log(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
    per_step = (marks[warmup + steps] - marks[warmup]) / steps
    whole = None
    if device.type == "cuda":
        whole = max(steady + [torch.cuda.max_memory_allocated(device)]) / 2**30
    return {"images_per_s": batch / per_step, "s_per_step": per_step, "peak_gib": peak_gib(device),
            "peak_whole_run_gib": whole, "precision": precision, "profile": profile, "compile": compile,
            "optimizer": type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer")
                              else trainer.optimizer).__name__,
            "gradient_checkpointing": config.gradient_checkpointing, "ema": config.ema_decay is not None}


# --------------------------------------------------------------------------------------------------
# The reference recipe
# --------------------------------------------------------------------------------------------------
def run_reference(comp: T.Components, data: Path, rewards: Path, batch: int, steps: int, warmup: int,
                  resolution: int, device: torch.device, tiny: bool) -> dict:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model: RewardUNet = comp.model.train()
    model.unet.enable_gradient_checkpointing()
    torch.manual_seed(0)
    with torch.device(device):
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**(TINY_VIT if tiny else VIT_H)))
    image_encoder = image_encoder.to(torch.float16 if device.type == "cuda" else torch.float32).eval()
    noise_scheduler = DDPMScheduler(**SCHEDULER_CONFIGS["sd15"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=1e-2)
    ema = EMAModel(params, decay=0.9999)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    triplets = formats.read_instructpix2pix(data, rewards=rewards).items
    t_start = None
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            reset_peak(device)
            t_start = time.perf_counter()
        batch_t = [triplets[(step * batch + i) % len(triplets)] for i in range(batch)]
        # the reference reads and preprocesses the images every step
        src = torch.stack([T.image_tensor(t.load_source(), resolution) for t in batch_t]).to(device)
        edt = torch.stack([T.image_tensor(t.load_edited(), resolution) for t in batch_t]).to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            with torch.no_grad():
                latents = comp.vae.encode(edt).latent_dist.sample() * comp.vae.config.scaling_factor
                src_lat = comp.vae.encode(src).latent_dist.mode()
                hidden = text.encode_text(comp.tokenizer, comp.text_encoder, [t.instruction for t in batch_t],
                                          device).hidden_states
                pooled = text.encode_text(comp.tokenizer, comp.text_encoder,
                                          [t.rewards.text for t in batch_t], device).pooled
                clip_in = F.interpolate(src, size=224, mode="bilinear")
                image_encoder(pixel_values=clip_in.to(image_encoder.dtype))  # computed, never used
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (batch,), device=device)
            noisy = noise_scheduler.add_noise(latents, noise, t)
            scores = torch.tensor([list(x.rewards.scores) for x in batch_t], dtype=torch.float32, device=device)
            pred = model(torch.cat([noisy, src_lat], 1), t, hidden, reward_scores=scores,
                         reward_text_embeds=pooled, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float())
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        ema.step(params)
        float(loss.detach())  # the reference logs the loss every step (a wait for the GPU)
    sync(device)
    model.unet.disable_gradient_checkpointing()
    per_step = (time.perf_counter() - t_start) / steps
    return {"images_per_s": batch / per_step, "s_per_step": per_step, "peak_gib": peak_gib(device),
            "precision": "fp16" if device.type == "cuda" else "fp32 (CPU)"}


def run(tiny: bool = False, device: str = "auto", batches: tuple[int, ...] = (4, 32), steps: int = 20,
        warmup: int = 5, resolution: int | None = None, profile: str = "sd15", reference: bool = True,
        compile: bool = False, changes: dict | None = None, trace: int = 0, log=print) -> dict:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    resolution = resolution or (64 if tiny else 256)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    log(f"train_throughput: {'tiny' if tiny else 'sd15'} at {resolution} px on {dev} ({name}), kit profile "
        f"{profile}{' + torch.compile' if compile else ''}{' ' + str(changes) if changes else ''}, {steps} timed steps after {warmup} warm-up steps, "
        f"torch {torch.__version__}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data, rewards = write_data(Path(tmp), n=max(batches) * 2, resolution=resolution)
        base = build_components(tiny, dev)
        flops = train_flops_per_image(base, resolution, dev)
        peak = spec_peak(name) if dev.type == "cuda" else None
        log(f"model FLOPs per training image (forward + backward): {flops / 1e9:.1f} GFLOP")
        for b in batches:
            kit = run_kit(copy.deepcopy(base), data, rewards, b, steps, warmup, resolution, dev, Path(tmp) / f"kit{b}",
                          profile, compile, changes, trace, log)
            kit["tflops"] = flops * kit["images_per_s"] / 1e12
            kit["mfu"] = kit["tflops"] * 1e12 / peak if peak else None
            row = {"kit": kit}
            mem = lambda r: (f", peak {r['peak_gib']:.2f} GiB steady / {r['peak_whole_run_gib']:.2f} GiB whole run"  # noqa: E731
                             if r.get("peak_whole_run_gib") is not None else
                             f", peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else "")
            mfu = f", {kit['tflops']:.0f} TFLOP/s" + (f" = {kit['mfu']:.1%} MFU" if kit["mfu"] else "")
            line = f"batch {b:3d}: kit {kit['images_per_s']:8.2f} img/s ({kit['precision']}{mem(kit)}{mfu})"
            if reference:
                ref = run_reference(copy.deepcopy(base), data, rewards, b, steps, warmup, resolution, dev, tiny)
                row["reference"], row["ratio"] = ref, kit["images_per_s"] / ref["images_per_s"]
                line += (f"; reference {ref['images_per_s']:8.2f} img/s ({ref['precision']}{mem(ref)}); "
                         f"ratio kit/reference = {row['ratio']:.2f}x")
            results[b] = row
            log(line + ("  [CPU: a smoke test]" if dev.type == "cpu" else ""))
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return {"device": str(dev), "device_name": name, "resolution": resolution, "tiny": tiny, "profile": profile,
            "compile": compile, "changes": changes or {}, "flops_per_image": flops, "spec_peak_flops": peak, "torch": torch.__version__,
            "results": {str(k): v for k, v in results.items()}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="narrow sd15-shaped models (a CPU smoke test)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles here)")
    ap.add_argument("--resolution", type=int, default=None, help="default 256 (tiny: 64)")
    ap.add_argument("--profile", default="sd15", choices=("sd15", "sd15-t4"),
                    help="the kit's training preset; sd15-t4 = the 16 GB T4 profile (fp16, 8-bit Adam, "
                         "gradient checkpointing, no EMA): read its whole-run peak memory")
    ap.add_argument("--no-reference", action="store_true", help="time the kit only")
    ap.add_argument("--compile", action="store_true", help="the kit with torch.compile (TrainConfig.compile)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="change a TrainConfig field of the kit's run, e.g. channels_last=false, ema_decay=null, "
                         "compile_mode=reduce-overhead (JSON, or a bare word for a string)")
    ap.add_argument("--trace", type=int, default=0, help="print a torch.profiler table over this many steps")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    changes = {}
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            changes[k] = json.loads(v)
        except json.JSONDecodeError:  # a bare word is a string: compile_mode=reduce-overhead
            changes[k] = v
    out = run(args.tiny, args.device, tuple(args.batch), args.steps, args.warmup, args.resolution, args.profile,
              not args.no_reference, args.compile, changes, args.trace)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
