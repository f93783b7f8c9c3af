"""What several notebooks draw with: the perspective colours, the helpers every figure uses (close it,
show an image, encode a PNG), the widgets check, plain-text and HTML tables, an image row and the
triplet grid.

Serves every notebook: the triplet grid is in notebooks 00, 01 and 02 (and is the dataset browser's static
fallback), :func:`text_table` prints the tables of 01, 03, 04 and 06, :func:`phrase_table` lists the judge's
failure phrases in 01 and 02, :func:`image_row` shows edits side by side in 03 and 06. Why its own module: a
helper used by several notebooks belongs to none of them, so the per-notebook modules of
:mod:`rewardedit_lib.viz` import from this one and never from each other.
"""

from __future__ import annotations

import html
import importlib
import io
import sys
import textwrap
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .. import dataset
from ..formats import MAX_SCORE, PERSPECTIVE_TITLES, PERSPECTIVES, Triplet

if TYPE_CHECKING:  # only for annotations: not needed to draw a figure
    from IPython.display import HTML


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


def widgets_unavailable_reason() -> str | None:
    """Why interactive widgets cannot be shown here (``None`` if they can): a script, a terminal IPython
    or a missing ipywidgets all get the static grid instead of a widget nobody can see."""
    try:
        importlib.import_module("ipywidgets")  # an availability check: the widgets are built elsewhere
        from IPython import get_ipython
    except ImportError:
        return "ipywidgets is not installed"
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return "not running inside a Jupyter kernel"
    return None


def _widgets_reason(force_static: bool) -> str | None:
    """Why a widget (the dataset browser, the reward knob) falls back to a static figure, ``None`` if it
    doesn't. The check is looked up on the package, ``viz.widgets_unavailable_reason``, at call time: that
    is its public name, and tests replace it there to build the widgets outside a Jupyter kernel."""
    if force_static:
        return "static view requested"
    return sys.modules[__package__].widgets_unavailable_reason()


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
