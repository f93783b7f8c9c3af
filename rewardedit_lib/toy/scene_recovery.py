"""Step 2 of the toy judge: the source scene, recovered from the source pixels.

Why: the judge imagines the correct edit by applying the instruction to the scene it *sees*, never to a
scene file (it has no way to the ground truth).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .pixels import LRU, digest, draw, pack, to_rgb_array
from .world import BACKGROUNDS, OBJECT_COLORS, SHAPES, SIZES, Obj, Scene, object_mask

SCENES = LRU(4096)  # source pixels -> recovered scene (a source is judged three times, often more)
_MISSING = object()


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


def candidates(size: int) -> _Candidates:
    with _CANDIDATES_LOCK:
        if size in _CANDIDATES:
            return _CANDIDATES[size]
        jit = max(1, size // 32)  # the world's jitter (see toyworld.random_scene)
        params, masks, areas, window, core = [], [], [], [], []
        cell_px = size / 3.0
        ys, xs = np.mgrid[0:size, 0:size] + 0.5
        for cell in range(9):
            ps, ms = [], []
            for shape in SHAPES:
                for sz in SIZES:
                    for dy in range(-jit, jit + 1):
                        for dx in range(-jit, jit + 1):
                            o = Obj(shape=shape, color="red", size=sz, cell=cell, dx=dx, dy=dy)
                            ps.append((shape, sz, dx, dy))
                            ms.append(object_mask(o, size).ravel())
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


def recover_scene(source: Any) -> Scene | None:
    """The toy scene a source image shows, or None when it is not a (clean, square) toy-world picture.

    Background = the dominant colour (it must be a palette background). Objects: for each palette colour,
    in each grid cell holding enough pixels of it, the (shape, size, jitter) whose mask differs least from
    those pixels. The result must re-render to (almost exactly) the source, else the picture is not one the
    judge understands. Cached by the source's pixels.
    """
    src = to_rgb_array(source)
    key = digest(src)
    hit = SCENES.get(key)
    if hit is not None:
        return None if hit is _MISSING else hit
    scene = _recover(src)
    SCENES.put(key, _MISSING if scene is None else scene)
    return scene


def _recover(src: np.ndarray) -> Scene | None:
    size = src.shape[0]
    if src.shape[1] != size or not 12 <= size <= 96:  # toy pictures are small squares (32 px by default)
        return None
    flat = src.reshape(-1, 3).astype(np.int32)
    packed = pack(flat)
    vals, counts = np.unique(packed, return_counts=True)
    top = int(vals[np.argmax(counts)])
    bg_rgb = np.array([(top >> 16) & 255, (top >> 8) & 255, top & 255], dtype=np.float64)
    bg_name, bg_d = _nearest(bg_rgb, BACKGROUNDS)
    if bg_d > 6:
        return None
    cand = candidates(size)
    objs: list[Obj] = []
    for cname, crgb in OBJECT_COLORS.items():
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
            objs.append(Obj(shape=shape, color=cname, size=sz, cell=cell, dx=dx, dy=dy))
    objs.sort(key=lambda o: o.cell)
    scene = Scene(size=size, background=bg_name, objects=tuple(objs))
    mism = _mismatch(draw(scene), src)
    if mism and len(objs) > 1:  # overlapping neighbours: the drawing order matters; try the others
        import itertools

        for perm in itertools.permutations(objs):
            s2 = replace(scene, objects=tuple(perm))
            m2 = _mismatch(draw(s2), src)
            if m2 < mism:
                scene, mism = s2, m2
            if not mism:
                break
    if mism > 0.03 * size * size:
        return None
    return scene


def _mismatch(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > 2).sum())
