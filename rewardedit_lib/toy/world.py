"""The toy image-editing world: its vocabulary, scenes and drawing, the instruction grammar and its parser.

Why it exists: the paper's claim is that instruction-editing training data is *imperfect* and that
measuring the imperfection (rewards) and conditioning on it beats training on the data as if it were
perfect. To show that on a laptop we need a world where (a) images are tiny, (b) we know exactly what the
right edit was, and (c) we can make the "ground truth" wrong in the same three ways InstructPix2Pix data
goes wrong -- not following the instruction, not preserving unrelated content, low image quality -- each at
its own rate and independently of the others.

Everything is seeded and deterministic: triplet ``i`` of seed ``s`` is the same whatever ``n`` is, so a
small committed sample is a prefix of a large generated set, and regenerating gives identical bytes.

The world writes the real file formats (see :mod:`rewardedit_lib.formats`), so one loader serves the toy
data and RewardEdit20K / Real-Edit alike. The ground-truth flaws go to ``_truth/`` beside the data; the
judge and the model never read it, it exists to measure them.

This module holds the world itself (what a scene is, how it is drawn, how instructions are phrased and read,
random scenes and edits); :mod:`.editors` holds the correct and the flawed editor that make triplets, and
:mod:`.writer` writes them in the real file formats. ``rewardedit_lib.toyworld`` re-exports all three.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..formats import EDIT_TYPES
from ..plumbing import to_uint8

# --------------------------------------------------------------------------------------------------
# Vocabulary. Colours are far apart in RGB so a pixel-reading judge can name them under noise.
# --------------------------------------------------------------------------------------------------
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "green": (40, 170, 70),
    "blue": (38, 90, 215),
    "yellow": (240, 200, 30),
    "purple": (140, 70, 190),
    "orange": (245, 130, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (236, 236, 236),
    "gray": (128, 128, 128),
    "black": (24, 24, 24),
    "teal": (20, 120, 120),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
SIZES: dict[str, float] = {"small": 0.30, "large": 0.42}  # radius as a fraction of a grid cell
PATTERNS: tuple[str, ...] = ("stripes", "checks")
TONES: tuple[str, ...] = ("brighter", "darker", "warmer", "cooler")
#: The 3x3 layout grid; an object occupies one cell. Names double as the "Add" instruction's location.
REGIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
PATTERN_LIGHT = (245, 245, 245)  # the second colour of stripes and checks
MAX_OBJECTS = 3

FOLLOWING_FLAWS: tuple[str, ...] = ("wrong_attribute", "wrong_object", "no_change", "partial")
PRESERVING_FLAWS: tuple[str, ...] = ("object_moved", "object_recolored", "object_vanished", "background_shift")
#: The quality defects the toy judge names (and :func:`.editors.degrade` can make).
QUALITY_FLAWS: tuple[str, ...] = ("noise", "blur", "blocky")
#: The quality flaws the flawed editor plants (generator version 4): the defects a generated image shows, a
#: deterministic function of the picture that an editor trained on such pairs learns to reproduce. Independent
#: per-pixel noise (version 2) is what no generated pair shows and no denoiser can learn to draw -- a model asked
#: for it draws nothing (RESULTS.md, sixth session) -- and 4-pixel compression blocks (version 3) are not drawn
#: either: asked for them, a course model draws a soft image, never blocks (RESULTS.md, tenth session). A reward
#: can teach or unteach only what the editor can draw. Noise remains the fallback where blur cannot show (a flat
#: picture); the judge still finds and scores all three.
PLANTED_QUALITY_FLAWS: tuple[str, ...] = ("blur",)
#: Which following failures make sense per edit type ("wrong_attribute" = wrong colour, pattern or tone).
FOLLOWING_BY_TYPE: dict[str, tuple[str, ...]] = {
    "Local": ("wrong_attribute", "wrong_object", "no_change", "partial"),
    "Remove": ("wrong_object", "no_change", "partial"),
    "Add": ("wrong_attribute", "wrong_object", "no_change", "partial"),
    "Texture": ("wrong_attribute", "wrong_object", "no_change", "partial"),
    "Background": ("wrong_attribute", "no_change", "partial"),
    "Global": ("wrong_attribute", "no_change", "partial"),
    "Style": ("no_change", "partial"),
}
#: How big the planted flaws are. Version 2 made the two smallest ones plainly visible, so that a judge
#: threshold half-way between a clean drawing and the flaw leaves room for a model's imperceptible
#: imprecision (docs/toy-world.md, "Judge calibration"): the background shift is never clipped (version 1's
#: 60 levels could shrink to 19 at white), and blur is a defocus that ramps an edge over 7 pixels (version 1's
#: two [1, 2, 1] passes put most of the step in 2 pixels: hardly softer than a diffusion model's edit).
BACKGROUND_SHIFT = 80  # grey levels, in one channel
BLUR_WIDTH = 7  # pixels: the box a point is spread over (an odd number); an edge gets BLUR_WIDTH - 1 in-between pixels
NOISE_SIGMA = 30.0  # grey levels
GENERATOR_VERSION = "toyworld-4"


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Obj:
    """One object: what it is (shape, colour, size) and where (grid cell plus a small pixel jitter)."""

    shape: str
    color: str
    size: str
    cell: int
    dx: int = 0
    dy: int = 0
    pattern: str = "solid"  # solid | stripes | checks
    outline: bool = False  # the Style edit draws objects as 1-px outlines

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A whole picture: background, objects, and a global tone applied after drawing."""

    size: int
    background: str
    objects: tuple[Obj, ...]
    tone: str | None = None
    #: a background colour off the palette (a preserving failure); overrides ``background`` when set
    background_rgb: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["objects"] = [asdict(o) for o in self.objects]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs = tuple(Obj(**o) for o in d["objects"])
        bg_rgb = tuple(d["background_rgb"]) if d.get("background_rgb") is not None else None
        return cls(size=d["size"], background=d["background"], objects=objs, tone=d.get("tone"),
                   background_rgb=bg_rgb)

    def find(self, color: str, shape: str) -> Obj | None:
        for o in self.objects:
            if o.color == color and o.shape == shape:
                return o
        return None

    def free_cells(self) -> list[int]:
        used = {o.cell for o in self.objects}
        return [c for c in range(9) if c not in used]

    def canonical_hash(self) -> str:
        # Objects in sorted order: the same objects listed in another order render the same picture, so
        # they must hash alike (else a reordered benchmark scene could land in the training half).
        d = self.to_dict()
        d["objects"] = sorted(d["objects"], key=lambda o: json.dumps(o, sort_keys=True))
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def is_benchmark_scene(scene: Scene) -> bool:
    """The scene space is split once and for all: 1 scene in 8 (by content hash) belongs to the benchmark.

    Training never uses such a scene as a source or a target, so the toy Real-Edit benchmark is held out
    by construction, whatever seeds are used for either.
    """
    return int(scene.canonical_hash()[:2], 16) % 8 == 0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def object_mask(obj: Obj, size: int) -> np.ndarray:
    """Boolean mask of an object's pixels (filled shape, before outline styling)."""
    cell = size / 3.0
    row, col = divmod(obj.cell, 3)
    cx = (col + 0.5) * cell + obj.dx
    cy = (row + 0.5) * cell + obj.dy
    r = SIZES[obj.size] * cell
    xs, ys = _grid(size)
    if obj.shape == "square":
        return (np.abs(xs - cx) <= r * 0.9) & (np.abs(ys - cy) <= r * 0.9)
    if obj.shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if obj.shape == "triangle":  # apex up, base at the bottom
        t = (ys - (cy - r)) / (2 * r)
        return (t >= 0) & (t <= 1) & (np.abs(xs - cx) <= t * r * 1.05)
    raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")


def erode(mask: np.ndarray) -> np.ndarray:
    """A mask shrunk by one pixel (4-neighbourhood): ``mask & ~erode(mask)`` is its 1-px outline (Style)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return inner


def apply_tone(img: np.ndarray, tone: str | None) -> np.ndarray:
    """A global colour transform of the whole picture (the Global edit type)."""
    x = img.astype(np.float32)
    if tone is None:
        return img
    if tone == "brighter":
        x = x + 0.45 * (255.0 - x)
    elif tone == "darker":
        x = x * 0.5
    elif tone == "warmer":
        x = x + np.array([45.0, 10.0, -45.0], dtype=np.float32)
    elif tone == "cooler":
        x = x + np.array([-45.0, 0.0, 45.0], dtype=np.float32)
    else:
        raise ValueError(f"unknown tone {tone!r}; expected one of {TONES}")
    return to_uint8(x)


def pattern_masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The light pixels of stripes and of checks on a ``size`` x ``size`` picture (2-pixel bands and squares)."""
    xs, ys = _grid(size)
    ix, iy = xs.astype(int), ys.astype(int)
    return (iy // 2) % 2 == 1, ((ix // 2) + (iy // 2)) % 2 == 1


def drawn_mask(obj: Obj, size: int) -> np.ndarray:
    """The pixels an object paints: its filled mask, or only the mask's rim when it is drawn as an outline."""
    mask = object_mask(obj, size)
    return mask & ~erode(mask) if obj.outline else mask


def render(scene: Scene) -> np.ndarray:
    """Draw a scene as an ``(H, W, 3)`` uint8 RGB array. Hard edges: every pixel has a meaning."""
    return paint(scene, lambda obj: drawn_mask(obj, scene.size), *pattern_masks(scene.size))


def paint(scene: Scene, mask_of, stripe: np.ndarray, check: np.ndarray) -> np.ndarray:
    """:func:`render` with the masks given (``mask_of(obj)`` as :func:`drawn_mask`; the two of
    :func:`pattern_masks`), so that a caller that draws the same objects often can memoise them."""
    s = scene.size
    bg = scene.background_rgb if scene.background_rgb is not None else BACKGROUNDS[scene.background]
    img = np.empty((s, s, 3), dtype=np.uint8)
    img[:] = bg
    for obj in scene.objects:
        mask = mask_of(obj)
        img[mask] = OBJECT_COLORS[obj.color]
        if obj.pattern == "stripes" and not obj.outline:
            img[mask & stripe] = PATTERN_LIGHT
        elif obj.pattern == "checks" and not obj.outline:
            img[mask & check] = PATTERN_LIGHT
    return apply_tone(img, scene.tone)


# --------------------------------------------------------------------------------------------------
# Instructions: a small grammar, and its parser (the toy judge reads instructions with it)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditSpec:
    """What an instruction asks, in structured form."""

    edit_type: str
    target: tuple[str, str] | None = None  # (colour, shape) of the object referred to
    value: str | None = None  # new colour / pattern / background / tone, or the added object's colour
    shape: str | None = None  # Add: the new object's shape
    size: str | None = None  # Add: the new object's size
    region: str | None = None  # Add: where


_PATTERN_WORDS = {"stripes": ("stripes", "a striped pattern"), "checks": ("a checkerboard pattern", "checks")}
_TONE_WORDS = {
    "brighter": ("make the image brighter", "brighten the whole picture"),
    "darker": ("make the image darker", "darken the whole picture"),
    "warmer": ("give the image a warm tone", "make the picture warmer"),
    "cooler": ("give the image a cool tone", "make the picture cooler"),
}
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Local": ("turn the {c} {s} {v}", "make the {c} {s} {v}", "change the color of the {c} {s} to {v}",
              "paint the {c} {s} {v}"),
    "Remove": ("remove the {c} {s}", "delete the {c} {s}", "take away the {c} {s}", "erase the {c} {s}"),
    "Add": ("add a {z} {v} {n} at the {r}", "put a {z} {v} {n} at the {r}", "place a {z} {v} {n} at the {r}"),
    "Texture": ("fill the {c} {s} with {p}", "cover the {c} {s} with {p}"),
    "Background": ("make the background {b}", "change the background to {b}", "turn the background {b}",
                   "paint the background {b}"),
    "Global": ("{t}",),
    "Style": ("turn it into a line drawing", "draw the objects as outlines", "make it an outline sketch"),
}


def _alt(words: Sequence[str]) -> str:
    return "(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def _compile(template: str) -> tuple[re.Pattern, list[str]]:
    fields: list[str] = []
    parts = re.split(r"(\{\w\})", template)
    rx = ""
    for p in parts:
        m = re.fullmatch(r"\{(\w)\}", p)
        if not m:
            rx += re.escape(p)
            continue
        f = m.group(1)
        fields.append(f)
        rx += {
            "c": _alt(OBJECT_COLORS), "v": _alt(OBJECT_COLORS), "s": _alt(SHAPES), "n": _alt(SHAPES),
            "z": _alt(SIZES), "r": _alt(REGIONS), "b": _alt(BACKGROUNDS),
            "p": _alt([w for ws in _PATTERN_WORDS.values() for w in ws]),
            "t": _alt([w for ws in _TONE_WORDS.values() for w in ws]),
        }[f]
    return re.compile(rx, re.IGNORECASE), fields


_COMPILED = {t: [_compile(x) for x in ts] for t, ts in _TEMPLATES.items()}


def parse_instruction(text: str) -> EditSpec | None:
    """Parse a toy instruction back into an :class:`EditSpec`; ``None`` if it is not in the grammar."""
    t = " ".join(text.strip().rstrip(".!").split())
    for edit_type, compiled in _COMPILED.items():
        for rx, fields in compiled:
            m = rx.fullmatch(t)
            if not m:
                continue
            g = dict(zip(fields, (x.lower() for x in m.groups())))
            if edit_type in ("Local", "Remove", "Texture"):
                val = g.get("v")
                if "p" in g:
                    val = next(k for k, ws in _PATTERN_WORDS.items() if g["p"] in ws)
                return EditSpec(edit_type, target=(g["c"], g["s"]), value=val)
            if edit_type == "Add":
                return EditSpec("Add", value=g["v"], shape=g["n"], size=g["z"], region=g["r"])
            if edit_type == "Background":
                return EditSpec("Background", value=g["b"])
            if edit_type == "Global":
                return EditSpec("Global", value=next(k for k, ws in _TONE_WORDS.items() if g["t"] in ws))
            return EditSpec("Style")
    return None


def phrase(spec: EditSpec, rng: np.random.Generator) -> str:
    """Write an instruction for ``spec`` with a randomly chosen template of its edit type."""
    if spec.edit_type == "Global":
        return str(rng.choice(_TONE_WORDS[spec.value]))
    template = str(rng.choice(_TEMPLATES[spec.edit_type]))
    words = {"b": spec.value, "v": spec.value, "n": spec.shape, "z": spec.size, "r": spec.region}
    if spec.target is not None:
        words["c"], words["s"] = spec.target
    if spec.edit_type == "Texture":
        words["p"] = str(rng.choice(_PATTERN_WORDS[spec.value]))
    return template.format(**{k: v for k, v in words.items() if v is not None})


def caption(scene: Scene) -> str:
    """A plain description of a scene (InstructPix2Pix's ``input`` / ``output`` captions)."""
    parts = []
    for o in scene.objects:
        pat = "" if o.pattern == "solid" else f" with {o.pattern}"
        parts.append(f"a {o.size} {o.color} {o.shape}{pat} at the {REGIONS[o.cell]}")
    things = ", ".join(parts) if parts else "nothing"
    bg = scene.background if scene.background_rgb is None else "off-colour"
    extra = (", drawn as outlines" if any(o.outline for o in scene.objects) else "")
    tone = f", {scene.tone} tone" if scene.tone else ""
    return f"{things} on a {bg} background{extra}{tone}"



def grammar_phrases() -> list[str]:
    """Every instruction template (its fields written ``{x}``) and every phrase the grammar uses for a pattern
    or a tone, in a fixed order: the words a tokenizer of toy instructions must know
    (:func:`rewardedit_lib.toy.text_encoder.toy_vocabulary` reads them here, never the tables themselves)."""
    return ([t for ts in _TEMPLATES.values() for t in ts]
            + [w for ws in _PATTERN_WORDS.values() for w in ws]
            + [w for ws in _TONE_WORDS.values() for w in ws])


# --------------------------------------------------------------------------------------------------
# Random scenes and random edits
# --------------------------------------------------------------------------------------------------
def random_scene(rng: np.random.Generator, size: int = 32, n_objects: int | None = None) -> Scene:
    """A plain source scene: 1-3 solid objects, each (colour, shape) unique, on a palette background."""
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else n_objects
    cells = rng.choice(9, size=n, replace=False)
    kinds = rng.choice(len(OBJECT_COLORS) * len(SHAPES), size=n, replace=False)
    jit = max(1, size // 32)
    objs = []
    colors = list(OBJECT_COLORS)
    for cell, k in zip(cells, kinds):
        color, shape = colors[int(k) // len(SHAPES)], SHAPES[int(k) % len(SHAPES)]
        objs.append(Obj(shape=shape, color=color, size=str(rng.choice(list(SIZES))), cell=int(cell),
                        dx=int(rng.integers(-jit, jit + 1)), dy=int(rng.integers(-jit, jit + 1))))
    return Scene(size=size, background=str(rng.choice(list(BACKGROUNDS))), objects=tuple(objs))


def random_edit(scene: Scene, edit_type: str, rng: np.random.Generator) -> EditSpec:
    """A random instruction of ``edit_type`` that is valid (and unambiguous) for ``scene``."""
    objs = list(scene.objects)
    taken = {(o.color, o.shape) for o in objs}
    if edit_type in ("Local", "Remove", "Texture"):
        obj = objs[int(rng.integers(len(objs)))]
        if edit_type == "Local":
            options = [c for c in OBJECT_COLORS if c != obj.color and (c, obj.shape) not in taken]
            return EditSpec("Local", target=(obj.color, obj.shape), value=str(rng.choice(options)))
        if edit_type == "Remove":
            return EditSpec("Remove", target=(obj.color, obj.shape))
        return EditSpec("Texture", target=(obj.color, obj.shape), value=str(rng.choice(PATTERNS)))
    if edit_type == "Add":
        free = scene.free_cells()
        kinds = [(c, s) for c in OBJECT_COLORS for s in SHAPES if (c, s) not in taken]
        c, s = kinds[int(rng.integers(len(kinds)))]
        return EditSpec("Add", value=c, shape=s, size=str(rng.choice(list(SIZES))),
                        region=REGIONS[int(rng.choice(free))])
    if edit_type == "Background":
        return EditSpec("Background", value=str(rng.choice([b for b in BACKGROUNDS if b != scene.background])))
    if edit_type == "Global":
        return EditSpec("Global", value=str(rng.choice(TONES)))
    if edit_type == "Style":
        return EditSpec("Style")
    raise ValueError(f"unknown edit type {edit_type!r}; expected one of {EDIT_TYPES}")


__all__ = [
    "OBJECT_COLORS", "BACKGROUNDS", "SHAPES", "SIZES", "PATTERNS", "TONES", "REGIONS", "PATTERN_LIGHT",
    "MAX_OBJECTS", "FOLLOWING_FLAWS", "FOLLOWING_BY_TYPE", "PRESERVING_FLAWS", "QUALITY_FLAWS", "PLANTED_QUALITY_FLAWS", "BACKGROUND_SHIFT",
    "BLUR_WIDTH", "NOISE_SIGMA", "GENERATOR_VERSION", "Obj", "Scene", "is_benchmark_scene", "object_mask", "erode",
    "apply_tone", "render", "paint", "pattern_masks", "drawn_mask", "EditSpec", "parse_instruction", "phrase",
    "caption", "grammar_phrases",
    "random_scene", "random_edit"
]
