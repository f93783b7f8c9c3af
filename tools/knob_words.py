"""One perspective asked low in chosen words: the knob of a multi-reward model for one failure sentence
(RESULTS.md, 2026-12-03 third session: "the knob asked in the model's own words" and the quality diagnostic).

    python tools/knob_words.py MODEL BENCH HIGH_EVAL OUT PERSPECTIVE SCORE "SENTENCE"

HIGH_EVAL: the model's (5, 5, 5) evaluation of BENCH with the same seed (0), e.g. a course's
eval/multi-reward. The other two perspectives stay at 5 with the perfect-score feedback. Prints the yes-rates
at the low setting and the paired knob (yes-rate at 5 minus low) of PERSPECTIVE.
"""

from __future__ import annotations

import sys

from rewardedit_lib import evaluate as E
from rewardedit_lib.formats import PERFECT_FEEDBACK, PERSPECTIVES


def main(model: str, bench: str, high_eval: str, out: str, perspective: str, score: str, sentence: str) -> None:
    k = PERSPECTIVES.index(perspective)
    scores = tuple(float(score) if j == k else 5.0 for j in range(3))
    text = "; ".join(sentence if j == k else PERFECT_FEEDBACK for j in range(3))
    rep = E.evaluate_many(model, bench, {out: {"reward_scores": scores, "reward_text": text}}, progress=False)[out]
    d = E.paired_difference(E.read_results(high_eval), rep.rows, perspective)
    h = E.headline(rep.summary)
    print(" ".join(f"{p[0]} {h[p + '_yes_rate']:.1f}" for p in PERSPECTIVES),
          f"| knob {perspective}: {d['yes_diff']:+.1f} [{d['yes_diff_ci'][0]:+.1f}, {d['yes_diff_ci'][1]:+.1f}]")


if __name__ == "__main__":
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    main(*sys.argv[1:])
