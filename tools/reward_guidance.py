"""Reward guidance on a multi-reward model, against a baseline's evaluation of the same benchmark: at each
guidance scale the reward knob (yes-rate at score 5 minus score 0, per perspective) and the paired per-edit
difference at (5, 5, 5) against the baseline (RESULTS.md, "the 3,000-triplet recipe" and "reward guidance
against unknown rewards").

    python tools/reward_guidance.py MODEL BENCH OUT BASELINE_EVAL 0,1,2 [low|unknown] [SEED]

MODEL: a multi-reward model folder; BENCH: the toy benchmark BASELINE_EVAL (a `rewardedit evaluate` folder)
was made on, with the same SEED (default 0; a course's seed, e.g. runs/c20-s1/eval/baseline with 1); OUT: one
knob folder per scale (resumable, as `rewardedit knob`). The contrast (default ``low``): what guidance pushes
away from -- low rewards, or rewards unknown (a model trained with ``--reward-dropout``).
"""

from __future__ import annotations

import sys

from rewardedit_lib import evaluate as E
from rewardedit_lib import knob as K

PERSPECTIVES = ("following", "preserving", "quality")


def main(model: str, bench: str, out: str, baseline_eval: str, scales: str, contrast: str = "low",
         seed: str = "0") -> None:
    base = E.read_results(baseline_eval)
    for s in (float(x) for x in scales.split(",")):
        changes = {"reward_guidance_scale": s, "reward_guidance_contrast": contrast} if s else {}
        knob = K.reward_knob(model, bench, f"{out}/{contrast}{s:g}", changes=changes, seed=int(seed),
                             progress=False)
        high = E.read_results(knob.settings["high"]["folder"])
        d = {p: E.paired_difference(high, base, p) for p in PERSPECTIVES}
        print(f"{contrast} {s:g} | at (5,5,5) "
              + " ".join(f"{p[0]} {knob.perspectives[p]['yes_rate_high']:.1f}" for p in PERSPECTIVES)
              + " | knob " + " ".join(f"{p[0]} {knob.perspectives[p]['knob']:+.1f}" for p in PERSPECTIVES)
              + " | minus baseline " + " ".join(
                  f"{p[0]} {d[p]['yes_diff']:+.1f} [{d[p]['yes_diff_ci'][0]:+.1f},{d[p]['yes_diff_ci'][1]:+.1f}]"
                  for p in PERSPECTIVES), flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (6, 7, 8):
        sys.exit(__doc__)
    main(*sys.argv[1:])
