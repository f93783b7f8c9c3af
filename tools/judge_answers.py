"""Every toy-judge answer of a course folder, to check that a change to the judge's code keeps its answers.

Why: the toy judge is the course's instrument; a change meant only to make it faster (or a refactoring) must
give the same answer, word for word, to every request a course sends. This asks the judge, in this process,
for all of them -- the annotation of the training triplets (annotate mode) and the verdicts on every edit the
course made (evaluate mode: notebook 05's models, notebook 06's knob) -- and writes them to one JSON file with
the time the judging took. Compare two files with ``cmp``.

    python tools/judge_answers.py runs/toy-cpu OUT.json            # the whole course folder
    python tools/judge_answers.py runs/toy-cpu OUT.json --limit 500  # the first 500 of each kind
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rewardedit_lib import formats
from rewardedit_lib.toy import judge as toy_judge


def requests(course: Path, limit: int | None) -> list[tuple[str, str, str, str, str]]:
    """(kind, id, instruction, source path, edited path) for every judged image of the course."""
    out = []
    triplets = formats.read_instructpix2pix(course / "toy-data").items[:limit]
    out += [("annotate", t.id, t.instruction, str(t.source), str(t.edited)) for t in triplets]
    bench = course / "toy-bench"
    by_id = {it.id: it for it in formats.read_real_edit(bench).items}
    for results in sorted(course.glob("**/results.jsonl")):
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()][:limit]
        for r in rows:
            it = by_id[r["id"]]
            out.append(("evaluate", f"{results.parent.relative_to(course)}/{r['id']}", it.instruction,
                        str(bench / "images" / it.image), r["edit"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("course", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    reqs = requests(args.course, args.limit)
    answers: dict[str, dict] = {}
    seconds = {"annotate": 0.0, "evaluate": 0.0}
    for kind, rid, instruction, src, ed in reqs:
        src_b, ed_b = Path(src).read_bytes(), Path(ed).read_bytes()
        t = time.perf_counter()
        answers[f"{kind}/{rid}"] = {p: toy_judge.judge(instruction, src_b, ed_b, p, kind) for p in formats.PERSPECTIVES}
        seconds[kind] += time.perf_counter() - t
    args.out.write_text(json.dumps(answers, indent=0, sort_keys=True))
    n = {k: sum(1 for r in reqs if r[0] == k) for k in seconds}
    print(f"{len(answers)} judged images -> {args.out}; " + ", ".join(
        f"{k}: {n[k]} in {seconds[k]:.1f} s ({1000 * seconds[k] / max(n[k], 1):.1f} ms each)" for k in seconds))


if __name__ == "__main__":
    main()
