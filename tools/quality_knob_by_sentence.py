"""The quality knob of a course's multi-reward model, asked in each quality sentence of the toy world, at
score 0 (the knob's score) and at the score the toy judge gives that flaw in the training data.

    python tools/quality_knob_by_sentence.py MODEL BENCH HIGH_EVAL OUT SEED

HIGH_EVAL: the model's (5, 5, 5) evaluation of BENCH with the same seed, e.g. a course's eval/multi-reward
(notebook 05 edits with the course's seed). The other two perspectives stay at 5 in the perfect-score words;
the edits use the model's default sampler. `rewardedit knob` asks in the model's most frequent quality
failure sentence at score 0 (noise, in the toy course); this shows what the other requests do, for the
decision on the knob's definition (RESULTS.md, eighth session). Prints one line per request: yes-rates and
the paired quality knob (yes-rate at 5 minus at the request) with its 95 % interval.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rewardedit_lib import evaluate as E
from rewardedit_lib.formats import PERFECT_FEEDBACK, PERSPECTIVES
from rewardedit_lib.toy.feedback import QUALITY_FEEDBACK

#: The score the toy judge gives each quality flaw (RESULTS.md, eighth session: noise 1, blur 2, blocks 2 in
#: nearly every annotation of the course's data).
JUDGED_SCORE = {"noise": 1.0, "blur": 2.0, "blocky": 2.0}


def main(model: str, bench: str, high_eval: str, out: str, seed: str) -> None:
    runs = {}
    for name, sentence in QUALITY_FEEDBACK.items():
        for score in (0.0, JUDGED_SCORE[name]):
            runs[Path(out) / f"{name}-{score:g}"] = {
                "reward_scores": (5.0, 5.0, score), "seed": int(seed),
                "reward_text": f"{PERFECT_FEEDBACK}; {PERFECT_FEEDBACK}; {sentence}"}
    reports = E.evaluate_many(model, bench, runs, progress=False)
    high = E.read_results(high_eval)
    for folder, rep in reports.items():
        d = E.paired_difference(high, rep.rows, "quality")
        h = E.headline(rep.summary)
        print(f"{Path(folder).name:10s}", " ".join(f"{p[0]} {h[p + '_yes_rate']:.1f}" for p in PERSPECTIVES),
              f"| quality knob {d['yes_diff']:+.1f} [{d['yes_diff_ci'][0]:+.1f}, {d['yes_diff_ci'][1]:+.1f}]")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:])
