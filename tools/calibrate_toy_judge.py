"""Measure the toy judge's calibration table: for each finding, its size on clean drawings and on the
smallest planted flaw of its kind, and the threshold half-way between them (docs/toy-world.md).

The rule is fixed before any model is compared: a threshold is (clean + smallest flaw) / 2, where "smallest"
is the 1st percentile of the flaw's size over generated triplets, measured with the judge's own measure.
Nothing here looks at a model's edits.

    python tools/calibrate_toy_judge.py [--n 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from rewardedit_lib import toyworld as tw
from rewardedit_lib.toy import judge as tj


def background_drift(ideal_scene: tw.Scene, edited: np.ndarray) -> float:
    """The largest per-channel change of the background colour, as drawn (after the scene's tone): the median
    of the edited pixels where the ideal edit shows its background. (tools/edit_errors.py measures models
    with it too.)"""
    ideal = tw.render(ideal_scene)
    bg = tw.render(replace(ideal_scene, objects=()))[0, 0].astype(float)
    where = (ideal == bg).all(-1)
    return float(np.abs(np.median(np.asarray(edited)[where].astype(float), axis=0) - bg).max())


def recolour_sizes() -> list[float]:
    """Every planted recolouring: one palette colour for another, under every tone (per-channel maximum)."""
    names = list(tw.OBJECT_COLORS)
    rgb = np.array([tw.OBJECT_COLORS[c] for c in names], dtype=np.uint8)[None]
    out = []
    for tone in (None, *tw.TONES):
        x = tw.apply_tone(rgb, tone)[0].astype(int)
        for i in range(len(names)):
            for j in range(len(names)):
                if i != j:
                    out.append(float(np.abs(x[i] - x[j]).max()))
    return out


def contrast_sizes() -> list[float]:
    """Every object on every background, under every tone (per-channel maximum): what appears in an empty cell."""
    obj = np.array(list(tw.OBJECT_COLORS.values()), dtype=np.uint8)[None]
    bgs = np.array(list(tw.BACKGROUNDS.values()), dtype=np.uint8)[None]
    out = []
    for tone in (None, *tw.TONES):
        o, b = tw.apply_tone(obj, tone)[0].astype(int), tw.apply_tone(bgs, tone)[0].astype(int)
        out += [float(np.abs(x - y).max()) for x in o for y in b]
    return out


def measure(n: int, seed: int) -> dict[str, tuple[float, float]]:
    """{finding: (size on clean drawings, smallest planted size)} over ``n`` triplets of each kind."""
    clean = list(tw.iter_triplets(n, seed=seed, rates=tw.FlawRates(0, 0, 0)))
    flawed = list(tw.iter_triplets(n, seed=seed + 1, rates=tw.FlawRates(0, 1, 0)))
    flawed += list(tw.iter_triplets(n, seed=seed + 2, rates=tw.FlawRates(0, 0, 1)))
    sizes: dict[str, list[float]] = {"background": [], "blur": [], "noise": []}
    for t in flawed:
        q = tj.assess_quality(t.edited)
        if t.flaws["preserving"] == "background_shift":
            sizes["background"].append(background_drift(t.ideal_scene, t.edited))
        if t.flaws["quality"] == "blur" and q.edge_width is not None:
            sizes["blur"].append(q.edge_width)
    # The world plants noise only where blur cannot show (generator version 4; 3: blur and blocks), but the judge still
    # names it (a model's grain): its planted size is the world's noise laid on clean edits.
    rng = np.random.default_rng(seed)
    sizes["noise"] = [tj.assess_quality(tw.degrade(t.edited, "noise", rng)).noise_sigma for t in clean]
    cq = [tj.assess_quality(t.edited) for t in clean]
    # A clean drawing's size: the median over clean triplets (0 for all three: hard edges, no grain).
    base = {"background": 0.0, "blur": float(np.median([q.edge_width for q in cq if q.edge_width is not None])),
            "noise": float(np.median([q.noise_sigma for q in cq]))}
    out = {k: (base[k], float(np.percentile(v, 1))) for k, v in sizes.items()}
    out["object colour"] = (0.0, float(min(recolour_sizes())))
    out["appeared"] = (0.0, float(min(contrast_sizes())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    got = measure(a.n, a.seed)
    print("| finding | measure | clean | smallest planted flaw | threshold (half-way) | the judge's |")
    print("|---|---|---|---|---|---|")
    units = {"background": "largest channel change of the background median (grey levels)",
             "object colour": "largest channel change of an object's median colour (grey levels)",
             "appeared": "largest channel difference of an empty cell's median from the background (grey levels)",
             "blur": "mean 10-90 % rise of the edges (pixels)", "noise": "noise standard deviation (grey levels)"}
    judge = {"background": tj.BACKGROUND_VISIBLE, "object colour": tj.COLOUR_VISIBLE,
             "appeared": tj.APPEARED_VISIBLE, "blur": tj.BLUR_VISIBLE, "noise": tj.NOISE_VISIBLE}
    for k, (c, f) in got.items():
        print(f"| {k} | {units[k]} | {c:.2f} | {f:.2f} | {(c + f) / 2:.2f} | {judge[k]} |")


if __name__ == "__main__":
    main()
