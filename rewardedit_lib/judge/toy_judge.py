"""The toy judge: the kit's offline stand-in for GPT-4o, scoring toy-world edits from pixels and words alone.

Why it exists: the annotation pipeline, the evaluation and the course must run on a laptop without an API
key, and their results must *mean* something -- a judge that answered at random would train the
multi-reward model on noise. So the toy judge does what a good vision-language judge does, for the toy
world only: it looks at the source image, reads the instruction, imagines the correct edit, and compares
that with the edited image, one perspective at a time.

What it may know, and what not: it knows the toy world's *vocabulary and geometry* -- the palette, the
shapes and sizes, the 3x3 grid, how an object or a pattern or a tone looks (:mod:`..toyworld`'s public
drawing functions) -- the way GPT-4o knows what "a red square" looks like. It never reads ``_truth/`` or
any scene file: every judgement is a pure function of (instruction, source pixels, edited pixels).

How a triplet is judged (:func:`assess`):

1. **Quality** is measured on the edited image alone, so it does not depend on the other two flaws:
   noise (almost no two neighbouring pixels agree; the level is a robust MAD estimate), blur (the 10-90 %
   rise of the image's edges: 0.8 pixels for a hard-edged drawing) and blockiness (every edge lies on the
   compression block grid and the blocks carry mixed colours). The verdict reports what a viewer would see:
   every threshold sits half-way between a clean drawing and the smallest flaw the world plants (version 3's
   calibration, see the constants below), so a model's faint grain or slightly soft edges pass.
2. The **source scene** is recovered from the source pixels: the background is the dominant colour, each
   object is a palette-coloured blob in a grid cell whose shape, size and pixel jitter are found by
   matching every possible object outline (:func:`recover_scene`).
3. The instruction is parsed with the world's grammar and the **ideal edit** is drawn. Besides the ideal,
   the judge draws the ways an edit can go wrong -- nothing done, the wrong colour / pattern / tone /
   shape, only half of it done, the edit applied to another object -- and asks which of these images,
   passed through the quality defect it measured in step 1 (blur and blockiness are deterministic, noise
   averages out in sums), explains the edited pixels best. That answers **following**.
4. **Preserving** completes an explanation: object by object, is the edited image better explained by that
   object having vanished, moved to a free cell or changed colour, and did the background colour change?
   Changes the instruction asked for (or that a following failure explains) are never a preserving
   failure; unrelated changes always are. Following and preserving are decided together: the few best
   following outcomes are each completed this way, and the story with the least unexplained error plus a
   price per failure wins (so an unrelated damaged object cannot pass for a wrong edit, or vice versa).

Scores use the prompt's 0-5 scale; the feedback is one sentence naming the failure in the paper's style
("The red square was not removed.", "The blue circle moved to the top left.") or exactly
:data:`~rewardedit_lib.formats.PERFECT_FEEDBACK`. Images that are not toy-world scenes, or instructions
outside the grammar, get a cautious generic judgement instead of an error.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import numpy as np

from .. import plumbing
from .. import toyworld as tw
from ..formats import MAX_SCORE, PERFECT_FEEDBACK, PERSPECTIVES

JUDGE_VERSION = "toy-judge-3"
#: A judgement passes the evaluation question ("is this perspective satisfied?") from this score up.
YES_THRESHOLD = 4
#: Version 3's calibration rule, fixed before any model was compared: every finding's threshold sits half-way
#: between a clean drawing and the smallest planted flaw of its kind, each measured with the judge's own
#: measure on generated triplets (``tools/calibrate_toy_judge.py`` prints the table; docs/toy-world.md keeps
#: it). So the judge fails what a viewer would call the flaw, not a model's imperceptible imprecision. Version 2
#: failed a background that drifted by 7 grey levels, where the data's own shift is 40 or more.
#: Findings between two drawings (an object recoloured to another palette colour, moved, vanished; a partial,
#: wrong or missing edit) are decided by which drawing the pixels are nearer: the half-way point by construction.
#: Additive noise is a finding from this standard deviation (grey levels): clean 0, planted 21 or more.
NOISE_VISIBLE = 10.5
#: Blur is graded by the mean 10-90 % rise distance of the image's edges (pixels): 0.8 for a hard-edged
#: drawing, 3.8 or more for the planted defocus (1st percentile). A finding from this width; "slightly blurry" (still a yes)
#: from half-way between a drawing and it.
BLUR_SHARP = 0.8
BLUR_VISIBLE = 2.3
#: The background's median colour may move by this much in any channel (grey levels) before it "changed":
#: the planted shift is 40 or more as drawn.
BACKGROUND_VISIBLE = 20.0
#: An object's median colour may move by this much in any channel before it "changed": the closest two
#: palette colours differ by 35 as drawn (yellow and orange, darker).
COLOUR_VISIBLE = 17.5
#: Something appeared in an empty cell when its median colour is this far from the background in some
#: channel: the least contrasted object on a background differs by 25 as drawn.
APPEARED_VISIBLE = 12.5

__all__ = [
    "JUDGE_VERSION", "YES_THRESHOLD", "Judgement", "Assessment", "QualityReport",
    "judge", "assess", "assess_quality", "recover_scene", "to_rgb_array", "clear_caches",
]


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Judgement:
    """One perspective's verdict: an integer 0-5 and one sentence naming the failure (or none)."""

    score: int
    feedback: str

    @property
    def yes(self) -> bool:
        return self.score >= YES_THRESHOLD


@dataclass(frozen=True)
class Assessment:
    """All three perspectives of one triplet, plus what the judge saw (for notebooks and debugging)."""

    following: Judgement
    preserving: Judgement
    quality: Judgement
    #: what the judge made of the pixels: the edit it read, the explanation it chose, the defect it measured
    notes: dict = field(default_factory=dict, compare=False)

    def __getitem__(self, perspective: str) -> Judgement:
        if perspective not in PERSPECTIVES:
            raise KeyError(f"unknown perspective {perspective!r}; expected one of {', '.join(PERSPECTIVES)}")
        return getattr(self, perspective)


def _perfect() -> Judgement:
    return Judgement(MAX_SCORE, PERFECT_FEEDBACK)


def judge(instruction: str, source: Any, edited: Any, perspective: str, mode: str = "annotate") -> dict:
    """The answer JSON (a dict) the toy judge gives for one request.

    ``source`` / ``edited``: ``(H, W, 3)`` uint8 arrays, PIL images or PNG bytes. ``mode="annotate"`` ->
    ``{"score": int, "feedback": str}``; ``mode="evaluate"`` -> ``{"yes": bool, "score": float, "reason": str}``.
    The three perspectives of a triplet share one (cached) :func:`assess`, so asking all three costs one
    analysis.
    """
    if perspective not in PERSPECTIVES:
        raise ValueError(f"unknown perspective {perspective!r}; expected one of {', '.join(PERSPECTIVES)}")
    if mode not in ("annotate", "evaluate"):
        raise ValueError(f"unknown mode {mode!r}; expected 'annotate' or 'evaluate'")
    j = assess(instruction, source, edited)[perspective]
    if mode == "annotate":
        return {"score": int(j.score), "feedback": j.feedback}
    return {"yes": bool(j.yes), "score": float(j.score), "reason": j.feedback}


# --------------------------------------------------------------------------------------------------
# Pixels in
# --------------------------------------------------------------------------------------------------
to_rgb_array = plumbing.to_rgb_array  # (H, W, 3) uint8 from an array, a PIL image or image bytes


class _LRU:
    """A small thread-safe LRU cache (the server judges from many threads)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


_SCENES = _LRU(4096)  # source pixels -> recovered scene (a source is judged three times, often more)
_ASSESSMENTS = _LRU(4096)  # (instruction, source, edited) -> Assessment (three perspectives, one analysis)
_MISSING = object()
_PENDING: dict[str, threading.Event] = {}  # analyses in progress, by key
_PENDING_LOCK = threading.Lock()
_COMPUTE = threading.Lock()


def clear_caches() -> None:
    """Forget cached scene recoveries and assessments (for timing and for tests)."""
    _SCENES.clear()
    _ASSESSMENTS.clear()
    _DRAWN.clear()


def _digest(*arrays: np.ndarray, text: str = "") -> str:
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=20)
    for a in arrays:
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# 1. Quality, from the edited image alone
# --------------------------------------------------------------------------------------------------
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


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Colours (..., 3) as single integers (a 1-D unique is much faster than a row-wise one)."""
    x = rgb.astype(np.int32)
    return (x[..., 0] << 16) | (x[..., 1] << 8) | x[..., 2]


def _unpack(p: np.ndarray) -> np.ndarray:
    return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=-1)


def _block_size(size: int) -> int:
    return max(2, size // 8)  # the compression block of a blocky toy image (see toyworld.degrade)


def _mixed_block_colours(x: np.ndarray, b: int) -> int:
    """How many block colours lie strictly between two other colours of the image.

    A compression block straddling an edge averages the colours on both sides; a clean drawing whose edges
    happen to fall on the block grid has only its own pure colours.
    """
    h, w = (x.shape[0] // b) * b, (x.shape[1] // b) * b
    cols = _unpack(np.unique(_pack(x[:h:b, :w:b].reshape(-1, 3)))).astype(np.float64)
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
    base = list(tw.OBJECT_COLORS.values()) + list(tw.BACKGROUNDS.values()) + [tw.PATTERN_LIGHT]
    arr = np.array(base, dtype=np.uint8)[None]
    toned = [arr] + [tw.apply_tone(arr, t) for t in tw.TONES]
    return np.unique(np.concatenate(toned, axis=1)[0], axis=0).astype(np.int32)


_KNOWN = _known_colours()


def _off_palette_minor_colours(x: np.ndarray) -> int:
    """Colours other than the dominant one that are no palette colour under any tone.

    The dominant colour is left out: a background may legitimately be off the palette (and that is a
    preserving matter); small regions of a colour nobody paints are smeared mixtures.
    """
    packed, counts = np.unique(_pack(x.reshape(-1, 3)), return_counts=True)
    cols = _unpack(np.delete(packed, int(np.argmax(counts))))
    if len(cols) == 0:
        return 0
    d = np.abs(cols[:, None, :] - _KNOWN[None]).max(-1).min(1)
    return int((d > 3).sum())


def assess_quality(edited: Any) -> QualityReport:
    """Generation quality, measured on the edited image alone (so it does not depend on what it shows).

    Noise first (it hides everything else), then blur, then blockiness; the score falls with the measured
    strength of the defect. Two passes: what the pixels show at all (``kind``, for the comparisons of
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
        kind, pixel_score = "blur", (3 if unsupported < 25 and ramps < 60 else 2)
    elif mixed >= 1:
        kind, pixel_score = "blocky", (3 if mixed < 2 else 2)
    elif unsupported >= 4:
        kind, pixel_score = "blur", 4

    # What a viewer sees, and how bad it is.
    widths = _edge_widths(x)
    width = float(widths.mean()) if widths.size >= 3 else None
    finding, score = None, MAX_SCORE
    if sigma >= NOISE_VISIBLE / 2:
        finding, score = "noise", (4 if sigma < NOISE_VISIBLE else 3 if sigma < 1.5 * NOISE_VISIBLE
                                   else 2 if sigma < 2 * NOISE_VISIBLE else 1)
    elif kind == "blocky":  # every edge on the block grid, blocks of mixed colours: wide edges are blocks, not blur
        finding, score = kind, pixel_score
    elif width is not None and width >= (BLUR_SHARP + BLUR_VISIBLE) / 2:
        finding, score = "blur", (2 if width >= 1.3 * BLUR_VISIBLE else 3 if width >= BLUR_VISIBLE else 4)
    elif width is None and kind == "noise":  # faint grain and no edges to measure (outlines, patterns)
        if unsupported < 8:  # not counted above
            ramps = _ramp_count(x)
        if ramps >= 8:
            finding, score = "blur", (2 if ramps >= 60 else 3)
    elif width is None:  # no grain: the pixel-exact verdict holds
        finding, score = kind, pixel_score
    return QualityReport(kind, score, round(float(sigma), 2), round(flat, 4), unsupported, ramps,
                         round(align, 4), mixed, None if width is None else round(width, 3), finding)


_QUALITY_FEEDBACK = {
    "noise": "The image is covered in noise.",
    "blur": "The image is blurry.",
    "blocky": "The image has blocky compression artifacts.",
}
_QUALITY_FEEDBACK_MILD = {
    "noise": "The image has some grainy noise.",
    "blur": "The image is slightly blurry.",
    "blocky": "The image has some blocky artifacts.",
}


def _quality_judgement(q: QualityReport) -> Judgement:
    if q.finding is None:
        return _perfect()
    return Judgement(q.score, (_QUALITY_FEEDBACK_MILD if q.score >= 4 else _QUALITY_FEEDBACK)[q.finding])


# --------------------------------------------------------------------------------------------------
# 2. The source scene, from the source pixels
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Candidates:
    """Every way one object can be drawn in one grid cell: (shape, size, dx, dy) and its mask."""

    params: list[list[tuple[str, str, int, int]]]  # per cell
    masks: list[np.ndarray]  # per cell: (n, H*W) bool
    areas: list[np.ndarray]  # per cell: (n,)
    window: list[np.ndarray]  # per cell: union of its candidate masks, (H*W,) bool
    core: list[np.ndarray]  # per cell: the cell itself shrunk by a pixel, (H*W,) bool


_CANDIDATES: dict[int, _Candidates] = {}
_CANDIDATES_LOCK = threading.Lock()


def _candidates(size: int) -> _Candidates:
    with _CANDIDATES_LOCK:
        if size in _CANDIDATES:
            return _CANDIDATES[size]
        jit = max(1, size // 32)  # the world's jitter (see toyworld.random_scene)
        params, masks, areas, window, core = [], [], [], [], []
        cell_px = size / 3.0
        ys, xs = np.mgrid[0:size, 0:size] + 0.5
        for cell in range(9):
            ps, ms = [], []
            for shape in tw.SHAPES:
                for sz in tw.SIZES:
                    for dy in range(-jit, jit + 1):
                        for dx in range(-jit, jit + 1):
                            o = tw.Obj(shape=shape, color="red", size=sz, cell=cell, dx=dx, dy=dy)
                            ps.append((shape, sz, dx, dy))
                            ms.append(tw.object_mask(o, size).ravel())
            m = np.stack(ms)
            row, col = divmod(cell, 3)
            c = ((xs > col * cell_px + 1) & (xs < (col + 1) * cell_px - 1)
                 & (ys > row * cell_px + 1) & (ys < (row + 1) * cell_px - 1))
            params.append(ps)
            masks.append(m)
            areas.append(m.sum(1))
            window.append(m.any(0))
            core.append(c.ravel())
        _CANDIDATES[size] = _Candidates(params, masks, areas, window, core)
        return _CANDIDATES[size]


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    names = list(palette)
    d = np.sqrt(((np.array([palette[n] for n in names], dtype=np.float64) - rgb) ** 2).sum(-1))
    i = int(np.argmin(d))
    return names[i], float(d[i])


def recover_scene(source: Any) -> tw.Scene | None:
    """The toy scene a source image shows, or None when it is not a (clean, square) toy-world picture.

    Background = the dominant colour (it must be a palette background). Objects: for each palette colour,
    in each grid cell holding enough pixels of it, the (shape, size, jitter) whose mask differs least from
    those pixels. The result must re-render to (almost exactly) the source, else the picture is not one the
    judge understands. Cached by the source's pixels.
    """
    src = to_rgb_array(source)
    key = _digest(src)
    hit = _SCENES.get(key)
    if hit is not None:
        return None if hit is _MISSING else hit
    scene = _recover(src)
    _SCENES.put(key, _MISSING if scene is None else scene)
    return scene


def _recover(src: np.ndarray) -> tw.Scene | None:
    size = src.shape[0]
    if src.shape[1] != size or not 12 <= size <= 96:  # toy pictures are small squares (32 px by default)
        return None
    flat = src.reshape(-1, 3).astype(np.int32)
    packed = _pack(flat)
    vals, counts = np.unique(packed, return_counts=True)
    top = int(vals[np.argmax(counts)])
    bg_rgb = np.array([(top >> 16) & 255, (top >> 8) & 255, top & 255], dtype=np.float64)
    bg_name, bg_d = _nearest(bg_rgb, tw.BACKGROUNDS)
    if bg_d > 6:
        return None
    cand = _candidates(size)
    objs: list[tw.Obj] = []
    for cname, crgb in tw.OBJECT_COLORS.items():
        p = np.abs(flat - np.array(crgb)).max(-1) <= 2
        if p.sum() < 6:
            continue
        pf = p.astype(np.float32)
        for cell in range(9):
            if (p & cand.core[cell]).sum() < 6:
                continue
            inter = cand.masks[cell] @ pf
            n_in = float((p & cand.window[cell]).sum())
            cost = cand.areas[cell] + n_in - 2 * inter
            i = int(np.argmin(cost))
            shape, sz, dx, dy = cand.params[cell][i]
            objs.append(tw.Obj(shape=shape, color=cname, size=sz, cell=cell, dx=dx, dy=dy))
    objs.sort(key=lambda o: o.cell)
    scene = tw.Scene(size=size, background=bg_name, objects=tuple(objs))
    mism = _mismatch(_draw(scene), src)
    if mism and len(objs) > 1:  # overlapping neighbours: the drawing order matters; try the others
        import itertools

        for perm in itertools.permutations(objs):
            s2 = replace(scene, objects=tuple(perm))
            m2 = _mismatch(_draw(s2), src)
            if m2 < mism:
                scene, mism = s2, m2
            if not mism:
                break
    if mism > 0.03 * size * size:
        return None
    return scene


def _mismatch(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > 2).sum())


# --------------------------------------------------------------------------------------------------
# Drawing, fast: the judge imagines dozens of pictures per triplet
# --------------------------------------------------------------------------------------------------
_MASKS: dict[tuple, np.ndarray] = {}
_PATTERN_MASKS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _mask(obj: tw.Obj, size: int, drawn: bool = True) -> np.ndarray:
    """The pixels an object covers: as drawn (an outline is its rim), or filled (``drawn=False``).

    :func:`toyworld.object_mask`, memoised (a race between threads only computes a mask twice).
    """
    outline = obj.outline and drawn
    key = (size, obj.shape, obj.size, obj.cell, obj.dx, obj.dy, outline)
    m = _MASKS.get(key)
    if m is None:
        m = tw.object_mask(obj, size)
        if outline:
            m = m & ~tw.erode(m)
        m.setflags(write=False)
        _MASKS[key] = m
    return m


def _near(obj: tw.Obj, size: int) -> np.ndarray:
    """An object's filled mask grown by one pixel (where its presence or absence shows), memoised."""
    key = ("near", size, obj.shape, obj.size, obj.cell, obj.dx, obj.dy)
    m = _MASKS.get(key)
    if m is None:
        m = _dilate(_mask(obj, size, drawn=False), 1)
        m.setflags(write=False)
        _MASKS[key] = m
    return m


def _draw(scene: tw.Scene) -> np.ndarray:
    """:func:`toyworld.render`, pixel for pixel (a test checks it), with the object masks memoised."""
    s = scene.size
    if s not in _PATTERN_MASKS:
        iy, ix = np.mgrid[0:s, 0:s]
        _PATTERN_MASKS[s] = ((iy // 2) % 2 == 1, ((ix // 2) + (iy // 2)) % 2 == 1)
    stripe, check = _PATTERN_MASKS[s]
    bg = scene.background_rgb if scene.background_rgb is not None else tw.BACKGROUNDS[scene.background]
    img = np.empty((s, s, 3), dtype=np.uint8)
    img[:] = bg
    for obj in scene.objects:
        mask = _mask(obj, s)
        img[mask] = tw.OBJECT_COLORS[obj.color]
        if obj.pattern == "stripes" and not obj.outline:
            img[mask & stripe] = tw.PATTERN_LIGHT
        elif obj.pattern == "checks" and not obj.outline:
            img[mask & check] = tw.PATTERN_LIGHT
    return tw.apply_tone(img, scene.tone)


_DRAWN = _LRU(8192)


def _drawn(scene: tw.Scene) -> np.ndarray:
    """:func:`_draw`, memoised by scene (the same imagined pictures recur across hypotheses); read-only."""
    img = _DRAWN.get(scene)
    if img is None:
        img = _draw(scene)
        img.setflags(write=False)
        _DRAWN.put(scene, img)
    return img


# --------------------------------------------------------------------------------------------------
# 3. Following: which drawing of the edit (right, wrong, half, none) explains the edited pixels
# --------------------------------------------------------------------------------------------------
SceneMod = Callable[[tw.Scene], tw.Scene]


@dataclass(frozen=True)
class _Hyp:
    """One possible outcome of the edit: a scene (or half of one over another) and what it would mean."""

    label: str  # done | no_change | wrong_attribute | wrong_object | partial
    scene: tw.Scene
    base: tw.Scene | None = None  # partial: the scene the undone half still shows
    side: int | None = None
    what: dict = field(default_factory=dict, compare=False)  # feedback details (the wrong value, object...)

    def image(self, mod: SceneMod | None = None) -> np.ndarray:
        a = self.scene if mod is None else mod(self.scene)
        if self.side is None:
            return _drawn(a)
        b = self.base if mod is None else mod(self.base)
        key = ("partial", a, b, self.side)
        img = _DRAWN.get(key)
        if img is None:
            img = tw.partial_edit(_drawn(a), _drawn(b), self.side)
            img.setflags(write=False)
            _DRAWN.put(key, img)
        return img


def _recolor(scene: tw.Scene, obj: tw.Obj, color: str) -> tw.Scene:
    return replace(scene, objects=tuple(replace(o, color=color) if o == obj else o for o in scene.objects))


def _restyle(scene: tw.Scene, obj: tw.Obj, **kw) -> tw.Scene:
    return replace(scene, objects=tuple(replace(o, **kw) if o == obj else o for o in scene.objects))


def _without(scene: tw.Scene, obj: tw.Obj) -> tw.Scene:
    return replace(scene, objects=tuple(o for o in scene.objects if o != obj))


def _following_hyps(src: tw.Scene, spec: tw.EditSpec, ideal: tw.Scene) -> list[_Hyp]:
    """The ideal edit, no edit, every wrong value of the right kind, and the four half edits."""
    hyps = [_Hyp("done", ideal), _Hyp("no_change", src)]
    hyps += [_Hyp("partial", ideal, src, side, {"side": side}) for side in range(4)]
    t = spec.edit_type
    if t == "Local":
        obj = src.find(*spec.target)
        hyps += [_Hyp("wrong_attribute", _recolor(src, obj, c), what={"value": c})
                 for c in tw.OBJECT_COLORS if c not in (spec.value, obj.color)]
    elif t == "Texture":
        obj = src.find(*spec.target)
        hyps += [_Hyp("wrong_attribute", _restyle(src, obj, pattern=p), what={"value": p})
                 for p in tw.PATTERNS if p != spec.value]
    elif t == "Add":
        cell = tw.REGIONS.index(spec.region)
        for c in tw.OBJECT_COLORS:
            for s in tw.SHAPES:
                if (c, s) == (spec.value, spec.shape):
                    continue
                new = tw.Obj(shape=s, color=c, size=spec.size, cell=cell)
                label = "wrong_attribute" if s == spec.shape else "wrong_object"
                hyps.append(_Hyp(label, replace(src, objects=src.objects + (new,)),
                                 what={"value": c, "shape": s, "size": spec.size}))
        other = next(z for z in tw.SIZES if z != spec.size)
        new = tw.Obj(shape=spec.shape, color=spec.value, size=other, cell=cell)
        hyps.append(_Hyp("wrong_size", replace(src, objects=src.objects + (new,)),
                         what={"value": spec.value, "shape": spec.shape, "size": other}))
    elif t == "Background":
        hyps += [_Hyp("wrong_attribute", replace(src, background=b), what={"value": b})
                 for b in tw.BACKGROUNDS if b not in (spec.value, src.background)]
    elif t == "Global":
        hyps += [_Hyp("wrong_attribute", replace(src, tone=x), what={"value": x})
                 for x in tw.TONES if x != spec.value]
    if t in ("Local", "Remove", "Texture"):
        hyps += _wrong_object_hyps(src, spec)
    return hyps


def _wrong_object_hyps(src: tw.Scene, spec: tw.EditSpec) -> list[_Hyp]:
    """The edit applied to another object instead of the one the instruction names."""
    out = []
    target = src.find(*spec.target)
    for o in src.objects:
        if o == target:
            continue
        what = {"object": o}
        if spec.edit_type == "Local":
            out += [_Hyp("wrong_object", _recolor(src, o, c), what={**what, "value": c})
                    for c in tw.OBJECT_COLORS if c != o.color]
        elif spec.edit_type == "Remove":
            out.append(_Hyp("wrong_object", _without(src, o), what=what))
        elif spec.edit_type == "Texture":
            out += [_Hyp("wrong_object", _restyle(src, o, pattern=p), what={**what, "value": p})
                    for p in tw.PATTERNS]
    return out


# --------------------------------------------------------------------------------------------------
# Comparing the edited image with a hypothesis, through the measured quality defect
# --------------------------------------------------------------------------------------------------
_ERF = np.frompyfunc(math.erf, 1, 1)


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _Phi(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _ERF(z / math.sqrt(2.0)).astype(np.float64))


def _clipped_noise_tables(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``clip(x + N(0, sigma^2), 0, 255)`` for every grey level ``x``.

    Noise on a dark or bright colour is clipped, which moves its average away from the colour (black +
    noise averages lighter than black). Comparing the edited pixels with these means, not with the clean
    colours, keeps that bias from favouring a wrong explanation (e.g. "not darkened" on a black picture).
    """
    s = max(float(sigma), 1e-6)
    x = np.arange(256, dtype=np.float64)
    a, b = (0.0 - x) / s, (255.0 - x) / s
    pa, pb, fa, fb = _Phi(a), _Phi(b), _phi(a), _phi(b)
    inside = pb - pa
    m = 255.0 * (1.0 - pb) + x * inside + s * (fa - fb)
    m2 = (255.0 ** 2 * (1.0 - pb) + x * x * inside + 2.0 * x * s * (fa - fb)
          + s * s * (inside + a * fa - b * fb))
    return m.astype(np.float32), np.maximum(m2 - m * m, 0.0).astype(np.float32)


@dataclass(frozen=True)
class _View:
    """A clean drawing as the edited image would show it: expected colours ``m`` (H, W, 3) and the
    expected squared error of a correct explanation per pixel ``v`` (H, W), or 0 without noise."""

    m: np.ndarray
    v: np.ndarray | float


class _Comparator:
    """Colour errors between the edited image and clean drawings seen through its measured defect.

    Blur and blockiness are deterministic, so a correct drawing passed through them matches the edited
    pixels exactly; noise is not, but it averages out in the sums over regions that every decision uses.
    Errors are truncated at a cap well above the noise: a pixel that neither of two explanations gets
    right says nothing about which one is better (otherwise an unrelated damaged object could make the
    wrong explanation win by being "less wrong" there).
    """

    def __init__(self, edited: np.ndarray, quality: QualityReport) -> None:
        self.e = edited.astype(np.float32)
        # Blur is modelled only where it is a finding (even under faint grain, or where the pixel count took
        # the ramps for noise): the planted defocus is far stronger than a faintly soft edge, which a clean
        # drawing explains better.
        blurred = quality.finding == "blur" and quality.score <= 3 and quality.noise_sigma < NOISE_VISIBLE / 2
        self.kind = "blur" if blurred else "blocky" if quality.kind == "blocky" else None
        self.noisy = quality.kind == "noise" and not blurred
        self._dummy = np.random.default_rng(0)
        self.set_sigma(float(quality.noise_sigma) if self.noisy else 0.0)

    def set_sigma(self, sigma: float) -> None:
        self.sigma = float(sigma)
        self.noise_var = 3.0 * self.sigma ** 2  # expected squared error of a correct explanation, per pixel
        self.cap = 3.0 * self.noise_var + 8000.0
        if self.noisy:
            self._mean, self._var = _clipped_noise_tables(self.sigma)

    def view(self, clean: np.ndarray) -> _View:
        """A clean drawing as the edited image's defect would show it."""
        if self.noisy:
            return _View(self._mean[clean], self._var[clean].sum(-1))
        if self.kind is None:
            return _View(clean.astype(np.float32), 0.0)
        return _View(tw.degrade(clean, self.kind, self._dummy).astype(np.float32), 0.0)

    def err(self, view: _View) -> np.ndarray:
        d = self.e - view.m
        return np.minimum((d * d).sum(-1), self.cap)

    def excess(self, err: np.ndarray, view: _View, mask: np.ndarray) -> float:
        """Mean error over ``mask`` beyond what noise alone would leave (about 0 where ``view`` is right)."""
        if not mask.any():
            return 0.0
        v = view.v[mask].mean() if isinstance(view.v, np.ndarray) else view.v
        return float(err[mask].mean() - v)

    def expected(self, view: _View, mask: np.ndarray | None = None) -> float:
        """The summed error noise alone would leave over ``mask`` (the whole image by default)."""
        if not isinstance(view.v, np.ndarray):
            return 0.0
        return float(view.v.sum() if mask is None else view.v[mask].sum())

    def unexplained_tolerance(self, n_pixels: int) -> float:
        """How far a correct explanation's summed error may exceed the expected noise (4 standard
        deviations of a sum of ``n_pixels`` chi-square(3) terms; a little slack without noise)."""
        return 4.0 * np.sqrt(n_pixels) * 0.8165 * self.noise_var + 1000.0

    def median_shift(self, clean: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> float:
        """How far the colour the edited pixels show over ``mask`` is from the clean drawing's, in the channel
        that moved most (grey levels): the smaller of two robust readings, so that only a change a viewer
        sees counts. The median colour's shift, less what noise alone could move a median of that many
        pixels (3 standard errors), shrugs off grain (clipping at black or white leaves a median in place).
        The shift of the best-matching quarter of the pixels shrugs off a soft rim, which can cover most of a
        small object or all of an outline; with ``background`` given, a pixel mixed of the drawn colour and
        the background counts as that colour (a soft rim is such a mix, another colour is not)."""
        n = int(mask.sum())
        if n == 0:
            return 0.0
        e, c = self.e[mask], clean[mask].astype(np.float32)
        median = np.abs(np.median(e, axis=0) - np.median(c, axis=0)).max() - 3.0 * 1.2533 * self.sigma / np.sqrt(n)
        if background is not None:  # the nearest point of the segment from the background to the drawn colour
            b = np.asarray(background, dtype=np.float32)
            span = c - b
            t = np.clip(((e - b) * span).sum(-1) / np.maximum((span * span).sum(-1), 1.0), 0.0, 1.0)
            c = b + t[:, None] * span
        closest = np.percentile(np.abs(e - c).max(-1), 25)
        return float(min(median, closest))

    def calibrate(self, best_clean: np.ndarray) -> None:
        """Measure the noise again, where it is not clipped.

        The neighbour-difference estimate of :func:`assess_quality` is biased low where noise is clipped at
        black or white. Here only neighbouring pixels that the best explanation so far draws in the same
        colour, well inside 0-255, are used: there the difference of the edited pixels is plain noise (even
        where the explanation is wrong, as long as the edited image is flat there too).
        """
        if not self.noisy:
            return
        x = best_clean.astype(np.float32)
        s = max(self.sigma, 1.0)
        for _ in range(2):
            diffs = []
            for xa, xb, ea, eb in ((x[:, 1:], x[:, :-1], self.e[:, 1:], self.e[:, :-1]),
                                   (x[1:], x[:-1], self.e[1:], self.e[:-1])):
                ok = (xa == xb) & (xa > 2.0 * s) & (xa < 255.0 - 2.0 * s)
                diffs.append((ea - eb)[ok])
            d = np.abs(np.concatenate(diffs))
            if d.size < 100:
                break
            s = 1.4826 * float(np.median(d)) / np.sqrt(2.0)
        self.set_sigma(max(s, 1.0))


def _preference(cmp: _Comparator, intact: _View, alt: _View,
                err_intact: np.ndarray | None = None) -> tuple[float, float, bool]:
    """How much better ``alt`` explains the edited pixels than ``intact``, where the two differ.

    Returns (s, gain, fits): s is +1 when the edited image is exactly ``alt`` there and -1 when it is
    exactly ``intact`` (noise moves it by about 2 sigma / |difference|); gain is the reduction of the error;
    fits says ``alt`` itself explains those pixels (its error is small next to the difference it makes),
    so that "less wrong" is never taken for "right".
    """
    d = ((intact.m - alt.m) ** 2).sum(-1)
    m = d > 0.5
    if not m.any():
        return 0.0, 0.0, False
    energy = float(np.minimum(d[m], cmp.cap).sum())
    e_alt = float(cmp.err(alt)[m].sum())
    gain = float((cmp.err(intact) if err_intact is None else err_intact)[m].sum()) - e_alt
    fits = e_alt - cmp.expected(alt, m) <= 0.35 * energy
    return gain / energy, gain, fits


# --------------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------------
def _name(color: str, shape: str) -> str:
    return f"{color} {shape}"


def _following_feedback(spec: tw.EditSpec, hyp: _Hyp) -> str:
    """One sentence naming what went wrong with the edit itself, in the paper's style."""
    t, lab, w = spec.edit_type, hyp.label, hyp.what
    if lab == "done":
        return PERFECT_FEEDBACK
    if t in ("Local", "Remove", "Texture"):
        tgt = _name(*spec.target)
        if lab == "wrong_object":
            other = w["object"].name
            if t == "Local":
                return f"The {other} turned {w['value']} instead of the {tgt}."
            if t == "Remove":
                return f"The {other} was removed instead of the {tgt}."
            return f"The {other} was filled with {w['value']} instead of the {tgt}."
        if t == "Remove":
            return f"The {tgt} was only partly removed." if lab == "partial" else f"The {tgt} was not removed."
        if t == "Local":
            if lab == "wrong_attribute":
                return f"The {tgt} turned {w['value']} instead of {spec.value}."
            if lab == "partial":
                return f"The {tgt} was only partly turned {spec.value}."
            return f"The {tgt} did not turn {spec.value}."
        if lab == "wrong_attribute":
            return f"The {tgt} was filled with {w['value']} instead of {spec.value}."
        if lab == "partial":
            return f"The {tgt} was only partly filled with {spec.value}."
        return f"The {tgt} was not filled with {spec.value}."
    if t == "Add":
        want = _name(spec.value, spec.shape)
        if lab == "partial":
            return f"The {want} at the {spec.region} was only partly drawn."
        if lab == "wrong_size":
            return f"The added {want} is {w['size']} instead of {spec.size}."
        if lab == "wrong_attribute":
            return f"The added {spec.shape} is {w['value']} instead of {spec.value}."
        if lab == "wrong_object":
            return f"A {_name(w['value'], w['shape'])} was added instead of a {want}."
        return f"No {want} was added at the {spec.region}."
    if t == "Background":
        if lab == "wrong_attribute":
            return f"The background turned {w['value']} instead of {spec.value}."
        if lab == "partial":
            return f"The background was only partly turned {spec.value}."
        return f"The background did not turn {spec.value}."
    if t == "Global":
        if lab == "wrong_attribute":
            return f"The image was made {w['value']} instead of {spec.value}."
        if lab == "partial":
            return f"Only part of the image was made {spec.value}."
        return f"The image was not made {spec.value}."
    if lab == "partial":
        return "The objects were only partly drawn as outlines."
    return "The objects were not drawn as outlines."


_FOLLOWING_SCORES = {"done": 5, "wrong_size": 3, "partial": 2, "wrong_attribute": 1, "wrong_object": 1,
                     "no_change": 0}


# --------------------------------------------------------------------------------------------------
# The whole judgement
# --------------------------------------------------------------------------------------------------
def assess(instruction: str, source: Any, edited: Any) -> Assessment:
    """Judge one triplet from all three perspectives (cached by instruction and pixels)."""
    src = to_rgb_array(source)
    ed = to_rgb_array(edited)
    key = _digest(src, ed, text=" ".join(str(instruction).split()))
    hit = _ASSESSMENTS.get(key)
    if hit is not None:
        return hit
    # The three perspectives of a triplet usually arrive at the server together: one thread analyses, the
    # others wait for its result instead of repeating the work.
    with _PENDING_LOCK:
        hit = _ASSESSMENTS.get(key)
        if hit is not None:
            return hit
        event = _PENDING.get(key)
        mine = event is None
        if mine:
            event = _PENDING[key] = threading.Event()
    if not mine:
        event.wait()
        hit = _ASSESSMENTS.get(key)
        if hit is not None:
            return hit
        return _assess(str(instruction), src, ed)  # the first attempt failed: try (and fail) ourselves
    try:
        with _COMPUTE:  # numpy on 32 px images is GIL-bound: threads judging at once only thrash
            result = _assess(str(instruction), src, ed)
        _ASSESSMENTS.put(key, result)
        return result
    finally:
        with _PENDING_LOCK:
            del _PENDING[key]
        event.set()


def _assess(instruction: str, src: np.ndarray, ed: np.ndarray) -> Assessment:
    size_changed = ed.shape != src.shape
    if size_changed:
        from PIL import Image

        ed = np.asarray(Image.fromarray(ed).resize((src.shape[1], src.shape[0]), Image.NEAREST))
    q = assess_quality(ed)
    quality = _quality_judgement(q)
    notes: dict = {"quality": q}
    scene = recover_scene(src)
    spec = tw.parse_instruction(instruction)
    ideal = None
    if scene is not None and spec is not None:
        try:
            ideal = tw.apply_edit(scene, spec)
            if spec.edit_type == "Add" and tw.REGIONS.index(spec.region) in {o.cell for o in scene.objects}:
                ideal = None  # the named place is taken: the instruction does not fit this picture
        except ValueError:
            ideal = None
    notes.update(scene=scene, spec=spec)
    if ideal is None:
        following, preserving = _generic(src, ed, scene, spec)
    else:
        following, preserving = _toy(scene, spec, ideal, ed, q, notes)
    if size_changed:
        preserving = Judgement(min(preserving.score, 1), "The image size changed.")
    return Assessment(following, preserving, quality, notes)


def _generic(src: np.ndarray, ed: np.ndarray, scene, spec) -> tuple[Judgement, Judgement]:
    """A cautious judgement for pictures or instructions outside the toy world."""
    d = np.abs(src.astype(np.int16) - ed.astype(np.int16)).max(-1)
    changed = float((d > 24).mean())
    if changed < 0.005:
        following = Judgement(0, "The image was not changed.")
    elif spec is None:
        following = Judgement(3, "The requested change could not be recognised in the image.")
    else:
        following = Judgement(2, "The image does not show what the instruction asks for.")
    if changed < 0.02:
        preserving = _perfect()
    else:
        s = 4 if changed < 0.1 else 3 if changed < 0.3 else 2 if changed < 0.6 else 1
        preserving = Judgement(s, "Much of the image changed." if s <= 2 else "Parts of the image changed.")
    return following, preserving


#: The order in which equally good explanations are preferred (the simpler story first).
_PRIOR = ("done", "no_change", "wrong_attribute", "wrong_size", "wrong_object", "partial")
#: What one extra preserving failure costs an explanation (in squared colour error, about 6 wrong pixels).
_FINDING_COST = 50000.0


@dataclass
class _Explanation:
    hyp: _Hyp
    findings: list[tuple[int, str]]
    cost: float


def _toy(src: tw.Scene, spec: tw.EditSpec, ideal: tw.Scene, ed: np.ndarray, q: QualityReport,
         notes: dict) -> tuple[Judgement, Judgement]:
    cmp = _Comparator(ed, q)
    size = src.size
    t = spec.edit_type
    if not cmp.noisy:
        # The common case first: the edited image is the ideal edit (through its blur or blocks) exactly.
        done = cmp.err(cmp.view(_drawn(ideal)))
        if float(done.sum()) <= cmp.unexplained_tolerance(done.size):
            notes.update(following_outcome="done", preserving_findings=[], explanations=[("done", 0, [])])
            return _perfect(), _perfect()
    hyps = _following_hyps(src, spec, ideal)
    cleans = [h.image() for h in hyps]
    src_clean = _drawn(src)
    # Where the outcomes differ: the only pixels that can tell them apart.
    region = np.zeros(ed.shape[:2], dtype=bool)
    for c in cleans:
        region |= np.any(c != src_clean, axis=-1)
    if not region.any():
        region[:] = True
    if cmp.kind is not None:  # blur and blocks spread a difference to the neighbouring pixels
        region = _dilate(region, 2)
    if cmp.noisy:  # measure the noise against the outcome that fits best
        views = [cmp.view(c) for c in cleans]
        first = int(np.argmin([float(cmp.err(v)[region].sum()) for v in views]))
        cmp.calibrate(cleans[first])

    # A changed background is a preserving failure, but it must not decide which edit was made: an outcome
    # whose background does not match is drawn on the background the edited image actually has (through
    # its tone, for a Global edit) and pays for the change.
    bg_mask = _background_pixels(src, [h.scene for h in hyps], size)
    got_bg = np.median(cmp.e[bg_mask], axis=0) if bg_mask.sum() >= 8 else None
    # An outcome whose one background colour matches within BACKGROUND_VISIBLE is drawn on the background
    # the edited image shows too, for free: an imperceptible drift of the background must not make a half
    # edit (which can absorb it) look better than the whole one.
    adapted = [False] * len(hyps)
    if got_bg is not None and t != "Background":
        for i, h in enumerate(hyps):
            matches = _background_matches(cleans[i], cmp.e, bg_mask, got_bg)
            if not matches or len(np.unique(_pack(cleans[i][bg_mask]))) == 1:
                hyps[i] = _on_background(h, got_bg)
                cleans[i] = hyps[i].image()
                adapted[i] = not matches
    views = [cmp.view(c) for c in cleans]
    sse = [float(cmp.err(v)[region].sum()) + _FINDING_COST * a for v, a in zip(views, adapted)]

    # The best few (one per kind of outcome, always "done" and "nothing done"; every half if a half edit
    # is among them) are explained in
    # full, preserving failures included, and the cheapest story wins.
    best_of: dict[str, int] = {}
    for i in np.argsort(sse, kind="stable"):
        best_of.setdefault(hyps[i].label, int(i))
    shortlist = sorted(best_of.values(), key=lambda i: sse[i])[:3]
    shortlist += [best_of[k] for k in ("done", "no_change") if best_of[k] not in shortlist]
    if any(hyps[i].label == "partial" for i in shortlist):
        shortlist += [i for i, h in enumerate(hyps) if h.label == "partial" and i not in shortlist]
    shortlist.sort(key=lambda i: (sse[i], _PRIOR.index(hyps[i].label)))
    explained: list[_Explanation] = []
    for i in shortlist:
        # Skip a story that could not be the cheapest even if every unrelated object were explained away
        # (not for a half edit: there a damaged object moves the half-way line, a non-local effect).
        if (explained and hyps[i].side is None
                and _cost_floor(src, spec, hyps[i], views[i], adapted[i], cmp) > min(x.cost for x in explained)):
            continue
        x = _explain(src, spec, hyps[i], views[i], adapted[i], cmp, got_bg)
        explained.append(x)
        if not x.findings and x.cost <= cmp.unexplained_tolerance(ed.shape[0] * ed.shape[1]):
            break  # it explains every pixel: nothing can do better
    # Stories whose costs agree within 1 % explain the pixels equally well: the simpler one is preferred.
    least = min(x.cost for x in explained)
    chosen = min((x for x in explained if x.cost <= least * 1.01 + 1.0),
                 key=lambda x: (_PRIOR.index(x.hyp.label), x.cost))
    hyp = chosen.hyp
    following = Judgement(_FOLLOWING_SCORES[hyp.label], _following_feedback(spec, hyp))
    notes["following_outcome"] = hyp.label
    notes["preserving_findings"] = [f for _, f in chosen.findings]
    notes["explanations"] = [(x.hyp.label, round(x.cost), [f for _, f in x.findings]) for x in explained]
    if not chosen.findings:
        return following, _perfect()
    findings = sorted(chosen.findings, key=lambda f: f[0])
    score = findings[0][0] - (1 if len(findings) > 1 else 0)
    return following, Judgement(max(0, score), findings[0][1])


def _background_matches(clean: np.ndarray, e: np.ndarray, bg_mask: np.ndarray, got_all: np.ndarray) -> bool:
    """Does the edited image show, far from any object, the background colour(s) this outcome draws?

    Compared by the median per colour (a half edit draws two backgrounds): the median of a noisy colour is
    the colour itself, clipped or not, and an object moved onto the background cannot shift it.
    ``got_all`` is the median over all of ``bg_mask`` (computed once per triplet).
    """
    want = _pack(clean[bg_mask])
    if want.size and (want == want[0]).all():  # one background colour (all but a half edit): one median
        if want.size < 20:
            return True
        return bool(np.abs(got_all - _unpack(want[0]).astype(np.float32)).max() <= BACKGROUND_VISIBLE)
    got = e[bg_mask]
    colours, inverse, counts = np.unique(want, return_inverse=True, return_counts=True)
    for k, (c, n) in enumerate(zip(colours, counts)):
        if n < 20:
            continue
        sel = got if len(colours) == 1 else got[inverse == k]
        if np.abs(np.median(sel, axis=0) - _unpack(c).astype(np.float32)).max() > BACKGROUND_VISIBLE:
            return False
    return True


def _inverse_tone(rgb: np.ndarray, tone: str | None) -> np.ndarray:
    """The colour that :func:`toyworld.apply_tone` maps (close) to ``rgb``."""
    x = np.asarray(rgb, dtype=np.float64)
    if tone == "brighter":
        x = (x - 0.45 * 255.0) / 0.55
    elif tone == "darker":
        x = x / 0.5
    elif tone == "warmer":
        x = x - np.array([45.0, 10.0, -45.0])
    elif tone == "cooler":
        x = x - np.array([-45.0, 0.0, 45.0])
    return np.clip(np.rint(x), 0, 255)


def _on_background(h: _Hyp, rgb: np.ndarray) -> _Hyp:
    def rebg(sc: tw.Scene) -> tw.Scene:
        return replace(sc, background_rgb=tuple(int(v) for v in _inverse_tone(rgb, sc.tone)))

    return replace(h, scene=rebg(h.scene), base=None if h.base is None else rebg(h.base))


def _layout(src: tw.Scene, spec: tw.EditSpec, hyp: _Hyp) -> tuple[set[int], list[int], dict[int, np.ndarray]]:
    """(cells of objects that are following's business, free cells, the free cells' core masks)."""
    t = spec.edit_type
    size = src.size
    exempt: set[int] = set()  # objects the instruction names (or a following failure changed)
    if t in ("Local", "Remove", "Texture"):
        exempt.add(src.find(*spec.target).cell)
    if t == "Add":
        exempt.add(tw.REGIONS.index(spec.region))
    if hyp.label == "wrong_object" and "object" in hyp.what:
        exempt.add(hyp.what["object"].cell)
    used = {o.cell for o in src.objects} | {o.cell for o in hyp.scene.objects}
    if hyp.base is not None:
        used |= {o.cell for o in hyp.base.objects}
    free = [c for c in range(9) if c not in used]
    cand = _candidates(size)
    return exempt, free, {c: cand.core[c].reshape(size, size) for c in free}


def _cost_floor(src: tw.Scene, spec: tw.EditSpec, hyp: _Hyp, intact: _View, bg_changed: bool,
                cmp: _Comparator) -> float:
    """A cheap lower bound of :func:`_explain`'s cost: the error left if every unrelated object and every
    free cell were explained away at the price of one finding each (with some slack)."""
    exempt, free, cores = _layout(src, spec, hyp)
    err0 = cmp.err(intact)
    total = float(err0.sum()) - cmp.expected(intact)
    fixable = 0.0
    for o in hyp.scene.objects:
        if o.cell not in exempt:
            m = _near(o, src.size)
            fixable += max(0.0, float(err0[m].sum()) - cmp.expected(intact, m) - _FINDING_COST)
    for c in free:
        fixable += max(0.0, float(err0[cores[c]].sum()) - cmp.expected(intact, cores[c]))
    return 0.8 * (total - fixable) + _FINDING_COST * bg_changed - 20000.0


def _explain(src: tw.Scene, spec: tw.EditSpec, hyp: _Hyp, intact: _View, bg_changed: bool,
             cmp: _Comparator, got_bg: np.ndarray | None = None) -> _Explanation:
    """Complete one following outcome into a whole-picture explanation: which unrelated objects vanished,
    moved or changed colour, and did the background change? Returns its findings and its cost (the error
    left over plus a price per finding)."""
    size = src.size
    exempt, free, cores = _layout(src, spec, hyp)

    findings: list[tuple[int, str]] = []
    if bg_changed:
        findings.append((2, "The background colour changed."))
    damages: list[tw.Damage] = []
    err0 = cmp.err(intact)
    # Free cells that show something: the only places a moved object can have gone.
    busy = [c for c in free if cmp.excess(err0, intact, cores[c]) > 300.0]
    tones = {hyp.scene.tone} | ({hyp.base.tone} if hyp.base is not None else set())
    # A Global or Style edit restyles every object (its tone, its outline): an object that is still there,
    # in its place and its palette colour, has been preserved, however well the restyling went.
    restyled = spec.edit_type in ("Global", "Style")
    for o in hyp.scene.objects:
        if o.cell in exempt:
            continue
        m = _near(o, size)
        if cmp.excess(err0, intact, m) < 300.0:
            continue  # it looks as expected: nothing to explain
        key = (o.color, o.shape, o.cell)
        options: list[tuple[str, tw.Damage]] = [("vanished", tw.Damage("object_vanished", key=key))]
        options += [(f"recolored:{c}", tw.Damage("object_recolored", key=key, color=c))
                    for c in _likely_colours(cmp.e, _mask(o, size), o.color, tones)]
        options += [(f"moved:{c}", tw.Damage("object_moved", key=key, cell=c)) for c in busy]
        top, top_dmg, top_gain = None, None, 0.0
        for label, dmg in options:
            try:
                alt = cmp.view(hyp.image(dmg.apply))
            except ValueError:
                continue
            s_, gain, fits = _preference(cmp, intact, alt, err0)
            if s_ > 0.5 and fits and gain > top_gain * 1.02:
                top, top_dmg, top_gain = label, dmg, gain
        if top is None:
            if restyled:
                continue  # how a restyled object looks is following's business
            drawn = _mask(o, size)
            inner = drawn if o.outline else tw.erode(drawn)  # the object's own pixels, not its (soft) rim
            if inner.sum() < 4:
                inner = drawn
            if cmp.median_shift(hyp.image(), inner, got_bg) > COLOUR_VISIBLE:
                findings.append((3, f"The {o.name} changed."))
            continue
        damages.append(top_dmg)
        what, _, arg = top.partition(":")
        if what == "vanished":
            findings.append((2, f"The {o.name} vanished."))
        elif what == "moved":
            findings.append((2, f"The {o.name} moved to the {tw.REGIONS[int(arg)]}."))
            free.remove(int(arg))
            busy.remove(int(arg))
        else:
            findings.append((3, f"The {o.name} turned {arg}."))

    final, final_clean = intact, hyp.image()
    if damages:
        def apply_all(sc: tw.Scene) -> tw.Scene:
            for d in damages:
                sc = d.apply(sc)
            return sc

        try:
            final_clean = hyp.image(apply_all)
            final = cmp.view(final_clean)
        except ValueError:
            pass
    err = cmp.err(final)
    # Anything left in a free cell is an object that appeared from nowhere: the cell stands out from the
    # background around it (as the edited image shows it, so a drift of the whole background is no object).
    around = final_clean if got_bg is None else np.broadcast_to(got_bg, final_clean.shape)
    for c in free:
        if cmp.median_shift(around, cores[c]) > APPEARED_VISIBLE:
            findings.append((3, f"Something appeared at the {tw.REGIONS[c]}."))
    residual = float(err.sum()) - cmp.expected(final)
    return _Explanation(hyp, findings, max(0.0, residual) + _FINDING_COST * len(findings))


def _likely_colours(e: np.ndarray, mask: np.ndarray, own: str, tones: set, k: int = 2) -> list[str]:
    """The palette colours (other than ``own``) an object's pixels look most like, under the possible tones.

    Only these are tried as "the object changed colour" (the median is robust to noise and to the
    smeared rim of a blurred object).
    """
    seen = np.median(e[mask], axis=0)
    names = [c for c in tw.OBJECT_COLORS if c != own]
    rgb = np.array([tw.OBJECT_COLORS[c] for c in names], dtype=np.uint8)[None]
    dist = np.full(len(names), np.inf)
    for tone in tones:
        expect = tw.apply_tone(rgb, tone)[0].astype(np.float32)
        dist = np.minimum(dist, np.abs(expect - seen).sum(-1))
    return [names[i] for i in np.argsort(dist, kind="stable")[:k]]


def _dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    out = m.copy()
    for _ in range(r):
        o = out.copy()
        o[1:] |= out[:-1]
        o[:-1] |= out[1:]
        o[:, 1:] |= out[:, :-1]
        o[:, :-1] |= out[:, 1:]
        out = o
    return out


def _background_pixels(src: tw.Scene, scenes: Iterable[tw.Scene], size: int) -> np.ndarray:
    """Pixels that are background in every scene considered, at least 2 pixels away from any object."""
    occ = np.zeros((size, size), dtype=bool)
    for sc in [src, *scenes]:
        for o in sc.objects:
            occ |= _mask(o, size, drawn=False)
    return ~_dilate(occ, 2)
