"""Reward guidance on a multi-reward model, against a baseline's evaluation of the same benchmark: yes-rates
and the paired per-edit difference at each guidance scale (RESULTS.md, "the 3,000-triplet recipe").

    python tools/reward_guidance.py MODEL BENCH OUT BASELINE_EVAL 0,1,2,4

MODEL: a multi-reward model folder; BENCH: the toy benchmark BASELINE_EVAL (a `rewardedit evaluate` folder)
was made on, with the same seed (0); OUT: one folder per scale (resumable, as `rewardedit evaluate`).
"""

from __future__ import annotations

import sys

from rewardedit_lib import evaluate as E

PERSPECTIVES = ("following", "preserving", "quality")


def main(model: str, bench: str, out: str, baseline_eval: str, scales: str) -> None:
    runs = {f"{out}/rg{float(s):g}": {"reward_guidance_scale": float(s)} for s in scales.split(",")}
    reports = E.evaluate_many(model, bench, runs, progress=False)
    base = E.read_results(baseline_eval)
    for key, rep in reports.items():
        h = E.headline(rep.summary)
        d = {p: E.paired_difference(rep.rows, base, p) for p in PERSPECTIVES}
        print(key.rsplit("/", 1)[-1], " ".join(f"{p[0]} {h[p + '_yes_rate']:.1f}" for p in PERSPECTIVES), "| diff",
              " ".join(f"{p[0]} {d[p]['yes_diff']:+.1f} [{d[p]['yes_diff_ci'][0]:+.1f},{d[p]['yes_diff_ci'][1]:+.1f}]"
                       for p in PERSPECTIVES), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:])
