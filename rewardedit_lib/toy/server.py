"""The toy judge as an OpenAI-compatible HTTP server (standard library only).

Why a server and not a function call: the kit has exactly one judge client -- the official ``openai``
package -- so that the code annotating the toy world is the code that will annotate RewardEdit20K with
GPT-4o or a vLLM-served open model. The toy judge therefore has to *be* an OpenAI endpoint: it receives
the very requests GPT-4o would receive (:func:`..judge.prompts.build_messages`: the kit's prompt, the instruction,
two base64 PNG images), reads them with :func:`..judge.prompts.identify`, judges with
:func:`.judge.judge` and answers a ``chat.completion`` whose message content is the answer JSON.

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

import json
import math
import random
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from ..judge import client, prompts
from . import judge as toy_judge

MAX_BODY_BYTES = 32 * 1024 * 1024
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a concurrent client reuses its connections
    server_version = "ToyJudge/1"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    server: "_HTTPServer"

    # ---- plumbing -----------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        try:  # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms a request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        # Only the method, the path and the status ever reach the log: never a header, never a body.
        path = str(self.path).split("?", 1)[0]  # a query string is not logged either
        self.server.owner._log(f'{self.address_string()} "{self.command} {path}" ' + (format % args))

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        code = getattr(code, "value", code)
        self.server.owner._log(f'{self.address_string()} "{self.command} {self.path.split("?", 1)[0]}" {code}')

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        self.server.owner._log("error: " + (format % args))

    def _path(self) -> str:
        p = self.path.split("?", 1)[0].rstrip("/")
        return p[3:] if p.startswith("/v1/") or p == "/v1" else p

    def _send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(obj).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client went away (it timed out, or the server is stopping)
            self.close_connection = True

    def _error(self, status: int, message: str, etype: str, code: str | None, param: str | None = None,
               headers: Mapping[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": etype, "param": param, "code": code}},
                        headers)

    # ---- routes -------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server.owner
        owner._count("requests")
        path = self._path()
        if path == "/models":
            self._send_json(200, {"object": "list", "data": [owner._model_card()]})
        elif path.startswith("/models/") and path[len("/models/"):] == owner.model:
            self._send_json(200, owner._model_card())
        elif path in ("/health", "/healthz"):
            self._send_json(200, {"status": "ok"})
        else:
            self._error(404, f"Unknown request URL: GET {path}.", "invalid_request_error", "unknown_url")

    def do_POST(self) -> None:  # noqa: N802
        owner = self.server.owner
        owner._count("requests")
        path = self._path()
        if path != "/chat/completions":
            self._discard_body()
            self._error(404, f"Unknown request URL: POST {path}.", "invalid_request_error", "unknown_url")
            return
        owner._count("chat_requests")
        owner._in_flight(+1)
        try:
            self._chat(owner)
        finally:
            owner._in_flight(-1)

    def _discard_body(self) -> None:
        try:
            n = int(self.headers.get("Content-Length") or 0)
            if 0 < n <= MAX_BODY_BYTES:
                self.rfile.read(n)
            elif n:
                self.close_connection = True
        except (ValueError, OSError):
            self.close_connection = True

    def _read_json(self) -> Any:
        try:
            n = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            n = -1
        if n < 0:
            self.close_connection = True
            raise _BadRequest("A Content-Length header is required.", "missing_content_length", status=411)
        if n > MAX_BODY_BYTES:
            self.close_connection = True
            raise _BadRequest(f"The request body is larger than {MAX_BODY_BYTES} bytes.", "request_too_large",
                              status=413)
        raw = self.rfile.read(n)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _BadRequest("We could not parse the JSON body of your request. (HINT: This likely means you "
                              "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
                              "invalid_json") from None

    def _chat(self, owner: "ToyJudgeServer") -> None:
        try:
            body = self._read_json()
        except _BadRequest as e:
            owner._count("bad_requests")
            self._error(e.status, e.message, "invalid_request_error", e.code, e.param)
            return
        if owner.latency > 0 and owner._stopping.wait(owner.latency):
            self.close_connection = True
            return
        fault = owner._draw_fault()
        if fault is not None:
            owner._count_fault(fault)
            self._inject(owner, fault, body)
            return
        try:
            messages, n, model = _validate(body)
            perspective, mode, instruction, images = _identify(messages)
            answer = _judge(instruction, images, perspective, mode)
        except _BadRequest as e:
            owner._count("bad_requests")
            self._error(e.status, e.message, "invalid_request_error", e.code, e.param)
            return
        except Exception as e:  # a bug in the judge: say so, as a server error, without details of the input
            owner._count("errors")
            owner._log(f"judge error: {type(e).__name__}: {e}")
            self._error(500, "The toy judge failed on this request.", "server_error", None)
            return
        content = json.dumps(answer)
        owner._count("answered")
        self._send_json(200, _completion(model or owner.model, content, messages, n))

    def _inject(self, owner: "ToyJudgeServer", fault: str, body: Any) -> None:
        if fault == "rate_limit":
            self._error(429, f"Rate limit reached for {owner.model} (injected fault). Please try again in "
                             f"{owner.retry_after:g}s.", "requests", "rate_limit_exceeded",
                        headers={"Retry-After": f"{owner.retry_after:g}",
                                 "retry-after-ms": str(int(round(owner.retry_after * 1000))),
                                 "x-ratelimit-reset-requests": f"{owner.retry_after:g}s"})
        elif fault == "server_error":
            self._error(500, "The server had an error while processing your request (injected fault).",
                        "server_error", None)
        elif fault == "timeout":
            owner._stopping.wait(owner.timeout_sleep)  # hold the connection (returns at once on shutdown)
            self.close_connection = True  # then drop it without an answer
        else:
            messages = body.get("messages") if isinstance(body, dict) else None
            mode = "annotate"
            if isinstance(messages, list):
                system = next((m.get("content") for m in messages
                               if isinstance(m, dict) and m.get("role") == "system"), "")
                mode = "evaluate" if isinstance(system, str) and '"yes"' in system else "annotate"
            content = _malformed(mode, owner._draw_index(3))
            model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
            self._send_json(200, _completion(model or owner.model, content,
                                             messages if isinstance(messages, list) else [], 1))


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


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # the owner waits for in-flight requests itself, with a deadline
    allow_reuse_address = True
    request_queue_size = 256  # a burst of 32+ concurrent connects must not overflow the listen backlog
    owner: "ToyJudgeServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-request is normal under fault injection; anything else is logged
        # (type and message only: never the request).
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, OSError)):
            self.owner._log(f"handler error: {type(exc).__name__}: {exc}")


class ToyJudgeServer:
    """The toy judge served over HTTP on a background thread; a context manager.

    ``with ToyJudgeServer() as srv:`` binds ``host`` (127.0.0.1) on ``port`` (0 = a free one), serves until
    the block ends, and then shuts down within about a second even with requests in flight (sleeping
    latency and timeout faults wake up at once). ``srv.base_url`` is ``"http://127.0.0.1:PORT/v1"``.

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
        self._open: set = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._created = int(time.time())
        self.reset_stats()

    @staticmethod
    def _nonneg(name: str, v: float) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or math.isinf(v):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        return float(v)

    # ---- life cycle ---------------------------------------------------------------------------------
    def _bind(self) -> _HTTPServer:
        if self._httpd is None:
            httpd = _HTTPServer((self.host, self._requested_port), _Handler)
            httpd.owner = self
            self._httpd = httpd
        return self._httpd

    @property
    def port(self) -> int:
        return self._bind().server_address[1]

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return self.url + "/v1"

    def _loop(self, httpd: _HTTPServer) -> None:
        self._loop_thread = threading.current_thread()
        try:
            httpd.serve_forever(poll_interval=0.05)
        finally:
            self._loop_thread = None

    def start(self) -> "ToyJudgeServer":
        """Serve on a background (daemon) thread; returns self."""
        httpd = self._bind()
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, args=(httpd,), name=f"toy-judge-{self.port}",
                                            daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until :meth:`close` (from another thread) or Ctrl-C."""
        httpd = self._bind()
        self._stopping.clear()
        try:
            self._loop(httpd)
        finally:
            self.close()

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving: wake sleeping requests, drop open connections, wait (bounded) for handlers."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        loop = self._loop_thread
        if loop is not None and loop is not threading.current_thread():
            httpd.shutdown()  # returns once the serve loop has stopped (it polls every 50 ms)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            conns = list(self._open)
        for c in conns:  # wake handlers blocked reading an idle keep-alive connection
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._open and not self._counts["in_flight"]:
                    break
            time.sleep(0.01)
        httpd.server_close()
        self._httpd = None

    stop = close

    def __enter__(self) -> "ToyJudgeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

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

    def _track(self, conn: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._open.add(conn)
            else:
                self._open.discard(conn)

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
               timeout_sleep: float = 30.0, quiet: bool = False) -> int:
    """Serve the toy judge in the foreground until Ctrl-C or SIGTERM (``rewardedit judge-server``); prints the
    base URL first. Returns the exit status (0).

    Request lines (method, path, status -- never headers or keys) go to stderr unless ``quiet``.
    """
    log = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    srv = ToyJudgeServer(host, port, model=model, latency=latency, fault_rates=fault_rates, seed=seed,
                         timeout_sleep=timeout_sleep, log=log)
    print(f"Toy judge (model {model!r}) serving at {srv.base_url} -- Ctrl-C to stop", flush=True)
    print(f"  point the openai client at it: OpenAI(base_url={srv.base_url!r}, api_key='unused')", flush=True)
    previous = None
    if threading.current_thread() is threading.main_thread():  # `kill` stops it as cleanly as Ctrl-C

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        srv.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
