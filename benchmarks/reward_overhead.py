"""How much the reward conditioning costs: one denoising step of the UNet with and without the reward modules.

Both models are measured in the same run, on the same weights (the stage-2 model is the stage-1 UNet plus
the reward modules), interleaved repetition by repetition so that drift (clocks, thermals, other load) hits
both alike; the printed number is the ratio of the medians. One step = one UNet call on a batch of
``--batch`` rows (3 = the three classifier-free-guidance branches of one edit), including the reward
encoder for the stage-2 model. Target (issue #4): the rewards add at most 5 %.

    python benchmarks/reward_overhead.py                      # sd15 at 512 px, fp16 on a GPU
    python benchmarks/reward_overhead.py --tiny               # a small sd15-shaped UNet: runs on a laptop CPU
    python benchmarks/reward_overhead.py --config toy         # the toy model (pixel space, 32 px)

CPU timings of a 2-core machine are noisy: read them as a smoke test, not as the number that matters.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusers import UNet2DConditionModel  # noqa: E402

from rewardedit_lib import models  # noqa: E402
from rewardedit_lib.reward import RewardUNet  # noqa: E402

#: --tiny: SD 1.5's block layout at a fraction of its width (same kinds of blocks, attention, reward modules).
TINY_UNET = dict(models.UNET_CONFIGS["sd15"], block_out_channels=(32, 64, 128, 128), cross_attention_dim=64)
TINY_REWARD = dict(text_dim=64)
DEFAULT_RESOLUTION = {"sd15": 512, "tiny": 128, "toy": 32}


def build_pair(config: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> tuple[RewardUNet, RewardUNet]:
    """(baseline stage-1 model, stage-2 model: rewards in both places, on a copy of the same UNet)."""
    torch.manual_seed(seed)
    with torch.device(device):  # build in place: SD 1.5's UNet initialises in seconds on a GPU
        if config == "tiny":
            stage1 = models.stage1_from_text_to_image(UNet2DConditionModel(**TINY_UNET))
            stage2 = models.stage2_from_stage1(copy.deepcopy(stage1), "sd15", **TINY_REWARD)
        else:
            stage1 = models.build(config, stage=1, seed=seed)
            stage2 = models.stage2_from_stage1(copy.deepcopy(stage1), config)
    return stage1.to(dtype).eval(), stage2.to(dtype).eval()


def make_inputs(model: RewardUNet, batch: int, resolution: int, latent: bool, device, dtype, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    cfg = model.unet.config
    size = resolution // 8 if latent else resolution  # SD's VAE shrinks 8x; the toy model runs on pixels
    text_dim = model.reward.config.text_dim if model.reward is not None else cfg.cross_attention_dim
    return dict(
        sample=torch.randn(batch, cfg.in_channels, size, size, generator=g).to(device, dtype),
        timestep=torch.randint(0, 1000, (batch,), generator=g).to(device),
        encoder_hidden_states=torch.randn(batch, 77, cfg.cross_attention_dim, generator=g).to(device, dtype),
        reward_scores=torch.randint(0, 6, (batch, 3), generator=g).float().to(device),
        reward_text_embeds=torch.randn(batch, text_dim, generator=g).to(device, dtype),
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def step_time(model: RewardUNet, inputs: dict, steps: int, device: torch.device) -> float:
    """Seconds per UNet call, averaged over ``steps`` back-to-back calls."""
    args = dict(inputs)
    if model.reward is None:  # stage 1 takes no rewards
        args.pop("reward_scores"), args.pop("reward_text_embeds")
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        model(**args, return_dict=False)
    sync(device)
    return (time.perf_counter() - t0) / steps


def run(config: str = "sd15", device: str = "auto", dtype: str = "auto", batch: int = 3, resolution: int | None = None,
        steps: int = 10, warmup: int = 3, repeats: int = 7, seed: int = 0, threads: int | None = None,
        log=print) -> dict:
    if threads:  # on a shared CPU, fewer threads than cores avoids threads spinning against other processes
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    dt = {"auto": torch.float16 if dev.type == "cuda" else torch.float32, "float32": torch.float32,
          "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    resolution = resolution or DEFAULT_RESOLUTION[config]
    base, reward = build_pair(config, dev, dt, seed)
    inputs = make_inputs(reward, batch, resolution, latent=config != "toy", device=dev, dtype=dt, seed=seed)
    n_unet = sum(p.numel() for p in base.parameters())
    n_reward = reward.reward_parameters()
    size = inputs["sample"].shape[-1]
    log(f"reward_overhead: config={config} device={dev} ({_device_name(dev)}) dtype={str(dt).replace('torch.', '')} "
        f"batch={batch} resolution={resolution} ({'latent' if config != 'toy' else 'pixels'} {size}x{size}) "
        f"steps={steps} warmup={warmup} repeats={repeats} torch={torch.__version__}")
    log(f"parameters: UNet {n_unet:,}; reward modules {n_reward:,} (+{100 * n_reward / n_unet:.2f} %)")
    if warmup > 0:
        for m in (base, reward):  # warm-up: kernels chosen, caches filled, lazy inits done
            step_time(m, inputs, warmup, dev)
    times: dict[str, list[float]] = {"baseline": [], "reward": []}
    for r in range(repeats):
        order = [("baseline", base), ("reward", reward)]
        for name, m in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            times[name].append(step_time(m, inputs, steps, dev))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["reward"] / med["baseline"]
    for k, label in (("baseline", "baseline (stage 1, stock UNet)"), ("reward", "with rewards (stage 2)")):
        v = times[k]
        log(f"{label:32s} {1e3 * med[k]:9.3f} ms/step  (median of {len(v)}; min {1e3 * min(v):.3f}, "
            f"max {1e3 * max(v):.3f})")
    verdict = "met" if ratio <= 1.05 else "NOT met"
    log(f"ratio reward/baseline = {ratio:.4f} ({100 * (ratio - 1):+.2f} %); target <= 1.05: {verdict}"
        + ("  [CPU: noisy, a smoke test]" if dev.type == "cpu" else ""))
    fastest = min(times["reward"]) / min(times["baseline"])
    log(f"ratio of the fastest repetitions = {fastest:.4f} (less sensitive to other load on a shared machine)")
    return {"config": config, "device": str(dev), "device_name": _device_name(dev), "dtype": str(dt), "batch": batch,
            "resolution": resolution, "steps": steps, "warmup": warmup, "repeats": repeats,
            "unet_parameters": n_unet, "reward_parameters": n_reward,
            "baseline_ms": 1e3 * med["baseline"], "reward_ms": 1e3 * med["reward"], "ratio": ratio,
            "ratio_of_minima": fastest, "threads": torch.get_num_threads(),
            "times_ms": {k: [1e3 * x for x in v] for k, v in times.items()}}


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["sd15", "tiny", "toy"], default="sd15", help="which UNet (default: sd15)")
    ap.add_argument("--tiny", action="store_true",
                    help="shorthand for --config tiny (a small sd15-shaped UNet, CPU-friendly)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                    help="auto: float16 on CUDA, float32 on the CPU")
    ap.add_argument("--batch", type=int, default=3, help="UNet batch (3 = the guidance branches of one edit)")
    ap.add_argument("--resolution", type=int, default=None, help="image size in pixels (sd15 512, tiny 128, toy 32)")
    ap.add_argument("--steps", type=int, default=10, help="timed UNet calls per repetition")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per model first")
    ap.add_argument("--repeats", type=int, default=7, help="timed repetitions per model (the median is reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    config = "tiny" if args.tiny else args.config
    result = run(config, args.device, args.dtype, args.batch, args.resolution, args.steps, args.warmup, args.repeats,
                 args.seed, args.threads)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
