"""Judge a folder of saved edits again with the current toy judge, in-process: the stored yes-rates beside the
new ones, and what the preserving failures now say. For comparing judge versions on the same edits.

    python tools/rejudge.py EVAL_DIR BENCH_DIR

EVAL_DIR is a `rewardedit evaluate` output folder (results.jsonl, edits/), BENCH_DIR the benchmark it edited.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from rewardedit_lib.formats import PERSPECTIVES
from rewardedit_lib.toy import judge as tj


def main(eval_dir: str, bench_dir: str) -> None:
    d, bench = Path(eval_dir), Path(bench_dir)
    rows = [json.loads(x) for x in (d / "results.jsonl").read_text().splitlines() if x]
    old = {p: [] for p in PERSPECTIVES}
    new = {p: [] for p in PERSPECTIVES}
    reasons: collections.Counter = collections.Counter()
    for r in rows:
        src = np.asarray(Image.open(bench / "images" / r["image"]).convert("RGB"))
        ed = np.asarray(Image.open(d / "edits" / Path(r["edit"]).name).convert("RGB"))
        a = tj.assess(r["instruction"], src, ed)
        for p in PERSPECTIVES:
            old[p].append(bool(r[p]["yes"]))
            new[p].append(a[p].yes)
        if not a.preserving.yes:
            f = a.preserving.feedback
            reasons["background" if "background" in f else f.split()[-1].rstrip(".")] += 1
    line = lambda v: " / ".join(f"{100 * np.mean(v[p]):.1f}" for p in PERSPECTIVES)  # noqa: E731
    print(f"{d}: stored {line(old)} | {tj.JUDGE_VERSION} {line(new)} (yes % following / preserving / quality)")
    print("preserving failures by their last word:", dict(reasons.most_common()))


if __name__ == "__main__":
    main(*sys.argv[1:3])
