"""Steps 3 and 4 of the toy judge: which story of the edit explains the edited pixels best.

Why following and preserving are decided together: the judge imagines every way the edit can have gone
(done, not done, the wrong value, half of it, another object) and completes each into a whole-picture story
(which unrelated objects vanished, moved or changed colour; did the background change); the story with the
least unexplained error plus a price per failure wins, so an unrelated damaged object cannot pass for a
wrong edit, or vice versa.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from .calibration import APPEARED_VISIBLE, BACKGROUND_VISIBLE, COLOUR_VISIBLE
from .comparator import Comparator, View, preference
from .editors import Damage, partial_edit
from .feedback import FOLLOWING_SCORES, Judgement, following_feedback, perfect
from .pixels import DRAWN, dilate, draw_cached, near, object_pixels, pack, unpack
from .quality import QualityReport
from .scene_recovery import candidates
from .world import (BACKGROUNDS, OBJECT_COLORS, PATTERNS, REGIONS, SHAPES, SIZES, TONES, EditSpec, Obj, Scene,
                    apply_tone, erode)

# --------------------------------------------------------------------------------------------------
# 3. Following: which drawing of the edit (right, wrong, half, none) explains the edited pixels
# --------------------------------------------------------------------------------------------------
SceneMod = Callable[[Scene], Scene]


@dataclass(frozen=True)
class _Hyp:
    """One possible outcome of the edit: a scene (or half of one over another) and what it would mean."""

    label: str  # done | no_change | wrong_attribute | wrong_object | partial
    scene: Scene
    base: Scene | None = None  # partial: the scene the undone half still shows
    side: int | None = None
    what: dict = field(default_factory=dict, compare=False)  # feedback details (the wrong value, object...)

    def image(self, mod: SceneMod | None = None) -> np.ndarray:
        a = self.scene if mod is None else mod(self.scene)
        if self.side is None:
            return draw_cached(a)
        b = self.base if mod is None else mod(self.base)
        key = ("partial", a, b, self.side)
        img = DRAWN.get(key)
        if img is None:
            img = partial_edit(draw_cached(a), draw_cached(b), self.side)
            img.setflags(write=False)
            DRAWN.put(key, img)
        return img


def _recolor(scene: Scene, obj: Obj, color: str) -> Scene:
    return replace(scene, objects=tuple(replace(o, color=color) if o == obj else o for o in scene.objects))


def _restyle(scene: Scene, obj: Obj, **kw) -> Scene:
    return replace(scene, objects=tuple(replace(o, **kw) if o == obj else o for o in scene.objects))


def _without(scene: Scene, obj: Obj) -> Scene:
    return replace(scene, objects=tuple(o for o in scene.objects if o != obj))


def _following_hyps(src: Scene, spec: EditSpec, ideal: Scene) -> list[_Hyp]:
    """The ideal edit, no edit, every wrong value of the right kind, and the four half edits."""
    hyps = [_Hyp("done", ideal), _Hyp("no_change", src)]
    hyps += [_Hyp("partial", ideal, src, side, {"side": side}) for side in range(4)]
    t = spec.edit_type
    if t == "Local":
        obj = src.find(*spec.target)
        hyps += [_Hyp("wrong_attribute", _recolor(src, obj, c), what={"value": c})
                 for c in OBJECT_COLORS if c not in (spec.value, obj.color)]
    elif t == "Texture":
        obj = src.find(*spec.target)
        hyps += [_Hyp("wrong_attribute", _restyle(src, obj, pattern=p), what={"value": p})
                 for p in PATTERNS if p != spec.value]
    elif t == "Add":
        cell = REGIONS.index(spec.region)
        for c in OBJECT_COLORS:
            for s in SHAPES:
                if (c, s) == (spec.value, spec.shape):
                    continue
                new = Obj(shape=s, color=c, size=spec.size, cell=cell)
                label = "wrong_attribute" if s == spec.shape else "wrong_object"
                hyps.append(_Hyp(label, replace(src, objects=src.objects + (new,)),
                                 what={"value": c, "shape": s, "size": spec.size}))
        other = next(z for z in SIZES if z != spec.size)
        new = Obj(shape=spec.shape, color=spec.value, size=other, cell=cell)
        hyps.append(_Hyp("wrong_size", replace(src, objects=src.objects + (new,)),
                         what={"value": spec.value, "shape": spec.shape, "size": other}))
    elif t == "Background":
        hyps += [_Hyp("wrong_attribute", replace(src, background=b), what={"value": b})
                 for b in BACKGROUNDS if b not in (spec.value, src.background)]
    elif t == "Global":
        hyps += [_Hyp("wrong_attribute", replace(src, tone=x), what={"value": x})
                 for x in TONES if x != spec.value]
    if t in ("Local", "Remove", "Texture"):
        hyps += _wrong_object_hyps(src, spec)
    return hyps


def _wrong_object_hyps(src: Scene, spec: EditSpec) -> list[_Hyp]:
    """The edit applied to another object instead of the one the instruction names."""
    out = []
    target = src.find(*spec.target)
    for o in src.objects:
        if o == target:
            continue
        what = {"object": o}
        if spec.edit_type == "Local":
            out += [_Hyp("wrong_object", _recolor(src, o, c), what={**what, "value": c})
                    for c in OBJECT_COLORS if c != o.color]
        elif spec.edit_type == "Remove":
            out.append(_Hyp("wrong_object", _without(src, o), what=what))
        elif spec.edit_type == "Texture":
            out += [_Hyp("wrong_object", _restyle(src, o, pattern=p), what={**what, "value": p})
                    for p in PATTERNS]
    return out


#: The order in which equally good explanations are preferred (the simpler story first).
_PRIOR = ("done", "no_change", "wrong_attribute", "wrong_size", "wrong_object", "partial")
#: What one extra preserving failure costs an explanation (in squared colour error, about 6 wrong pixels).
_FINDING_COST = 50000.0


@dataclass
class _Explanation:
    hyp: _Hyp
    findings: list[tuple[int, str]]
    cost: float


def toy(src: Scene, spec: EditSpec, ideal: Scene, ed: np.ndarray, q: QualityReport,
        notes: dict) -> tuple[Judgement, Judgement]:
    """The instruction-following and detail-preserving judgements of a toy edit whose source scene and ideal
    edit are known (steps 3 and 4); what was found goes into ``notes``."""
    cmp = Comparator(ed, q)
    size = src.size
    t = spec.edit_type
    if not cmp.noisy:
        # The common case first: the edited image is the ideal edit (through its blur or blocks) exactly.
        done = cmp.err(cmp.view(draw_cached(ideal)))
        if float(done.sum()) <= cmp.unexplained_tolerance(done.size):
            notes.update(following_outcome="done", preserving_findings=[], explanations=[("done", 0, [])])
            return perfect(), perfect()
    hyps = _following_hyps(src, spec, ideal)
    cleans = [h.image() for h in hyps]
    src_clean = draw_cached(src)
    # Where the outcomes differ: the only pixels that can tell them apart.
    region = np.zeros(ed.shape[:2], dtype=bool)
    for c in cleans:
        region |= np.any(c != src_clean, axis=-1)
    if not region.any():
        region[:] = True
    if cmp.kind is not None:  # blur and blocks spread a difference to the neighbouring pixels
        region = dilate(region, 2)
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
            if not matches or len(np.unique(pack(cleans[i][bg_mask]))) == 1:
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
    appeared: dict[int, float] = {}  # free cell -> its shift from the edited background (the same for every story)
    for i in shortlist:
        # Skip a story that could not be the cheapest even if every unrelated object were explained away
        # (not for a half edit: there a damaged object moves the half-way line, a non-local effect).
        if (explained and hyps[i].side is None
                and _cost_floor(src, spec, hyps[i], views[i], adapted[i], cmp) > min(x.cost for x in explained)):
            continue
        x = _explain(src, spec, hyps[i], views[i], adapted[i], cmp, got_bg, appeared)
        explained.append(x)
        if not x.findings and x.cost <= cmp.unexplained_tolerance(ed.shape[0] * ed.shape[1]):
            break  # it explains every pixel: nothing can do better
    # Stories whose costs agree within 1 % explain the pixels equally well: the simpler one is preferred.
    least = min(x.cost for x in explained)
    chosen = min((x for x in explained if x.cost <= least * 1.01 + 1.0),
                 key=lambda x: (_PRIOR.index(x.hyp.label), x.cost))
    hyp = chosen.hyp
    following = Judgement(FOLLOWING_SCORES[hyp.label], following_feedback(spec, hyp))
    notes["following_outcome"] = hyp.label
    notes["preserving_findings"] = [f for _, f in chosen.findings]
    notes["explanations"] = [(x.hyp.label, round(x.cost), [f for _, f in x.findings]) for x in explained]
    if not chosen.findings:
        return following, perfect()
    findings = sorted(chosen.findings, key=lambda f: f[0])
    score = findings[0][0] - (1 if len(findings) > 1 else 0)
    return following, Judgement(max(0, score), findings[0][1])


def _background_matches(clean: np.ndarray, e: np.ndarray, bg_mask: np.ndarray, got_all: np.ndarray) -> bool:
    """Does the edited image show, far from any object, the background colour(s) this outcome draws?

    Compared by the median per colour (a half edit draws two backgrounds): the median of a noisy colour is
    the colour itself, clipped or not, and an object moved onto the background cannot shift it.
    ``got_all`` is the median over all of ``bg_mask`` (computed once per triplet).
    """
    want = pack(clean[bg_mask])
    if want.size and (want == want[0]).all():  # one background colour (all but a half edit): one median
        if want.size < 20:
            return True
        return bool(np.abs(got_all - unpack(want[0]).astype(np.float32)).max() <= BACKGROUND_VISIBLE)
    got = e[bg_mask]
    colours, inverse, counts = np.unique(want, return_inverse=True, return_counts=True)
    for k, (c, n) in enumerate(zip(colours, counts)):
        if n < 20:
            continue
        sel = got if len(colours) == 1 else got[inverse == k]
        if np.abs(np.median(sel, axis=0) - unpack(c).astype(np.float32)).max() > BACKGROUND_VISIBLE:
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
    def rebg(sc: Scene) -> Scene:
        return replace(sc, background_rgb=tuple(int(v) for v in _inverse_tone(rgb, sc.tone)))

    return replace(h, scene=rebg(h.scene), base=None if h.base is None else rebg(h.base))


def _layout(src: Scene, spec: EditSpec, hyp: _Hyp) -> tuple[set[int], list[int], dict[int, np.ndarray]]:
    """(cells of objects that are following's business, free cells, the free cells' core masks)."""
    t = spec.edit_type
    size = src.size
    exempt: set[int] = set()  # objects the instruction names (or a following failure changed)
    if t in ("Local", "Remove", "Texture"):
        exempt.add(src.find(*spec.target).cell)
    if t == "Add":
        exempt.add(REGIONS.index(spec.region))
    if hyp.label == "wrong_object" and "object" in hyp.what:
        exempt.add(hyp.what["object"].cell)
    used = {o.cell for o in src.objects} | {o.cell for o in hyp.scene.objects}
    if hyp.base is not None:
        used |= {o.cell for o in hyp.base.objects}
    free = [c for c in range(9) if c not in used]
    cand = candidates(size)
    return exempt, free, {c: cand.core[c].reshape(size, size) for c in free}


def _cost_floor(src: Scene, spec: EditSpec, hyp: _Hyp, intact: View, bg_changed: bool,
                cmp: Comparator) -> float:
    """A cheap lower bound of :func:`_explain`'s cost: the error left if every unrelated object and every
    free cell were explained away at the price of one finding each (with some slack)."""
    exempt, free, cores = _layout(src, spec, hyp)
    err0 = cmp.err(intact)
    total = float(err0.sum()) - cmp.expected(intact)
    fixable = 0.0
    for o in hyp.scene.objects:
        if o.cell not in exempt:
            m = near(o, src.size)
            fixable += max(0.0, float(err0[m].sum()) - cmp.expected(intact, m) - _FINDING_COST)
    for c in free:
        fixable += max(0.0, float(err0[cores[c]].sum()) - cmp.expected(intact, cores[c]))
    return 0.8 * (total - fixable) + _FINDING_COST * bg_changed - 20000.0


def _explain(src: Scene, spec: EditSpec, hyp: _Hyp, intact: View, bg_changed: bool,
             cmp: Comparator, got_bg: np.ndarray | None = None,
             appeared: dict[int, float] | None = None) -> _Explanation:
    """Complete one following outcome into a whole-picture explanation: which unrelated objects vanished,
    moved or changed colour, and did the background change? Returns its findings and its cost (the error
    left over plus a price per finding). ``appeared`` memoises, across the stories of one edited image, how
    far each free cell stands out from the background the image shows: with ``got_bg`` it depends on the cell
    alone, so it is measured once per cell, not once per story and cell (the same answers in less time:
    ``tools/judge_answers.py``, RESULTS.md twelfth session)."""
    size = src.size
    exempt, free, cores = _layout(src, spec, hyp)

    findings: list[tuple[int, str]] = []
    if bg_changed:
        findings.append((2, "The background colour changed."))
    damages: list[Damage] = []
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
        m = near(o, size)
        if cmp.excess(err0, intact, m) < 300.0:
            continue  # it looks as expected: nothing to explain
        key = (o.color, o.shape, o.cell)
        options: list[tuple[str, Damage]] = [("vanished", Damage("object_vanished", key=key))]
        options += [(f"recolored:{c}", Damage("object_recolored", key=key, color=c))
                    for c in _likely_colours(cmp.e, object_pixels(o, size), o.color, tones)]
        options += [(f"moved:{c}", Damage("object_moved", key=key, cell=c)) for c in busy]
        top, top_dmg, top_gain = None, None, 0.0
        for label, dmg in options:
            try:
                alt = cmp.view(hyp.image(dmg.apply))
            except ValueError:
                continue
            s_, gain, fits = preference(cmp, intact, alt, err0)
            if s_ > 0.5 and fits and gain > top_gain * 1.02:
                top, top_dmg, top_gain = label, dmg, gain
        if top is None:
            if restyled:
                continue  # how a restyled object looks is following's business
            drawn = object_pixels(o, size)
            inner = drawn if o.outline else erode(drawn)  # the object's own pixels, not its (soft) rim
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
            findings.append((2, f"The {o.name} moved to the {REGIONS[int(arg)]}."))
            free.remove(int(arg))
            busy.remove(int(arg))
        else:
            findings.append((3, f"The {o.name} turned {arg}."))

    final, final_clean = intact, hyp.image()
    if damages:
        def apply_all(sc: Scene) -> Scene:
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
        if got_bg is None or appeared is None:
            shift = cmp.median_shift(around, cores[c])
        elif c in appeared:
            shift = appeared[c]
        else:
            shift = appeared[c] = cmp.median_shift(around, cores[c])
        if shift > APPEARED_VISIBLE:
            findings.append((3, f"Something appeared at the {REGIONS[c]}."))
    residual = float(err.sum()) - cmp.expected(final)
    return _Explanation(hyp, findings, max(0.0, residual) + _FINDING_COST * len(findings))


def _likely_colours(e: np.ndarray, mask: np.ndarray, own: str, tones: set, k: int = 2) -> list[str]:
    """The palette colours (other than ``own``) an object's pixels look most like, under the possible tones.

    Only these are tried as "the object changed colour" (the median is robust to noise and to the
    smeared rim of a blurred object).
    """
    seen = np.median(e[mask], axis=0)
    names = [c for c in OBJECT_COLORS if c != own]
    rgb = np.array([OBJECT_COLORS[c] for c in names], dtype=np.uint8)[None]
    dist = np.full(len(names), np.inf)
    for tone in tones:
        expect = apply_tone(rgb, tone)[0].astype(np.float32)
        dist = np.minimum(dist, np.abs(expect - seen).sum(-1))
    return [names[i] for i in np.argsort(dist, kind="stable")[:k]]

def _background_pixels(src: Scene, scenes: Iterable[Scene], size: int) -> np.ndarray:
    """Pixels that are background in every scene considered, at least 2 pixels away from any object."""
    occ = np.zeros((size, size), dtype=bool)
    for sc in [src, *scenes]:
        for o in sc.objects:
            occ |= object_pixels(o, size, drawn=False)
    return ~dilate(occ, 2)
