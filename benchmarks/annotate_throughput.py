"""Judge throughput: the kit's async client at concurrency 32 vs the same requests sent one at a time.

The same N requests (default 400: the three perspectives of 134 toy triplets, cut to 400) go to the kit's
toy judge server with 100 ms of injected latency per request, which stands in for a remote judge. The server
runs in its own process (as a remote judge would: its pixel judging then does not share this process's GIL
with the client; ``--in-process`` runs it on a thread here instead):

* baseline: a plain sequential loop with the official sync ``openai.OpenAI`` client (what a simple script
  does: build the messages, call, parse, next);
* kit: :func:`rewardedit_lib.judge.client.judge_many` at ``--concurrency`` (default 32), with a fresh answer
  cache, so every answer is also made durable (fsync) exactly as in a real run.

Both really send N requests (checked against the server's request counter). Target: >= 20x.

    python benchmarks/annotate_throughput.py [--n 400] [--latency 0.1] [--concurrency 32] [--in-process] [--json OUT]

On a small machine the client's CPU per request (the openai/httpx stack, ~3-4 ms on a 2-core VM) and the
server's (pixel judging) bound the concurrent rate, so the script prints the CPU count and load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewardedit_lib.formats import PERSPECTIVES, read_instructpix2pix  # noqa: E402
from rewardedit_lib.judge import prompts  # noqa: E402
from rewardedit_lib.judge.client import AnswerCache, JudgeClient, JudgeRequest, judge_many  # noqa: E402
from rewardedit_lib.toy.server import ToyJudgeServer  # noqa: E402
from rewardedit_lib.toyworld import write_toy_dataset  # noqa: E402

TARGET = 20.0


def _serve(conn, latency: float) -> None:
    """The server process: serve, answer "stats" with the server's counters, stop on anything else."""
    with ToyJudgeServer(latency=latency) as srv:
        conn.send((srv.base_url, srv.model))
        while conn.recv() == "stats":
            conn.send(srv.stats())


class Server:
    """The toy judge in a child process (default) or on a thread of this one; ``requests()`` = its counter."""

    def __init__(self, latency: float, in_process: bool):
        self.latency, self.in_process = latency, in_process

    def __enter__(self) -> "Server":
        if self.in_process:
            self.srv = ToyJudgeServer(latency=self.latency).__enter__()
            self.base_url, self.model = self.srv.base_url, self.srv.model
        else:
            ctx = mp.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_serve, args=(child, self.latency), daemon=True)
            self.proc.start()
            self.base_url, self.model = self.conn.recv()
        return self

    def requests(self) -> int:
        """Chat-completion requests the server has received so far."""
        if self.in_process:
            return int(self.srv.stats()["chat_requests"])
        self.conn.send("stats")
        return int(self.conn.recv()["chat_requests"])

    def __exit__(self, *exc) -> None:
        if self.in_process:
            self.srv.__exit__(*exc)
        else:
            with contextlib.suppress(OSError):
                self.conn.send("stop")
            self.proc.join(10)


def build_requests(root: Path, n: int) -> list[JudgeRequest]:
    write_toy_dataset(root, n=-(-n // 3), seed=0)
    triplets = read_instructpix2pix(root, require_rewards=False).items
    reqs = [JudgeRequest(p, "annotate", t.instruction, t.source, t.edited, id=t.id)
            for t in triplets for p in PERSPECTIVES]
    return reqs[:n]


def sequential(base_url: str, model: str, reqs: list[JudgeRequest]) -> tuple[float, int]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="no-key-needed", max_retries=0, timeout=60)
    ok = 0
    t0 = time.perf_counter()
    for r in reqs:
        resp = client.chat.completions.create(model=model, messages=r.messages(), max_tokens=300, temperature=0.0,
                                              response_format=prompts.response_format("annotate"))
        prompts.parse_annotation(resp.choices[0].message.content)
        ok += 1
    dt = time.perf_counter() - t0
    client.close()
    return dt, ok


def concurrent(base_url: str, model: str, reqs: list[JudgeRequest], concurrency: int, cache_dir: Path) -> tuple[float, int]:
    async def go() -> tuple[float, int]:
        client = JudgeClient(model, base_url=base_url, concurrency=concurrency, max_retries=0, timeout=60)
        cache = AnswerCache(cache_dir)
        try:
            t0 = time.perf_counter()
            res = await judge_many(reqs, client, cache=cache, progress=False)
            return time.perf_counter() - t0, sum(r.ok for r in res)
        finally:
            await client.aclose()
            cache.close()

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="requests (default 400)")
    ap.add_argument("--latency", type=float, default=0.1, help="server latency per request in seconds (default 0.1)")
    ap.add_argument("--concurrency", type=int, default=32, help="the kit's concurrency (default 32)")
    ap.add_argument("--repeat", type=int, default=1, help="measure both this many times, report the median")
    ap.add_argument("--in-process", action="store_true", help="run the server on a thread of this process")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reqs = build_requests(tmp / "data", args.n)
        # the warm-up request uses an image pair outside the measured set, so it warms nothing they use
        write_toy_dataset(tmp / "warm-data", n=1, seed=12345)
        wt = read_instructpix2pix(tmp / "warm-data", require_rewards=False).items[0]
        warm = [JudgeRequest("quality", "annotate", wt.instruction, wt.source, wt.edited)]
        load = os.getloadavg()[0]

        def measure(run: Callable[[str, str], tuple[float, int]]) -> tuple[float, int, int]:
            """One run against a fresh server (its judging caches start empty, as in the other run)."""
            with Server(args.latency, args.in_process) as srv:
                concurrent(srv.base_url, srv.model, warm, 1, tmp / f"warm-{time.monotonic_ns()}")  # not timed
                c0 = srv.requests()
                seconds, ok = run(srv.base_url, srv.model)
                return seconds, ok, srv.requests() - c0

        runs = []
        for i in range(args.repeat):
            seq = measure(lambda url, model: sequential(url, model, reqs))
            kit = measure(lambda url, model: concurrent(url, model, reqs, args.concurrency, tmp / f"cache-{i}"))
            runs.append((seq, kit))
            if args.repeat > 1:
                print(f"  run {i + 1}: sequential {seq[0]:.2f} s, kit {kit[0]:.2f} s, ratio {seq[0] / kit[0]:.1f}x",
                      flush=True)
    # the median run by ratio
    (seq_s, seq_ok, seq_n), (kit_s, kit_ok, kit_n) = sorted(runs, key=lambda r: r[0][0] / r[1][0])[len(runs) // 2]
    seq_tput, kit_tput = args.n / seq_s, args.n / kit_s
    ratio = kit_tput / seq_tput
    out = {
        "requests": args.n, "latency_s": args.latency, "concurrency": args.concurrency,
        "sequential": {"seconds": round(seq_s, 3), "req_per_s": round(seq_tput, 2), "answered": seq_ok,
                       "server_requests": seq_n},
        "kit": {"seconds": round(kit_s, 3), "req_per_s": round(kit_tput, 2), "answered": kit_ok,
                "server_requests": kit_n},
        "ratio": round(ratio, 2), "target": TARGET, "pass": ratio >= TARGET,
        "runs": [{"sequential_s": round(a[0], 3), "kit_s": round(b[0], 3), "ratio": round(a[0] / b[0], 2)}
                 for a, b in runs],
        "server": "in-process thread" if args.in_process else "separate process",
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, load average {load:.2f} at "
                   f"start, python {platform.python_version()}",
    }
    print(f"{args.n} requests, {args.latency * 1000:.0f} ms injected latency, toy judge server on 127.0.0.1 "
          f"({out['server']}); {out['machine']}")
    print(f"  sequential (openai.OpenAI, one at a time): {seq_s:7.2f} s  {seq_tput:7.1f} req/s  "
          f"({seq_ok} answered, server saw {seq_n}; {seq_s / args.n * 1000:.0f} ms per request)")
    print(f"  kit judge_many, concurrency {args.concurrency:<3}:       {kit_s:7.2f} s  {kit_tput:7.1f} req/s  "
          f"({kit_ok} answered, server saw {kit_n})")
    print(f"  ratio: {ratio:.1f}x (target >= {TARGET:.0f}x: {'PASS' if ratio >= TARGET else 'FAIL'})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if any(r[1:] != (args.n, args.n) for run in runs for r in run):
        print("error: a run did not send/answer exactly N requests", file=sys.stderr)
        return 1
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
