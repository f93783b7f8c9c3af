"""The quality knob per failure sentence and guidance setting: which quality flaw can a multi-reward model
make on request, and how much of it survives classifier-free guidance?

    python tools/quality_requests.py MODEL BENCH OUT SEED [SCORE] [LIMIT]

For each guidance setting (text 2 / image 1.25, the course's until the seventh session; image guidance 1; no
guidance; all ancestral, eta 1, as measured in the sixth session) the model edits
BENCH asking for (5, 5, 5) and, in turn, for quality SCORE (default 2, the toy judge's score for blur and
blocks) in each of the toy world's three quality sentences, the other two perspectives at 5 in the perfect
words. Prints yes-rates and the paired quality knob (yes-rate at 5 minus at SCORE) per sentence.
`rewardedit knob` asks in the model's most frequent failure sentence only (RESULTS.md, sixth session).
"""

from __future__ import annotations

import dataclasses
import sys

from rewardedit_lib import evaluate as E
from rewardedit_lib.formats import PERFECT_FEEDBACK, PERSPECTIVES
from rewardedit_lib.knob import knob_settings
from rewardedit_lib.toy.feedback import QUALITY_FEEDBACK

GUIDANCE = {"course": {"guidance_scale": 2.0, "image_guidance_scale": 1.25, "eta": 1.0},
            "image-1": {"guidance_scale": 2.0, "image_guidance_scale": 1.0, "eta": 1.0},
            "none": {"guidance_scale": 1.0, "image_guidance_scale": 1.0, "eta": 1.0}}


def main(model: str, bench: str, out: str, seed: str, score: str = "2", limit: str | None = None) -> None:
    pipe = E.load_model(model, None)
    runs = {"high": {}}
    for name, sentence in QUALITY_FEEDBACK.items():  # the knob's quality setting, in this sentence at this score
        runs[name] = knob_settings(float(score), "; ".join([PERFECT_FEEDBACK] * 2 + [sentence]))["quality"]
    print(f"{'guidance':9s} {'asked':7s} yes % F / P / Q     quality knob [95 %]")
    for gname, changes in GUIDANCE.items():
        settings = dataclasses.replace(E.default_settings(pipe), seed=int(seed), **changes)
        folders = {k: f"{out}/{gname}/{k}" for k in runs}
        reps = E.evaluate_many(pipe, bench, {folders[k]: v for k, v in runs.items()}, settings=settings,
                               limit=int(limit) if limit else None, progress=False)
        for k in runs:
            h = E.headline(reps[folders[k]].summary)
            line = f"{gname:9s} {k:7s} " + " / ".join(f"{h[p + '_yes_rate']:.1f}" for p in PERSPECTIVES)
            if k != "high":
                d = E.paired_difference(reps[folders["high"]].rows, reps[folders[k]].rows, "quality")
                line += f"   {d['yes_diff']:+.1f} [{d['yes_diff_ci'][0]:+.1f}, {d['yes_diff_ci'][1]:+.1f}]"
            print(line, flush=True)


if __name__ == "__main__":
    if not 5 <= len(sys.argv) <= 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
