"""Edit latency: one 30-step 512 px edit with the kit's sd15 pipeline, against diffusers' plain
InstructPix2Pix pipeline on the same UNet weights, in the same run (issue #7).

Both pipelines hold SD 1.5's shapes with random weights (no download): the UNet (8 input channels), the
VAE and a CLIP ViT-L/14-shaped text encoder. The kit's pipeline adds the reward encoder (scores and feedback
text, injected into the latent and the time embedding) and is called with the best rewards; the plain one is
``diffusers.StableDiffusionInstructPix2PixPipeline``. Both run the same three classifier-free-guidance
branches, the same Euler-ancestral scheduler and the same VAE decode, and return a PIL image: one edit, end
to end. Repetitions alternate between the two (so drift hits both alike); the medians are printed with
their ratio. Targets (issue #7, one H100): <= 1.0 s per edit, reward overhead <= 5 %.

    python benchmarks/edit_latency.py                    # CUDA, fp16, 512 px, 30 steps
    python benchmarks/edit_latency.py --tiny             # CPU smoke test: narrow sd15-shaped models, 64 px
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusers import AutoencoderKL, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel  # noqa: E402
from PIL import Image  # noqa: E402

from rewardedit_lib import models  # noqa: E402
from rewardedit_lib.pipeline import SD15_VAE_CONFIG, RewardEditPipeline, scheduler_for  # noqa: E402
from rewardedit_lib.toy.text_encoder import toy_text_encoder  # noqa: E402

TINY_UNET = dict(models.UNET_CONFIGS["sd15"], block_out_channels=(32, 64, 128, 128), cross_attention_dim=64)
TINY_VAE = dict(SD15_VAE_CONFIG, block_out_channels=(32, 32, 64, 64), layers_per_block=1)
PROMPT = "make the sky a sunset"


def build(tiny: bool, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """(kit pipeline, plain InstructPix2Pix pipeline): the same UNet weights, VAE, text encoder, scheduler."""
    torch.manual_seed(seed)
    with torch.device(device):
        stage1 = models.stage1_from_text_to_image(UNet2DConditionModel(**(TINY_UNET if tiny else
                                                                          models.UNET_CONFIGS["sd15"])))
        plain_unet = UNet2DConditionModel.from_config(stage1.unet.config)
        plain_unet.load_state_dict(stage1.unet.state_dict())  # a hook-free copy of the same weights
        model = models.stage2_from_stage1(stage1, "sd15", **({"text_dim": 64} if tiny else {}))
        tok, te = toy_text_encoder(seed, **({} if tiny else dict(hidden_size=768, layers=12, heads=12)))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD15_VAE_CONFIG)).eval()
    kit = RewardEditPipeline.from_model(model.eval(), tok, te, scheduler_for("sd15"), vae, "sd15")
    plain = StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=plain_unet.eval(),
                                                   scheduler=copy.deepcopy(kit.scheduler), safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    for pipe in (kit, plain):
        pipe.to(device, dtype)
        pipe.set_progress_bar_config(disable=True)
    return kit, plain


def source_image(resolution: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return Image.fromarray(low).resize((resolution, resolution), Image.BICUBIC)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(tiny: bool = False, device: str = "auto", steps: int = 30, resolution: int | None = None, reps: int = 5,
        guidance_scale: float = 7.5, image_guidance_scale: float = 1.5, log=print) -> dict:
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    resolution = resolution or (64 if tiny else 512)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    log(f"edit_latency: {'tiny' if tiny else 'sd15'} at {resolution} px, {steps} steps, {dtype}, on {dev} ({name}), "
        f"torch {torch.__version__}")
    kit, plain = build(tiny, dev, dtype)
    image = source_image(resolution)
    common = dict(num_inference_steps=steps, guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale)

    def edit_kit():
        return kit(PROMPT, image, reward_scores=(5, 5, 5), height=resolution, width=resolution,
                   generator=torch.Generator(dev).manual_seed(0), **common).images[0]

    def edit_plain():
        return plain(PROMPT, image=image, generator=torch.Generator(dev).manual_seed(0), **common).images[0]

    times: dict[str, list[float]] = {"kit": [], "plain": []}
    sizes = {}
    with torch.inference_mode():
        for _ in range(1):  # warm-up: CUDA context, cuDNN / SDPA kernel choice, allocator
            edit_kit(), edit_plain()
        for _ in range(reps):
            for key, fn in (("kit", edit_kit), ("plain", edit_plain)):
                sync(dev)
                t = time.perf_counter()
                out = fn()
                sync(dev)
                times[key].append(time.perf_counter() - t)
                sizes[key] = out.size
    if sizes["kit"] != sizes["plain"] or sizes["kit"] != (resolution, resolution):
        raise AssertionError(f"the two pipelines made different sizes: {sizes}")
    kit_s, plain_s = statistics.median(times["kit"]), statistics.median(times["plain"])
    overhead = kit_s / plain_s - 1
    log(f"kit (rewards) {kit_s:.3f} s per edit; plain InstructPix2Pix {plain_s:.3f} s per edit; "
        f"reward overhead {overhead:+.1%} (median of {reps}; all kit {[round(x, 3) for x in times['kit']]}, "
        f"plain {[round(x, 3) for x in times['plain']]})" + ("  [CPU: a smoke test]" if dev.type == "cpu" else ""))
    return {"device": str(dev), "device_name": name, "resolution": resolution, "steps": steps, "dtype": str(dtype),
            "tiny": tiny, "kit_s": kit_s, "plain_s": plain_s, "overhead": overhead, "times": times,
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="narrow sd15-shaped models at 64 px (a CPU smoke test)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--resolution", type=int, default=None, help="default 512 (tiny: 64)")
    ap.add_argument("--reps", type=int, default=5, help="timed edits per pipeline (after one warm-up each)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    out = run(args.tiny, args.device, args.steps, args.resolution, args.reps)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
