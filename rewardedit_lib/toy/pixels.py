"""Pixels in and drawing, fast: the toy judge's shared plumbing.

Why a module of its own: every part of the judge (quality, scene recovery, the explanation search) reads
images the same way and imagines dozens of pictures per triplet, so the conversions, the small caches and a
memoised copy of :func:`toyworld.render` are kept in one place.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from .. import plumbing
from .world import Obj, Scene, drawn_mask, object_mask, paint, pattern_masks

to_rgb_array = plumbing.to_rgb_array  # (H, W, 3) uint8 from an array, a PIL image or image bytes


class LRU:
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



def digest(*arrays: np.ndarray, text: str = "") -> str:
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=20)
    for a in arrays:
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def pack(rgb: np.ndarray) -> np.ndarray:
    """Colours (..., 3) as single integers (a 1-D unique is much faster than a row-wise one)."""
    x = rgb.astype(np.int32)
    return (x[..., 0] << 16) | (x[..., 1] << 8) | x[..., 2]


def unpack(p: np.ndarray) -> np.ndarray:
    return np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], axis=-1)


def dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    out = m.copy()
    for _ in range(r):
        o = out.copy()
        o[1:] |= out[:-1]
        o[:-1] |= out[1:]
        o[:, 1:] |= out[:, :-1]
        o[:, :-1] |= out[:, 1:]
        out = o
    return out


# --------------------------------------------------------------------------------------------------
# Drawing, fast: the judge imagines dozens of pictures per triplet
# --------------------------------------------------------------------------------------------------
_MASKS: dict[tuple, np.ndarray] = {}
_PATTERN_MASKS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def object_pixels(obj: Obj, size: int, drawn: bool = True) -> np.ndarray:
    """The pixels an object covers: as drawn (an outline is its rim), or filled (``drawn=False``).

    :func:`toyworld.object_mask`, memoised (a race between threads only computes a mask twice).
    """
    outline = obj.outline and drawn
    key = (size, obj.shape, obj.size, obj.cell, obj.dx, obj.dy, outline)
    m = _MASKS.get(key)
    if m is None:
        m = drawn_mask(obj, size) if drawn else object_mask(obj, size)
        m.setflags(write=False)
        _MASKS[key] = m
    return m


def near(obj: Obj, size: int) -> np.ndarray:
    """An object's filled mask grown by one pixel (where its presence or absence shows), memoised."""
    key = ("near", size, obj.shape, obj.size, obj.cell, obj.dx, obj.dy)
    m = _MASKS.get(key)
    if m is None:
        m = dilate(object_pixels(obj, size, drawn=False), 1)
        m.setflags(write=False)
        _MASKS[key] = m
    return m


def draw(scene: Scene) -> np.ndarray:
    """:func:`toyworld.render`, pixel for pixel (a test checks it), with the object masks memoised."""
    s = scene.size
    if s not in _PATTERN_MASKS:
        _PATTERN_MASKS[s] = pattern_masks(s)
    return paint(scene, lambda obj: object_pixels(obj, s), *_PATTERN_MASKS[s])


DRAWN = LRU(8192)


def draw_cached(scene: Scene) -> np.ndarray:
    """:func:`draw`, memoised by scene (the same imagined pictures recur across hypotheses); read-only."""
    img = DRAWN.get(scene)
    if img is None:
        img = draw(scene)
        img.setflags(write=False)
        DRAWN.put(scene, img)
    return img
