"""The toy world's editors: the correct one (what an instruction should do to a scene) and the flawed one
(how the training data's "ground truth" goes wrong, each of the three ways at its own rate).

Why apart from :mod:`.world`: the world and its grammar are what the toy judge may know; the flawed editor
is what it must find out from pixels (the judge reads nothing of it but the public drawing helpers
:func:`partial_edit`, :func:`degrade` and :class:`Damage`, which model how a flaw looks).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from ..formats import EDIT_TYPES, Triplet
from ..plumbing import to_uint8
from .world import (BACKGROUND_SHIFT, BACKGROUNDS, BLUR_WIDTH, FOLLOWING_BY_TYPE, NOISE_SIGMA, OBJECT_COLORS, PATTERNS,
                    PLANTED_QUALITY_FLAWS, PRESERVING_FLAWS, QUALITY_FLAWS, REGIONS, SHAPES, EditSpec, Obj, Scene, apply_tone, caption,
                    is_benchmark_scene, phrase, random_edit, random_scene, render)

# --------------------------------------------------------------------------------------------------
# The correct editor
# --------------------------------------------------------------------------------------------------
def _replace_obj(scene: Scene, old: Obj, new: Obj | None) -> Scene:
    objs = tuple((new if o == old else o) for o in scene.objects if not (o == old and new is None))
    return replace(scene, objects=objs)


def apply_edit(scene: Scene, spec: EditSpec) -> Scene:
    """The ideal edit: exactly what the instruction asks, nothing else."""
    t = spec.edit_type
    if t in ("Local", "Remove", "Texture"):
        obj = scene.find(*spec.target)
        if obj is None:
            raise ValueError(f"the scene has no {spec.target[0]} {spec.target[1]}")
        if t == "Local":
            return _replace_obj(scene, obj, replace(obj, color=spec.value))
        if t == "Remove":
            return _replace_obj(scene, obj, None)
        return _replace_obj(scene, obj, replace(obj, pattern=spec.value))
    if t == "Add":
        cell = REGIONS.index(spec.region)
        new = Obj(shape=spec.shape, color=spec.value, size=spec.size, cell=cell)
        return replace(scene, objects=scene.objects + (new,))
    if t == "Background":
        return replace(scene, background=spec.value)
    if t == "Global":
        return replace(scene, tone=spec.value)
    if t == "Style":
        return replace(scene, objects=tuple(replace(o, outline=True) for o in scene.objects))
    raise ValueError(f"unknown edit type {t!r}; expected one of {EDIT_TYPES}")




# --------------------------------------------------------------------------------------------------
# The flawed editor
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlawRates:
    """Probability of each failure family. Drawn independently, so P(perfect) = product of (1 - rate).

    The default 0.2 each leaves 1 - 0.8**3 = 48.8 % of triplets imperfect: roughly the half the paper
    reports for InstructPix2Pix-style data.
    """

    following: float = 0.2
    preserving: float = 0.2
    quality: float = 0.2

    def __post_init__(self) -> None:
        for name in ("following", "preserving", "quality"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"flaw rate {name}={v!r} must be a number in [0, 1]")
            if not (0.0 <= float(v) <= 1.0):
                raise ValueError(f"flaw rate {name}={v!r} must lie in [0, 1]")

    @classmethod
    def parse(cls, text: str) -> "FlawRates":
        """Parse ``"0.2,0.2,0.2"`` or ``"following=0.3,quality=0.1"`` (missing names keep defaults)."""
        text = text.strip()
        if "=" not in text:
            try:
                vals = [float(x) for x in text.split(",")]
            except ValueError:
                raise ValueError(f"--flaw-rates wants numbers (following,preserving,quality), got {text!r}") from None
            if len(vals) != 3:
                raise ValueError(f"--flaw-rates wants 3 numbers (following,preserving,quality), got {text!r}")
            return cls(*vals)
        kw = {}
        for part in text.split(","):
            k, _, v = part.partition("=")
            k = k.strip()
            if k not in ("following", "preserving", "quality"):
                raise ValueError(f"--flaw-rates: unknown name {k!r}; expected following, preserving, quality")
            try:
                kw[k] = float(v)
            except ValueError:
                raise ValueError(f"--flaw-rates: {k}={v!r} is not a number") from None
        return cls(**kw)


@dataclass
class ToyTriplet:
    """One generated triplet with everything the generator knows about it."""

    folder: str
    seed: int
    instruction: str
    spec: EditSpec
    source_scene: Scene
    ideal_scene: Scene
    source: np.ndarray
    ideal: np.ndarray
    edited: np.ndarray
    flaws: dict = field(default_factory=dict)  # perspective -> flaw kind or None

    @property
    def edit_type(self) -> str:
        return self.spec.edit_type

    def to_record(self) -> Triplet:
        """The triplet as the kit's common record (what the writers and every notebook take)."""
        from PIL import Image

        return Triplet(id=self.folder, instruction=self.instruction, edit_type=self.edit_type,
                       source=Image.fromarray(self.source), edited=Image.fromarray(self.edited), seed=self.seed,
                       meta={"input": caption(self.source_scene), "output": caption(self.ideal_scene)})

    def truth(self) -> dict:
        """The ``_truth/flaws.jsonl`` line for this triplet."""
        return {
            "folder": self.folder,
            "edit_type": self.edit_type,
            "following_ok": self.flaws["following"] is None,
            "preserving_ok": self.flaws["preserving"] is None,
            "quality_ok": self.flaws["quality"] is None,
            "following_flaw": self.flaws["following"],
            "preserving_flaw": self.flaws["preserving"],
            "quality_flaw": self.flaws["quality"],
            "instruction": self.instruction,
            "source_scene": self.source_scene.to_dict(),
            "ideal_scene": self.ideal_scene.to_dict(),
        }


def partial_edit(ideal: np.ndarray, base: np.ndarray, side: int) -> np.ndarray:
    """The edit done on one half only of the region it changes: ``side`` 0/1 keep the left/right half, 2/3 the
    top/bottom half, cut through the middle of the changed region's bounding box; the rest shows ``base``.

    The flawed editor draws "partial" failures with it, and the toy judge draws the same hypothesis to
    recognise them.
    """
    changed = np.any(ideal != base, axis=-1)
    ys, xs = np.nonzero(changed)
    if len(xs) == 0:
        return ideal.copy()
    if side < 2:
        mid = (xs.min() + xs.max() + 1) / 2.0
        keep = (np.arange(ideal.shape[1])[None, :] + 0.5 < mid) ^ (side == 1)
    else:
        mid = (ys.min() + ys.max() + 1) / 2.0
        keep = (np.arange(ideal.shape[0])[:, None] + 0.5 < mid) ^ (side == 3)
    keep = np.broadcast_to(keep, changed.shape)
    out = ideal.copy()
    revert = changed & ~keep
    out[revert] = base[revert]
    return out


def _partial(ideal: np.ndarray, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`partial_edit` on a random side (drawn only when something changed, as the stream always did)."""
    if not np.any(ideal != base):
        return ideal.copy()
    return partial_edit(ideal, base, int(rng.integers(4)))


def _follow_flaw(kind: str, source: Scene, spec: EditSpec, rng: np.random.Generator) -> Scene | None:
    """A target scene that fails to follow ``spec`` in the way ``kind`` says (None: not applicable)."""
    t = spec.edit_type
    if kind == "no_change":
        return source
    if kind == "wrong_attribute":
        if t == "Local":
            taken = {(o.color, o.shape) for o in source.objects}
            opts = [c for c in OBJECT_COLORS
                    if c not in (spec.value, spec.target[0]) and (c, spec.target[1]) not in taken]
            return apply_edit(source, replace(spec, value=str(rng.choice(opts)))) if opts else None
        if t == "Add":
            taken = {(o.color, o.shape) for o in source.objects}
            opts = [c for c in OBJECT_COLORS if c != spec.value and (c, spec.shape) not in taken]
            return apply_edit(source, replace(spec, value=str(rng.choice(opts)))) if opts else None
        if t == "Texture":
            return apply_edit(source, replace(spec, value=[p for p in PATTERNS if p != spec.value][0]))
        if t == "Background":
            opts = [b for b in BACKGROUNDS if b not in (spec.value, source.background)]
            return apply_edit(source, replace(spec, value=str(rng.choice(opts))))
        if t == "Global":
            opposite = {"brighter": "darker", "darker": "brighter", "warmer": "cooler", "cooler": "warmer"}
            return apply_edit(source, replace(spec, value=opposite[spec.value]))
        return None
    if kind == "wrong_object":
        if t == "Add":  # the right colour, the wrong kind of object
            taken = {(o.color, o.shape) for o in source.objects}
            opts = [s for s in SHAPES if s != spec.shape and (spec.value, s) not in taken]
            return apply_edit(source, replace(spec, shape=str(rng.choice(opts)))) if opts else None
        others = [o for o in source.objects if (o.color, o.shape) != spec.target]
        if not others:
            return None
        other = others[int(rng.integers(len(others)))]
        wrong = replace(spec, target=(other.color, other.shape))
        if t == "Local":
            taken = {(o.color, o.shape) for o in source.objects}
            if (spec.value, other.shape) in taken or spec.value == other.color:
                opts = [c for c in OBJECT_COLORS if c != other.color and (c, other.shape) not in taken]
                wrong = replace(wrong, value=str(rng.choice(opts)))
        return apply_edit(source, wrong)
    raise ValueError(kind)


@dataclass(frozen=True)
class Damage:
    """A preserving failure, described so it applies to more than one scene (a partial edit needs both).

    The damaged object is found by (colour, shape, cell), so the damage follows it through edits that
    restyle it (outlines, tone) without moving it.
    """

    kind: str
    key: tuple[str, str, int] | None = None  # (colour, shape, cell) of the damaged object
    color: str | None = None  # object_recolored: its new colour
    cell: int | None = None  # object_moved: its new cell
    background_rgb: tuple[int, int, int] | None = None  # background_shift: the shifted background

    def apply(self, scene: Scene) -> Scene:
        if self.kind == "background_shift":
            return replace(scene, background_rgb=self.background_rgb)
        obj = next((o for o in scene.objects if (o.color, o.shape, o.cell) == self.key), None)
        if obj is None:
            raise ValueError(f"no object {self.key} in the scene")
        if self.kind == "object_vanished":
            return _replace_obj(scene, obj, None)
        if self.kind == "object_recolored":
            return _replace_obj(scene, obj, replace(obj, color=self.color))
        return _replace_obj(scene, obj, replace(obj, cell=self.cell))


def _preserve_flaw(kind: str, target: Scene, source: Scene, spec: EditSpec,
                   rng: np.random.Generator) -> Damage | None:
    """Damage content the instruction did not mention (None: not applicable to this scene).

    Candidates are objects the instruction does not mention that sit unchanged in place in both the source
    and the edited scene.
    """
    mentioned = spec.target if spec.edit_type in ("Local", "Remove", "Texture") else None
    src_keys = {(o.color, o.shape, o.cell) for o in source.objects}
    others = [o for o in target.objects
              if (o.color, o.shape, o.cell) in src_keys and (o.color, o.shape) != mentioned]
    if kind == "background_shift":
        if spec.edit_type == "Background":
            return None
        base = np.array(BACKGROUNDS[target.background], dtype=int)
        shift = np.zeros(3, dtype=int)
        channel = int(rng.integers(3))
        shift[channel] = int(rng.choice([-1, 1])) * BACKGROUND_SHIFT
        if not 0 <= base[channel] + shift[channel] <= 255:  # a shift clipped at black or white would be smaller
            shift = -shift
        rgb = base + shift

        def toned(c):  # the background as it is drawn, after the scene's tone (which can clip a shift away)
            return apply_tone(np.array([[c]], dtype=np.uint8), target.tone).astype(int)

        if np.abs(toned(rgb) - toned(base)).max() < BACKGROUND_SHIFT // 2 and 0 <= base[channel] - shift[channel] <= 255:
            rgb = base - shift
        return Damage(kind, background_rgb=tuple(int(v) for v in rgb))
    if not others:
        return None
    obj = others[int(rng.integers(len(others)))]
    key = (obj.color, obj.shape, obj.cell)
    if kind == "object_vanished":
        return Damage(kind, key=key)
    if kind == "object_recolored":
        taken = {(o.color, o.shape) for o in target.objects + source.objects}
        opts = [c for c in OBJECT_COLORS if c != obj.color and (c, obj.shape) not in taken]
        return Damage(kind, key=key, color=str(rng.choice(opts))) if opts else None
    if kind == "object_moved":
        used = {o.cell for o in target.objects + source.objects}
        free = [c for c in range(9) if c not in used]
        return Damage(kind, key=key, cell=int(rng.choice(free))) if free else None
    raise ValueError(kind)


def degrade(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Low image quality the way generated images are bad: noise, blur, or blocky compression."""
    x = img.astype(np.float32)
    if kind == "noise":
        x = x + rng.normal(0.0, NOISE_SIGMA, size=x.shape).astype(np.float32)
    elif kind == "blur":  # defocus: a BLUR_WIDTH-pixel box, separable, spreads every edge over that many pixels
        r = BLUR_WIDTH // 2
        p = np.pad(x, ((r, r), (0, 0), (0, 0)), mode="edge")
        x = sum(p[i:i + x.shape[0]] for i in range(BLUR_WIDTH)) / BLUR_WIDTH
        p = np.pad(x, ((0, 0), (r, r), (0, 0)), mode="edge")
        x = sum(p[:, i:i + x.shape[1]] for i in range(BLUR_WIDTH)) / BLUR_WIDTH
    elif kind == "blocky":
        b = max(2, img.shape[0] // 8)
        h, w = (img.shape[0] // b) * b, (img.shape[1] // b) * b
        blocks = x[:h, :w].reshape(h // b, b, w // b, b, 3).mean(axis=(1, 3))
        x[:h, :w] = np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)
    else:
        raise ValueError(f"unknown quality flaw {kind!r}; expected one of {QUALITY_FLAWS}")
    return to_uint8(x)


def colour_leak(target: Scene, spec: EditSpec) -> Damage | None:
    """The instruction's colour leaking into the background: the failure InstructPix2Pix's generated pairs
    show most ("turn the triangle red" tints the whole picture red). Unlike the world's other preserving flaws,
    whose direction is random, it always points the same way for the same instruction, so a model trained on
    such pairs without rewards learns the tint. The background moves towards the colour by
    :data:`BACKGROUND_SHIFT` levels in its largest channel (all the way when the colour is nearer). Only for
    instructions that name a colour for an object (Local, Add); None otherwise, or when the colour is within
    half a shift of the background already (the judge would not see it).
    """
    if spec.edit_type not in ("Local", "Add") or spec.value not in OBJECT_COLORS:
        return None
    base = np.array(target.background_rgb or BACKGROUNDS[target.background], dtype=float)
    d = np.array(OBJECT_COLORS[spec.value], dtype=float) - base
    m = np.abs(d).max()
    if m < BACKGROUND_SHIFT / 2:
        return None
    rgb = np.clip(np.round(base + d * min(1.0, BACKGROUND_SHIFT / m)), 0, 255).astype(int)
    return Damage("background_shift", background_rgb=tuple(int(v) for v in rgb))


#: What a generator confuses an instruction's attribute with, per edit type: a colour with its neighbour on the
#: hue circle, a pattern with the other one, a background with the nearest other, a tone with its opposite.
CONFUSED_WITH: dict[str, dict[str, str]] = {
    "Local": {"red": "orange", "orange": "yellow", "yellow": "green", "green": "blue", "blue": "purple",
              "purple": "red"},
    "Texture": {"stripes": "checks", "checks": "stripes"},
    "Background": {"white": "gray", "gray": "teal", "black": "teal", "teal": "gray"},
    "Global": {"brighter": "darker", "darker": "brighter", "warmer": "cooler", "cooler": "warmer"},
}
CONFUSED_WITH["Add"] = CONFUSED_WITH["Local"]


def attribute_confusion(source: Scene, spec: EditSpec) -> Scene | None:
    """The instruction's attribute confused with another (:data:`CONFUSED_WITH`): "make the square red" gives
    an orange square, "fill it with stripes" checks. The following failure of generated pairs with a direction,
    as :func:`colour_leak` is the preserving one: always the same wrong attribute for the same instruction, so a
    model trained on such pairs without rewards learns to drift towards it, where random wrong attributes
    average away. None for Remove and Style (no attribute), or when the confused edit would change nothing or
    duplicate an object already in the scene.
    """
    table = CONFUSED_WITH.get(spec.edit_type)
    if table is None or spec.value not in table:
        return None
    wrong = table[spec.value]
    if spec.edit_type in ("Local", "Add"):
        shape = spec.target[1] if spec.edit_type == "Local" else spec.shape
        if spec.edit_type == "Local" and wrong == spec.target[0]:
            return None
        if (wrong, shape) in {(o.color, o.shape) for o in source.objects}:
            return None
    if spec.edit_type == "Background" and wrong == source.background:
        return None
    confused = apply_edit(source, replace(spec, value=wrong))
    return None if confused == source else confused


def _choose(rng: np.random.Generator, options: Sequence[str]) -> list[str]:
    return [options[i] for i in rng.permutation(len(options))]


def make_triplet(seed: int, index: int, *, rates: FlawRates = FlawRates(), size: int = 32,
                 edit_type: str | None = None, prefix: str = "toy", leak: bool = False,
                 confuse: bool = False) -> ToyTriplet:
    """Generate triplet ``index`` of stream ``seed``: independent of how many others are generated.

    ``leak``: a preserving flaw drawn for an instruction that names an object's colour is always
    :func:`colour_leak` (an experimental world; RESULTS.md, sixth session); off, the world is version 2's.
    ``confuse``: a following flaw drawn for an instruction with an attribute (a colour, pattern, background or
    tone) is always :func:`attribute_confusion` where it applies."""
    rng = np.random.default_rng([seed, index, 1])
    # The flaw draws come first and from their own stream, so they are exactly independent of the scene.
    frng = np.random.default_rng([seed, index, 2])
    draws = {p: bool(frng.random() < getattr(rates, p)) for p in ("following", "preserving", "quality")}
    etype = edit_type or EDIT_TYPES[int(rng.integers(len(EDIT_TYPES)))]
    for _attempt in range(1000):
        source = random_scene(rng, size)
        if is_benchmark_scene(source):
            continue
        spec = random_edit(source, etype, rng)
        ideal_scene = apply_edit(source, spec)
        if is_benchmark_scene(ideal_scene):
            continue
        flaws: dict[str, str | None] = {"following": None, "preserving": None, "quality": None}
        target_scene, before_scene, partial = ideal_scene, source, False
        confused = attribute_confusion(source, spec) if confuse and draws["following"] else None
        if confused is not None:
            flaws["following"], target_scene = "wrong_attribute", confused
        elif draws["following"]:
            for kind in _choose(frng, FOLLOWING_BY_TYPE[etype]):
                if kind == "partial":
                    flaws["following"], partial = kind, True
                    break
                cand = _follow_flaw(kind, source, spec, frng)
                if cand is not None:
                    flaws["following"], target_scene = kind, cand
                    break
        leaked = colour_leak(target_scene, spec) if leak and draws["preserving"] else None
        if leaked is not None:
            flaws["preserving"] = "background_shift"
            target_scene, before_scene = leaked.apply(target_scene), leaked.apply(source)
        elif draws["preserving"]:
            for kind in _choose(frng, PRESERVING_FLAWS):
                dmg = _preserve_flaw(kind, target_scene, source, spec, frng)
                if dmg is not None:
                    flaws["preserving"] = kind
                    target_scene, before_scene = dmg.apply(target_scene), dmg.apply(source)
                    break
        if is_benchmark_scene(target_scene):
            continue
        src_img = render(source)
        ideal_img = render(ideal_scene)
        edited = render(target_scene)
        if partial:
            # Half of the requested change, on top of whatever else went wrong.
            edited = _partial(edited, render(before_scene), frng)
        if draws["quality"]:
            flaws["quality"] = PLANTED_QUALITY_FLAWS[int(frng.integers(len(PLANTED_QUALITY_FLAWS)))]
            degraded = degrade(edited, flaws["quality"], frng)
            if np.array_equal(degraded, edited):  # blur cannot show on a flat picture: use noise
                flaws["quality"] = "noise"
                degraded = degrade(edited, "noise", frng)
            edited = degraded
        return ToyTriplet(
            folder=f"{prefix}-{index:06d}", seed=int(rng.integers(0, 2**31 - 1)),
            instruction=phrase(spec, rng), spec=spec, source_scene=source, ideal_scene=ideal_scene,
            source=src_img, ideal=ideal_img, edited=edited, flaws=flaws,
        )
    raise RuntimeError(f"could not draw a training scene for seed={seed} index={index}")  # pragma: no cover


def iter_triplets(n: int, seed: int = 0, *, rates: FlawRates = FlawRates(), size: int = 32,
                  start: int = 0, leak: bool = False, confuse: bool = False) -> Iterator[ToyTriplet]:
    """Triplets ``start .. start+n-1`` of stream ``seed``; edit types cycle so each occurs equally often."""
    for i in range(start, start + n):
        yield make_triplet(seed, i, rates=rates, size=size, edit_type=EDIT_TYPES[i % len(EDIT_TYPES)], leak=leak,
                           confuse=confuse)


__all__ = [
    "apply_edit", "FlawRates", "ToyTriplet", "partial_edit", "Damage", "degrade", "make_triplet", "iter_triplets",
    "colour_leak", "attribute_confusion", "CONFUSED_WITH",
]
