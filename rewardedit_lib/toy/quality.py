"""Step 1 of the toy judge: generation quality, measured on the edited image alone.

Why alone: so the quality verdict does not depend on the other two flaws (a wrong edit is no worse a
picture). The report also tells the comparisons of following and preserving which defect to model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..formats import MAX_SCORE
from .calibration import BLUR_PLANTED, BLUR_SHARP, BLUR_VISIBLE, NOISE_PLANTED, NOISE_VISIBLE, quality_band
from .pixels import pack, to_rgb_array, unpack
from .world import BACKGROUNDS, OBJECT_COLORS, PATTERN_LIGHT, TONES, apply_tone

@dataclass(frozen=True)
class QualityReport:
    """What the quality measurements found.

    ``kind`` (None, "noise", "blur" or "blocky") is the defect the pixels show, however faint: the
    following and preserving comparisons model it (a drawing passed through it matches the edited pixels).
    ``finding`` is the defect a viewer sees, which the quality verdict and ``score`` report.
    """

    kind: str | None
    score: int
    noise_sigma: float  # robust estimate of additive noise (grey levels)
    flat_fraction: float  # neighbouring pixel pairs that agree within 2 levels (a clean drawing: most)
    unsupported: int  # pixels whose colour none of their 8 neighbours shares (blur smears edges into these)
    ramps: int  # pixels inside a monotone intensity ramp (grades blur; 0 when there is none)
    block_alignment: float  # fraction of edges on the block grid (1.0: blocky)
    mixed_blocks: int  # block colours that are mixtures of two others (or of no palette colour)
    edge_width: float | None = None  # mean 10-90 % rise of the edges, pixels (None: fewer than 3 edges to measure)
    finding: str | None = None  # the visible defect: None, "noise", "blur" or "blocky"


def _neighbour_diffs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[:, 1:] - x[:, :-1], x[1:] - x[:-1]


def _ramp_count(x: np.ndarray) -> int:
    """Pixels where intensity keeps changing the same way for two steps in a row, along rows or columns.

    A hard-edged drawing jumps from one colour to the next in one pixel; blur spreads that jump over
    several pixels, so every edge crossing leaves two or three ramp pixels.
    """
    n = 0
    for a in (x, x.transpose(1, 0, 2)):
        d1 = a[:, 1:-1] - a[:, :-2]
        d2 = a[:, 2:] - a[:, 1:-1]
        n1 = np.abs(d1).max(-1)
        n2 = np.abs(d2).max(-1)
        dot = (d1 * d2).sum(-1)
        norm = np.sqrt((d1 * d1).sum(-1) * (d2 * d2).sum(-1))
        n += int(((n1 > 6) & (n2 > 6) & (dot > 0.5 * norm)).sum())
    return n


_EDGE_STEP, _EDGE_JUMP = 3, 48


def _edge_widths(x: np.ndarray) -> np.ndarray:
    """For every edge along rows and columns, in each colour channel: its 10-90 % rise distance in pixels (the
    usual measure of an edge's sharpness).

    An edge is a run of pixels whose value keeps moving the same way, each step by more than 3 grey levels
    (grain does not break it, flat stretches end it), by at least 48 in all. The rise is read off the run by
    linear interpolation: 0.8 for a hard-edged drawing (the whole step between two pixels), 1.6 for an edge
    softened by one pixel (one in-between pixel at half the step), 5.6 for the data's defocus (a 7-pixel
    ramp), less where the ramps of neighbouring edges meet.
    """
    x = np.asarray(x, dtype=np.int32)
    out: list[float] = []
    hard = 0.9 - 0.1  # what the interpolation below reads off a one-step run (most edges of a drawing)
    for a in (x, x.transpose(1, 0, 2)):
        d = np.diff(a, axis=1)
        sign = np.where(d > _EDGE_STEP, 1, np.where(d < -_EDGE_STEP, -1, 0))
        for r, c in zip(*np.nonzero(a.max(1) - a.min(1) >= _EDGE_JUMP)):  # (line, channel) pairs with an edge
            s = sign[r, :, c]
            # runs of one non-zero sign: where the sign changes, a run ends
            cut = np.flatnonzero(np.diff(s) != 0) + 1
            for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(s)]):
                if s[lo] == 0:
                    continue
                if hi == lo + 1:  # one step: f = (0, 1) and the rise is exactly 0.9 - 0.1, no interpolation
                    if abs(int(a[r, hi, c]) - int(a[r, lo, c])) >= _EDGE_JUMP:
                        out.append(hard)
                    continue
                v = a[r, lo:hi + 1, c].astype(np.float64)
                if abs(v[-1] - v[0]) < _EDGE_JUMP:
                    continue
                f = (v - v[0]) / (v[-1] - v[0])  # rising from 0 to 1 along the run
                pos = np.arange(len(v), dtype=np.float64)
                out.append(float(np.interp(0.9, f, pos) - np.interp(0.1, f, pos)))
    return np.array(out)


def _unsupported(x: np.ndarray) -> int:
    """Pixels whose exact colour none of their 8 neighbours has.

    In a drawing every colour comes in regions or lines (an outline pixel has outline neighbours), so
    there are next to none; a blurred edge is a gradient of colours that each occur once or twice.
    """
    h, w = x.shape[:2]
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="constant", constant_values=-1)
    sup = np.zeros((h, w), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                sup |= (p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == x).all(-1)
    return int((~sup).sum())




def _block_size(size: int) -> int:
    return max(2, size // 8)  # the compression block of a blocky toy image (see toyworld.degrade)


def _mixed_block_colours(x: np.ndarray, b: int) -> int:
    """How many block colours lie strictly between two other colours of the image.

    A compression block straddling an edge averages the colours on both sides; a clean drawing whose edges
    happen to fall on the block grid has only its own pure colours.
    """
    h, w = (x.shape[0] // b) * b, (x.shape[1] // b) * b
    cols = unpack(np.unique(pack(x[:h:b, :w:b].reshape(-1, 3)))).astype(np.float64)
    if len(cols) < 3:
        return 0
    if len(cols) > 200:
        return len(cols)
    mixed = 0
    for i in range(len(cols)):
        others = np.delete(cols, i, axis=0)
        a, bb = others[:, None, :], others[None, :, :]
        d = a - bb
        dd = (d * d).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            lam = ((cols[i] - bb) * d).sum(-1) / dd  # cols[i] ~ bb + lam * (a - bb)
        err = np.sqrt(((bb + lam[..., None] * d - cols[i]) ** 2).sum(-1))
        if np.any((dd > 100) & (lam > 0.05) & (lam < 0.95) & (err < 6)):
            mixed += 1
    return mixed


def _known_colours() -> np.ndarray:
    base = list(OBJECT_COLORS.values()) + list(BACKGROUNDS.values()) + [PATTERN_LIGHT]
    arr = np.array(base, dtype=np.uint8)[None]
    toned = [arr] + [apply_tone(arr, t) for t in TONES]
    return np.unique(np.concatenate(toned, axis=1)[0], axis=0).astype(np.int32)


_KNOWN = _known_colours()


def _off_palette_minor_colours(x: np.ndarray) -> int:
    """Colours other than the dominant one that are no palette colour under any tone.

    The dominant colour is left out: a background may legitimately be off the palette (and that is a
    preserving matter); small regions of a colour nobody paints are smeared mixtures.
    """
    packed, counts = np.unique(pack(x.reshape(-1, 3)), return_counts=True)
    cols = unpack(np.delete(packed, int(np.argmax(counts))))
    if len(cols) == 0:
        return 0
    d = np.abs(cols[:, None, :] - _KNOWN[None]).max(-1).min(1)
    return int((d > 3).sum())


def assess_quality(edited: Any) -> QualityReport:
    """Generation quality, measured on the edited image alone (so it does not depend on what it shows).

    Noise first (it hides everything else), then blur, then blockiness; the score falls with the measured
    strength of the defect (:func:`.calibration.quality_band`). Two passes: what the pixels show at all (``kind``, for the comparisons of
    following and preserving) and what a viewer sees (``finding`` and ``score``): grain below
    :data:`NOISE_VISIBLE` is no finding and does not hide blur, which is graded by edge width
    (:data:`BLUR_VISIBLE`) wherever the image has edges to measure.
    """
    e = to_rgb_array(edited)
    x = e.astype(np.int32)
    dh, dv = _neighbour_diffs(x)
    mh, mv = np.abs(dh).max(-1), np.abs(dv).max(-1)
    flat = float(np.concatenate([(mh <= 2).ravel(), (mv <= 2).ravel()]).mean())
    # Additive noise: the median neighbour difference of an image made of flat regions is 0; with noise of
    # standard deviation s it is about 0.954 s (the median absolute value of a difference of two normals).
    med = float(np.median(np.abs(np.concatenate([dh.ravel(), dv.ravel()]))))
    sigma = 1.4826 * med / np.sqrt(2.0)
    unsupported = _unsupported(x)
    ramps = _ramp_count(x) if unsupported >= 8 else 0  # only grades blur
    b = _block_size(e.shape[0])
    nzh, nzv = mh > 2, mv > 2
    on_h = ((np.arange(x.shape[1] - 1) + 1) % b == 0)[None, :]
    on_v = ((np.arange(x.shape[0] - 1) + 1) % b == 0)[:, None]
    edges = int(nzh.sum() + nzv.sum())
    align = float(((nzh & on_h).sum() + (nzv & on_v).sum()) / edges) if edges else 0.0
    mixed = 0
    if edges >= 4 and align >= 0.95:  # every edge on the block grid: blocks, or a drawing that happens to fit
        mixed = _mixed_block_colours(e, b) or min(1, _off_palette_minor_colours(x))

    # What the pixels show at all (version 1's verdict), and its grade where the verdict below uses it.
    kind, pixel_score = None, MAX_SCORE
    if flat < 0.5 or sigma >= 0.7:
        kind = "noise"
    elif unsupported >= 8:
        kind, pixel_score = "blur", (1 if unsupported < 25 and ramps < 60 else 0)
    elif mixed >= 1:
        kind, pixel_score = "blocky", (1 if mixed < 2 else 0)
    elif unsupported >= 4:
        kind, pixel_score = "blur", 4

    # What a viewer sees, and how bad it is.
    widths = _edge_widths(x)
    width = float(widths.mean()) if widths.size >= 3 else None
    finding, score = None, MAX_SCORE
    if sigma >= NOISE_VISIBLE / 2:
        finding, score = "noise", quality_band(sigma, NOISE_VISIBLE, NOISE_PLANTED)
    elif kind == "blocky":  # every edge on the block grid, blocks of mixed colours: wide edges are blocks, not blur
        finding, score = kind, pixel_score
    elif width is not None and width >= (BLUR_SHARP + BLUR_VISIBLE) / 2:
        finding, score = "blur", quality_band(width, BLUR_VISIBLE, BLUR_PLANTED)
    elif width is None and kind == "noise":  # faint grain and no edges to measure (outlines, patterns)
        if unsupported < 8:  # not counted above
            ramps = _ramp_count(x)
        if ramps >= 8:
            finding, score = "blur", (0 if ramps >= 60 else 1)
    elif width is None:  # no grain: the pixel-exact verdict holds
        finding, score = kind, pixel_score
    return QualityReport(kind, score, round(float(sigma), 2), round(flat, 4), unsupported, ramps,
                         round(align, 4), mixed, None if width is None else round(width, 3), finding)
