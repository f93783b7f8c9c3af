"""The multi-reward model's two switches, by name: which rewards condition it, and where they enter.

:mod:`.reward` builds the model from them and re-exports them; the trainer's config, the ablation grid and the
command line read them from here. They sit apart from :mod:`.reward` because that module imports torch and
diffusers (seconds), and the command line offers them as choices before anything heavy is loaded.
"""

from __future__ import annotations

#: Which rewards condition the model: none (stage-1 InstructPix2Pix, the no-reward baseline), the three
#: scores, the three feedback texts, or both.
REWARD_MODES: tuple[str, ...] = ("none", "scores", "text", "both")
#: Where the rewards enter the UNet: the latent (cross-attention after ``conv_in``), the time embedding, both.
INJECTIONS: tuple[str, ...] = ("latent", "time", "both")


def reward_routes(rewards: str, injection: str) -> tuple[bool, bool, bool, bool]:
    """``(scores read, texts read, into the time embedding, into the latent)`` for a switch setting: what the
    reward encoder builds. ``rewards="none"`` routes nothing, whatever the injection."""
    read = rewards != "none"
    return (rewards in ("scores", "both"), rewards in ("text", "both"),
            read and injection in ("time", "both"), read and injection in ("latent", "both"))

