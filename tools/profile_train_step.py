"""Where a toy stage-2 training step spends its time: torch.profiler over a few steps of the course's recipe.

    python tools/profile_train_step.py runs/toy-cpu [--threads 2] [--steps 10] [--rewards-mode both]

Builds the trainer exactly as ``rewardedit train --profile toy-cpu --stage 2`` does on a course's data and
rewards (``runs/toy-cpu/toy-data``, ``runs/toy-cpu/rewards/RewardEdit_toy.json``), runs two warm-up steps,
then profiles ``--steps`` steps and prints the operators by their share of CPU time (self time, summed over
the profiled steps) and the images per second outside the profiler. Nothing is written into the course
folder. Why: the course's time is training, and the only speed worth buying is in the operators that fill it
(RESULTS.md, thirteenth session).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from rewardedit_lib.train.presets import preset
from rewardedit_lib.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("course", type=Path, help="a course folder (rewardedit course --out)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--steps", type=int, default=10, help="profiled steps (default 10)")
    ap.add_argument("--timed", type=int, default=20, help="steps timed without the profiler (default 20)")
    ap.add_argument("--rewards-mode", default="both", help="the multi-reward model (both) or the baseline (none)")
    ap.add_argument("--top", type=int, default=15, help="operators to print (default 15)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = args.course / "toy-data"
    rewards = args.course / "rewards" / "RewardEdit_toy.json"
    for path in (data, rewards):
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run the course into {args.course} first")
    config = preset("toy-cpu", stage=2, rewards=args.rewards_mode, checkpoint_every=0, validate_every=0)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, data, out, rewards if args.rewards_mode != "none" else None, progress=False)
        trainer._setup()  # what Trainer.train does before its first step
        for step in range(2):
            trainer._step(step).item()
        t0 = time.perf_counter()
        for step in range(2, 2 + args.timed):
            trainer._step(step)
        trainer._step(2 + args.timed).item()
        seconds = time.perf_counter() - t0
        first = 3 + args.timed
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(first, first + args.steps):
                trainer._step(step).item()
    rate = (args.timed + 1) * config.batch_size / seconds
    print(f"{args.threads} thread(s), {args.rewards_mode}: {rate:.1f} img/s over {args.timed + 1} steps "
          f"(batch {config.batch_size}), then {args.steps} steps profiled")
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print("| operator | self CPU % | calls |\n|---|---|---|")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]:
        print(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f} | {e.count} |")


if __name__ == "__main__":
    main()
