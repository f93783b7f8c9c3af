"""Time a course's evaluations in one process against side by side (``workers``), and check they write the same.

    python tools/time_evaluation_workers.py runs/toy-cpu OUT [--seed 0] [--repeat 2] [--only-auto]

For each repeat, alternately in one process (``workers=1``) and side by side (``workers="auto"``): notebook 05's
evaluation of the two models (``evaluate.evaluate`` per model, as the notebook called it before; side by side
``evaluate.evaluate_models``, as it does now) and notebook 06's reward knob
(``ablation.run_knob``, reusing that run's own (5, 5, 5) folder), each into a fresh folder under ``OUT``.
Prints the seconds of each, and whether every PNG and every verdict equals the course's own (its ``eval/`` and
``ablations/knob/`` folders, made in one process by the course runner). ``OUT`` must not exist.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import time
from pathlib import Path

from rewardedit_lib import ablation, evaluate


def verdicts(results: Path) -> list[tuple]:
    """A results file's rows without the edit's path (which names its folder)."""
    return [tuple(json.dumps(r.get(p), sort_keys=True) for p in ("id", "following", "preserving", "quality"))
            for r in map(json.loads, results.read_text().splitlines())]


def same(a: Path, b: Path) -> tuple[int, int]:
    """(PNGs that differ, rows whose verdicts differ) between two evaluation folders."""
    pngs = sorted(p.name for p in (a / "edits").glob("*.png"))
    differ = sum(not filecmp.cmp(a / "edits" / n, b / "edits" / n, shallow=False) for n in pngs)
    rows = sum(x != y for x, y in zip(verdicts(a / "results.jsonl"), verdicts(b / "results.jsonl")))
    return differ, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("course", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only-auto", action="store_true",
                    help="only side by side: check another course's files without timing one process")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new folder")
    course = args.course.resolve()
    bench = course / "toy-bench"
    models = {name: course / "models" / name / "model" for name in ("baseline", "multi-reward")}
    knob_course = next((course / "ablations" / "knob").glob(f"steps-*-seed-{args.seed}"))
    for r in range(args.repeat):
        for workers in (("auto",) if args.only_auto else (1, "auto")):
            root = args.out / f"{r}-{workers}"
            t = time.perf_counter()
            if workers == 1:  # one model after the other, as notebook 05 did before evaluate_models
                for name, model in models.items():
                    evaluate.evaluate(model, bench, root / "eval" / name, changes={"seed": args.seed},
                                      progress=False, workers=1)
            else:  # notebook 05's call now
                evaluate.evaluate_models({root / "eval" / name: model for name, model in models.items()}, bench,
                                         changes={"seed": args.seed}, progress=False, workers=workers)
            t_eval = time.perf_counter() - t
            t = time.perf_counter()
            knob = ablation.run_knob(models["multi-reward"], bench, root / "knob", seed=args.seed,
                                     high_dir=course / "eval" / "multi-reward", workers=workers)
            t_knob = time.perf_counter() - t
            checks = [same(course / "eval" / n, root / "eval" / n) for n in models]
            checks += [same(knob_course / d.name, d) for d in sorted(knob.out_dir.iterdir()) if d.is_dir()]
            print(f"repeat {r} workers={workers}: evaluation {t_eval:.1f} s, knob {t_knob:.1f} s "
                  f"(editing {knob.edit_s:.1f} s, judging {knob.judge_s:.1f} s); PNGs / verdict rows unlike the "
                  f"course's: {sum(c[0] for c in checks)} / {sum(c[1] for c in checks)}", flush=True)


if __name__ == "__main__":
    main()
