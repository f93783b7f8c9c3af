"""The toy judge: the kit's offline stand-in for GPT-4o, scoring toy-world edits from pixels and words alone.

Why it exists: the annotation pipeline, the evaluation and the course must run on a laptop without an API
key, and their results must *mean* something -- a judge that answered at random would train the
multi-reward model on noise. So the toy judge does what a good vision-language judge does, for the toy
world only: it looks at the source image, reads the instruction, imagines the correct edit, and compares
that with the edited image, one perspective at a time.

What it may know, and what not: it knows the toy world's *vocabulary and geometry* -- the palette, the
shapes and sizes, the 3x3 grid, how an object or a pattern or a tone looks (:mod:`.world`'s public
drawing functions) -- the way GPT-4o knows what "a red square" looks like. It never reads ``_truth/`` or
any scene file: every judgement is a pure function of (instruction, source pixels, edited pixels).

How a triplet is judged (:func:`assess`):

1. **Quality** is measured on the edited image alone, so it does not depend on the other two flaws:
   noise (almost no two neighbouring pixels agree; the level is a robust MAD estimate), blur (the 10-90 %
   rise of the image's edges: 0.8 pixels for a hard-edged drawing) and blockiness (every edge lies on the
   compression block grid and the blocks carry mixed colours). The verdict reports what a viewer would see:
   every threshold sits half-way between a clean drawing and the smallest flaw the world plants (version 3's
   calibration, see :mod:`.calibration`), so a model's faint grain or slightly soft edges pass. The score
   spans the whole scale (version 4): 3, 2, 1 in thirds of the way from the threshold to the smallest planted
   flaw, 0 for a flaw as strong as the world's own (:func:`.calibration.quality_band`).
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

Where each step lives (this module holds the public entry points, the version and the caches):
:mod:`.quality` (step 1), :mod:`.scene_recovery` (step 2), :mod:`.explanation` (steps 3 and 4, with
:mod:`.comparator`), :mod:`.feedback` (the verdicts and their sentences), :mod:`.calibration` (the
thresholds), :mod:`.pixels` (reading and drawing pictures). :mod:`.server` serves it over HTTP.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..formats import PERSPECTIVES
from . import pixels, scene_recovery
from .calibration import (APPEARED_VISIBLE, BACKGROUND_VISIBLE, BLUR_SHARP, BLUR_VISIBLE, COLOUR_VISIBLE,
                          NOISE_VISIBLE)
from .editors import apply_edit
from .explanation import toy
from .feedback import YES_THRESHOLD, Assessment, Judgement, perfect, quality_judgement
from .pixels import LRU, digest, to_rgb_array
from .quality import QualityReport, assess_quality
from .scene_recovery import recover_scene
from .world import REGIONS, parse_instruction

JUDGE_VERSION = "toy-judge-4"

__all__ = [
    "JUDGE_VERSION", "YES_THRESHOLD", "Judgement", "Assessment", "QualityReport",
    "judge", "assess", "assess_quality", "recover_scene", "to_rgb_array", "clear_caches",
    "NOISE_VISIBLE", "BLUR_SHARP", "BLUR_VISIBLE", "BACKGROUND_VISIBLE", "COLOUR_VISIBLE", "APPEARED_VISIBLE",
]


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



_ASSESSMENTS = LRU(4096)  # (instruction, source, edited) -> Assessment (three perspectives, one analysis)
_PENDING: dict[str, threading.Event] = {}  # analyses in progress, by key
_PENDING_LOCK = threading.Lock()
_COMPUTE = threading.Lock()


def clear_caches() -> None:
    """Forget cached scene recoveries and assessments (for timing and for tests)."""
    scene_recovery.SCENES.clear()
    _ASSESSMENTS.clear()
    pixels.DRAWN.clear()


def assess(instruction: str, source: Any, edited: Any) -> Assessment:
    """Judge one triplet from all three perspectives (cached by instruction and pixels)."""
    src = to_rgb_array(source)
    ed = to_rgb_array(edited)
    key = digest(src, ed, text=" ".join(str(instruction).split()))
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
    quality = quality_judgement(q)
    notes: dict = {"quality": q}
    scene = recover_scene(src)
    spec = parse_instruction(instruction)
    ideal = None
    if scene is not None and spec is not None:
        try:
            ideal = apply_edit(scene, spec)
            if spec.edit_type == "Add" and REGIONS.index(spec.region) in {o.cell for o in scene.objects}:
                ideal = None  # the named place is taken: the instruction does not fit this picture
        except ValueError:
            ideal = None
    notes.update(scene=scene, spec=spec)
    if ideal is None:
        following, preserving = _generic(src, ed, scene, spec)
    else:
        following, preserving = toy(scene, spec, ideal, ed, q, notes)
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
        preserving = perfect()
    else:
        s = 4 if changed < 0.1 else 3 if changed < 0.3 else 2 if changed < 0.6 else 1
        preserving = Judgement(s, "Much of the image changed." if s <= 2 else "Parts of the image changed.")
    return following, preserving
