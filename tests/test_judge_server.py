"""Tests of the toy judge's OpenAI-compatible server (rewardedit_lib.toy.server).

What must hold: the official ``openai`` client (sync and async) gets valid chat completions for requests
built exactly as the real judge gets them (prompts.build_messages + prompts.response_format), answers the
kit's parsers accept and that equal the toy judge's own; ``/v1/models`` lists the model; garbage gets an
OpenAI-style 400; injected faults (429 with Retry-After, 500, timeouts, malformed answers) occur at their
rates and are counted; latency is applied; many concurrent requests are served; shutdown is fast with
requests in flight; and the API key never reaches a log, stdout or stderr.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from rewardedit_lib import toyworld as tw
from rewardedit_lib.formats import PERSPECTIVES
from rewardedit_lib.judge import prompts
from rewardedit_lib.toy import judge as toy_judge
from rewardedit_lib.toy.server import FAULT_KINDS, FaultRates, ToyJudgeServer, count_tokens

SENTINEL = "sk-SENTINEL-9f3b2c7d1e-do-not-log"
REPO = Path(__file__).resolve().parents[1]


def pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def triplets() -> list[tw.ToyTriplet]:
    return list(tw.iter_triplets(24, seed=21))


@pytest.fixture(scope="module")
def log_lines() -> list[str]:
    return []


@pytest.fixture(scope="module")
def server(log_lines):
    with ToyJudgeServer(log=log_lines.append) as srv:
        yield srv


def request(t: tw.ToyTriplet, perspective: str = "following", mode: str = "annotate") -> dict:
    return {"model": "toy-judge",
            "messages": prompts.build_messages(perspective, mode, t.instruction, pil(t.source), pil(t.edited)),
            "response_format": prompts.response_format(mode)}


def post(url: str, body: bytes | dict, headers: dict | None = None, timeout: float = 10.0) -> tuple[int, dict, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


# --------------------------------------------------------------------------------------------------
# The openai client, as the annotation code uses it
# --------------------------------------------------------------------------------------------------
def test_sync_client_gets_the_judges_answers(server, triplets) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=SENTINEL, max_retries=0)
    t = next(x for x in triplets if any(x.flaws.values()))  # a flawed one: the feedback says something
    for p in PERSPECTIVES:
        for mode in ("annotate", "evaluate"):
            r = client.chat.completions.create(**request(t, p, mode))
            assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "toy-judge"
            assert isinstance(r.created, int) and abs(r.created - time.time()) < 60
            (choice,) = r.choices
            assert choice.index == 0 and choice.finish_reason == "stop" and choice.message.role == "assistant"
            text = choice.message.content
            answer = prompts.parse_answer(text, mode)
            assert json.loads(text) == toy_judge.judge(t.instruction, t.source, t.edited, p, mode)
            if mode == "annotate":
                assert isinstance(answer, prompts.Annotation)
            else:
                assert isinstance(answer, prompts.Verdict)
            u = r.usage
            assert u.total_tokens == u.prompt_tokens + u.completion_tokens
            assert 2 * 85 + 100 < u.prompt_tokens < 2 * 85 + 600  # two low-detail images plus the prompt text
            assert 5 <= u.completion_tokens < 100


@pytest.mark.parametrize("fmt", ["json_schema", "json_object", "text", None])
def test_response_format_variants_all_answer_json(server, triplets, fmt) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=SENTINEL, max_retries=0)
    t = triplets[1]
    kw = request(t, "preserving", "evaluate")
    if fmt is None:
        kw.pop("response_format")
    elif fmt != "json_schema":
        kw["response_format"] = {"type": fmt}
    r = client.chat.completions.create(**kw)
    v = prompts.parse_verdict(r.choices[0].message.content)
    assert json.loads(r.choices[0].message.content) == {"yes": v.yes, "score": v.score, "reason": v.reason}


def test_models_endpoint(server) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=SENTINEL)
    assert [m.id for m in client.models.list().data] == ["toy-judge"]
    assert client.models.retrieve("toy-judge").id == "toy-judge"
    with ToyJudgeServer(model="gpt-4o-mini-toy") as other:
        c2 = openai.OpenAI(base_url=other.base_url, api_key="x")
        assert [m.id for m in c2.models.list().data] == ["gpt-4o-mini-toy"]
        assert other.base_url.startswith("http://127.0.0.1:") and other.base_url.endswith("/v1")


def test_async_client_concurrency_32(triplets) -> None:
    """48 requests at concurrency 32 with 0.25 s latency finish in about two latency rounds, not 48."""
    reqs = [(t, p) for t in triplets[:16] for p in PERSPECTIVES]

    async def run(base_url: str) -> list:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=SENTINEL, max_retries=0, timeout=30)
        sem = asyncio.Semaphore(32)

        async def one(t, p):
            async with sem:
                r = await client.chat.completions.create(**request(t, p))
                return r.choices[0].message.content

        try:
            return await asyncio.gather(*(one(t, p) for t, p in reqs))
        finally:
            await client.close()

    with ToyJudgeServer(latency=0.25) as srv:
        t0 = time.perf_counter()
        out = asyncio.run(run(srv.base_url))
        wall = time.perf_counter() - t0
        stats = srv.stats()
    assert stats["chat_requests"] == stats["answered"] == len(reqs) and stats["in_flight"] == 0
    assert wall < 0.25 * len(reqs) / 2, f"{len(reqs)} requests took {wall:.2f} s: not concurrent"
    for (t, p), text in zip(reqs, out):
        assert json.loads(text) == toy_judge.judge(t.instruction, t.source, t.edited, p, "annotate")


# --------------------------------------------------------------------------------------------------
# Bad requests
# --------------------------------------------------------------------------------------------------
def _assert_openai_error(status: int, headers: dict, body: str, want_status: int = 400) -> dict:
    assert status == want_status, (status, body)
    err = json.loads(body)["error"]
    assert {"message", "type", "code"} <= set(err) and err["message"] and err["type"]
    return err


def test_garbage_gets_400(server, triplets) -> None:
    url = server.base_url + "/chat/completions"
    before = server.stats()["bad_requests"]
    err = _assert_openai_error(*post(url, b"{this is not json"))
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
    _assert_openai_error(*post(url, b"[1, 2, 3]"))
    _assert_openai_error(*post(url, {"model": "toy-judge"}))  # no messages
    _assert_openai_error(*post(url, {"messages": [{"role": "user", "content": "hello there"}]}))  # no judge prompt
    good = request(triplets[0])
    bad_b64 = json.loads(json.dumps(good))
    bad_b64["messages"][1]["content"][1]["image_url"]["url"] = "data:image/png;base64,@@@not-base64@@@"
    assert _assert_openai_error(*post(url, bad_b64))["code"] == "invalid_image"
    not_png = json.loads(json.dumps(good))
    not_png["messages"][1]["content"][2]["image_url"]["url"] = (
        "data:image/png;base64," + base64.b64encode(b"definitely not a png").decode())
    assert _assert_openai_error(*post(url, not_png))["code"] == "invalid_image"
    streaming = dict(good, stream=True)
    _assert_openai_error(*post(url, streaming))
    bad_format = dict(good, response_format={"type": "xml"})
    _assert_openai_error(*post(url, bad_format))
    assert server.stats()["bad_requests"] - before == 8
    _assert_openai_error(*post(server.url + "/v1/embeddings", {"input": "x"}), want_status=404)
    # the official client surfaces it as BadRequestError
    client = openai.OpenAI(base_url=server.base_url, api_key=SENTINEL, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="toy-judge", messages=[{"role": "user", "content": "hi"}])
    # and the server keeps serving
    status, _, text = post(url, good)
    assert status == 200 and prompts.parse_annotation(json.loads(text)["choices"][0]["message"]["content"])


# --------------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------------
def test_rate_limit_fault_reaches_the_client_with_retry_after(triplets) -> None:
    with ToyJudgeServer(fault_rates={"429": 1.0}, retry_after=3) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=SENTINEL, max_retries=0)
        for _ in range(3):
            with pytest.raises(openai.RateLimitError) as ei:
                client.chat.completions.create(**request(triplets[0]))
            assert ei.value.status_code == 429
            assert ei.value.response.headers["retry-after"] == "3"
            assert ei.value.response.headers["retry-after-ms"] == "3000"
            assert ei.value.code == "rate_limit_exceeded"
        s = srv.stats()
        assert s["faults"]["rate_limit"] == 3 and s["faults_total"] == 3 and s["answered"] == 0


def test_server_error_fault(triplets) -> None:
    with ToyJudgeServer(fault_rates={"server_error": 1.0}) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=SENTINEL, max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(**request(triplets[0]))
        assert srv.stats()["faults"]["server_error"] == 1


def test_malformed_fault_answers_200_that_fails_validation(triplets) -> None:
    with ToyJudgeServer(fault_rates={"malformed": 1.0}, seed=3) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=SENTINEL, max_retries=0)
        seen = set()
        for i in range(12):
            mode = ("annotate", "evaluate")[i % 2]
            r = client.chat.completions.create(**request(triplets[0], "quality", mode))
            text = r.choices[0].message.content
            seen.add(text)
            with pytest.raises(prompts.AnswerError):
                prompts.parse_answer(text, mode)
        assert len(seen) >= 3  # prose, out of range, cut off
        assert srv.stats()["faults"]["malformed"] == 12


def test_fault_rates_are_observed_at_their_rates(triplets) -> None:
    rates = {"rate_limit": 0.15, "server_error": 0.1, "malformed": 0.1}
    n = 400
    body = json.dumps(request(triplets[2], "following", "annotate")).encode()
    observed = {"rate_limit": 0, "server_error": 0, "malformed": 0, "ok": 0}
    with ToyJudgeServer(fault_rates=rates, seed=11) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=10) as http:
            for _ in range(n):
                r = http.post("/chat/completions", content=body, headers={"Content-Type": "application/json",
                                                                           "Authorization": f"Bearer {SENTINEL}"})
                if r.status_code == 429:
                    observed["rate_limit"] += 1
                elif r.status_code == 500:
                    observed["server_error"] += 1
                else:
                    assert r.status_code == 200
                    try:
                        prompts.parse_annotation(r.json()["choices"][0]["message"]["content"])
                        observed["ok"] += 1
                    except prompts.AnswerError:
                        observed["malformed"] += 1
        s = srv.stats()
    assert s["chat_requests"] == n and s["answered"] == observed["ok"]
    for kind, r in rates.items():
        k = observed[kind]
        assert s["faults"][kind] == k  # the server's counters agree with what the client saw
        assert abs(k - n * r) <= 4 * math.sqrt(n * r * (1 - r)), (kind, k, n * r)
    assert s["faults"]["timeout"] == 0


def test_timeout_fault_client_gives_up_and_shutdown_is_fast(triplets) -> None:
    srv = ToyJudgeServer(fault_rates={"timeout": 1.0}, timeout_sleep=30).start()
    try:
        client = openai.OpenAI(base_url=srv.base_url, api_key=SENTINEL, max_retries=0, timeout=0.6)
        t0 = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**request(triplets[0]))
        assert time.perf_counter() - t0 < 5
        assert srv.stats()["faults"]["timeout"] == 1
    finally:
        t0 = time.perf_counter()
        srv.close()  # the handler is still holding its connection for 30 s: it must wake at once
        assert time.perf_counter() - t0 < 2.0


def test_latency_is_applied(triplets) -> None:
    with ToyJudgeServer(latency=0.4) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=SENTINEL, max_retries=0)
        client.chat.completions.create(**request(triplets[3]))  # warm the judge's cache and the connection
        t0 = time.perf_counter()
        client.chat.completions.create(**request(triplets[3]))
        dt = time.perf_counter() - t0
        assert 0.4 <= dt < 2.0
        srv.configure(latency=0.0)
        t0 = time.perf_counter()
        client.chat.completions.create(**request(triplets[3]))
        assert time.perf_counter() - t0 < 0.35


def test_shutdown_with_requests_in_flight_is_fast(triplets) -> None:
    srv = ToyJudgeServer(latency=20.0).start()
    body = json.dumps(request(triplets[4])).encode()
    outcomes: list = []

    def call() -> None:
        try:
            outcomes.append(post(srv.base_url + "/chat/completions", body, timeout=30)[0])
        except Exception as e:  # the connection is dropped: what a client sees when a server stops
            outcomes.append(type(e).__name__)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for th in threads:
        th.start()
    deadline = time.time() + 10
    while srv.stats()["in_flight"] < 12 and time.time() < deadline:
        time.sleep(0.02)
    assert srv.stats()["in_flight"] == 12
    t0 = time.perf_counter()
    srv.close()
    assert time.perf_counter() - t0 < 2.0
    for th in threads:
        th.join(5)
    assert not any(th.is_alive() for th in threads) and len(outcomes) == 12
    assert 200 not in outcomes
    with pytest.raises(OSError):  # the port is closed
        urllib.request.urlopen(srv.url + "/v1/models", timeout=2)


def test_fault_rates_validation() -> None:
    with pytest.raises(ValueError):
        FaultRates(rate_limit=0.7, server_error=0.5)
    with pytest.raises(ValueError):
        FaultRates.of({"503": 0.1})
    with pytest.raises(ValueError):
        ToyJudgeServer(latency=-1)
    assert FaultRates.of({"429": 0.2, "500": 0.1}) == FaultRates(rate_limit=0.2, server_error=0.1)
    fr = FaultRates(0.1, 0.2, 0.3, 0.3)
    assert [fr.draw(u) for u in (0.05, 0.15, 0.35, 0.65, 0.95)] == list(FAULT_KINDS) + [None]
    assert FaultRates(0.1, 0.1, 0.1, 0.1).draw(0.5) is None


def test_count_tokens() -> None:
    t = next(iter(tw.iter_triplets(1, seed=0)))
    msgs = prompts.build_messages("following", "annotate", t.instruction, pil(t.source), pil(t.edited))
    u = count_tokens(msgs, '{"score": 5, "feedback": "x"}')
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    text_chars = len(msgs[0]["content"]) + len(msgs[1]["content"][0]["text"])
    assert u["prompt_tokens"] >= 170 + text_chars // 4
    hi = prompts.build_messages("following", "annotate", t.instruction, pil(t.source), pil(t.edited), detail="high")
    assert count_tokens(hi, "x")["prompt_tokens"] > u["prompt_tokens"]


# --------------------------------------------------------------------------------------------------
# The API key goes nowhere
# --------------------------------------------------------------------------------------------------
def test_api_key_is_never_logged_in_process(server, triplets, log_lines, capfd) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=SENTINEL, max_retries=0)
    client.chat.completions.create(**request(triplets[5]))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="toy-judge", messages=[{"role": "user", "content": "hi"}])
    post(server.base_url + "/chat/completions", b"garbage", headers={"Authorization": f"Bearer {SENTINEL}",
                                                                     "api-key": SENTINEL})
    with ToyJudgeServer(fault_rates={"malformed": 0.5, "server_error": 0.5}, log=log_lines.append) as srv:
        c2 = openai.OpenAI(base_url=srv.base_url, api_key=SENTINEL, max_retries=0)
        for _ in range(4):
            try:
                c2.chat.completions.create(**request(triplets[5]))
            except openai.APIError:
                pass
    out, err = capfd.readouterr()
    assert log_lines, "the server logged nothing at all: the check would be vacuous"
    assert any('"POST /v1/chat/completions" 200' in line for line in log_lines)
    everything = "\n".join(log_lines) + out + err
    assert SENTINEL not in everything and "SENTINEL" not in everything


def test_cli_entry_point_serves_and_never_prints_the_key(tmp_path, triplets) -> None:
    """main_serve (what `rewardedit judge-server` runs) in a subprocess: it prints the base URL, logs request
    lines to stderr, stops on Ctrl-C, and the key appears in none of its output."""
    code = "from rewardedit_lib.toy.server import main_serve; raise SystemExit(main_serve('127.0.0.1', 0))"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OPENAI_API_KEY=SENTINEL)
    # A job a shell started in the background inherits SIGINT *ignored*, and then Python installs no
    # KeyboardInterrupt handler: restore the default so Ctrl-C means what it does in a terminal.
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()
        assert "http://127.0.0.1:" in first, first
        base_url = first.split("serving at ", 1)[1].split()[0]
        client = openai.OpenAI(base_url=base_url, api_key=SENTINEL, max_retries=0)
        r = client.chat.completions.create(**request(triplets[6], "quality", "annotate"))
        prompts.parse_annotation(r.choices[0].message.content)
        post(base_url + "/chat/completions", b"nonsense", headers={"Authorization": f"Bearer {SENTINEL}"})
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # generous: a loaded 2-core machine is slow to shut down
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert '"POST /v1/chat/completions" 200' in err and '"POST /v1/chat/completions" 400' in err
    assert SENTINEL not in first + out + err
