"""Model A (the multi-reward model) minus model B (the baseline) per edit, on the same benchmark: yes-rate
points with the paired-bootstrap 95 % interval.

    python tools/paired_difference.py EVAL_A EVAL_B

EVAL_A / EVAL_B: `rewardedit evaluate` (or `rewardedit knob`, e.g. KNOB/F5-P5-Q5) output folders.
"""

from __future__ import annotations

import sys

from rewardedit_lib import evaluate as E


def main(a_dir: str, b_dir: str) -> None:
    a, b = E.read_results(a_dir), E.read_results(b_dir)
    for p in ("following", "preserving", "quality"):
        d = E.paired_difference(a, b, p)
        lo, hi = d["yes_diff_ci"]
        print(f"multi-reward - baseline, {p}: {d['yes_diff']:+.1f} [{lo:+.1f}, {hi:+.1f}]")


if __name__ == "__main__":
    main(*sys.argv[1:])
