"""Notebook 06 (ablations): the inference-time reward sweeps, the measured reward knob and the live knob.

Why its own module: these draw :mod:`rewardedit_lib.ablation` and :func:`rewardedit_lib.knob.reward_knob`
results, and :class:`RewardKnob` re-runs a trained pipeline under the rewards a reader asks for -- the
experiments only notebook 06 runs.
"""

from __future__ import annotations

import html
import textwrap
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..formats import MAX_SCORE, PERSPECTIVE_TITLES, PERSPECTIVES
from .common import _SHORT, PERSPECTIVE_COLORS, _finish, _png, _show_image, _widgets_reason, image_row

if TYPE_CHECKING:  # only for annotations: not needed to draw a figure
    import ipywidgets


def _draw_sweep(ax, xs: Sequence[float], series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str,
                title: str | None = None) -> None:
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", label=PERSPECTIVE_TITLES.get(name, name), color=PERSPECTIVE_COLORS.get(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def sweep_plot(xs: Sequence[float], series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str,
               title: str | None = None) -> Figure:
    """Line plot of one or more measured series against a swept value (the ablations' knobs)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    _draw_sweep(ax, xs, series, xlabel, ylabel, title)
    fig.tight_layout()
    return _finish(fig)


def sweep_panels(sweeps: Mapping[str, tuple[Sequence[float], Mapping[str, Sequence[float]]]],
                 ylabel: str = "judge's mean score (0-5)", title: str | None = None) -> Figure:
    """Several sweeps side by side, one panel each, on one y scale (``sweeps``: name -> (swept values, series
    per judged perspective), e.g. :func:`ablation.sweep_series`). A panel named after a perspective sweeps
    the score *requested* for it (the other two at 5); ``"guidance"`` sweeps the reward guidance scale.

    Why one figure: a model that obeys its rewards shows a rising line in the panel's own colour (asking
    for a better following score gives better following) and flat lines elsewhere."""
    names = list(sweeps)
    if not names:
        raise ValueError("no sweep to plot")
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.3), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        xs, series = sweeps[name]
        if name in PERSPECTIVES:
            xlabel, head = f"requested {name} score (others 5)", f"Asking for {name}"
        else:
            xlabel, head = "reward guidance scale", "Reward guidance at (5, 5, 5)"
        _draw_sweep(ax, xs, series, xlabel, ylabel if ax is axes[0][0] else "", head)
        if name in PERSPECTIVES:
            ax.set_xticks(list(xs))
        if ax is not axes[0][0]:
            ax.get_legend().remove()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _finish(fig)


def sweep_edit_grid(source, instruction: str, strips: Mapping[str, Sequence[tuple[float, object]]]) -> Figure:
    """One benchmark edit under each requested score: one row per swept perspective, the source first, then
    the edit for each requested score (``strips``: perspective -> [(score, image or path)], e.g.
    :func:`ablation.sweep_edits`)."""
    from PIL import Image

    rows = list(strips)
    cols = 1 + max(len(v) for v in strips.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.5 * cols, 1.65 * len(rows) + 0.4), squeeze=False)
    for i, p in enumerate(rows):
        _show_image(axes[i][0], source)
        axes[i][0].set_title("source", fontsize=8)
        axes[i][0].text(-0.1, 0.5, PERSPECTIVE_TITLES.get(p, p), transform=axes[i][0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8, weight="bold")
        for j in range(1, cols):
            ax = axes[i][j]
            if j - 1 < len(strips[p]):
                score, img = strips[p][j - 1]
                _show_image(ax, img if isinstance(img, Image.Image) else Image.open(img).convert("RGB"))
                ax.set_title(f"{_SHORT[p]} asked {float(score):g}" if p in _SHORT else f"{float(score):g}",
                             fontsize=8)
            else:
                ax.set_axis_off()
    fig.suptitle(textwrap.shorten(f"\u201c{instruction}\u201d: one perspective's requested score varies, the "
                                  f"others stay 5", 110), fontsize=9)
    fig.tight_layout()
    return _finish(fig)


def knob_bars(knob) -> Figure:
    """The reward knob measured (:func:`knob.reward_knob`; its report or ``to_json()``): left, per
    perspective, the judge's yes-rate when the model is asked for 5 and for the low score; right, their
    difference -- the knob, in points -- with its paired-bootstrap 95% interval. A bar whose interval
    crosses 0 is a reward the model was not shown to hear."""
    d = knob.to_json() if hasattr(knob, "to_json") else knob
    per, low = d["perspectives"], float(d["low"])
    names = list(per)
    x = np.arange(len(names))
    ticks = [PERSPECTIVE_TITLES.get(p, p).replace(" ", "\n", 1) for p in names]
    colors = [PERSPECTIVE_COLORS.get(p, "#777777") for p in names]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    ax.bar(x - 0.2, [per[p]["yes_rate_high"] for p in names], 0.4, color=colors, label="asked 5")
    ax.bar(x + 0.2, [per[p]["yes_rate_low"] for p in names], 0.4, color=colors, alpha=0.45, hatch="//",
           edgecolor="white", label=f"asked {low:g}")
    ax.set_xticks(x, ticks, fontsize=8)
    ax.set_ylabel("judge's yes-rate (%)")
    ax.set_ylim(0, 115)
    ax.set_title(f"Asked for 5 vs {low:g} in that perspective", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=2, loc="upper center")
    vals = np.array([per[p]["knob"] for p in names], dtype=float)
    ci = np.array([per[p]["knob_ci"] for p in names], dtype=float)
    err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
    bx.bar(x, vals, 0.55, yerr=err, capsize=4, color=colors)
    bx.axhline(0, color="black", lw=0.8)
    top = float(np.nanmax(np.append(ci[:, 1], 0.0)))
    bottom = float(np.nanmin(np.append(ci[:, 0], 0.0)))
    pad = max(8.0, 0.25 * (top - bottom))
    bx.set_ylim(bottom - pad, top + pad)
    for i, p in enumerate(names):
        up = not vals[i] < 0
        at = ci[i, 1] if up else ci[i, 0]
        bx.annotate(f"{vals[i]:+.0f}: {per[p]['verdict']}", (x[i], at if at == at else 0.0),
                    xytext=(0, 3 if up else -3), textcoords="offset points", ha="center",
                    va="bottom" if up else "top", fontsize=7.5)
    bx.set_xticks(x, ticks, fontsize=8)
    bx.set_ylabel(f"yes % at 5 - at {low:g} (points)")
    bx.set_title("The knob, with its 95% CI", fontsize=10)
    bx.grid(axis="y", alpha=0.3)
    fig.suptitle(f"The reward knob on {d['n']} edits", fontsize=11)
    fig.tight_layout()
    return _finish(fig)


class RewardKnob:
    """Re-run one edit live under the rewards you ask for: three score sliders (0-5) and a feedback text box.

    Why a class and not just a widget: the edit itself (:meth:`edit`) and what a slider change does
    (:meth:`update`) are plain methods, so they are tested without a browser; :attr:`widget` only wires
    them to ipywidgets. Every edit uses the same noise (the generator is re-seeded from ``settings.seed``),
    so what changes between two edits is the rewards and nothing else.
    """

    def __init__(self, pipe, image, instruction: str, settings=None, scores: Sequence[float] = (5, 5, 5),
                 feedback: str | None = None, size: int = 192):
        from .. import evaluate

        self.pipe, self.instruction, self.size = pipe, instruction, size
        self.image = image.convert("RGB") if hasattr(image, "convert") else image
        self.settings = settings or evaluate.default_settings(pipe)  # the model's recorded feedback text too
        self.scores = tuple(float(s) for s in scores)
        self.feedback = feedback if feedback is not None else (self.settings.reward_text or evaluate.DEFAULT_REWARD_TEXT)
        self.last = None
        self._widget = None

    def edit(self, scores: Sequence[float], feedback: str | None = None):
        """The edit under these requested scores and feedback text (a PIL image); same noise every time."""
        import torch

        s = self.settings
        gen = torch.Generator(device="cpu").manual_seed(s.seed)
        return self.pipe(self.instruction, self.image, reward_scores=[float(x) for x in scores],
                         reward_text=feedback if feedback else None, num_inference_steps=s.num_inference_steps,
                         guidance_scale=s.guidance_scale, image_guidance_scale=s.image_guidance_scale,
                         reward_guidance_scale=s.reward_guidance_scale, eta=s.eta, resolution=s.resolution,
                         generator=gen,
                         output_type="pil").images[0]

    def update(self, _change=None):
        """Read the sliders and the text box (when the widget exists), edit, show the result; returns it."""
        if self._widget is not None:
            self.scores = tuple(float(sl.value) for sl in self._sliders)
            self.feedback = self._text.value
        self.last = self.edit(self.scores, self.feedback)
        if self._widget is not None:
            self._edited.value = _png(self.last, self.size)
            asked = ", ".join(f"{p} {v:g}" for p, v in zip(PERSPECTIVES, self.scores))
            self._status.value = f"<i>{html.escape(self.instruction)}</i><br>asked: {asked}"
        return self.last

    @property
    def widget(self) -> ipywidgets.VBox:
        """The knob: sliders and text box on top, source | edit below (built on first use)."""
        if self._widget is None:
            import ipywidgets as W

            self._sliders = [W.FloatSlider(value=v, min=0, max=MAX_SCORE, step=0.5, description=p,
                                           continuous_update=False) for p, v in zip(PERSPECTIVES, self.scores)]
            self._text = W.Textarea(value=self.feedback, description="feedback", continuous_update=False,
                                    layout=W.Layout(width="95%", height="4em"))
            self._source = W.Image(value=_png(self.image, self.size), format="png")
            self._edited = W.Image(format="png")
            self._status = W.HTML()
            for w in (*self._sliders, self._text):
                w.observe(self.update, names="value")
            self._widget = W.VBox([W.HBox(self._sliders), self._text,
                                   W.HBox([W.VBox([W.Label("source"), self._source]),
                                           W.VBox([W.Label("edit"), self._edited])]), self._status])
            self.update()
        return self._widget


def reward_knob(pipe, image, instruction: str, settings=None, *, force_static: bool = False) -> Figure | ipywidgets.VBox:
    """The live reward knob (:class:`RewardKnob`) where widgets can be shown; elsewhere (a script, a static
    render) it says why and returns source | edits at a few fixed rewards instead."""
    knob = RewardKnob(pipe, image, instruction, settings)
    reason = _widgets_reason(force_static)
    if reason is None:
        return knob.widget
    print(f"reward knob: {reason}; showing fixed rewards instead.")
    asks = [(5, 5, 5), (0, 5, 5), (5, 0, 5), (5, 5, 0)]
    images = [knob.image] + [knob.edit(a) for a in asks]
    return image_row(images, ["source"] + [f"asked {a[0]}, {a[1]}, {a[2]}" for a in asks], instruction)
