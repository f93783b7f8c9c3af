"""How much of the flawless-data ceiling a multi-reward model reaches when asked for a perfect edit, at the loss
level and in judged edits.

    python tools/ceiling_gap.py HELDOUT FLAWLESS BASELINE MULTI [FLAWLESS_EVAL BASELINE_EVAL MULTI_EVAL]

HELDOUT: a toy folder of perfect edits (a course run's ``toy-heldout-perfect``). FLAWLESS: a model trained like
the baseline on flawless data (``rewardedit toy-data --flaw-rates 0,0,0``, ``rewardedit train --rewards-mode
none``), the ceiling of any reward conditioning; BASELINE / MULTI: the course's two models. The loss probe
(``rewardedit_lib.probe.loss_by_noise``, the same timesteps and noise for all three) gives each model's loss on
the perfect edits per noise quarter, the multi-reward model at (5, 5, 5); "closed" is the share of the
baseline's distance to the ceiling that the multi-reward model closes. The optional evaluation folders
(``rewardedit evaluate`` / ``knob`` outputs on one benchmark) add the judged yes-rates per perspective and edit
type, and the same share per perspective (RESULTS.md, seventh session).
"""

from __future__ import annotations

import sys
from collections import defaultdict

from rewardedit_lib.evaluate import read_results
from rewardedit_lib.formats import PERSPECTIVES
from rewardedit_lib.probe import loss_by_noise


def closed(base: float, multi: float, ceiling: float) -> str:
    gap = base - ceiling
    return f"{100 * (base - multi) / gap:+.0f} %" if abs(gap) > 1e-12 else "n/a"


def loss_table(heldout: str, flawless: str, baseline: str, multi: str) -> None:
    probes = {"flawless": loss_by_noise(flawless, heldout), "baseline": loss_by_noise(baseline, heldout),
              "multi (5,5,5)": loss_by_noise(multi, heldout, conditions=("perfect",))}
    first = next(iter(probes.values()))
    print(f"loss on {first.n} held-out perfect edits (lower: predicts good edits better)")
    print("| model | all | " + " | ".join(first.bins()) + " |")
    print("|---|---|" + "---|" * len(first.bins()))
    vals = {}
    for name, p in probes.items():
        (cond,) = p.losses
        vals[name] = [p.overall[cond], *p.losses[cond]]
        print(f"| {name} | " + " | ".join(f"{v:.5f}" for v in vals[name]) + " |")
    print("| closed | " + " | ".join(closed(b, m, c) for b, m, c in
                                     zip(vals["baseline"], vals["multi (5,5,5)"], vals["flawless"])) + " |")


def read_eval(folder: str) -> dict[str, dict]:
    return {r["id"]: r for r in read_results(folder)}


def judged_table(flawless: str, baseline: str, multi: str) -> None:
    runs = {"flawless": read_eval(flawless), "baseline": read_eval(baseline), "multi (5,5,5)": read_eval(multi)}
    ids = sorted(set.intersection(*(set(r) for r in runs.values())))
    print(f"\njudged yes % on the {len(ids)} edits all three made")
    for p in PERSPECTIVES:
        rate = {name: 100 * sum(r[i][p]["yes"] for i in ids) / len(ids) for name, r in runs.items()}
        by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for i in ids:
            for k, r in enumerate(runs.values()):
                by_type[r[i]["edit_type"]][k] += r[i][p]["yes"]
        print(f"{p}: " + ", ".join(f"{n} {v:.1f}" for n, v in rate.items())
              + f"; closed {closed(-rate['baseline'], -rate['multi (5,5,5)'], -rate['flawless'])}")
        print("   per type (flawless / baseline / multi): "
              + ", ".join(f"{t} {a}/{b}/{c}" for t, (a, b, c) in sorted(by_type.items())))


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 7):
        print(__doc__)
        return 2
    loss_table(*argv[:4])
    if len(argv) == 7:
        judged_table(*argv[4:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
