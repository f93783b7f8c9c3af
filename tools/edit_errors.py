"""How far a model's toy edits are from the ideal edits, in the judge's own terms: per edit, the background's
median drift and each object's colour shift (largest channel, grey levels), and the mean 10-90 % edge rise.

    python tools/edit_errors.py EVAL_DIR BENCH_DIR

EVAL_DIR is a `rewardedit evaluate` output folder (edits/), BENCH_DIR the toy benchmark it edited (its
_truth/ideal.jsonl names the ideal scenes). Prints percentiles; a diagnostic, not a verdict.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from rewardedit_lib import toyworld as tw
from rewardedit_lib.toy import judge as tj

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_toy_judge import background_drift  # noqa: E402  (the same measure the calibration uses)


def main(eval_dir: str, bench_dir: str) -> None:
    truth = [json.loads(x) for x in (Path(bench_dir) / "_truth" / "ideal.jsonl").read_text().splitlines() if x]
    bg, obj, width = [], [], []
    for t in truth:
        stem = Path(t["image"]).stem
        f = Path(eval_dir) / "edits" / f"{stem}-{t['index']}.png"
        if not f.exists():
            continue
        e = np.asarray(Image.open(f).convert("RGB")).astype(np.float32)
        ideal = tw.Scene.from_dict(t["ideal_scene"])
        clean = tw.render(ideal).astype(np.float32)
        bg.append(background_drift(ideal, e))
        for o in ideal.objects:
            m = tw.object_mask(o, ideal.size)
            m = m if o.outline else tw.erode(m)
            if m.sum() >= 4:
                obj.append(float(np.abs(np.median(e[m], axis=0) - np.median(clean[m], axis=0)).max()))
        q = tj.assess_quality(e.astype(np.uint8))
        if q.edge_width is not None:
            width.append(q.edge_width)
    for name, v in (("background drift", bg), ("object colour shift", obj), ("edge rise", width)):
        v = np.array(v)
        print(f"{name}: n {len(v)}, median {np.median(v):.1f}, p75 {np.percentile(v, 75):.1f}, "
              f"p90 {np.percentile(v, 90):.1f}, over the judge's threshold "
              f"{(v > {'background drift': tj.BACKGROUND_VISIBLE, 'object colour shift': tj.COLOUR_VISIBLE, 'edge rise': tj.BLUR_VISIBLE}[name]).mean():.0%}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
