"""The answer cache (``judge/cache.py``): sqlite in WAL mode, and the JSON-lines caches of earlier versions.

What is checked: an answer committed is read back after a SIGKILL of its writer in mid-stream; several
processes can write one cache at once; concurrent puts share commits; rows that are not valid answers are
not answers; and a cache folder made by an earlier version (``answers.jsonl``) resumes without asking
anything again, including answers appended to it later. Whole runs (kill -9 of ``annotate``, resume) are
in ``test_annotate.py``; judge_many with the cache in ``test_judge_client.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardedit_lib.judge import cache as cache_mod
from rewardedit_lib.judge.cache import AnswerCache
from rewardedit_lib.judge.client import JsonlLog, judge_many
from rewardedit_lib.judge.prompts import Annotation

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]


def record(i: int, writer: str = "w", score: int = 3) -> dict:
    """A valid cache record for question ``i`` (keys need only be strings here)."""
    return {"key": f"k{i:06d}", "model": "m", "protocol": "kit", "prompt_version": "v", "perspective": "following",
            "mode": "annotate", "answer": {"score": score, "feedback": f"answer {i} by {writer}"},
            "text": "{}", "usage": None, "attempts": 1, "run": writer}


def put_all(cache: AnswerCache, records: list[dict]) -> None:
    async def go() -> None:
        await asyncio.gather(*(cache.put(r) for r in records))

    asyncio.run(go())


# A writer process: ``concurrency`` asyncio tasks put records start, start+1, ... (forever if count < 0) and
# print each key once its put has returned, i.e. once the answer is committed. With a 7th argument, it waits
# for that file to exist before it starts (so that several writers start together).
WRITER = r"""
import asyncio, os, sys, time
sys.path.insert(0, sys.argv[1])
from rewardedit_lib.judge.cache import AnswerCache
from test_answer_cache import record

cache_dir, start, count, writer, concurrency = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
while len(sys.argv) > 7 and not os.path.exists(sys.argv[7]):
    time.sleep(0.001)
cache = AnswerCache(cache_dir)
numbers = iter(range(start, start + count if count >= 0 else 10**9))  # shared by the tasks

async def task():
    for i in numbers:
        rec = record(i, writer)
        await cache.put(rec)
        sys.stdout.write(rec["key"] + "\n")
        sys.stdout.flush()

async def main():
    await asyncio.gather(*(task() for _ in range(concurrency)))

asyncio.run(main())
cache.close()
"""


def writer_cmd(cache_dir: Path, start: int, count: int, writer: str, concurrency: int = 8,
               go: Path | None = None) -> list[str]:
    return [sys.executable, "-c", WRITER, str(ROOT), str(cache_dir), str(start), str(count), writer, str(concurrency),
            *([str(go)] if go else [])]


def writer_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}


# --------------------------------------------------------------------------------------------------
# kill -9, several processes, many tasks
# --------------------------------------------------------------------------------------------------
def test_every_answer_committed_before_a_sigkill_mid_stream_is_read_back(tmp_path):
    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen(writer_cmd(cache_dir, 0, -1, "killed"), env=writer_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    acked: list[str] = []
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)  # while its 8 tasks are still writing
    rest = proc.stdout.read()  # through the same buffered reader (communicate() would skip what it holds)
    err = proc.stderr.read()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    acked += [k for k in rest.split("\n") if k]  # committed and printed, not yet read here
    assert len(acked) >= 300, err[-2000:]
    assert (cache_dir / "answers.sqlite-wal").exists()  # the kill left a write-ahead log for the next open

    with AnswerCache(cache_dir) as cache:
        stored = {r["key"]: r for r in cache.records()}
        assert set(acked) <= set(stored)  # every answer committed before the kill is there
        assert len(stored) - len(acked) <= 8  # at most the puts in flight were committed but not printed
        for key in acked:
            i = int(key[1:])
            assert cache.get(key) == Annotation(3, f"answer {i} by killed")
        put_all(cache, [record(10**7, "after")])  # and the cache takes new answers
        assert cache.get(record(10**7)["key"]) is not None
    with sqlite3.connect(cache_dir / "answers.sqlite") as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_several_processes_write_one_cache_at_once_and_the_first_answer_wins(tmp_path):
    cache_dir = tmp_path / "cache"  # does not exist yet: the writers also race to create it
    go = tmp_path / "go"
    # one task each: a commit (and its fsync) per answer, so the three take long enough to overlap (their commits
    # interleaved 15-28 times in 5 runs out of 5 measured; not asserted, as it depends on the scheduler)
    procs = [subprocess.Popen(writer_cmd(cache_dir, 100 * j, 300, f"p{j}", concurrency=1, go=go), env=writer_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for j in range(3)]
    time.sleep(1.0)  # let them start (import), then release them together
    go.touch()
    outs = [p.communicate(timeout=90) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert len(out.split()) == 300  # every put returned
    with AnswerCache(cache_dir) as cache:
        recs = cache.records()
        assert sorted(r["key"] for r in recs) == [record(i)["key"] for i in range(500)]  # each key once
        for r in recs:
            i = int(r["key"][1:])
            writers = {f"p{j}" for j in range(3) if 100 * j <= i < 100 * j + 300}
            assert r["run"] in writers and cache.get(r["key"]) == Annotation(3, f"answer {i} by {r['run']}")


def test_concurrent_puts_share_commits_and_all_land(tmp_path, monkeypatch):
    commits = []
    real = AnswerCache._write_many
    monkeypatch.setattr(AnswerCache, "_write_many", lambda self, recs: (commits.append(len(recs)), real(self, recs)))
    with AnswerCache(tmp_path) as cache:
        put_all(cache, [record(i) for i in range(200)])
        assert len(cache) == 200 and all(record(i)["key"] in cache for i in range(200))
    assert sum(commits) == 200 and 1 <= len(commits) < 200  # group commit


# --------------------------------------------------------------------------------------------------
# what is an answer
# --------------------------------------------------------------------------------------------------
def test_a_stored_row_that_is_not_a_valid_answer_is_asked_again_and_replaced(tmp_path):
    with AnswerCache(tmp_path) as cache:
        put_all(cache, [record(1), record(2)])
    with sqlite3.connect(tmp_path / "answers.sqlite") as con:  # edited by hand
        con.execute("UPDATE answers SET answer = ? WHERE key = ?",
                    (json.dumps({"score": 9, "feedback": "tampered"}), record(1)["key"]))
        con.execute("UPDATE answers SET answer = 'not json' WHERE key = ?", (record(2)["key"],))
    with AnswerCache(tmp_path) as cache:
        assert cache.get(record(1)["key"]) is None and record(2)["key"] not in cache
        put_all(cache, [record(1, "new"), record(2, "new")])
        assert cache.get(record(1)["key"]) == Annotation(3, "answer 1 by new")
        assert cache.record(record(2)["key"])["run"] == "new"
        put_all(cache, [record(1, "later", score=5)])  # a valid answer stays: the first one wins
        assert cache.get(record(1)["key"]) == Annotation(3, "answer 1 by new")


def test_opening_creates_nothing_and_a_cache_from_a_newer_kit_is_refused(tmp_path):
    cache = AnswerCache(tmp_path / "none")
    assert cache.get("k") is None and len(cache) == 0 and cache.records() == [] and "k" not in cache
    cache.close()
    assert not (tmp_path / "none").exists()
    with AnswerCache(tmp_path / "c") as cache:
        put_all(cache, [record(0)])
    with sqlite3.connect(tmp_path / "c" / "answers.sqlite") as con:
        con.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer version"):
        AnswerCache(tmp_path / "c").get("k")


# --------------------------------------------------------------------------------------------------
# caches written by earlier versions: answers.jsonl
# --------------------------------------------------------------------------------------------------
def write_legacy(path: Path, records: list[dict], tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_an_old_jsonl_cache_is_read_into_sqlite_once_kept_and_followed(tmp_path):
    legacy = tmp_path / "answers.jsonl"
    invalid = record(9) | {"answer": {"score": 4.5, "feedback": "not an integer"}}
    write_legacy(legacy, [record(0), record(1), invalid, record(0, "duplicate"), record(2)],
                 tail=b'{"key": "k000003", "mo')  # torn by a kill
    before = legacy.read_bytes()
    with AnswerCache(tmp_path) as cache:
        assert len(cache) == 3 and cache.skipped_lines == 2  # the invalid line and the torn one
        assert cache.get(record(0)["key"]) == Annotation(3, "answer 0 by w")  # the first answer of a key wins
        assert cache.get(record(9)["key"]) is None
    assert legacy.read_bytes() == before  # left for an older kit
    assert (tmp_path / "answers.sqlite").exists()
    with AnswerCache(tmp_path) as cache:  # read once: only the torn tail is looked at again
        assert len(cache) == 3 and cache.skipped_lines == 1
    log = JsonlLog(legacy)  # an older kit resumes on the same folder: ends the torn line, appends
    log.append_many([record(3, "old kit"), record(4, "old kit")])
    log.close()
    with AnswerCache(legacy) as cache:  # the old file's path names the same cache
        assert cache.path == tmp_path / "answers.sqlite"
        assert len(cache) == 5 and cache.skipped_lines == 1  # the ended torn line is not an answer
        assert cache.get(record(4)["key"]) == Annotation(3, "answer 4 by old kit")
    with AnswerCache(tmp_path) as cache:
        assert cache.skipped_lines == 0
    write_legacy(legacy, [record(7)])  # replaced by a shorter file: read again from its start
    with AnswerCache(tmp_path) as cache:
        assert len(cache) == 6 and cache.get(record(7)["key"]) is not None


def test_a_course_folder_made_yesterday_resumes_without_asking_again(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_judge_client import StubJudge, make_client, req

    yesterday = [req(i, p, m) for i in range(3) for p in ("following", "quality") for m in ("annotate", "evaluate")]
    today = yesterday + [req(i, "preserving", "annotate") for i in range(3)]

    def judge(requests, cache):
        async def go():
            client = make_client(stub)
            try:
                return await judge_many(requests, client, cache=cache, progress=False)
            finally:
                await client.aclose()
                cache.close()

        return asyncio.run(go())

    with StubJudge() as stub:
        first = judge(yesterday, AnswerCache(tmp_path / "scratch"))
        with AnswerCache(tmp_path / "scratch") as scratch:  # the records an earlier version wrote, as it wrote them
            write_legacy(tmp_path / "course" / "answers.jsonl", scratch.records())
        n1 = stub.count
        second = judge(today, AnswerCache(tmp_path / "course"))
        sent = stub.count - n1
    assert n1 == len(yesterday) and sent == len(today) - len(yesterday)  # only what the old cache lacks
    assert [r.answer for r in second[: len(yesterday)]] == [r.answer for r in first]
    assert all(r.from_cache for r in second[: len(yesterday)]) and not any(r.from_cache for r in second[len(yesterday):])
    with AnswerCache(tmp_path / "course") as cache:
        assert len(cache) == len(today)


def test_the_module_names_its_files():
    assert AnswerCache.FILENAME == cache_mod.FILENAME == "answers.sqlite"
    assert cache_mod.LEGACY_FILENAME == "answers.jsonl"


def test_on_a_network_or_fuse_file_system_the_cache_keeps_the_rollback_journal(tmp_path, monkeypatch):
    """Colab's Google Drive is a FUSE mount, where sqlite's WAL (shared memory) is unsafe: there the cache
    uses the rollback journal, leaves no -wal / -shm files, and keeps every answer across a reopen."""
    mounts = tmp_path / "mounts"
    drive = tmp_path / "drive" / "MyDrive"
    drive.mkdir(parents=True)
    mounts.write_text(f"/dev/root / ext4 rw 0 0\ndrive {tmp_path / 'drive'} fuse.drive rw 0 0\n")
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(mounts) if str(self) == "/proc/mounts"
                        else real(self, *a, **k))
    assert cache_mod._mount_fstype(drive) == "fuse.drive" and cache_mod._shared_file_system(drive)
    assert not cache_mod._shared_file_system(tmp_path / "elsewhere")
    cache = AnswerCache(drive / "cache")
    put_all(cache, [record(i) for i in range(5)])
    assert cache.journal_mode == "delete"
    assert not list((drive / "cache").glob("*-wal")) and not list((drive / "cache").glob("*-shm"))
    cache.close()
    again = AnswerCache(drive / "cache")
    assert len(again) == 5 and again.get("k000003").feedback == "answer 3 by w"
    again.close()
    local = AnswerCache(tmp_path / "local")
    put_all(local, [record(0)])
    assert local.journal_mode == "wal"
    local.close()
