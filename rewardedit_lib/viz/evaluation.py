"""Notebook 05 (evaluation): edits of several models side by side and their yes-rates with 95% CIs.

Why its own module: these draw :func:`rewardedit_lib.evaluate.summarize` results and benchmark edits;
notebook 06 reuses :func:`perspective_bars` for the ablation models, which are evaluated the same way.
"""

from __future__ import annotations

import textwrap
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..formats import PERSPECTIVE_TITLES, PERSPECTIVES
from .common import _finish, _show_image


def edit_comparison(rows: Sequence[Mapping], images: Sequence[Sequence], columns: Sequence[str],
                    max_rows: int = 7) -> Figure:
    """One row per edit: the images given (e.g. source | baseline | reward model), the instruction above.

    ``rows``: dicts with ``instruction`` and ``edit_type``; ``images``: per row, one image per column."""
    rows, images = list(rows)[:max_rows], list(images)[:max_rows]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.9 * len(columns), 2.05 * len(rows)), squeeze=False)
    for i, (r, ims) in enumerate(zip(rows, images)):
        for j, im in enumerate(ims):
            _show_image(axes[i][j], im)
            if i == 0:
                axes[i][j].set_title(columns[j], fontsize=9, fontweight="bold")
        axes[i][0].text(0, -0.08, textwrap.shorten(f"{r['edit_type']}: {r['instruction']}", 60),
                        transform=axes[i][0].transAxes, fontsize=7.5, va="top")
    fig.tight_layout()
    return _finish(fig)


def perspective_bars(summaries: Mapping[str, Mapping], metric: str = "yes_rate",
                     by_type: bool = False, perspective: str = "following") -> Figure:
    """Bars with 95% CIs: per perspective (``by_type=False``) or per edit type for one perspective,
    one bar per model. ``summaries``: ``{model name: evaluate.summarize(...)}``."""
    names = list(summaries)
    if by_type:
        groups = list(next(iter(summaries.values()))["by_type"])
        cell = lambda s, g: s["by_type"][g][perspective]  # noqa: E731
    else:
        groups = list(PERSPECTIVES)
        cell = lambda s, g: s["overall"][g]  # noqa: E731
    x = np.arange(len(groups))
    w = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) * max(1, len(names)) ** 0.5), 3.4))
    for k, name in enumerate(names):
        vals = np.array([cell(summaries[name], g)[metric] for g in groups], dtype=float)
        ci = np.array([cell(summaries[name], g)[f"{metric}_ci"] for g in groups], dtype=float)
        err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
        ax.bar(x + (k - (len(names) - 1) / 2) * w, vals, w, yerr=err, capsize=2, label=name)
    ax.set_xticks(x, groups if by_type else [PERSPECTIVE_TITLES[g] for g in groups], fontsize=8,
                  rotation=20 if by_type else 0)
    ax.set_ylabel("yes-rate (%)" if metric == "yes_rate" else "mean score (0-5)")
    if by_type:
        ax.set_title(f"{PERSPECTIVE_TITLES[perspective]}, per edit type")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig)
