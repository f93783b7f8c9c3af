"""The toy image-editing world: scenes, an instruction grammar, a correct editor and a flawed one.

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
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .formats import EDIT_TYPES, BenchItem, Triplet, write_instructpix2pix_folder, write_real_edit
from .plumbing import (atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json, read_jsonl, save_image,
                       to_uint8)

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
QUALITY_FLAWS: tuple[str, ...] = ("noise", "blur", "blocky")
#: Which following failures make sense per edit type ("wrong_attribute" = wrong colour, pattern or tone).
_FOLLOWING_BY_TYPE: dict[str, tuple[str, ...]] = {
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
GENERATOR_VERSION = "toyworld-2"


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


def render(scene: Scene) -> np.ndarray:
    """Draw a scene as an ``(H, W, 3)`` uint8 RGB array. Hard edges: every pixel has a meaning."""
    s = scene.size
    bg = scene.background_rgb if scene.background_rgb is not None else BACKGROUNDS[scene.background]
    img = np.empty((s, s, 3), dtype=np.uint8)
    img[:] = bg
    xs, ys = _grid(s)
    ix, iy = xs.astype(int), ys.astype(int)
    stripe = (iy // 2) % 2 == 1
    check = ((ix // 2) + (iy // 2)) % 2 == 1
    for obj in scene.objects:
        mask = object_mask(obj, s)
        if obj.outline:
            mask = mask & ~erode(mask)
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


def _choose(rng: np.random.Generator, options: Sequence[str]) -> list[str]:
    return [options[i] for i in rng.permutation(len(options))]


def make_triplet(seed: int, index: int, *, rates: FlawRates = FlawRates(), size: int = 32,
                 edit_type: str | None = None, prefix: str = "toy") -> ToyTriplet:
    """Generate triplet ``index`` of stream ``seed``: independent of how many others are generated."""
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
        if draws["following"]:
            for kind in _choose(frng, _FOLLOWING_BY_TYPE[etype]):
                if kind == "partial":
                    flaws["following"], partial = kind, True
                    break
                cand = _follow_flaw(kind, source, spec, frng)
                if cand is not None:
                    flaws["following"], target_scene = kind, cand
                    break
        if draws["preserving"]:
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
            flaws["quality"] = QUALITY_FLAWS[int(frng.integers(len(QUALITY_FLAWS)))]
            degraded = degrade(edited, flaws["quality"], frng)
            if np.array_equal(degraded, edited):  # blur / blocky cannot show on a flat picture: use noise
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
                  start: int = 0) -> Iterator[ToyTriplet]:
    """Triplets ``start .. start+n-1`` of stream ``seed``; edit types cycle so each occurs equally often."""
    for i in range(start, start + n):
        yield make_triplet(seed, i, rates=rates, size=size, edit_type=EDIT_TYPES[i % len(EDIT_TYPES)])


# --------------------------------------------------------------------------------------------------
# Writing the real formats
# --------------------------------------------------------------------------------------------------
def _write_share(args: tuple[str, int, int, int, FlawRates, int]) -> list[tuple[list, str]]:
    """Write triplets ``start .. start+n-1`` (folders and ideal edits); return their (seeds.json entry, truth
    line) in order: one worker's share of :func:`write_toy_dataset`."""
    from PIL import Image

    out, start, n, seed, rates, size = args
    rows = []
    for tt in iter_triplets(n, seed, rates=rates, size=size, start=start):
        entry = write_instructpix2pix_folder(out, tt.to_record())
        save_image(Image.fromarray(tt.ideal), Path(out) / "_truth" / "ideal" / f"{tt.folder}.png")
        rows.append((entry, json.dumps(tt.truth(), sort_keys=True)))
    return rows


def write_toy_dataset(out: str | Path, n: int = 700, seed: int = 0, *, rates: FlawRates = FlawRates(),
                      size: int = 32, workers: int = 1) -> Path:
    """Write ``n`` triplets in the InstructPix2Pix folder layout plus ``_truth/`` beside them.

    Layout: ``<folder>/prompt.json``, ``<folder>/<seed>_0.png`` (source), ``<folder>/<seed>_1.png``
    (edited), top-level ``seeds.json``; ``_truth/flaws.jsonl`` (one line per folder),
    ``_truth/ideal/<folder>.png`` (the correct edit) and ``_truth/generator.json`` (how to regenerate).

    ``workers`` > 1 draws and writes the triplets in that many processes (20,000 take ~100 s on one core):
    every triplet is a function of ``(seed, index)`` alone, so the folder is the same byte for byte.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    truth_dir = out / "_truth"
    (truth_dir / "ideal").mkdir(parents=True, exist_ok=True)
    step = max(1, -(-n // (4 * workers)))  # a few shares per worker, so one slow share does not hold the rest
    shares = [(str(out), a, min(step, n - a), seed, rates, size) for a in range(0, n, step)]
    if workers == 1 or len(shares) == 1:
        parts = [_write_share(s) for s in shares]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(shares))) as pool:
            parts = pool.map(_write_share, shares)  # results in share order
    rows = [r for part in parts for r in part]
    atomic_write_json(out / "seeds.json", [e for e, _ in rows])
    atomic_write_text(truth_dir / "flaws.jsonl", "\n".join(t for _, t in rows) + "\n")  # the workers' JSON lines
    manifest = {"generator": GENERATOR_VERSION, "kind": "train", "n": n, "seed": seed, "size": size,
                "flaw_rates": asdict(rates),
                "command": f"rewardedit toy-data --out {out.name} --n {n} --seed {seed} --size {size} "
                           f"--flaw-rates {rates.following},{rates.preserving},{rates.quality}"}
    atomic_write_json(truth_dir / "generator.json", manifest, indent=2, sort_keys=True)
    return out


def bench_scenes(n_images: int, seed: int = 0, size: int = 32) -> list[Scene]:
    """Held-out source scenes (from the benchmark part of the scene space; see :func:`is_benchmark_scene`).

    Every scene has at least one free cell (for Add) and unique (colour, shape) pairs, so all seven edit
    types are valid on it.
    """
    rng = np.random.default_rng([seed, 7919])
    scenes: list[Scene] = []
    seen: set[str] = set()
    while len(scenes) < n_images:
        s = random_scene(rng, size)
        h = s.canonical_hash()
        if is_benchmark_scene(s) and h not in seen:
            scenes.append(s)
            seen.add(h)
    return scenes


def make_bench(n_images: int = 20, seed: int = 0, size: int = 32) -> list[tuple[Scene, list[EditSpec], list[str]]]:
    """Benchmark scenes, each with one instruction per edit type (in Real-Edit's order)."""
    out = []
    for k, scene in enumerate(bench_scenes(n_images, seed, size)):
        rng = np.random.default_rng([seed, 104729, k])
        specs = [random_edit(scene, t, rng) for t in EDIT_TYPES]
        out.append((scene, specs, [phrase(sp, rng) for sp in specs]))
    return out


def write_toy_bench(out: str | Path, n_images: int = 20, seed: int = 0, size: int = 32) -> Path:
    """Write the toy Real-Edit benchmark: ``images/`` + ``real_edit_instruct.json`` (+ ``_truth/``)."""
    from PIL import Image

    out = Path(out)
    items: list[BenchItem] = []
    images: dict[str, Image.Image] = {}
    truth = []
    for k, (scene, specs, texts) in enumerate(make_bench(n_images, seed, size)):
        name = f"{k:04d}.png"
        images[name] = Image.fromarray(render(scene))
        for n, (spec, text) in enumerate(zip(specs, texts), start=1):
            items.append(BenchItem(image=name, index=n, edit_type=spec.edit_type, instruction=text))
            truth.append({"image": name, "index": n, "edit_type": spec.edit_type, "instruction": text,
                          "source_scene": scene.to_dict(), "ideal_scene": apply_edit(scene, spec).to_dict()})
    write_real_edit(out, items, images)
    (out / "_truth").mkdir(exist_ok=True)
    atomic_write_jsonl(out / "_truth" / "ideal.jsonl", truth, sort_keys=True)
    manifest = {"generator": GENERATOR_VERSION, "kind": "bench", "images": n_images, "seed": seed, "size": size,
                "command": f"rewardedit toy-bench --out {out.name} --images {n_images} --seed {seed} --size {size}"}
    atomic_write_json(out / "_truth" / "generator.json", manifest, indent=2, sort_keys=True)
    return out


def read_truth(data_dir: str | Path) -> dict[str, dict]:
    """The ground-truth flaws of a toy dataset, keyed by folder (for measuring judges and models only)."""
    path = Path(data_dir) / "_truth" / "flaws.jsonl"
    return {d["folder"]: d for d in read_jsonl(path)}


def ensure_toy_dataset(out: str | Path, n: int = 700, seed: int = 0, *, rates: FlawRates = FlawRates(),
                       size: int = 32) -> Path:
    """Write the toy training set unless ``out`` already holds exactly this one (same generator settings).

    Notebooks call this so that re-running a notebook, or running the course twice, costs nothing.
    """
    out = Path(out)
    manifest = out / "_truth" / "generator.json"
    want = {"generator": GENERATOR_VERSION, "n": n, "seed": seed, "size": size, "flaw_rates": asdict(rates)}
    if manifest.exists() and (out / "seeds.json").exists():
        have = read_json(manifest)
        if all(have.get(k) == v for k, v in want.items()):
            return out
    return write_toy_dataset(out, n, seed, rates=rates, size=size)


def ensure_toy_bench(out: str | Path, n_images: int = 20, seed: int = 0, size: int = 32) -> Path:
    """Like :func:`ensure_toy_dataset`, for the toy Real-Edit benchmark."""
    out = Path(out)
    manifest = out / "_truth" / "generator.json"
    if manifest.exists() and (out / "real_edit_instruct.json").exists():
        have = read_json(manifest)
        if (have.get("generator"), have.get("images"), have.get("seed"), have.get("size")) == (
                GENERATOR_VERSION, n_images, seed, size):
            return out
    return write_toy_bench(out, n_images, seed, size)
