"""Time the annotation of a toy training set with the local toy judge in its own process or in this one, or
with the folders shared out between worker processes first.

Why: the local judge runs in a process of its own where there are two cores (``judge_endpoint``), and the kit's
``annotate`` shares the folders out between one worker per core (``workers="auto"``); this measures what each
buys on the course's data, and writes each rewards file so they can be compared byte for byte.

    python tools/time_annotation.py runs/toy-cpu/toy-data OUT own      # the server in its own process
    python tools/time_annotation.py runs/toy-cpu/toy-data OUT inproc   # the server in a thread of this one
    python tools/time_annotation.py runs/toy-cpu/toy-data OUT shared   # workers first (the kit's default)
    cmp OUT/own/rewards.json OUT/shared/rewards.json
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from rewardedit_lib.judge.annotate import annotate
from rewardedit_lib.judge.request import TOY_JUDGE_MODEL
from rewardedit_lib.toy import endpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("where", choices=("own", "inproc", "shared"))
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    out = args.out / args.where
    shutil.rmtree(out, ignore_errors=True)  # a fresh answer cache: every request is asked
    t = time.perf_counter()
    if args.where == "shared":
        report = endpoint.annotate(args.data, out / "rewards.json", concurrency=args.concurrency, progress=False,
                                   log=None, workers="auto")
    else:
        with endpoint.judge_endpoint(None, own_process=args.where == "own") as url:
            report = annotate(args.data, out / "rewards.json", base_url=url, model=TOY_JUDGE_MODEL,
                              concurrency=args.concurrency, progress=False, log=None,
                              **endpoint.client_options(TOY_JUDGE_MODEL))
    print(f"{args.where}: {time.perf_counter() - t:.1f} s, {report.failed} failed -> {out / 'rewards.json'}")


if __name__ == "__main__":
    main()
