"""How long the reward's time-embedding vector is, against the UNet's own time embedding.

    python tools/reward_vector_norms.py MODEL_DIR

Prints the norm of the time embedding at a few timesteps, and of the reward vector (what the time hook adds)
at (5, 5, 5) in the perfect words and at one low score per perspective in the model's own failure words,
with each one's distance from (5, 5, 5). A reward vector as long as the time embedding shifts the UNet's
sense of the noise level; a centred encoder (``center_rewards``) adds nothing at (5, 5, 5).
"""

from __future__ import annotations

import sys

import torch

from rewardedit_lib.formats import PERFECT_FEEDBACK
from rewardedit_lib.pipeline import RewardEditPipeline


def main(model_dir: str) -> None:
    pipe = RewardEditPipeline.from_pretrained(model_dir)
    composed = pipe.reward_unet
    unet, reward = composed.unet, composed.reward
    if reward is None:
        raise SystemExit(f"{model_dir}: no reward encoder (a stage-1 or no-reward model)")
    te = unet.time_embedding
    with torch.no_grad():
        for t in (20, 250, 500, 900):
            emb = te.forward(unet.time_proj(torch.tensor([t])).float())  # forward(): without the reward hook
            print(f"time embedding at t {t}: norm {emb.norm():.2f}")
        low = pipe.low_reward_text.split("; ")

        def vector(scores, words):
            s, pooled = pipe.encode_rewards(torch.tensor([scores], dtype=torch.float32), "; ".join(words), 1, "cpu")
            return reward(s, pooled).time[0]

        perfect = vector((5, 5, 5), [PERFECT_FEEDBACK] * 3)
        print(f"reward vector at (5, 5, 5), perfect words: norm {perfect.norm():.2f}")
        for i, name in enumerate(("following", "preserving", "quality")):
            scores = [5, 5, 5]
            scores[i] = 0 if i == 0 else 2
            words = [PERFECT_FEEDBACK] * 3
            words[i] = low[i]
            v = vector(tuple(scores), words)
            print(f"{name} low {tuple(scores)} in its own words: norm {v.norm():.2f}, "
                  f"distance from (5, 5, 5) {(v - perfect).norm():.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
