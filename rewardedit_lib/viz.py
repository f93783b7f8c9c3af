"""Figures and widgets: triplet grids, score and flaw plots, the correlation heatmap, the dataset browser,
the ablation sweeps and the reward knob.

Why only drawing here: every number shown comes from :mod:`rewardedit_lib.dataset`, so a figure and the
``rewardedit validate`` text can never disagree, and the numbers are tested without a plotting backend.

Every function returns its figure instead of showing it. Figures are created with pyplot (so Jupyter's
inline backend knows how to render them) and closed before they are returned: a notebook cell that ends
with the figure shows it exactly once, and a script or test that makes hundreds of them leaks nothing.
"""

from __future__ import annotations

import html
import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from . import dataset
from .formats import MAX_SCORE, PERSPECTIVE_TITLES, PERSPECTIVES, Triplet

if TYPE_CHECKING:  # only for annotations: neither is needed to draw a figure
    import ipywidgets
    from IPython.display import HTML, Markdown

PERSPECTIVE_COLORS: dict[str, str] = {"following": "#4C72B0", "preserving": "#DD8452", "quality": "#55A868"}
_OK_COLOR, _BAD_COLOR = "#2a7a2a", "#b22222"
_SHORT = {"following": "F", "preserving": "P", "quality": "Q"}
#: Up to this size an image is shown pixel for pixel (nearest); larger (real) images are smoothed.
_PIXEL_ART_MAX = 64


def _finish(fig: Figure) -> Figure:
    """Detach the figure from pyplot: the caller displays it once, and nothing piles up in memory."""
    plt.close(fig)
    return fig


def _show_image(ax, img) -> None:
    """Draw an image with no axes; toy images keep their hard pixels (every pixel has a meaning there)."""
    arr = np.asarray(img)
    ax.imshow(arr, interpolation="nearest" if max(arr.shape[:2]) <= _PIXEL_ART_MAX else "antialiased")
    ax.set_axis_off()


def _caption(t: Triplet, truth: Mapping[str, dict] | None) -> tuple[str, bool]:
    """The flags under a grid example: reward scores and/or ground-truth flaws; and whether anything failed."""
    lines, bad = [], False
    if t.rewards is not None:
        lines.append("scores " + "  ".join(f"{_SHORT[p]}{s}" for p, s in zip(PERSPECTIVES, t.rewards.scores)))
        bad |= min(t.rewards.scores) < MAX_SCORE
    line = dataset.truth_of(t, truth)
    if line is not None:
        flaws = [f"{_SHORT[p]}: {line[f'{p}_flaw'].replace('_', ' ')}" for p in PERSPECTIVES if not line[f"{p}_ok"]]
        lines.append("truth: " + (", ".join(flaws) if flaws else "no flaw"))
        bad |= bool(flaws)
    return "\n".join(lines), bad


def triplet_grid(triplets: Sequence[Triplet], per_type: int = 3, truth: Mapping[str, dict] | None = None,
                 scale: float = 1.2) -> Figure:
    """Example triplets, one row per edit type: source | edited, the instruction above, the flags below.

    Why per edit type: the seven Real-Edit types fail in different ways (a Remove that removes nothing,
    a Style edit that loses an object), and seeing them side by side is the quickest way to learn what the
    judge will be asked to notice. ``scale`` is the size of one image in inches.
    """
    groups = dataset.examples_per_type(triplets, per_type)
    if not groups:
        raise ValueError("no triplets to show")
    rows = len(groups)
    width = 0.5 + per_type * 2.25 * scale
    fig = plt.figure(figsize=(width, rows * (scale + 0.68) + 0.3), layout="constrained")
    fig.suptitle("Triplets per edit type  (each pair: source | edited)", fontsize=10)
    cells = fig.subfigures(rows, per_type + 1, width_ratios=[0.5 / scale] + [2.25] * per_type,
                           wspace=0, hspace=0, squeeze=False)
    wrap = max(16, int(2 * scale * 14))
    for r, (etype, examples) in enumerate(groups.items()):
        for cell in cells[r]:  # alternate row shading: each caption visibly belongs to the pair above it
            cell.set_facecolor("0.94" if r % 2 else "none")
        cells[r, 0].text(0.5, 0.5, etype, rotation=90, ha="center", va="center", fontsize=10, weight="bold")
        for c, t in enumerate(examples, start=1):
            sub = cells[r, c]
            sub.set_edgecolor("0.75")  # a thin frame, so neighbouring pairs don't read as one strip
            sub.set_linewidth(0.6)
            ax_src, ax_edit = sub.subplots(1, 2)
            _show_image(ax_src, t.load_source())
            _show_image(ax_edit, t.load_edited())
            sub.suptitle(textwrap.fill(t.instruction, wrap, max_lines=2, placeholder=" ..."), fontsize=7)
            text, bad = _caption(t, truth)
            if text:
                sub.supxlabel(text, fontsize=6.5, color=_BAD_COLOR if bad else _OK_COLOR)
    return _finish(fig)


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


def phrase_table(phrases: Mapping[str, Sequence[tuple[str, int]]], title: str = "Most frequent failures") -> HTML:
    """An HTML table of the most frequent failure phrases per perspective, with their counts.

    Why HTML and not a figure: phrases are text a reader wants to read and copy; a table keeps them
    searchable, and it needs no pandas. Returns an ``IPython.display.HTML`` (``.data`` is the string).
    """
    from IPython.display import HTML

    persp = [p for p in PERSPECTIVES if p in phrases] + [p for p in phrases if p not in PERSPECTIVES]
    depth = max((len(phrases[p]) for p in persp), default=0)
    head = "".join(f"<th colspan='2' style='text-align:left'>{html.escape(PERSPECTIVE_TITLES.get(p, p))}</th>"
                   for p in persp)
    rows = []
    for i in range(depth):
        cells = []
        for p in persp:
            if i < len(phrases[p]):
                text, n = phrases[p][i]
                cells.append(f"<td style='text-align:left'>{html.escape(str(text))}</td>"
                             f"<td style='text-align:right'>{n}</td>")
            else:
                cells.append("<td></td><td></td>")
        rows.append(f"<tr><td>{i + 1}</td>{''.join(cells)}</tr>")
    if not rows:
        rows.append(f"<tr><td colspan='{1 + 2 * len(persp)}'><i>no failures recorded</i></td></tr>")
    return HTML(f"<b>{html.escape(title)}</b><table><thead><tr><th>#</th>{head}</tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>")


# --------------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------------
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


def widgets_unavailable_reason() -> str | None:
    """Why interactive widgets cannot be shown here (``None`` if they can): a script, a terminal IPython
    or a missing ipywidgets all get the static grid instead of a widget nobody can see."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return "ipywidgets is not installed"
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return "not running inside a Jupyter kernel"
    return None


def _ideal_path(t: Triplet) -> Path | None:
    """The toy world's correct edit for this triplet (``_truth/ideal/<folder>.png``), if there is one."""
    if not isinstance(t.source, (str, Path)):
        return None
    p = Path(t.source).parent.parent / "_truth" / "ideal" / f"{t.id.split('#')[0]}.png"
    return p if p.exists() else None


def _png(img, size: int = 192) -> bytes:
    """PNG bytes of an image enlarged (or shrunk) to ``size`` pixels wide; toy pixels stay sharp."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        with Image.open(img) as f:
            img = f.convert("RGB")
    small = max(img.size) <= _PIXEL_ART_MAX
    im = img.resize((size, round(size * img.height / img.width)), Image.NEAREST if small else Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="png")
    return buf.getvalue()


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
    reason = "static view requested" if force_static else widgets_unavailable_reason()
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


# --------------------------------------------------------------------------------------------------
# Notebook 03: the reward encoder
# --------------------------------------------------------------------------------------------------
def text_table(rows: Sequence[Sequence], headers: Sequence[str], title: str | None = None) -> str:
    """A plain-text table (numbers right-aligned with thousands separators) -- for ``print``, so a notebook
    can check it as text (``# NBVAL_CHECK_OUTPUT``) and a terminal shows it the same way."""
    def cell(v) -> str:
        if isinstance(v, bool) or v is None:
            return "" if v is None else str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) or r[i] is None for r in rows)
               for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]

    def line(values) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = ([title] if title else []) + [line(headers), line(["-" * w for w in widths])] + [line(r) for r in body]
    return "\n".join(out)


def parameter_table(counts: Mapping[str, Mapping[str, int]], title: str = "Parameters") -> str:
    """Parameters per part (rows) and model config (columns), from :func:`models.parameter_counts`; the
    reward total also as a share of the UNet."""
    configs = list(counts)
    parts: list[str] = []
    for c in configs:
        parts += [p for p in counts[c] if p not in parts]
    parts = [p for p in parts if p not in ("reward (all)", "total")] + ["reward (all)", "total"]
    label = {"unet": "stock UNet (stage 1)", "reward (all)": "reward modules (all)"}
    rows = [[label.get(p, p)] + [counts[c].get(p) for c in configs] for p in parts]
    rows.append(["reward / UNet (%)"] + [round(100 * counts[c].get("reward (all)", 0) / counts[c]["unet"], 2)
                                         for c in configs])
    return text_table(rows, ["part"] + configs, title)


def score_embedding_figure(embedding, scores: Sequence[float] | None = None, fine=None) -> Figure:
    """The sinusoidal embedding of the scores (rows) over its dimensions, the cosine similarity between the
    scores' embeddings, and -- with ``fine = (grid, embedding of grid)`` -- a few dimensions as curves of a
    continuous score.

    Why: the heatmap shows *what* the MLP reads (cosines first, then sines, at geometrically spaced
    frequencies; for scores 0-5 only the fastest few dozen vary, the rest are nearly constant), the
    similarity matrix shows the consequence (neighbouring scores look alike, distant ones less), and the
    curves show that a score between two integers gets an embedding between theirs (notebook 06's knob).
    """
    e = np.asarray(embedding, dtype=float)
    scores = list(range(len(e))) if scores is None else list(scores)
    norm = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = norm @ norm.T
    n = 3 if fine is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.3), width_ratios=[1.8, 1, 1.2][:n], layout="constrained")
    ax, ax2 = axes[0], axes[1]
    im = ax.imshow(e, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    half = e.shape[1] // 2
    ax.axvline(half - 0.5, color="k", lw=0.8)
    ax.set_yticks(range(len(scores)), [f"score {s:g}" for s in scores], fontsize=8)
    ax.set_xlabel(f"dimension  (0-{half - 1}: cos, {half}-{e.shape[1] - 1}: sin; frequency falls left to right)",
                  fontsize=8)
    ax.set_title(f"Sinusoidal embedding of each score ({e.shape[1]}-d)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    im2 = ax2.imshow(sim, cmap="viridis", vmin=min(0.0, sim.min()), vmax=1)
    for i in range(len(scores)):
        for j in range(len(scores)):
            ax2.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                     color="black" if sim[i, j] > 0.75 else "white")
    ax2.set_xticks(range(len(scores)), [f"{s:g}" for s in scores])
    ax2.set_yticks(range(len(scores)), [f"{s:g}" for s in scores])
    ax2.set_title("Cosine similarity between scores", fontsize=10)
    fig.colorbar(im2, ax=ax2, shrink=0.8)
    if fine is not None:
        grid, fe = np.asarray(fine[0], dtype=float), np.asarray(fine[1], dtype=float)
        ax3 = axes[2]
        for d in sorted({0, 2, 6, 12, 24} & set(range(half))):
            line, = ax3.plot(grid, fe[:, d], lw=1.2, label=f"cos dim {d}")
            ax3.plot(scores, e[:, d], "o", ms=3.5, color=line.get_color())
        ax3.set_xlabel("score (continuous; dots: the integer scores)", fontsize=8)
        ax3.set_title("A few dimensions as functions of the score", fontsize=10)
        ax3.legend(fontsize=7, loc="lower left")
    return _finish(fig)


_STOCK, _REWARD, _INPUT, _OFF = "#e6e6e6", "#cfe8cf", "#ffffff", "#f7f7f7"
_SCORE_COLOR, _TEXT_COLOR, _UNET_COLOR, _TOKEN_COLOR = "#4C72B0", "#DD8452", "0.35", "#3a8a3a"


def signal_diagram(rewards: str = "both", injection: str = "both") -> Figure:
    """Where each signal enters the UNet: scores and feedback text (the reward encoder, green), instruction,
    source image, noisy input and timestep (stock diffusers and CLIP, grey). Widths are SD 1.5's.

    ``rewards`` / ``injection`` are the ablation switches: what a switch leaves out is drawn dashed and
    faded, so ``signal_diagram("scores", "latent")`` shows exactly that model.
    """
    use_s, use_t = rewards in ("scores", "both"), rewards in ("text", "both")
    to_time = rewards != "none" and injection in ("time", "both")
    to_lat = rewards != "none" and injection in ("latent", "both")
    fig, ax = plt.subplots(figsize=(13, 5.4), layout="constrained")
    ax.set_xlim(-0.1, 13.4)
    ax.set_ylim(0.1, 6.65)
    ax.set_axis_off()
    W, H = 2.15, 0.55

    def box(x, y, label, face, on=True, w=W, h=H):
        ax.add_patch(plt.Rectangle((x - w / 2, y - h / 2), w, h, facecolor=face if on else _OFF,
                                   edgecolor="0.25" if on else "0.7", lw=1.0, ls="-" if on else "--"))
        ax.text(x, y, label + ("" if on else "\n(off)"), ha="center", va="center", fontsize=7.5,
                color="black" if on else "0.6")
        return (x, y, w, h)

    def arrow(a, b, color, on=True, label=None, dy0=0.0, dy1=0.0, down=False, lpos=0.5, rad=0.0):
        (x0, y0, w0, h0), (x1, y1, w1, h1) = a, b
        start = (x0, y0 - h0 / 2) if down else (x0 + w0 / 2, y0 + dy0)
        end = (x1, y1 + h1 / 2) if down else (x1 - w1 / 2, y1 + dy1)
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(
            arrowstyle="-|>", color=color if on else "0.8", lw=1.3 if on else 0.9, ls="-" if on else "--",
            shrinkA=0, shrinkB=0, connectionstyle=f"arc3,rad={rad}"))
        if label:
            ax.text(start[0] + lpos * (end[0] - start[0]), start[1] + lpos * (end[1] - start[1]) + 0.09, label,
                    fontsize=6.5, ha="center", va="bottom", color=color if on else "0.7")

    # inputs (column 1), first encoders (column 2), reward heads / stock layers (3), meeting points (4), UNet (5)
    t_in = box(1.1, 6.25, "timestep t", _INPUT)
    s_in = box(1.1, 5.0, "reward scores\n(following, preserving, quality)", _INPUT, use_s)
    f_in = box(1.1, 3.85, 'feedback text "...; ...; ..."', _INPUT, use_t)
    i_in = box(1.1, 2.85, "instruction", _INPUT)
    src = box(1.1, 1.75, "source image\n(its VAE latent for sd15)", _INPUT)
    x_in = box(1.1, 0.75, "noisy input x_t", _INPUT)
    tproj = box(3.75, 6.25, "time_proj (sinusoidal)", _STOCK)
    sin = box(3.75, 5.0, "sinusoidal embedding\n3 scores x 256 -> 768", _REWARD, use_s)
    clip = box(3.75, 3.35, "CLIP text encoder\n(frozen; one for both texts)", _STOCK, h=1.0)
    cat = box(3.75, 1.25, "concat [x_t | source]\n(8 channels for sd15)", _STOCK)
    temb = box(6.55, 6.25, "time_embedding MLP", _STOCK)
    s_time = box(6.55, 5.3, "MLP -> time width (1280)", _REWARD, use_s and to_time, h=0.45)
    s_tok = box(6.55, 4.7, "MLP -> reward token (320)", _REWARD, use_s and to_lat, h=0.45)
    t_time = box(6.55, 4.1, "Linear -> time width (1280)", _REWARD, use_t and to_time, h=0.45)
    t_tok = box(6.55, 3.5, "Linear -> text token (320)", _REWARD, use_t and to_lat, h=0.45)
    conv = box(6.55, 1.25, "conv_in (-> 320 channels)", _STOCK)
    added = "".join(f" + {x}" for x, on in (("scores", use_s and to_time), ("text", use_t and to_time)) if on)
    tsum = box(9.3, 5.75, f"time embedding (1280)\n= t_emb{added}", _STOCK, h=0.75)
    names = [n for n, on in (("reward", use_s), ("text", use_t)) if on] or ["reward", "text"]
    tokens = box(9.3, 4.1, f"reward tokens\n[{', '.join(names)}] ({len(names)} x 320)", _REWARD, to_lat, h=0.7)
    latent = box(9.3, 1.85, "latent reward attention\nGroupNorm, 1x1 conv, cross-attention\nto the tokens, "
                 "1x1 conv, + residual", _REWARD, to_lat, w=2.6, h=1.0)
    blocks = box(12.25, 2.6, "UNet blocks\nResNets read the time\nembedding; attention\nreads the instruction",
                 _STOCK, w=2.1, h=2.0)
    out = box(12.25, 0.75, "predicted noise", _INPUT, w=2.1, h=0.5)

    arrow(t_in, tproj, _UNET_COLOR)
    arrow(tproj, temb, _UNET_COLOR)
    arrow(temb, tsum, _UNET_COLOR, dy1=0.2)
    arrow(s_in, sin, _SCORE_COLOR, use_s)
    arrow(sin, s_time, _SCORE_COLOR, use_s and to_time)
    arrow(sin, s_tok, _SCORE_COLOR, use_s and to_lat)
    arrow(f_in, clip, _TEXT_COLOR, use_t, dy1=0.3)
    arrow(i_in, clip, _UNET_COLOR, dy1=-0.3)
    arrow(clip, t_time, _TEXT_COLOR, use_t and to_time, "pooled", dy0=0.3, lpos=0.3)
    arrow(clip, t_tok, _TEXT_COLOR, use_t and to_lat, dy0=0.15)
    arrow(clip, blocks, _UNET_COLOR, True, "instruction hidden states (77 x 768) -> cross-attention in every block",
          dy0=-0.3, dy1=0.5, lpos=0.55)
    arrow(s_time, tsum, _SCORE_COLOR, use_s and to_time)
    arrow(t_time, tsum, _TEXT_COLOR, use_t and to_time, dy1=-0.2)
    arrow(s_tok, tokens, _SCORE_COLOR, use_s and to_lat, dy1=0.15)
    arrow(t_tok, tokens, _TEXT_COLOR, use_t and to_lat, dy1=-0.15)
    arrow(src, cat, _UNET_COLOR, dy1=0.15)
    arrow(x_in, cat, _UNET_COLOR, dy1=-0.15)
    arrow(cat, conv, _UNET_COLOR)
    arrow(conv, latent, _UNET_COLOR, dy1=-0.3)
    arrow(tokens, latent, _TOKEN_COLOR if to_lat else "0.8", to_lat, down=True)
    arrow(latent, blocks, _UNET_COLOR, True, None if to_lat else "(features pass through)", dy1=-0.6)
    arrow(tsum, blocks, _UNET_COLOR, dy1=0.85)
    arrow(blocks, out, _UNET_COLOR, down=True)
    legend = [plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="0.3") for c in (_REWARD, _STOCK, _INPUT)]
    ax.legend(legend, ["reward modules (new)", "stock diffusers / CLIP", "inputs / output"], loc="upper right",
              fontsize=7.5, frameon=False, ncols=3, bbox_to_anchor=(1.0, 1.04))
    ax.set_title(f"Where each signal enters  (rewards={rewards!r}, injection={injection!r})", fontsize=10.5,
                 loc="left")
    return _finish(fig)


def reward_attention_figure(weights, image=None, token_names: Sequence[str] = ("reward token", "text token"),
                            title: str | None = None) -> Figure:
    """How much each latent position attends to each reward token: ``weights`` is ``(heads, H, W, tokens)``
    (:func:`pipeline.reward_attention`). One row per token: the mean over heads, then every head; the
    source image on the left. Softmax runs over the tokens, so at every pixel the rows sum to 1."""
    w = np.asarray(weights, dtype=float)
    heads, _, _, n_tok = w.shape
    cols = 2 + heads
    fig, axes = plt.subplots(n_tok, cols, figsize=(1.45 * cols + 0.6, 1.55 * n_tok + 0.5), squeeze=False,
                             layout="constrained")
    lo, hi = float(w.min()), float(w.max())
    if hi - lo < 1e-6:
        lo, hi = 0.0, 1.0
    im = None
    for k in range(n_tok):
        name = token_names[k] if k < len(token_names) else f"token {k}"
        if image is not None and k == 0:
            _show_image(axes[0, 0], image)
            axes[0, 0].set_title("source", fontsize=8)
        else:
            axes[k, 0].set_axis_off()
        maps = [w[..., k].mean(0)] + [w[h, ..., k] for h in range(heads)]
        for j, m in enumerate(maps, start=1):
            ax = axes[k, j]
            im = ax.imshow(m, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if k == 0:
                ax.set_title("mean of heads" if j == 1 else f"head {j - 1}", fontsize=8)
            if j == 1:
                ax.set_ylabel(name, fontsize=8)
    fig.colorbar(im, ax=axes[:, 1:], shrink=0.85, label="attention weight (colour range = data range)")
    fig.suptitle(title or f"Attention of the latent tokens over the {n_tok} reward tokens "
                          f"({w.shape[1]}x{w.shape[2]} positions)", fontsize=10)
    return _finish(fig)


def source_code(*objects) -> "Markdown":
    """The library's own source of ``objects`` (functions, methods, classes) as one highlighted Markdown
    block: a lecture that shows the code it teaches shows the code that runs, never a copy that can drift
    from it."""
    import inspect

    from IPython.display import Markdown

    parts = []
    for obj in objects:
        fn = inspect.unwrap(obj)
        where = f"{fn.__module__}.{fn.__qualname__}"
        parts.append(f"# {where}\n" + textwrap.dedent(inspect.getsource(fn)).rstrip())
    return Markdown("```python\n" + "\n\n".join(parts) + "\n```")


def ablation_table(grids: Mapping[str, Mapping[tuple[str, str], Mapping[str, int]]]) -> str:
    """The ablation switches: for each (rewards, injection) the reward modules built and their parameters per
    model config (``grids``: config -> :func:`models.ablation_parameter_counts`)."""
    configs = list(grids)
    keys = list(next(iter(grids.values())))
    rows = []
    for rewards, injection in keys:
        first = grids[configs[0]][(rewards, injection)]
        modules = ", ".join(k for k, v in first.items() if k != "reward (all)" and v) or "- (stage 1)"
        rows.append([rewards, injection, modules] + [grids[c][(rewards, injection)]["reward (all)"] for c in configs])
    return text_table(rows, ["rewards", "injection", "reward modules"] + [f"{c} params" for c in configs],
                      "Ablation switches (rewards x injection)")


def branch_table(branches) -> str:
    """What each classifier-free-guidance branch of one denoising step is conditioned on
    (:func:`guidance.guidance_branches`)."""
    rows = [[b.name, "instruction" if b.instruction else '"" (empty)', "source" if b.image else "zeros",
             "requested" if b.rewards == "requested" else "low (0, 0, 0)"] for b in branches]
    return text_table(rows, ["branch", "text", "image", "rewards"], "UNet branches of one denoising step")


# --------------------------------------------------------------------------------------------------
# Training and evaluation (notebooks 04-06)
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# The reward knob (notebook 06)
# --------------------------------------------------------------------------------------------------
def knob_bars(knob) -> Figure:
    """The reward knob measured (:func:`evaluate.reward_knob`; its report or ``to_json()``): left, per
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
        from . import evaluate

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
    reason = "static view requested" if force_static else widgets_unavailable_reason()
    if reason is None:
        return knob.widget
    print(f"reward knob: {reason}; showing fixed rewards instead.")
    asks = [(5, 5, 5), (0, 5, 5), (5, 0, 5), (5, 5, 0)]
    images = [knob.image] + [knob.edit(a) for a in asks]
    return image_row(images, ["source"] + [f"asked {a[0]}, {a[1]}, {a[2]}" for a in asks], instruction)


def image_row(images: Sequence, titles: Sequence[str], title: str | None = None, width: float = 1.9) -> Figure:
    """Images (PIL) side by side with a title each."""
    fig, axes = plt.subplots(1, len(images), figsize=(width * len(images), width + 0.5), squeeze=False)
    for ax, im, t in zip(axes[0], images, titles):
        _show_image(ax, im)
        ax.set_title(t, fontsize=8)
    if title:
        fig.suptitle(textwrap.shorten(title, 100), fontsize=9)
    fig.tight_layout()
    return _finish(fig)
