"""Notebook 02 (dataset): the score histograms, the toy world's flaw rates, the correlation between
perspectives and the interactive dataset browser.

Why its own module: these read a whole annotated dataset (every number from :mod:`rewardedit_lib.dataset`),
which only notebook 02 studies; the browser falls back to the shared triplet grid of
:mod:`~rewardedit_lib.viz.common` where widgets cannot be shown.
"""

from __future__ import annotations

import html
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .. import dataset
from ..formats import MAX_SCORE, PERSPECTIVE_TITLES, PERSPECTIVES, Triplet
from .common import _BAD_COLOR, _OK_COLOR, PERSPECTIVE_COLORS, _finish, _png, _widgets_reason, triplet_grid

if TYPE_CHECKING:  # only for annotations: not needed to draw a figure
    import ipywidgets


def score_histograms(triplets: Sequence[Triplet]) -> Figure:
    """How many triplets got each score 0..5, one panel per perspective.

    Why three panels and not one average: the paper's point is that the perspectives fail differently
    (RewardEdit20K's quality scores sit high while following scores spread out); an average hides that.
    """
    counts = dataset.score_counts(triplets)
    n = sum(t.rewards is not None for t in triplets)
    if n == 0:
        raise ValueError("no triplet has rewards: show the toy ground truth with flaw_rate_bars(truth) instead")
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True, layout="constrained")
    for ax, p in zip(axes, PERSPECTIVES):
        bars = ax.bar(range(MAX_SCORE + 1), counts[p], color=PERSPECTIVE_COLORS[p])
        ax.bar_label(bars, fontsize=7)
        ax.margins(y=0.12)  # room for the count above the tallest bar
        ax.set_title(PERSPECTIVE_TITLES[p], fontsize=10)
        ax.set_xticks(range(MAX_SCORE + 1))
        ax.set_xlabel("score")
    axes[0].set_ylabel("triplets")
    fig.suptitle(f"Reward scores of {n} triplets", fontsize=11)
    return _finish(fig)


def flaw_rate_bars(truth: Mapping[str, dict]) -> Figure:
    """The toy world's ground-truth flaw rate per perspective, overall and per edit type.

    Why: before any judge has run, this is what the rewards *should* find. Notebook 01's judge estimates
    exactly these rates without seeing ``_truth/``; the title says so, so nobody mistakes it for rewards.
    """
    rates = dataset.flaw_rates(truth)
    groups = list(rates)
    x = np.arange(len(groups))
    w = 0.8 / len(PERSPECTIVES)
    fig, ax = plt.subplots(figsize=(1.0 + 1.1 * len(groups), 3.4), layout="constrained")
    for k, p in enumerate(PERSPECTIVES):
        ax.bar(x + (k - 1) * w, [rates[g][p] for g in groups], w, label=PERSPECTIVE_TITLES[p],
               color=PERSPECTIVE_COLORS[p])
    ax.axvline(0.5, color="0.6", lw=0.8, ls=":")  # "all" is a summary, not an edit type
    ax.set_xticks(x, [f"{g}\nn={int(rates[g]['n'])}" for g in groups], fontsize=8)
    ax.set_ylabel("flawed share")
    ax.set_ylim(0, max(0.05, max(rates[g][p] for g in groups for p in PERSPECTIVES)) * 1.35)  # legend room
    ax.legend(fontsize=8, ncols=3, loc="upper right")
    ax.set_title(f"GROUND TRUTH of the toy data (not rewards): {rates['all']['any']:.0%} of triplets have "
                 f"at least one flaw", fontsize=10)
    return _finish(fig)


def correlation_heatmap(matrix_or_corr: np.ndarray, labels: Sequence[str] | None = None,
                        title: str = "Correlation between perspectives") -> Figure:
    """A heatmap of the Pearson correlation between perspectives, the value written in every cell.

    Accepts either the ``(n, k)`` per-triplet matrix (scores or truth ok-flags; correlated here via
    :func:`dataset.correlation`) or an already computed ``(k, k)`` correlation matrix (any square input
    with ``k == len(labels)`` is taken as one). Empty cells ("n/a") mark a perspective that never varies.
    """
    labels = [PERSPECTIVE_TITLES.get(p, p) for p in (labels or PERSPECTIVES)]
    m = np.asarray(matrix_or_corr, dtype=float)
    k = len(labels)
    corr = m if m.shape == (k, k) else dataset.correlation(m)
    fig, ax = plt.subplots(figsize=(4.6, 3.8), layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(corr), cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(k):
        for j in range(k):
            v = corr[i, j]
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=10,
                    color="white" if abs(v) > 0.6 else "black")
    short = [textwrap.fill(s, 12) for s in labels]
    ax.set_xticks(range(k), short, fontsize=8)
    ax.set_yticks(range(k), short, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return _finish(fig)


def _ideal_path(t: Triplet) -> Path | None:
    """The toy world's correct edit for this triplet (``_truth/ideal/<folder>.png``), if there is one."""
    if not isinstance(t.source, (str, Path)):
        return None
    p = Path(t.source).parent.parent / "_truth" / "ideal" / f"{t.id.split('#')[0]}.png"
    return p if p.exists() else None


def _describe(t: Triplet, truth: Mapping[str, dict] | None, pos: int, total: int) -> str:
    """The browser's text: instruction, and per perspective the reward (score, feedback) and/or the truth."""
    line = dataset.truth_of(t, truth)
    head = "<tr><th>perspective</th>" + ("<th>score</th><th>feedback</th>" if t.rewards else "") + \
           ("<th>ground truth</th>" if line else "") + "</tr>"
    rows = []
    for k, p in enumerate(PERSPECTIVES):
        cells = f"<td>{PERSPECTIVE_TITLES[p]}</td>"
        if t.rewards:
            r = (t.rewards.following, t.rewards.preserving, t.rewards.quality)[k]
            cells += f"<td>{r.score}</td><td>{html.escape(r.feedback)}</td>"
        if line:
            ok = line[f"{p}_ok"]
            cells += (f"<td style='color:{_OK_COLOR if ok else _BAD_COLOR}'>"
                      f"{'ok' if ok else html.escape(str(line[f'{p}_flaw']))}</td>")
        rows.append(f"<tr>{cells}</tr>")
    table = f"<table>{head}{''.join(rows)}</table>" if (t.rewards or line) else "<i>no rewards, no ground truth</i>"
    return (f"<b>{html.escape(t.id)}</b> &middot; {t.edit_type or dataset.UNKNOWN_TYPE} &middot; sample "
            f"{pos + 1} of {total}<br><i>&ldquo;{html.escape(t.instruction)}&rdquo;</i>{table}")


def browser(triplets: Sequence[Triplet], truth: Mapping[str, dict] | None = None, *,
            force_static: bool = False, per_type: int = 3) -> Figure | ipywidgets.VBox:
    """Browse the triplets: filter by edit type, perspective and score, step through with a slider.

    The score filter reads the chosen perspective's reward score when the data has rewards, else the toy
    ground truth (ok / flawed). Where widgets cannot be shown (``force_static``, no ipywidgets, not in a
    Jupyter kernel) it prints why and returns :func:`triplet_grid` instead, so the notebook still shows
    the data when run as a script or rendered statically.
    """
    reason = _widgets_reason(force_static)
    if reason:
        print(f"dataset browser: {reason}; showing a static grid instead.")
        return triplet_grid(triplets, per_type=per_type, truth=truth)
    import ipywidgets as W

    types = [(k, k) for k in dataset.count_by_edit_type(triplets)]
    scores = [(str(s), s) for s in dataset.score_filter_options(triplets, truth)]
    f_type = W.Dropdown(options=[("all", None)] + types, description="edit type")
    f_persp = W.Dropdown(options=[(PERSPECTIVE_TITLES[p], p) for p in PERSPECTIVES], description="perspective")
    f_score = W.Dropdown(options=[("all", None)] + scores, description="score" if any(t.rewards for t in triplets)
                         else "truth", disabled=not scores)
    slider = W.IntSlider(value=0, min=0, max=0, description="sample", continuous_update=False)
    images, info = W.HBox(), W.HTML()
    shown: list[int] = []

    def show(_=None) -> None:
        if not shown:
            images.children, info.value = (), "<i>no triplet matches these filters</i>"
            return
        t = triplets[shown[slider.value]]
        pictures = [("source", t.load_source()), ("edited", t.load_edited())]
        if (ideal := _ideal_path(t)) is not None:
            pictures.append(("ideal (toy ground truth)", ideal))
        images.children = [W.VBox([W.Label(name), W.Image(value=_png(img), format="png")]) for name, img in pictures]
        info.value = _describe(t, truth, slider.value, len(shown))

    def refilter(_=None) -> None:
        shown[:] = dataset.filter_indices(triplets, truth, edit_type=f_type.value, perspective=f_persp.value,
                                          score=f_score.value)
        slider.value = 0  # before the new max, so a smaller max never clamps a stale position
        slider.max = max(len(shown) - 1, 0)
        show()

    for w in (f_type, f_persp, f_score):
        w.observe(refilter, names="value")
    slider.observe(show, names="value")
    refilter()
    return W.VBox([W.HBox([f_type, f_persp, f_score]), slider, images, info])
