"""What a model does to a source image with no instruction: the branch that text guidance subtracts.

    python tools/no_instruction_drift.py BENCH_DIR MODEL_DIR [MODEL_DIR ...]

InstructPix2Pix's text guidance is ``e(I, T) + s (e(I, T) - e(I, no text))``: whatever the model draws from the
source alone is pushed *against* in the edit, everywhere in the picture. Each model edits every benchmark
image with the empty instruction, no guidance (rewards (5, 5, 5) in the perfect words for a reward model,
as every branch gets them in the course's edits), and the mean absolute change from the source is printed
(grey levels, all pixels), with the fraction of pixels changed by more than 20 levels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rewardedit_lib.pipeline import RewardEditPipeline


def main(bench: str, *models: str) -> None:
    images = sorted((Path(bench) / "images").glob("*.png"))
    for model in models:
        pipe = RewardEditPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)
        change, moved = [], []
        for i, path in enumerate(images):
            src = Image.open(path).convert("RGB")
            out = pipe("", src, guidance_scale=1.0, image_guidance_scale=1.0, num_inference_steps=10, eta=1.0,
                       generator=torch.Generator().manual_seed(i)).images[0]
            d = np.abs(np.asarray(out, np.float32) - np.asarray(src, np.float32)).max(axis=2)
            change.append(d.mean())
            moved.append((d > 20).mean())
        print(f"{model}: mean change {np.mean(change):.1f} grey levels, "
              f"pixels changed > 20: {100 * np.mean(moved):.1f} %")


if __name__ == "__main__":
    main(*sys.argv[1:])
