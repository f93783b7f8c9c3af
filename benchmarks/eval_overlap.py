"""Evaluation with a remote judge: judging each batch of edits while the next is made vs. judging afterwards.

A remote judge (GPT-4o) answers after a network round trip, so judging is waiting, not computing; an
evaluation that judges only after all its edits are made waits twice. Here the judge is the kit's toy judge
server in a process of its own with ``--latency`` seconds injected per request (a stand-in for a remote
endpoint: ``annotate_throughput.py``'s server), the editor a toy model with random weights (the edits' content does not matter,
only their cost), on this machine's device:

* baseline: :func:`rewardedit_lib.evaluate.evaluate_many` with ``judge_while_editing=False`` -- edit all,
  then judge all (what the kit did before);
* kit: ``judge_while_editing=True`` (the default wherever the judge is an endpoint or the editor a GPU).

Both judge the same N edits x 3 perspectives with fresh folders, and their verdicts are checked to be equal.
Ideal ratio: (edit + judge) / max(edit, judge).

    python benchmarks/eval_overlap.py [--n 96] [--steps 10] [--latency 0.5] [--concurrency 16] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewardedit_lib import evaluate as E  # noqa: E402
from rewardedit_lib import toyworld  # noqa: E402
from rewardedit_lib.pipeline import toy_pipeline  # noqa: E402
from annotate_throughput import Server  # noqa: E402  (the toy judge in a process of its own, as a remote one is)


def run(model: Path, bench: Path, out: Path, url: str, args: argparse.Namespace, overlap: bool) -> tuple[float, E.EvalReport]:
    t = time.perf_counter()
    rep = E.evaluate_many(model, bench, {out: {"num_inference_steps": args.steps}}, base_url=url, judge_model="toy-judge",
                          limit=args.n, progress=False, client_options={"concurrency": args.concurrency},
                          judge_while_editing=overlap)[out]
    return time.perf_counter() - t, rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96, help="benchmark edits")
    ap.add_argument("--steps", type=int, default=10, help="denoising steps per edit")
    ap.add_argument("--latency", type=float, default=0.5, help="seconds the judge takes per request")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, alternately")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "model"
        toy_pipeline(seed=0).save_pretrained(model)
        bench = toyworld.write_toy_bench(root / "bench", n_images=-(-args.n // 7), seed=0)
        times: dict[str, list[float]] = {"afterwards": [], "while editing": []}
        rows = {}
        with Server(args.latency, in_process=False) as srv:
            for r in range(args.repeat):
                for name, overlap in (("afterwards", False), ("while editing", True)):
                    s, rep = run(model, bench, root / f"{name}-{r}", srv.base_url, args, overlap)
                    times[name].append(s)
                    rows[name] = [{k: v for k, v in row.items() if k != "edit"} for row in rep.rows]
                    print(f"{name:14s} run {r}: {s:6.1f} s (editing {rep.edit_s:.1f} s, judging {rep.judge_s:.1f} s)")
        if rows["afterwards"] != rows["while editing"]:
            raise SystemExit("the verdicts differ: judging while editing must not change them")
        best = {k: min(v) for k, v in times.items()}
        print(json.dumps({"n": args.n, "steps": args.steps, "latency_s": args.latency, "concurrency": args.concurrency,
                          "cpus": os.cpu_count(), "load": os.getloadavg()[0], "afterwards_s": times["afterwards"],
                          "while_editing_s": times["while editing"],
                          "ratio": round(best["afterwards"] / best["while editing"], 2)}))


if __name__ == "__main__":
    main()
