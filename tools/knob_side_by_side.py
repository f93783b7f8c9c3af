"""Would evaluation pay side by side on a CPU's cores? The course's reward-knob edits (notebook 06: the three
low settings, 455 edits each) made by one worker process per core, one thread each, each editing and then
judging its share of the items with its own in-process toy judge.

    python tools/knob_side_by_side.py runs/toy-cpu OUT [--seed 0] [--workers 2]

Prints each worker's seconds (model load, editing, judging) and the wall time, to set beside the course's own
knob (``06_ablations.ipynb``: one process, two threads, the judge in its own process; its "editing N s, judging
M s" line). ``OUT`` must not exist. The edits are the course's (its seed and steps, batches of 64), in
folders named as the course's (``F0-P5-Q5`` ...); compare them with ``cmp``. Measured in RESULTS.md
(thirteenth session): 75.1 s against the course's 54 + 36 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from rewardedit_lib import parallel


def share(model: str, bench: str, out: str, seed: int, part: int, parts: int, write) -> dict[str, float]:
    """One worker: its share of the items (every ``parts``-th), edited at the knob's three low settings, then
    judged by a toy judge served in this process."""
    from rewardedit_lib import ablation
    from rewardedit_lib import evaluate as E
    from rewardedit_lib import knob as K
    from rewardedit_lib.judging import EditJudge, judge_spec
    from rewardedit_lib.toy import endpoint as toy_endpoint

    t0 = time.perf_counter()
    items = E._bench_items(bench, None)
    pipe = E.load_model(model, "cpu")
    base = E.default_settings(pipe)
    wanted = K.knob_settings(0.0, pipe.low_reward_text)
    # the course's knob folders and settings (notebook 05's seed and the model's own steps), so `cmp` pairs them
    jobs = [(Path(out) / K.knob_slug(w["reward_scores"]), replace(base, **ablation.eval_changes(seed, None), **w))
            for name, w in wanted.items() if name != "high"]
    mine = items[part::parts]
    t1 = time.perf_counter()
    E.edit_many(pipe, mine, jobs, batch_size=64, model_id=model, progress=False)
    t2 = time.perf_counter()
    spec = judge_spec()
    with toy_endpoint.judge_endpoint(None, spec.model, own_process=False) as url, EditJudge(spec, url) as judging:
        for key, _ in jobs:
            judging.submit(key, Path(key) / "judge", mine, E._edit_paths(key, items))
        judging.finish()
    return {"load": t1 - t0, "edit": t2 - t1, "judge": time.perf_counter() - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("course", type=Path, help="a course folder (rewardedit course --out)")
    ap.add_argument("out", type=Path, help="a new folder for the edits and verdicts")
    ap.add_argument("--seed", type=int, default=0, help="the course's seed (default 0)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes, one thread each (default 2)")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new folder")
    model = str(args.course / "models" / "multi-reward" / "model")
    # a worker imports the job by module name: this file's, not __main__
    tools = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tools, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, tools)
    from knob_side_by_side import share as job

    t = time.perf_counter()
    split = parallel.plan_split(args.workers, "cpu", cores=args.workers)
    times = parallel.run_jobs(job, [dict(model=model, bench=str(args.course / "toy-bench"), out=str(args.out),
                                           seed=args.seed, part=i, parts=args.workers)
                                      for i in range(args.workers)], split)
    for i, row in enumerate(times):
        print(f"worker {i}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()))
    print(f"wall {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
