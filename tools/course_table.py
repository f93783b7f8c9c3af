"""One course run's step-5 row: both models' yes-rates, their paired difference and the reward knob.

    python tools/course_table.py runs/toy-cpu [runs/c23-s1 ...]

Reads what ``rewardedit course`` wrote (``eval/baseline``, ``eval/multi-reward``, every
``ablations/knob/*/knob.json``, ``summary.json``); edits and judges nothing. Prints, per run, the yes % of both
models on following / preserving / quality, the multi-reward model's (5, 5, 5) minus the baseline per
perspective with its paired-bootstrap 95 % interval (:func:`rewardedit_lib.evaluate.difference_text`), each
reward knob as the course reports it (:class:`rewardedit_lib.knob.KnobReport`) with the failure sentences it
asked for, and the notebooks' seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rewardedit_lib import evaluate as E
from rewardedit_lib.formats import PERSPECTIVES
from rewardedit_lib.knob import read_knob


def row(run: Path) -> str:
    base, multi = E.read_results(run / "eval" / "baseline"), E.read_results(run / "eval" / "multi-reward")
    out = [f"## {run}"]
    for name, rows in (("baseline", base), ("multi-reward", multi)):
        h = E.headline(E.summarize(rows, n_boot=1))
        out.append(f"{name} yes % F / P / Q: " + " / ".join(f"{h[p + '_yes_rate']:.1f}" for p in PERSPECTIVES))
    out.append(E.difference_text({p: E.paired_difference(multi, base, p) for p in PERSPECTIVES},
                                 "multi-reward (5, 5, 5) - baseline"))
    for knob_json in sorted((run / "ablations" / "knob").glob("*/knob.json")):
        k = read_knob(knob_json.parent)
        asked = [k.settings[p]["reward_text"].split("; ")[i] for i, p in enumerate(PERSPECTIVES)]
        out += [str(k), "asked for: " + " | ".join(asked)]
    summary = run / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        out.append(f"course {s.get('total_seconds', 0):.0f} s: " + " / ".join(
            f"{n['notebook'][:2]} {n['seconds']:.0f}" for n in s.get("notebooks", [])))
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("\n\n".join(row(Path(a)) for a in sys.argv[1:]))
