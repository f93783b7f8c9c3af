"""Notebook 03 (reward encoder): where the rewards enter the UNet and what the reward modules compute --
the signal diagram, the score embedding, the reward attention maps, parameter and ablation-switch tables,
the guidance branches, and the library's own source shown as code.

Why its own module: these draw the model's insides (from :mod:`rewardedit_lib.models`,
:mod:`rewardedit_lib.reward`, :mod:`rewardedit_lib.guidance` and :mod:`rewardedit_lib.pipeline`), which only
the lecture of notebook 03 explains.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .common import _finish, _show_image, text_table

if TYPE_CHECKING:  # only for annotations: not needed to draw a figure
    from IPython.display import Markdown


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
             {"low": "low (0, 0, 0)"}.get(b.rewards, b.rewards)] for b in branches]
    return text_table(rows, ["branch", "text", "image", "rewards"], "UNet branches of one denoising step")
