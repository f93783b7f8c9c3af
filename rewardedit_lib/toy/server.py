"""The toy judge as an OpenAI-compatible HTTP server (``aiohttp.web``).

Why a server and not a function call: the kit has exactly one judge client -- the official ``openai``
package -- so that the code annotating the toy world is the code that will annotate RewardEdit20K with
GPT-4o or a vLLM-served open model. The toy judge therefore has to *be* an OpenAI endpoint: it receives
the very requests GPT-4o would receive (:func:`..judge.prompts.build_messages`: the kit's prompt, the instruction,
two base64 PNG images), reads them with :func:`..judge.prompts.identify`, judges with
:func:`.judge.judge` and answers a ``chat.completion`` whose message content is the answer JSON.

Why aiohttp and not ``http.server``: the HTTP plumbing (keep-alive, TCP_NODELAY, body size limit, draining
unread bodies, dropping connections on shutdown) is aiohttp's, already installed for the client's transport
(``openai[aiohttp]``), instead of ~150 hand-written lines. One event loop on a background thread serves every
connection; sleeping (injected latency, timeout faults) costs no thread, and the pixel judging -- CPU work --
runs on a thread pool so it never blocks the loop, as it ran on one thread per connection before. Speed is
unchanged (2-core VM, ``rewardedit annotate`` of 300 toy triplets = 900 requests, fresh cache: 4.7-5.6 s,
http.server 5.7-6.3 s; ``benchmarks/annotate_throughput.py --n 200 --in-process``: 181-191 vs 188-201 req/s).

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models`` (``/v1/models/<id>``; the ``/v1`` prefix is
optional). ``response_format`` of type ``json_schema``, ``json_object`` or ``text`` (or none) is honoured by
always answering plain JSON text. Bad requests get HTTP 400 with an OpenAI-style error body
``{"error": {"message", "type", "param", "code"}}``.

Fault injection (for the reliability tests, the throughput benchmark and demos): an added latency per
request, and per-request probabilities of a 429 (with ``Retry-After``), a 500, a timeout (the connection is
held, then dropped without an answer) and a malformed answer (HTTP 200 whose content is not valid JSON or
is out of range). One seeded draw per request picks at most one fault, so each kind occurs at its own rate;
counters of requests and injected faults are readable with :meth:`ToyJudgeServer.stats`.

The server never reads, stores, logs or echoes the ``Authorization`` header: any API key works, and none
ends up anywhere.

Usage::

    with ToyJudgeServer() as srv:                       # 127.0.0.1, a free port, a background thread
        client = openai.OpenAI(base_url=srv.base_url, api_key="unused")
        ...

    main_serve("127.0.0.1", 8000)                       # what ``rewardedit judge-server`` runs
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from aiohttp import web

from ..judge import client, prompts
from . import judge as toy_judge

MAX_BODY_BYTES = 32 * 1024 * 1024
#: Bodies up to this size are parsed on the event loop (microseconds); larger ones on the thread pool.
INLINE_PARSE_BYTES = 1024 * 1024
#: On shutdown, requests in flight get this long to finish before they are cancelled (their connections dropped).
SHUTDOWN_GRACE_S = 0.25
#: Tokens OpenAI bills for one ``detail="low"`` image (a fixed 85); ``"high"`` adds 170 per 512 px tile.
LOW_DETAIL_IMAGE_TOKENS = 85
FAULT_KINDS: tuple[str, ...] = ("rate_limit", "server_error", "timeout", "malformed")
_FAULT_ALIASES = {"429": "rate_limit", "rate_limit": "rate_limit", "500": "server_error",
                  "server_error": "server_error", "timeout": "timeout", "malformed": "malformed"}

__all__ = ["FAULT_KINDS", "FaultRates", "ToyJudgeServer", "main_serve", "count_tokens"]


@dataclass(frozen=True)
class FaultRates:
    """Per-request probabilities of each injected fault. They are exclusive (one draw per request picks at
    most one), so they must sum to at most 1; each kind then occurs at exactly its own rate."""

    rate_limit: float = 0.0  # HTTP 429 with Retry-After
    server_error: float = 0.0  # HTTP 500
    timeout: float = 0.0  # the connection is held for ``timeout_sleep`` seconds, then dropped unanswered
    malformed: float = 0.0  # HTTP 200 whose content is not valid JSON, or is out of range

    def __post_init__(self) -> None:
        for k in FAULT_KINDS:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"fault rate {k}={v!r} must be a number in [0, 1]")
        if sum(getattr(self, k) for k in FAULT_KINDS) > 1.0 + 1e-9:
            raise ValueError("fault rates must sum to at most 1 (one draw per request picks at most one fault)")

    @classmethod
    def of(cls, rates: "FaultRates | Mapping[str, float] | None") -> "FaultRates":
        """From a FaultRates, None, or a mapping with keys rate_limit/429, server_error/500, timeout, malformed."""
        if rates is None:
            return cls()
        if isinstance(rates, FaultRates):
            return rates
        kw: dict[str, float] = {}
        for k, v in dict(rates).items():
            name = _FAULT_ALIASES.get(str(k))
            if name is None:
                raise ValueError(f"unknown fault kind {k!r}; expected one of {', '.join(_FAULT_ALIASES)}")
            kw[name] = float(v)
        return cls(**kw)

    def draw(self, u: float) -> str | None:
        """The fault for a uniform draw ``u`` in [0, 1), or None."""
        edge = 0.0
        for k in FAULT_KINDS:
            edge += getattr(self, k)
            if u < edge:
                return k
        return None


def count_tokens(messages: list[dict], content: str) -> dict[str, int]:
    """A plausible ``usage`` block: about 4 characters per text token, 85 per low-detail image (OpenAI's
    fixed price), 255 per high-detail one (the toy images are a single 512 px tile)."""
    chars, images = 0, 0
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            chars += len(c)
        elif isinstance(c, list):
            for part in c:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    chars += len(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    detail = (part.get("image_url") or {}).get("detail", "auto")
                    images += LOW_DETAIL_IMAGE_TOKENS if detail == "low" else LOW_DETAIL_IMAGE_TOKENS + 170
        chars += 4  # role and message framing
    prompt = math.ceil(chars / 4) + images
    completion = max(1, math.ceil(len(content) / 4))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _BadRequest(Exception):
    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None,
                 status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.status = message, code, param, status


def _malformed(mode: str, variant: int) -> str:
    """An answer a real model sometimes gives: prose, an out-of-range value, or JSON cut off."""
    if variant == 0:
        return "I looked at both images carefully and the edit seems mostly fine to me."
    if variant == 1:
        return ('{"score": 7, "feedback": "The edit is better than perfect."}' if mode == "annotate"
                else '{"yes": "maybe", "score": 9.5, "reason": "Hard to say."}')
    return '{"score": 4, "feedb' if mode == "annotate" else '{"yes": true, "sco'


def _validate(body: Any) -> tuple[list[dict], int, str | None]:
    """(messages, n, model) of a chat request, or a 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.", "invalid_type")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _BadRequest("'messages' must be a non-empty array of message objects.", "invalid_type", "messages")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _BadRequest("'model' must be a string.", "invalid_type", "model")
    if body.get("stream"):
        raise _BadRequest("Streaming is not supported by the toy judge.", "unsupported_parameter", "stream")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
        raise _BadRequest("'n' must be an integer from 1 to 8.", "invalid_value", "n")
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            raise _BadRequest("'response_format.type' must be one of 'text', 'json_object', 'json_schema'.",
                              "invalid_value", "response_format")
        if rf["type"] == "json_schema" and not isinstance(rf.get("json_schema"), dict):
            raise _BadRequest("'response_format.json_schema' must be an object.", "invalid_value",
                              "response_format")
    return messages, n, model


def _identify(messages: list[dict]) -> tuple[str, str, str, list[bytes]]:
    try:
        return prompts.identify(messages)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        text = str(e)
        code = "invalid_image" if ("base64" in text or "data URL" in text or "Incorrect padding" in text
                                   or "Non-base64" in text) else "invalid_prompt"
        raise _BadRequest(f"The toy judge could not read this request: {text}", code, "messages") from None


def _judge(instruction: str, images: list[bytes], perspective: str, mode: str) -> dict:
    try:
        src = toy_judge.to_rgb_array(images[0])
        edited = toy_judge.to_rgb_array(images[1])
    except ValueError as e:
        raise _BadRequest(f"Invalid image: {e}", "invalid_image", "messages") from None
    return toy_judge.judge(instruction, src, edited, perspective, mode)


def _completion(model: str, content: str, messages: list[dict], n: int) -> dict:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_" + toy_judge.JUDGE_VERSION.replace("-", "_"),
        "choices": [{"index": i, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"} for i in range(n)],
        "usage": count_tokens(messages, content * n),
    }


def _answer(body: Any) -> tuple[list[dict], int, str | None, dict]:
    """(messages, n, model, answer) for a parsed chat request: the CPU work, run on the thread pool."""
    messages, n, model = _validate(body)
    perspective, mode, instruction, images = _identify(messages)
    return messages, n, model, _judge(instruction, images, perspective, mode)


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(obj, status=status, headers={"Server": "ToyJudge/1", **(headers or {})})


def _error(status: int, message: str, etype: str, code: str | None, param: str | None = None,
           headers: Mapping[str, str] | None = None) -> web.Response:
    return _json(status, {"error": {"message": message, "type": etype, "param": param, "code": code}}, headers)


def _path(request: web.BaseRequest) -> str:
    """The request path without query, trailing slash or ``/v1`` prefix."""
    p = request.rel_url.raw_path.rstrip("/")
    return p[3:] if p.startswith("/v1/") or p == "/v1" else p


class ToyJudgeServer:
    """The toy judge served over HTTP on a background thread; a context manager.

    ``with ToyJudgeServer() as srv:`` binds ``host`` (127.0.0.1) on ``port`` (0 = a free one), serves until
    the block ends, and then shuts down within about a second even with requests in flight (sleeping
    latency and timeout faults are cancelled, their connections dropped unanswered).
    ``srv.base_url`` is ``"http://127.0.0.1:PORT/v1"``.

    Parameters: ``model`` is the name ``/v1/models`` lists and answers carry when a request names none;
    ``latency`` seconds are added to every chat request; ``fault_rates`` (see :class:`FaultRates`) are drawn
    with ``random.Random(seed)``; ``timeout_sleep`` is how long a timeout fault holds its connection;
    ``retry_after`` the seconds a 429 asks the client to wait; ``log`` a callable receiving one line per
    request (method, path, status only) -- None keeps the server silent.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, model: str = client.TOY_JUDGE_MODEL,
                 latency: float = 0.0, fault_rates: FaultRates | Mapping[str, float] | None = None,
                 seed: int = 0, timeout_sleep: float = 30.0, retry_after: float = 1.0,
                 log: Callable[[str], None] | None = None) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        self.host, self._requested_port, self.model = host, int(port), model
        self.latency = self._nonneg("latency", latency)
        self.timeout_sleep = self._nonneg("timeout_sleep", timeout_sleep)
        self.retry_after = self._nonneg("retry_after", retry_after)
        self.fault_rates = FaultRates.of(fault_rates)
        self.seed = seed
        self._logger = log
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._faults: dict[str, int] = {}
        self._sock: socket.socket | None = None
        self._port: int | None = None  # kept after close: the URL of a stopped server refuses connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closed = threading.Event()
        self._created = int(time.time())
        self.reset_stats()

    @staticmethod
    def _nonneg(name: str, v: float) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or math.isinf(v):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        return float(v)

    # ---- life cycle ---------------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        if self._sock is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            # a burst of 32+ concurrent connects must not overflow the listen backlog
            self._sock = socket.create_server((self.host, self._requested_port), family=family, backlog=256)
            self._port = self._sock.getsockname()[1]
        return self._sock

    @property
    def port(self) -> int:
        if self._port is None:
            self._bind()
        return self._port  # type: ignore[return-value]

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return self.url + "/v1"

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{path:.*}", self._handle)
        # access_log=None: the one request log is self._log (method, path, status: never a header or a body)
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=120, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, backlog=256).start()

    @staticmethod
    async def _stop(runner: web.AppRunner) -> None:
        await runner.cleanup()  # closes the port, then cancels requests still running after the grace
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]  # e.g. a connection lingering
        for t in rest:  # over an unread body: cancel, and let the cancellations run before the loop stops
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def start(self) -> "ToyJudgeServer":
        """Serve on a background (daemon) thread; returns self."""
        sock = self._bind()
        if self._thread is None:
            self._closed.clear()
            self._loop = asyncio.new_event_loop()
            self._pool = ThreadPoolExecutor(thread_name_prefix=f"toy-judge-{self.port}")
            self._thread = threading.Thread(target=self._loop.run_forever, name=f"toy-judge-{self.port}",
                                            daemon=True)
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self._serve(sock), self._loop).result()
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`close` (from another thread) or Ctrl-C."""
        self.start()
        try:
            self._closed.wait()
        finally:
            self.close()

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving: close the port and idle connections, cancel requests in flight (their connections
        are dropped unanswered) after a short grace, stop the loop thread (bounded by ``timeout``)."""
        self._closed.set()
        loop, thread, runner, pool, sock = self._loop, self._thread, self._runner, self._pool, self._sock
        self._loop = self._thread = self._runner = self._pool = self._sock = None
        if loop is not None and thread is not None:
            if runner is not None:
                try:
                    asyncio.run_coroutine_threadsafe(self._stop(runner), loop).result(timeout)
                except Exception as e:  # a timeout: the loop is stopped below regardless
                    self._log(f"shutdown: {type(e).__name__}: {e}")
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if sock is not None:
            sock.close()  # already closed by the site, unless it was bound (for .port) and never served

    stop = close

    def __enter__(self) -> "ToyJudgeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- routes -------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._count("requests")
        path, method = _path(request), request.method
        if method == "POST" and path == "/chat/completions":
            resp = await self._chat(request)
        elif method == "GET" and path == "/models":
            resp = _json(200, {"object": "list", "data": [self._model_card()]})
        elif method == "GET" and path.startswith("/models/") and path[len("/models/"):] == self.model:
            resp = _json(200, self._model_card())
        elif method == "GET" and path in ("/health", "/healthz"):
            resp = _json(200, {"status": "ok"})
        else:
            resp = _error(404, f"Unknown request URL: {method} {path}.", "invalid_request_error", "unknown_url")
        if request.transport is not None:  # None: dropped unanswered (a timeout fault), so nothing to log
            self._log(f'{request.remote} "{method} {request.rel_url.raw_path}" {resp.status}')
        return resp

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._count("chat_requests")
        self._in_flight(+1)
        try:
            try:
                body = await self._read_json(request)
            except _BadRequest as e:
                self._count("bad_requests")
                return _error(e.status, e.message, "invalid_request_error", e.code, e.param)
            if self.latency > 0:
                await asyncio.sleep(self.latency)  # cancelled at once by close()
            fault = self._draw_fault()
            if fault is not None:
                self._count_fault(fault)
                return await self._inject(request, fault, body)
            try:
                messages, n, model, answer = await asyncio.get_running_loop().run_in_executor(
                    self._pool, _answer, body)
            except _BadRequest as e:
                self._count("bad_requests")
                return _error(e.status, e.message, "invalid_request_error", e.code, e.param)
            except Exception as e:  # a bug in the judge: say so, as a server error, without details of the input
                self._count("errors")
                self._log(f"judge error: {type(e).__name__}: {e}")
                return _error(500, "The toy judge failed on this request.", "server_error", None)
            self._count("answered")
            return _json(200, _completion(model or self.model, json.dumps(answer), messages, n))
        finally:
            self._in_flight(-1)

    async def _read_json(self, request: web.Request) -> Any:
        n = request.content_length
        if n is None:
            raise _BadRequest("A Content-Length header is required.", "missing_content_length", status=411)
        if n > MAX_BODY_BYTES:
            raise _BadRequest(f"The request body is larger than {MAX_BODY_BYTES} bytes.", "request_too_large",
                              status=413)
        raw = await request.read()
        try:
            if len(raw) <= INLINE_PARSE_BYTES:
                return json.loads(raw.decode("utf-8"))
            return await asyncio.get_running_loop().run_in_executor(self._pool, json.loads, raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _BadRequest("We could not parse the JSON body of your request. (HINT: This likely means you "
                              "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                              "invalid_json") from None

    async def _inject(self, request: web.Request, fault: str, body: Any) -> web.StreamResponse:
        if fault == "rate_limit":
            return _error(429, f"Rate limit reached for {self.model} (injected fault). Please try again in "
                               f"{self.retry_after:g}s.", "requests", "rate_limit_exceeded",
                          headers={"Retry-After": f"{self.retry_after:g}",
                                   "retry-after-ms": str(int(round(self.retry_after * 1000))),
                                   "x-ratelimit-reset-requests": f"{self.retry_after:g}s"})
        if fault == "server_error":
            return _error(500, "The server had an error while processing your request (injected fault).",
                          "server_error", None)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep)  # hold the connection (cancelled at once by close())
            request.protocol.force_close()  # then drop it: the response below is never sent
            return web.Response()
        messages = body.get("messages") if isinstance(body, dict) else None
        mode = "annotate"
        if isinstance(messages, list):
            system = next((m.get("content") for m in messages
                           if isinstance(m, dict) and m.get("role") == "system"), "")
            mode = "evaluate" if isinstance(system, str) and '"yes"' in system else "annotate"
        content = _malformed(mode, self._draw_index(3))
        model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
        return _json(200, _completion(model or self.model, content, messages if isinstance(messages, list) else [], 1))

    # ---- configuration and counters -----------------------------------------------------------------
    def configure(self, *, latency: float | None = None,
                  fault_rates: FaultRates | Mapping[str, float] | None = None, seed: int | None = None) -> None:
        """Change the injected latency / fault rates (and reseed) while serving."""
        with self._lock:
            if latency is not None:
                self.latency = self._nonneg("latency", latency)
            if fault_rates is not None:
                self.fault_rates = FaultRates.of(fault_rates)
            if seed is not None:
                self.seed = seed
                self._rng = random.Random(seed)

    def stats(self) -> dict:
        """A snapshot: ``requests`` (all HTTP requests), ``chat_requests``, ``answered`` (valid answers),
        ``bad_requests`` (4xx), ``errors`` (judge failures), ``in_flight``, and ``faults`` per kind."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["faults"] = dict(self._faults)
            out["faults_total"] = sum(self._faults.values())
            out["fault_rates"] = asdict(self.fault_rates)
            out["latency"] = self.latency
            return out

    def reset_stats(self) -> None:
        with self._lock:
            in_flight = self._counts.get("in_flight", 0)
            self._counts = {k: 0 for k in ("requests", "chat_requests", "answered", "bad_requests", "errors")}
            self._counts["in_flight"] = in_flight
            self._faults = {k: 0 for k in FAULT_KINDS}

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _count_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def _in_flight(self, delta: int) -> None:
        with self._lock:
            self._counts["in_flight"] += delta

    def _draw_fault(self) -> str | None:
        with self._lock:
            u = self._rng.random()
            return self.fault_rates.draw(u)

    def _draw_index(self, n: int) -> int:
        with self._lock:
            return self._rng.randrange(n)

    def _model_card(self) -> dict:
        return {"id": self.model, "object": "model", "created": self._created, "owned_by": "rewardedit-kit"}

    def _log(self, line: str) -> None:
        if self._logger is not None:
            try:
                self._logger(line)
            except Exception:  # a broken log sink must not break the server
                pass

    def __repr__(self) -> str:
        state = "serving" if self._thread is not None else "stopped"
        return f"ToyJudgeServer({self.host!r}, port={self._requested_port}, model={self.model!r}, {state})"


def main_serve(host: str = "127.0.0.1", port: int = 0, *, model: str = client.TOY_JUDGE_MODEL, latency: float = 0.0,
               fault_rates: FaultRates | Mapping[str, float] | None = None, seed: int = 0,
               timeout_sleep: float = 30.0, quiet: bool = False, stop_on_stdin_eof: bool = False) -> int:
    """Serve the toy judge in the foreground until Ctrl-C or SIGTERM (``rewardedit judge-server``); prints the
    base URL first. Returns the exit status (0).

    Request lines (method, path, status -- never headers or keys) go to stderr unless ``quiet``.
    ``stop_on_stdin_eof``: also stop when standard input closes. Why: a process that starts the server on a
    pipe (:func:`rewardedit_lib.toy.endpoint.judge_endpoint`) stops it by closing the pipe, and the operating
    system closes it when that process dies in any way (``kill -9``, a restarted notebook kernel), so no
    orphaned server is left holding a port.
    """
    log = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    srv = ToyJudgeServer(host, port, model=model, latency=latency, fault_rates=fault_rates, seed=seed,
                         timeout_sleep=timeout_sleep, log=log)
    print(f"Toy judge (model {model!r}) serving at {srv.base_url} -- Ctrl-C to stop", flush=True)
    print(f"  point the openai client at it: OpenAI(base_url={srv.base_url!r}, api_key='unused')", flush=True)
    previous = None
    handles_term = threading.current_thread() is threading.main_thread()
    if handles_term:  # `kill` stops it as cleanly as Ctrl-C

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
    if stop_on_stdin_eof:
        from ..parallel import when_stdin_closes

        # in the main thread the same clean stop as SIGTERM; elsewhere the server's own close
        when_stdin_closes((lambda: os.kill(os.getpid(), signal.SIGTERM)) if handles_term else srv.close)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        srv.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
