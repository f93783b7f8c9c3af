"""Annotation runs against the kit's real toy judge server: kill -9 and resume, injected faults, corrupt
images, the cache, torn journal lines, and the API key never written anywhere.

What "requests" means here: the server's own counter of ``POST /v1/chat/completions`` requests it received,
so nothing relies on the client's word about what it sent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardedit_lib import formats
from rewardedit_lib.formats import PERSPECTIVES, read_seeds
from rewardedit_lib.judge import prompts
from rewardedit_lib.judge.annotate import default_paths
from rewardedit_lib.toy.endpoint import annotate
from rewardedit_lib.judge.client import AnswerCache, read_jsonl
from rewardedit_lib.toy.server import ToyJudgeServer
from rewardedit_lib.toyworld import write_toy_dataset

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "sk-test-SENTINEL-7f3a9c0e5b2d4e6f8a1b3c5d7e9f0a2b"


def served(srv: ToyJudgeServer) -> int:
    """Chat-completion requests the server has received so far (its own counter)."""
    return int(srv.stats()["chat_requests"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy", n=30, seed=11)


def copy_dataset(src: Path, dst: Path, n: int | None = None) -> Path:
    """A private copy (to corrupt), optionally of the first n folders only."""
    import shutil

    seeds = read_seeds(src)[:n] if n else read_seeds(src)
    dst.mkdir(parents=True)
    for folder, _ in seeds:
        shutil.copytree(src / folder, dst / folder)
    (dst / "seeds.json").write_text(json.dumps([[f, s] for f, s in seeds]))
    return dst


def run(data: Path, out: Path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", None)
    return annotate(data, out, **kw)


def strict_load(path: Path) -> dict:
    """Load JSON, failing on a duplicate key (json.loads would silently keep the last one)."""
    def pairs(items):
        keys = [k for k, _ in items]
        assert len(keys) == len(set(keys)), f"duplicate keys in {path}"
        return dict(items)

    return json.loads(path.read_text(), object_pairs_hook=pairs)


def check_complete_output(out: Path, folders: list[str]) -> None:
    data = strict_load(out)
    assert list(data) == folders  # every folder exactly once, in seeds.json order
    loaded = formats.read_rewards(out)  # the RewardEdit_20K.json format, validated by the kit's reader
    assert not loaded.skipped and len(loaded.items) == len(folders)
    for v in data.values():
        assert len(v) == 3 and all(set(e) == {"Score", "Negative Prompt"} for e in v)


# --------------------------------------------------------------------------------------------------
# kill -9 at a random point, then the same command again
# --------------------------------------------------------------------------------------------------
ANNOTATE_SCRIPT = (
    "import sys; from rewardedit_lib.toy.endpoint import annotate; "
    "r = annotate(sys.argv[1], sys.argv[2], base_url=sys.argv[3], model='toy-judge', concurrency=int(sys.argv[4]), "
    "progress=False, log=None); sys.exit(0 if r.failed == 0 else 1)"
)


def test_kill_9_mid_run_then_rerun_annotates_every_folder_once_and_resends_only_the_unrecorded(dataset, tmp_path):
    concurrency = 4
    folders = [f for f, _ in read_seeds(dataset)]
    total = 3 * len(folders)
    out = tmp_path / "out" / "rewards.json"
    rng = random.Random()
    kill_at = rng.randint(8, total - 20)  # server-side request count at which to kill
    cmd = [sys.executable, "-c", ANNOTATE_SCRIPT, str(dataset), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with ToyJudgeServer(latency=0.04, seed=1) as srv:
        cmd += [srv.base_url, str(concurrency)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while served(srv) < kill_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)  # requests already on the wire reach the server (and find the client dead)
        sent_before = served(srv)

        cache = AnswerCache(default_paths(out)["cache_dir"])
        recorded = len(cache)  # answers durable on disk at the kill
        cache.close()
        msg = f"kill at request {kill_at}: {sent_before} sent, {recorded} recorded"
        assert 0 < recorded < total, msg
        # Every request holds its concurrency slot until its answer is fsync-ed, so the answers lost by the
        # kill (sent, maybe even answered by the server, but not yet durable) are at most the ones in flight.
        assert sent_before - recorded <= concurrency, msg

        proc2 = subprocess.run(cmd, env=env, capture_output=True, timeout=90)
        assert proc2.returncode == 0, proc2.stderr.decode()[-2000:]
        sent_after = served(srv) - sent_before

    # exactly the unrecorded requests were sent again, each once; so at most the ones never sent before the
    # kill plus the ones in flight at the kill
    assert sent_after == total - recorded, msg
    assert sent_after <= (total - sent_before) + concurrency, msg
    check_complete_output(out, folders)
    with AnswerCache(default_paths(out)["cache"]) as cache:
        keys = [r["key"] for r in cache.records()]
    assert len(keys) == total == len(set(keys)), msg  # no answer paid for twice
    with sqlite3.connect(default_paths(out)["cache"]) as con:  # the kill tore nothing (sqlite: no torn lines)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    journal, jbad = read_jsonl(default_paths(out)["journal"])
    assert jbad <= 1 and [r["event"] for r in journal].count("run_start") == 2
    assert [r["event"] for r in journal][-1] == "run_end"
    assert json.loads(default_paths(out)["failures"].read_text())["failed"] == 0


# --------------------------------------------------------------------------------------------------
# injected faults
# --------------------------------------------------------------------------------------------------
FAULTS = {"429": 0.2, "500": 0.2, "timeout": 0.2, "malformed": 0.2}


def test_20_percent_of_each_fault_every_folder_is_annotated_or_listed_and_reruns_retry_the_failed(dataset, tmp_path):
    data = copy_dataset(dataset, tmp_path / "data", n=12)
    folders = [f for f, _ in read_seeds(data)]
    out = tmp_path / "out" / "rewards.json"
    # 80% of the requests draw a fault: a request fails all 6 tries with p = 0.8**6 = 0.26, so the first run
    # leaves some folders failed (p of none: 0.74**36 = 2e-5) and 10 runs clear them all (p of not: 5e-5).
    opts = dict(model="toy-judge", concurrency=36, max_retries=5, timeout=0.5, backoff_base=0.02, backoff_max=0.1)
    with ToyJudgeServer(latency=0.01, fault_rates=FAULTS, seed=7, retry_after=0.3) as srv:
        reports = []
        for attempt in range(10):
            before = served(srv)
            rep = run(data, out, base_url=srv.base_url, **opts)
            rep.server_requests = served(srv) - before
            reports.append(rep)
            # every folder is in exactly one of: the output, the failures file (with a reason)
            written = strict_load(out)
            failed = json.loads((out.parent / "rewards.failures.json").read_text())
            listed = {f["folder"]: f["reason"] for f in failed["folders"]}
            assert set(written) | set(listed) == set(folders) and not set(written) & set(listed)
            assert failed["failed"] == len(listed) == rep.failed
            for folder, reason in listed.items():
                assert "failed after 6 tries" in reason, reason
            # the client's count of HTTP calls is the server's (give or take a timed-out call that reached the
            # server only after the client gave up on it, and so is counted in the next run)
            assert abs(rep.requests_sent - rep.server_requests) <= rep.errors.get("timeout", 0)
            if not listed:
                break
    first, last = reports[0], reports[-1]
    assert first.errors.get("429") and first.errors.get("5xx") and first.errors.get("timeout")
    assert first.errors.get("malformed", 0) + first.errors.get("invalid answer", 0) > 0
    assert first.failed > 0  # with 4 tries at 80% faults, some requests fail: the rerun path is exercised
    for prev, cur in zip(reports, reports[1:]):
        # a rerun asks exactly the judgements that failed before, and nothing that was answered
        assert cur.from_cache == prev.from_cache + prev.answered
        assert cur.answered + cur.failed_requests == prev.failed_requests
        assert cur.annotated >= prev.annotated
    assert last.failed == 0, f"still failing after {len(reports)} runs"
    check_complete_output(out, folders)
    journal, bad = read_jsonl(default_paths(out)["journal"])
    failed_events = [r for r in journal if r["event"] == "request_failed"]
    assert bad == 0 and len(failed_events) == sum(r.failed_requests for r in reports)
    assert all(r["reason"] and r["folder"] in folders and r["perspective"] in PERSPECTIVES for r in failed_events)


# --------------------------------------------------------------------------------------------------
# bad data
# --------------------------------------------------------------------------------------------------
def test_a_corrupt_image_is_reported_by_folder_and_does_not_stop_the_rest(dataset, tmp_path):
    data = copy_dataset(dataset, tmp_path / "data", n=8)
    folders = [f for f, _ in read_seeds(data)]
    bad_img, bad_prompt = folders[2], folders[5]
    edited = next((data / bad_img).glob("*_1.png"))
    edited.write_bytes(edited.read_bytes()[:40])  # truncated PNG
    (data / bad_prompt / "prompt.json").write_text('{"edit": ')
    out = tmp_path / "out" / "rewards.json"
    with ToyJudgeServer(seed=2) as srv:
        rep = run(data, out, base_url=srv.base_url, model="toy-judge")
        assert served(srv) == 3 * (len(folders) - 2)  # the bad folders cost nothing
    assert rep.annotated == len(folders) - 2 and rep.failed == 2
    assert list(strict_load(out)) == [f for f in folders if f not in (bad_img, bad_prompt)]
    failed = {f["folder"]: f for f in json.loads(rep.failures_path.read_text())["folders"]}
    assert set(failed) == {bad_img, bad_prompt}
    assert failed[bad_img]["stage"] == "data" and "corrupt" in failed[bad_img]["reason"]
    assert str(edited.name) in failed[bad_img]["reason"]
    assert "malformed JSON" in failed[bad_prompt]["reason"]
    assert set(rep.failures) == {bad_img, bad_prompt}


# --------------------------------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------------------------------
def test_a_second_run_sends_nothing_and_a_new_prompt_version_or_model_asks_again(dataset, tmp_path, monkeypatch):
    data = copy_dataset(dataset, tmp_path / "data", n=5)
    folders = [f for f, _ in read_seeds(data)]
    out = tmp_path / "out" / "rewards.json"
    with ToyJudgeServer(seed=3) as srv:
        r1 = run(data, out, base_url=srv.base_url, model="toy-judge")
        n1 = served(srv)
        first = out.read_text()
        r2 = run(data, out, base_url=srv.base_url, model="toy-judge")
        n2 = served(srv) - n1
        assert (r1.answered, r1.from_cache, n1) == (15, 0, 15)
        assert (r2.answered, r2.from_cache, r2.requests_sent, n2) == (0, 15, 0, 0)
        assert out.read_text() == first  # the same rewards, from the cache
        assert r2.prompt_tokens == 0 and r2.cost_usd == 0.0 and r1.prompt_tokens > 0

        monkeypatch.setattr(prompts, "PROMPT_VERSION", "v1-edited")
        r3 = run(data, out, base_url=srv.base_url, model="toy-judge")
        assert (r3.answered, r3.from_cache) == (15, 0) and served(srv) - n1 == 15
        monkeypatch.undo()

        r4 = run(data, out, base_url=srv.base_url, model="toy-judge-v2")
        assert (r4.answered, r4.from_cache) == (15, 0) and served(srv) - n1 == 30
        r5 = run(data, out, base_url=srv.base_url, model="toy-judge")  # the first model's answers are still there
        assert (r5.answered, r5.from_cache) == (0, 15)
    check_complete_output(out, folders)
    assert r4.cost_usd is None and "UNKNOWN" in str(r4)  # an unknown model's cost is unknown, not 0


def test_the_default_judge_is_a_local_toy_server_started_for_the_run(dataset, tmp_path, capsys):
    data = copy_dataset(dataset, tmp_path / "data", n=3)
    out = tmp_path / "rewards.json"
    rep = annotate(data, out, progress=False)
    printed = capsys.readouterr().out
    assert rep.annotated == 3 and rep.model == "toy-judge" and rep.cost_usd == 0.0
    assert "estimate: 9 request(s)" in printed and "$0.0000" in printed and "annotated 3/3" in printed
    assert rep.prompt_tokens > 0 and rep.completion_tokens > 0  # from the server's usage


def test_a_torn_last_line_in_an_old_jsonl_cache_and_in_the_journal_is_ignored(dataset, tmp_path):
    """A course folder made by an earlier version (cache = answers.jsonl), killed in the middle of its last
    append: the run resumes from that file and asks only the answer on the torn line again."""
    data = copy_dataset(dataset, tmp_path / "data", n=4)
    folders = [f for f, _ in read_seeds(data)]
    out = tmp_path / "out" / "rewards.json"
    paths = default_paths(out)
    legacy = paths["cache_dir"] / "answers.jsonl"
    with ToyJudgeServer(seed=4) as srv:
        run(data, out, base_url=srv.base_url, model="toy-judge")
        n1 = served(srv)
        with AnswerCache(paths["cache_dir"]) as cache:  # the same answers, as an earlier version wrote them
            legacy.write_text("".join(json.dumps(r) + "\n" for r in cache.records()))
        paths["cache"].unlink()
        for p in (legacy, paths["journal"]):  # a kill in the middle of the last append
            raw = p.read_bytes()
            p.write_bytes(raw[: len(raw) - 1 - len(raw.rstrip(b"\n").split(b"\n")[-1]) // 2])
        rep = run(data, out, base_url=srv.base_url, model="toy-judge")
        assert served(srv) - n1 == 1  # only the answer on the torn line is asked again
    assert (rep.from_cache, rep.answered) == (11, 1)
    check_complete_output(out, folders)
    with AnswerCache(paths["cache_dir"]) as cache:
        recs, bad = cache.records(), cache.skipped_lines
    assert bad == 1 and len({r["key"] for r in recs}) == 12 == len(recs)
    journal, jbad = read_jsonl(paths["journal"])
    assert jbad == 1 and [r["event"] for r in journal].count("run_end") == 1  # the first run_end was torn
    assert journal[-1]["event"] == "run_end" and journal[-1]["report"]["annotated"] == 4


# --------------------------------------------------------------------------------------------------
# the API key
# --------------------------------------------------------------------------------------------------
def test_the_api_key_appears_in_no_file_the_run_writes(dataset, tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_judge_client import StubJudge, error_reply

    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    data = copy_dataset(dataset, tmp_path / "data", n=6)
    out_dir, cache_dir = tmp_path / "out", tmp_path / "cache"
    out = out_dir / "rewards.json"
    pieces = [SENTINEL.encode(), SENTINEL[:12].encode(), SENTINEL[-8:].encode()]
    # 1. the key really travels (named explicitly), through faults whose reasons are written
    with ToyJudgeServer(fault_rates={"500": 0.3, "malformed": 0.3}, seed=5) as srv:
        run(data, out, base_url=srv.base_url, model="toy-judge", api_key_env="OPENAI_API_KEY", cache_dir=cache_dir,
            max_retries=1, backoff_base=0.01)
    # 2. a server that echoes the key in its error messages: the reasons land in the journal and failures file
    echo = lambda n, body, headers: error_reply(  # noqa: E731
        400 if n % 2 else 500, f"rejected {headers.get('authorization')} ({SENTINEL[:12]}...{SENTINEL[-8:]})")
    with StubJudge(echo) as stub:
        rep = run(data, out_dir / "second.json", base_url=stub.base_url, model="m", api_key_env="OPENAI_API_KEY",
                  cache_dir=cache_dir, max_retries=1, backoff_base=0.01)
        assert stub.log and all(r["headers"]["authorization"] == f"Bearer {SENTINEL}" for r in stub.log)
    assert rep.failed == 6 and "[REDACTED]" in next(iter(rep.failures.values()))
    # 3. the default: the local toy judge started for the run
    run(data, out_dir / "third.json", cache_dir=cache_dir)
    files = [p for d in (out_dir, cache_dir) for p in d.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for p in files:
        raw = p.read_bytes()
        for piece in pieces:
            assert piece not in raw, f"{p} contains (part of) the API key"
    assert all(piece.decode() not in str(rep) for piece in pieces)


def test_workers_share_the_folders_out_and_the_run_writes_what_one_process_writes(dataset, tmp_path, monkeypatch):
    from rewardedit_lib import parallel

    spawned, run_jobs = [], parallel.run_jobs

    def spy(fn, jobs, split, **kw):
        spawned.append((fn.__name__, [len(j["folders"]) for j in jobs], split.workers))
        return run_jobs(fn, jobs, split, **kw)

    monkeypatch.setattr(parallel, "run_jobs", spy)
    one = annotate(dataset, tmp_path / "one" / "rewards.json", progress=False, log=None, workers=1, limit=25)
    assert spawned == [] and one.answered == 75
    two = annotate(dataset, tmp_path / "two" / "rewards.json", progress=False, log=None, workers=2, limit=25)
    assert spawned == [("_annotate_share", [13, 12], 2)]  # every other folder of the first 25 each
    # the workers asked every question; this process found each answer in the shared cache
    assert (two.requests, two.from_cache, two.answered, two.annotated) == (75, 75, 0, 25)
    assert (tmp_path / "two" / "rewards.json").read_bytes() == (tmp_path / "one" / "rewards.json").read_bytes()
    again = annotate(dataset, tmp_path / "two" / "rewards.json", progress=False, log=None, workers=2, limit=25)
    assert len(spawned) == 1 and again.from_cache == 75  # a rerun finds every answer cached: no workers
    with pytest.raises(ValueError, match="workers=2: .*local toy judge"):
        annotate(dataset, tmp_path / "x.json", base_url="http://127.0.0.1:9/v1", model="gpt-4o", workers=2)
    with pytest.raises(ValueError, match="workers must be 'auto' or a positive number"):
        annotate(dataset, tmp_path / "x.json", workers=0)
    assert len(spawned) == 1
