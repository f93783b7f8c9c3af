"""The judge client: retry policy, structured-output fallback, keys, accounting, the cache and its journal.

These run against :class:`StubJudge`, a scriptable OpenAI-compatible server defined here, because they need
exact control of each answer (this 429 then that malformed body). The reliability tests of whole runs
against the kit's real toy judge server are in ``test_annotate.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

from rewardedit_lib.formats import PERFECT_FEEDBACK
from rewardedit_lib.judge import client as jc
from rewardedit_lib.judge import prompts
from rewardedit_lib.judge.client import (
    PRICES,
    AnswerCache,
    JsonlLog,
    JudgeClient,
    JudgeConfigError,
    JudgeRequest,
    estimate_cost,
    judge_many,
    price_for,
    read_jsonl,
    request_key,
    run_sync,
)

pytestmark = pytest.mark.timeout(60)


class BurstHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server whose listen backlog takes a client's whole burst of connects.

    Why: the client opens up to ``concurrency`` (16) connections at once, and the standard library's backlog of
    5 refuses some of them on a busy 2-core machine; with ``max_retries=0`` a refused connect is a lost answer,
    which made CI fail one run in many (20 of 21 requests arrived). The kit's own toy server listens with 256."""

    request_queue_size = 256
    daemon_threads = True


# --------------------------------------------------------------------------------------------------
# A scriptable OpenAI-compatible stub
# --------------------------------------------------------------------------------------------------
def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 10) -> dict:
    return {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def good_answer(body: dict) -> str:
    persp, mode, instruction, _ = prompts.identify(body["messages"])
    if mode == "annotate":
        return json.dumps({"score": 4, "feedback": f"The {persp} of '{instruction}' is nearly right."})
    return json.dumps({"yes": True, "score": 4.5, "reason": "Fine."})


class Reply:
    """What the stub answers: ``Reply(status, body, headers, sleep)``; body dict -> JSON, str/bytes -> raw."""

    def __init__(self, status: int = 200, body: Any = None, headers: dict | None = None, sleep: float = 0.0,
                 content_type: str = "application/json"):
        self.status, self.body, self.headers, self.sleep, self.content_type = status, body, headers or {}, sleep, content_type


def error_reply(status: int, message: str, headers: dict | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "stub_error", "code": None}}, headers)


class StubJudge:
    """``behave(n, body, headers) -> Reply | None`` decides request ``n`` (0-based); None = a correct answer."""

    def __init__(self, behave: Callable[[int, dict, dict], Reply | None] | None = None, latency: float = 0.0):
        self.behave = behave or (lambda n, body, headers: None)
        self.latency = latency
        self.log: list[dict] = []  # time, path, headers, body of every request
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def __enter__(self) -> "StubJudge":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with stub.lock:
                    n = len(stub.log)
                    stub.log.append({"time": time.monotonic(), "path": self.path, "headers": headers, "body": body})
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    time.sleep(stub.latency)
                    reply = stub.behave(n, body, headers) or Reply(200, completion(good_answer(body)))
                    time.sleep(reply.sleep)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1
                data = reply.body
                if isinstance(data, (dict, list)):
                    data = json.dumps(data)
                data = data.encode() if isinstance(data, str) else (data or b"")
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", reply.content_type)
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = BurstHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.log)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def tiny_png(color: tuple[int, int, int]) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


SRC, EDT = tiny_png((200, 0, 0)), tiny_png((0, 200, 0))


def req(i: int = 0, perspective: str = "following", mode: str = "annotate") -> JudgeRequest:
    return JudgeRequest(perspective, mode, f"make the square green #{i}", SRC, EDT, id=f"item{i}")


def make_client(stub: StubJudge, **kw: Any) -> JudgeClient:
    opts = dict(concurrency=4, max_retries=5, timeout=5.0, backoff_base=0.01, backoff_max=0.05, seed=0)
    opts.update(kw)
    return JudgeClient("stub-model", base_url=stub.base_url, **opts)


def judge_one(client: JudgeClient, request: JudgeRequest):
    async def go():
        try:
            return await client.judge(request)
        finally:
            await client.aclose()

    return asyncio.run(go())


def judge_all(client: JudgeClient, requests: list[JudgeRequest]):
    """judge_many over ``requests`` without a cache, then close the client."""
    async def go():
        try:
            return await judge_many(requests, client, progress=False)
        finally:
            await client.aclose()

    return asyncio.run(go())


# --------------------------------------------------------------------------------------------------
# Prices, estimates, keys
# --------------------------------------------------------------------------------------------------
def test_price_table_covers_the_judges_and_unknown_models_say_so():
    for m in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "toy-judge"):
        assert m in PRICES
    assert PRICES["toy-judge"].cost(10**6, 10**6) == 0
    assert price_for("gpt-4o-2024-08-06") is PRICES["gpt-4o"]
    assert price_for("gpt-4o-mini-2024-07-18") is PRICES["gpt-4o-mini"]
    assert price_for("my-azure-deployment") is None
    est = estimate_cost([req(0)], "my-azure-deployment")
    assert est.cost_usd is None and "UNKNOWN" in str(est)
    est = estimate_cost([req(0)], "my-azure-deployment", price_model="gpt-4o")
    assert est.cost_usd is not None and est.cost_usd > 0


def test_estimate_is_text_over_4_plus_85_per_low_detail_image_plus_40_out():
    r = req(0)
    text = prompts.system_prompt("following", "annotate") + prompts.user_text(r.instruction)
    est = estimate_cost([r, req(1, "quality")], "gpt-4o")
    t2 = prompts.system_prompt("quality", "annotate") + prompts.user_text(req(1).instruction)
    assert est.requests == 2
    assert est.input_tokens == len(text) // 4 + 170 + len(t2) // 4 + 170
    assert est.output_tokens == 80
    assert est.cost_usd == pytest.approx((est.input_tokens * 2.5 + 80 * 10.0) / 1e6)


def test_cache_key_covers_model_prompt_version_perspective_mode_images_instruction():
    base = dict(model="m", perspective="following", mode="annotate", instruction="x", source_sha256="a",
                edited_sha256="b")
    k = request_key(**base)
    assert request_key(**base) == k
    for field, value in [("model", "m2"), ("perspective", "quality"), ("mode", "evaluate"), ("instruction", "y"),
                         ("source_sha256", "c"), ("edited_sha256", "c")]:
        assert request_key(**{**base, field: value}) != k, field
    assert request_key(**base, prompt_version="v999") != k
    # the request's images are hashed by content: the same pixels from a path or from bytes give one key
    assert req(0).key("m") == req(0).key("m") != req(1).key("m")


def test_cache_key_of_the_toy_judge_covers_its_version(monkeypatch):
    """A judgement cached by an older toy judge is asked again once the judge changed; other models' keys
    do not depend on the toy judge. The version reaches the key through the client (``model_version``, which
    :func:`rewardedit_lib.toy.endpoint.client_options` supplies); the generic judge code imports no toy judge."""
    from rewardedit_lib.toy import endpoint, judge as toy_judge

    base = dict(perspective="quality", mode="evaluate", instruction="x", source_sha256="a", edited_sha256="b")

    def key(model):
        return request_key(model=JudgeClient(model, base_url="http://127.0.0.1:9/v1",
                                             **endpoint.client_options(model)).cache_model, **base)

    toy, other = key("toy-judge"), key("gpt-4o")
    # the key is the model named with its version: pinned for version 4, so that a change of how the client
    # builds it (which would orphan every cached judgement) cannot pass unnoticed
    assert toy == request_key(model="toy-judge/toy-judge-4", **base)
    assert toy == "a87b5d81a0027cd6842043f5465058edfb7c7c6412d331fbcaf1bd34500e2e52"
    assert other == request_key(model="gpt-4o", **base)
    monkeypatch.setattr(toy_judge, "JUDGE_VERSION", "toy-judge-999")
    monkeypatch.setattr(endpoint, "JUDGE_VERSION", "toy-judge-999")
    assert key("toy-judge") != toy
    assert key("gpt-4o") == other


def test_the_generic_judge_imports_nothing_from_the_toy_world():
    """judge/ stays generic: no module of it imports rewardedit_lib.toy or the toy world (statically)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "rewardedit_lib" / "judge"
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                package = ["rewardedit_lib", "judge"][:max(0, 3 - node.level)] if node.level else []
                module = ".".join(package + ([node.module] if node.module else []))
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("rewardedit_lib.toy") for n in names), (path.name, names)


def test_judge_and_toy_modules_are_at_most_700_lines():
    root = Path(__file__).resolve().parents[1] / "rewardedit_lib"
    for path in sorted([*root.glob("judge/*.py"), *root.glob("toy/*.py")]):
        assert len(path.read_text().splitlines()) <= 700, path.name


# --------------------------------------------------------------------------------------------------
# The journal: append-only JSON lines
# --------------------------------------------------------------------------------------------------
def test_jsonl_skips_a_torn_last_line_and_never_glues_a_new_record_onto_it(tmp_path):
    path = tmp_path / "j.jsonl"
    log = JsonlLog(path)
    log.append_many([{"a": 1}, {"a": 2}])
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"a": 3, "tor')  # a kill mid-append
    recs, bad = read_jsonl(path)
    assert recs == [{"a": 1}, {"a": 2}] and bad == 1
    log = JsonlLog(path)
    asyncio.run(log.append({"a": 4}))
    log.close()
    recs, bad = read_jsonl(path)
    assert recs == [{"a": 1}, {"a": 2}, {"a": 4}] and bad == 1
    assert read_jsonl(tmp_path / "missing.jsonl") == ([], 0)


def test_concurrent_appends_share_fsyncs_and_all_land(tmp_path, monkeypatch):
    calls = []
    real = jc.os.fsync
    monkeypatch.setattr(jc.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    log = JsonlLog(tmp_path / "j.jsonl")

    async def go():
        await asyncio.gather(*(log.append({"i": i}) for i in range(200)))

    asyncio.run(go())
    log.close()
    recs, bad = read_jsonl(tmp_path / "j.jsonl")
    assert sorted(r["i"] for r in recs) == list(range(200)) and bad == 0
    assert 1 <= len(calls) < 200  # group commit


# --------------------------------------------------------------------------------------------------
# Retry policy and answer validation
# --------------------------------------------------------------------------------------------------
def test_malformed_and_out_of_range_answers_are_rejected_and_retried():
    script = {
        0: Reply(200, completion("I think it is fine")),  # no JSON at all
        1: Reply(200, completion(json.dumps({"score": 7, "feedback": "Great."}))),  # out of range
        2: Reply(200, b"{not a completion", content_type="application/json"),  # malformed body
        3: Reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}),
        4: Reply(200, completion(json.dumps({"score": -1, "feedback": "Bad."}))),
    }
    with StubJudge(lambda n, b, h: script.get(n)) as stub:
        client = make_client(stub)
        res = judge_one(client, req(0))
    assert res.ok and res.answer.score == 4 and res.attempts == 6 and stub.count == 6
    assert client.stats.errors["invalid answer"] == 3 and client.stats.errors["malformed"] == 2
    assert client.stats.retries == 5
    # every response with usage was billed, the valid one and the invalid ones
    assert client.stats.usage.prompt_tokens == 100 * 4


def test_an_answer_that_never_validates_is_recorded_as_failed_with_its_reason():
    with StubJudge(lambda n, b, h: Reply(200, completion('{"score": 9, "feedback": "x"}'))) as stub:
        client = make_client(stub, max_retries=2)
        res = judge_one(client, req(0))
    assert not res.ok and stub.count == 3 and res.attempts == 3
    assert "failed after 3 tries" in res.error and "outside 0-5" in res.error
    assert client.stats.failed == 1


def test_429_honours_retry_after_and_retry_after_ms():
    script = {0: error_reply(429, "slow down", {"retry-after": "1"}),
              1: error_reply(429, "slow down", {"retry-after-ms": "300", "retry-after": "5"})}
    with StubJudge(lambda n, b, h: script.get(n)) as stub:
        client = make_client(stub)
        res = judge_one(client, req(0))
        t = [r["time"] for r in stub.log]
    assert res.ok and len(t) == 3
    assert t[1] - t[0] >= 0.95  # Retry-After: 1 (our own backoff would have waited ~0.01 s)
    assert 0.28 <= t[2] - t[1] < 2.0  # retry-after-ms wins over the coarser Retry-After
    assert client.stats.errors["429"] == 2


def test_5xx_timeouts_and_connection_errors_are_retried_with_exponential_backoff():
    # The timeout leaves room for a loaded 2-core machine to answer the fourth (instant) request in time.
    script = {0: error_reply(500, "boom"), 1: error_reply(503, "busy"), 2: Reply(200, completion("{}"), sleep=6.0)}
    with StubJudge(lambda n, b, h: script.get(n)) as stub:
        client = make_client(stub, timeout=1.5, backoff_base=0.05, backoff_max=10)
        t0 = time.monotonic()
        res = judge_one(client, req(0))
        elapsed = time.monotonic() - t0
    assert res.ok and stub.count == 4
    assert client.stats.errors["5xx"] == 2 and client.stats.errors["timeout"] == 1
    assert 1.5 <= elapsed < 5.0  # the 6 s answer was cut at the 1.5 s timeout
    # a server that is not there at all: connection errors, retried, then failed with the reason
    dead = JudgeClient("m", base_url="http://127.0.0.1:9/v1", max_retries=2, backoff_base=0.01, timeout=2)
    res = judge_one(dead, req(0))
    assert not res.ok and "failed after 3 tries" in res.error and "connection" in res.error
    assert dead.stats.errors["connection"] == 3


def test_backoff_is_exponential_with_jitter_and_capped():
    c = JudgeClient("m", base_url="http://127.0.0.1:9/v1", backoff_base=1.0, backoff_max=8.0, seed=1)
    delays = [[c._backoff(a, None) for a in range(1, 7)] for _ in range(20)]
    for a in range(6):
        nominal = min(8.0, 2.0 ** a)
        vals = [d[a] for d in delays]
        assert all(0.5 * nominal <= v <= nominal for v in vals)
        assert len(set(vals)) > 1  # jittered
    assert c._backoff(1, 30.0) == 30.0 and c._backoff(1, 1e6) == c.max_retry_after


def test_concurrency_is_bounded():
    with StubJudge(latency=0.05) as stub:
        client = make_client(stub, concurrency=6)

        res = judge_all(client, [req(i) for i in range(30)])
    assert all(r.ok for r in res) and stub.count == 30
    assert 4 <= stub.max_in_flight <= 6


def test_structured_output_falls_back_to_json_object_then_none_and_remembers():
    def behave(n, body, headers):
        fmt = body.get("response_format")
        if fmt and fmt["type"] == "json_schema":
            return error_reply(400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported")
        if fmt and fmt["type"] == "json_object":
            return error_reply(400, "response_format json_object is not supported by this model")
        return Reply(200, completion("```json\n" + good_answer(body) + "\n```"))  # fenced: parsed leniently

    with StubJudge(behave) as stub:
        client = make_client(stub, concurrency=1)

        res = judge_all(client, [req(i) for i in range(5)])
        formats = [(r["body"].get("response_format") or {}).get("type") for r in stub.log]
    assert all(r.ok for r in res)
    assert formats == ["json_schema", "json_object", None, None, None, None, None]
    assert client.response_format_in_use == "none"
    assert res[0].attempts == 1  # the fallbacks cost no retry
    assert client.stats.fallbacks == ["response_format json_schema -> json_object",
                                      "response_format json_object -> none"]


def test_refused_parameters_are_adapted_once_even_with_many_requests_in_flight():
    # what the newest OpenAI reasoning models answer to max_tokens / temperature=0
    def behave(n, body, headers):
        if "max_tokens" in body:
            return error_reply(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                    "Use 'max_completion_tokens' instead.")
        if "temperature" in body:
            return error_reply(400, "Unsupported value: 'temperature' does not support 0 with this model.")
        return None

    with StubJudge(behave, latency=0.05) as stub:
        client = make_client(stub, concurrency=8, max_retries=0)

        res = judge_all(client, [req(i) for i in range(8)])
    assert all(r.ok for r in res), [r.error for r in res]  # max_retries=0: the adaptations cost no retry
    assert client.stats.fallbacks == ["max_tokens -> max_completion_tokens", "temperature dropped"]
    last = stub.log[-1]["body"]
    assert last["max_completion_tokens"] == 300 and "max_tokens" not in last and "temperature" not in last


def test_the_strict_schema_is_sent_when_the_server_takes_it():
    with StubJudge() as stub:
        judge_one(make_client(stub), req(0, mode="evaluate"))
        body = stub.log[0]["body"]
    assert body["response_format"] == prompts.response_format("evaluate")
    assert body["model"] == "stub-model" and body["messages"][1]["content"][1]["image_url"]["detail"] == "low"
    assert body["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_auth_errors_are_not_retried_and_stop_the_remaining_requests():
    with StubJudge(lambda n, b, h: error_reply(401, "Incorrect API key provided")) as stub:
        client = make_client(stub, concurrency=1)

        res = judge_all(client, [req(i) for i in range(5)])
    assert stub.count == 1 and not any(r.ok for r in res)
    assert "HTTP 401" in res[0].error and "not retried" in res[0].error
    assert all("not sent" in r.error and "HTTP 401" in r.error for r in res[1:])


def test_other_4xx_fail_that_request_only():
    script = {0: error_reply(400, "image is too large")}
    with StubJudge(lambda n, b, h: script.get(n)) as stub:
        client = make_client(stub, concurrency=1)

        res = judge_all(client, [req(i) for i in range(3)])
    assert [r.ok for r in res] == [False, True, True] and stub.count == 3
    assert "HTTP 400: image is too large (not retried)" == res[0].error


# --------------------------------------------------------------------------------------------------
# Keys: from the environment only, never to a third party by accident, never in an error text
# --------------------------------------------------------------------------------------------------
SENTINEL = "sk-test-SENTINEL-0123456789abcdefghijklmnop"


def test_openai_needs_its_key_in_the_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match="OPENAI_API_KEY"):
        JudgeClient("gpt-4o")
    with pytest.raises(JudgeConfigError, match="AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
        JudgeClient("dep", base_url="https://x.openai.azure.com/", azure_api_version="2024-10-21")
    with pytest.raises(JudgeConfigError, match="azure_api_version"):
        JudgeClient("dep", base_url="https://x.openai.azure.com/")
    with pytest.raises(JudgeConfigError, match="MY_VLLM_KEY"):
        JudgeClient("m", base_url="http://127.0.0.1:9/v1", api_key_env="MY_VLLM_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    c = JudgeClient("gpt-4o")
    assert SENTINEL not in repr(c) and c.endpoint == "https://api.openai.com/v1"
    assert "api_key" not in JudgeClient.__init__.__code__.co_varnames[:JudgeClient.__init__.__code__.co_argcount]


def test_the_openai_key_goes_to_a_third_party_server_only_when_named(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    with StubJudge() as stub:
        judge_one(make_client(stub), req(0))
        judge_one(make_client(stub, api_key_env="OPENAI_API_KEY"), req(0))
        auth = [r["headers"].get("authorization") for r in stub.log]
    assert SENTINEL not in auth[0]
    assert auth[1] == f"Bearer {SENTINEL}"


def test_azure_goes_through_the_azure_client(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", SENTINEL)
    with StubJudge() as stub:
        endpoint = stub.base_url[: -len("/v1")]
        client = JudgeClient("my-gpt4o", base_url=endpoint, azure_api_version="2024-10-21", timeout=5)
        res = judge_one(client, req(0))
        r = stub.log[0]
    assert res.ok
    assert r["path"].startswith("/openai/deployments/my-gpt4o/chat/completions") and "api-version=2024-10-21" in r["path"]
    assert r["headers"].get("api-key") == SENTINEL


def test_a_key_echoed_by_a_server_is_scrubbed_from_the_error(monkeypatch):
    monkeypatch.setenv("MY_KEY", SENTINEL)

    def echo(n, body, headers):
        return error_reply(400, f"bad request from {headers.get('authorization')} (key {SENTINEL[:12]}...{SENTINEL[-8:]})")

    with StubJudge(echo) as stub:
        res = judge_one(make_client(stub, api_key_env="MY_KEY"), req(0))
    assert not res.ok and "[REDACTED]" in res.error
    assert SENTINEL not in res.error and SENTINEL[:12] not in res.error and SENTINEL[-8:] not in res.error


# --------------------------------------------------------------------------------------------------
# judge_many with the cache
# --------------------------------------------------------------------------------------------------
def test_judge_many_caches_answers_and_a_second_run_sends_nothing(tmp_path):
    requests = [req(i, p, m) for i in range(4) for p in ("following", "quality") for m in ("annotate", "evaluate")]
    with StubJudge() as stub:
        async def go(cache):
            client = make_client(stub)
            try:
                return await judge_many(requests, client, cache=cache, progress=False), client
            finally:
                await client.aclose()
                cache.close()

        first, c1 = asyncio.run(go(AnswerCache(tmp_path / "cache")))
        n1 = stub.count
        second, c2 = asyncio.run(go(AnswerCache(tmp_path / "cache")))
        n2 = stub.count - n1
    assert n1 == len(requests) and n2 == 0 and c2.stats.requests_sent == 0
    assert all(r.from_cache for r in second) and not any(r.from_cache for r in first)
    assert [r.answer for r in second] == [r.answer for r in first]
    assert isinstance(second[1].answer, prompts.Verdict) and isinstance(second[0].answer, prompts.Annotation)
    with AnswerCache(tmp_path / "cache") as cache:
        recs = cache.records()
    assert len(recs) == len(requests) and len({r["key"] for r in recs}) == len(requests)


def test_duplicate_requests_are_sent_once(tmp_path):
    with StubJudge() as stub:
        client = make_client(stub)

        res = judge_all(client, [req(0), req(0), req(1)])
    assert stub.count == 2 and all(r.ok for r in res) and res[0].answer == res[1].answer


def test_cached_answers_are_revalidated_on_load(tmp_path):
    cache_dir = tmp_path / "c"
    key = req(0).key("stub-model")
    lines = [{"key": key, "mode": "annotate", "answer": {"score": 11, "feedback": "tampered"}},
             {"key": "k3", "mode": "annotate", "answer": {"score": 4.5, "feedback": "not an integer"}},
             {"key": "k4", "mode": "evaluate", "answer": {"yes": "maybe", "score": 4, "reason": "x"}},
             {"key": "k2", "mode": "annotate", "answer": {"score": 5, "feedback": PERFECT_FEEDBACK}},
             {"key": "k5", "mode": "evaluate", "answer": {"yes": False, "score": 2.5, "reason": "The cat stayed."}}]
    cache_dir.mkdir()
    (cache_dir / "answers.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cache = AnswerCache(cache_dir)
    assert cache.get(key) is None and cache.get("k3") is None and cache.get("k4") is None
    assert cache.skipped_lines == 3 and len(cache) == 2
    assert cache.get("k2") == prompts.Annotation(5, PERFECT_FEEDBACK)
    assert cache.get("k5") == prompts.Verdict(False, 2.5, "The cat stayed.")


def test_run_sync_works_inside_a_running_event_loop():
    async def inner():
        await asyncio.sleep(0)
        return 42

    async def notebook_cell():
        return run_sync(inner())  # what a Jupyter cell calling annotate() does

    assert run_sync(inner()) == 42
    assert asyncio.run(notebook_cell()) == 42
