"""Time a course's evaluation work -- notebook 05 (both models on the benchmark) and notebook 06's reward knob --
into fresh folders, with whatever ``rewardedit_lib`` is importable (put a worktree on ``PYTHONPATH`` to time
another version of the code).

    python tools/time_evaluation.py runs/toy-cpu OUT [--seed N] [--steps N] [--limit N]

Edits and judges exactly what the course does (its seed, which ``--seed`` must give, its benchmark, the knob reusing 05's (5, 5, 5)
folder) and prints the seconds of each part and the total; ``OUT`` must not exist. Compare two versions'
``OUT/*/results.jsonl`` with ``cmp``: the verdicts must be identical.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rewardedit_lib import ablation
from rewardedit_lib import evaluate as E


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("course", type=Path, help="a course folder (rewardedit course --out)")
    ap.add_argument("out", type=Path, help="a new folder for the edits, verdicts and timings")
    ap.add_argument("--seed", type=int, default=0, help="the course's seed (--set seed=N; default 0)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the course's)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N benchmark items")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new folder (nothing is reused, so the timing is a first run's)")
    seed = args.seed
    bench, models = args.course / "toy-bench", args.course / "models"
    times = {}
    t0 = time.perf_counter()
    for name in ("baseline", "multi-reward"):
        t = time.perf_counter()
        E.evaluate(models / name / "model", bench, args.out / "eval" / name,
                   changes=ablation.eval_changes(seed, args.steps), limit=args.limit, progress=False)
        times[f"evaluate {name}"] = time.perf_counter() - t
    t = time.perf_counter()
    ablation.run_knob(models / "multi-reward" / "model", bench, args.out / "knob", seed=seed, steps=args.steps,
                      limit=args.limit, high_dir=args.out / "eval" / "multi-reward")
    times["knob"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    print(json.dumps({k: round(v, 1) for k, v in times.items()}))
    (args.out / "times.json").write_text(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
