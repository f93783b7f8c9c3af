"""Notebook 01 (annotation): how well the judge's scores agree with the toy world's ground truth.

Why its own module: the agreement figure is the one drawing only notebook 01 needs (its triplet grid,
phrase table and text tables are shared, in :mod:`~rewardedit_lib.viz.common`); the numbers come from
:func:`rewardedit_lib.dataset.agreement`.
"""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..formats import MAX_SCORE, PERSPECTIVE_TITLES, PERSPECTIVES
from .common import _BAD_COLOR, _OK_COLOR, _finish


def agreement_figure(agreement: Mapping[str, Mapping], title: str = "Judge vs ground truth") -> Figure:
    """Per perspective: the score distribution of ok vs flawed triplets (top) and the confusion matrix of the
    judge's verdict (score >= 4) against the truth (bottom). Input: :func:`dataset.agreement`."""
    fig, axes = plt.subplots(2, len(PERSPECTIVES), figsize=(4.2 * len(PERSPECTIVES), 6.4),
                             gridspec_kw={"height_ratios": [1.25, 1]})
    x = np.arange(MAX_SCORE + 1)
    for j, p in enumerate(PERSPECTIVES):
        a = agreement[p]
        ax = axes[0, j]
        ax.bar(x - 0.2, a["scores_ok"], 0.4, color=_OK_COLOR, label="truth: ok")
        ax.bar(x + 0.2, a["scores_flawed"], 0.4, color=_BAD_COLOR, label="truth: flawed")
        ax.set_xticks(x)
        ax.set_xlabel("judge score")
        ax.set_title(f"{PERSPECTIVE_TITLES[p]}\nROC AUC {a['auc']:.3f}, n={a['n']}", fontsize=10)
        if j == 0:
            ax.set_ylabel("triplets")
            ax.legend(fontsize=8)
        c = a["confusion"]
        m = np.array([[c["ok_yes"], c["ok_no"]], [c["flawed_yes"], c["flawed_no"]]])
        ax = axes[1, j]
        ax.imshow(m, cmap="Blues")
        for (r, k), v in np.ndenumerate(m):
            ax.text(k, r, str(v), ha="center", va="center", fontsize=12,
                    color="white" if v > m.max() / 2 else "black")
        ax.set_xticks([0, 1], ["judge: yes", "judge: no"])
        ax.set_yticks([0, 1], ["truth: ok", "truth: flawed"])
        ax.set_title(f"verdict accuracy {a['accuracy']:.1%}", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig)
