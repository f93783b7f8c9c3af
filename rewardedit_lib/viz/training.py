"""Notebook 04 (training): the loss curves of training runs and the trainer's validation grids.

Why its own module: these read what a training run writes (``metrics.jsonl``, ``samples/*.png``, see
:mod:`rewardedit_lib.train`), which only notebook 04 shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .common import _finish, _show_image


def loss_curves(runs: Mapping[str, Sequence[Mapping[str, float]]], title: str = "Training loss",
                smooth: int = 1) -> Figure:
    """Loss against step for several runs (their ``metrics.jsonl`` rows), on one axis; ``smooth`` = moving
    average over that many logged points."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, rows in runs.items():
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows], dtype=float)
        if smooth > 1 and len(loss) >= smooth:
            loss = np.convolve(loss, np.ones(smooth) / smooth, mode="valid")
            steps = steps[smooth - 1:]
        ax.plot(steps, loss, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return _finish(fig)


def image_files(paths: Sequence[str | Path], titles: Sequence[str] | None = None, width: float = 4.0) -> Figure:
    """Show image files side by side (e.g. the trainer's validation grids at several steps)."""
    from PIL import Image

    n = len(paths)
    fig, axes = plt.subplots(1, n, figsize=(width * n, width * 1.1), squeeze=False)
    for ax, p, t in zip(axes[0], paths, titles or [Path(p).stem for p in paths]):
        _show_image(ax, Image.open(p).convert("RGB"))
        ax.set_title(t, fontsize=9)
    fig.tight_layout()
    return _finish(fig)
