"""The judge client: one path to OpenAI, Azure OpenAI and any OpenAI-compatible server, robust at scale.

One client path
---------------
Every request goes through the official ``openai`` package's :class:`openai.AsyncOpenAI` (or
:class:`openai.AsyncAzureOpenAI` for Azure). The same code talks to GPT-4o, to an Azure deployment, to a vLLM
server and to the kit's toy judge; only ``base_url`` and ``model`` change. The openai client's own retries are
switched off (``max_retries=0``): the retry policy is this module's, so it is the same everywhere and tested.
Requests go through the client's ``post("/chat/completions", body=..., cast_to=object)``: the same auth,
routing (Azure deployments included) and error classes as ``chat.completions.create``, minus a per-request
walk of the typed parameters that cost more CPU than everything else here (see :meth:`JudgeClient._post_chat`).

Keys come from the environment only: ``OPENAI_API_KEY`` for api.openai.com, ``AZURE_OPENAI_API_KEY`` for Azure,
or a variable you *name* with ``api_key_env`` for another server. No function takes a key, so a notebook
parameter can never carry one into an executed notebook. Your OpenAI key is never sent to a third-party
``base_url`` unless you name its variable. Error texts are scrubbed of the key before anything is written.

At scale
--------
* bounded concurrency (an :class:`asyncio.Semaphore`); a request holds its slot until its answer is durable on
  disk, so at any instant at most ``concurrency`` requests are "paid for but not yet recorded";
* retries with exponential backoff and jitter on 429, 5xx, timeouts, connection errors and unreadable or
  invalid answers, honouring ``Retry-After`` / ``retry-after-ms``; a hard per-request timeout;
* structured output (``prompts.response_format``); a server that rejects it (HTTP 400 naming
  ``response_format`` / ``json_schema``) gets ``{"type": "json_object"}`` once, then nothing, and the fallback
  is remembered for the rest of the run; answers are parsed leniently and validated by :mod:`.prompts`;
* 401 / 403 / 404 stop the run's remaining requests at once (a wrong key or model would fail them all);
* a progress bar, token accounting from ``usage`` and cost from :data:`PRICES` (an unknown model's cost is
  reported as unknown, never as 0), and an estimate before a run (:func:`estimate_cost`).

Never pay twice, never lose work: the cache
-------------------------------------------
:func:`judge_many` looks every request up in an :class:`.cache.AnswerCache` (``<cache_dir>/answers.sqlite``,
keyed by :func:`.request.request_key`) and sends only the missing ones; each new answer is committed there
before its request releases its concurrency slot, so a kill at any instant loses at most the answers in
flight, and resuming is running the same call again. A request that fails after all retries is *not* an
answer, so it is not cached; the caller records it (``annotate`` writes it to the run's journal and failures
file) and the next run asks again. Why sqlite, and how caches of earlier versions (``answers.jsonl``) are read:
:mod:`.cache`.

The parts that do not talk to a server live in their own modules and are importable from here as before:
:mod:`.request` (requests and their cache keys), :mod:`.pricing` (prices, estimates, usage), :mod:`.journal`
(append-only JSON lines, durable appends) and :mod:`.cache`.

:func:`judge_many` is the generic entry point (``mode="annotate"`` for training data, ``"evaluate"`` for
Real-Edit); :mod:`.annotate` builds the RewardEdit_20K annotation run on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

from . import prompts
from .cache import AnswerCache
from .journal import JsonlLog, read_jsonl
from .pricing import (
    DEFAULT_IMAGE_TOKENS,
    OUTPUT_TOKENS_ESTIMATE,
    PRICES,
    PRICES_AS_OF,
    CostEstimate,
    ModelPrice,
    Usage,
    estimate_cost,
    estimate_request_tokens,
    price_for,
)
from .prompts import Annotation, AnswerError, Verdict
from .request import (
    TOY_JUDGE_MODEL,
    ImageLike,
    JudgeRequest,
    JudgeResult,
    _image_bytes,  # noqa: F401 - paper_protocol imports it from here
    request_key,
    sha256_hex,
)

__all__ = [  # what this module offers, its own and re-exported from the modules it was split into
    "AnswerCache", "ClientStats", "CostEstimate", "DEFAULT_IMAGE_TOKENS", "ImageLike", "JsonlLog", "JudgeClient",
    "JudgeConfigError", "JudgeRequest", "JudgeResult", "ModelPrice", "OUTPUT_TOKENS_ESTIMATE", "PRICES",
    "PRICES_AS_OF", "RESPONSE_FORMATS", "TOY_JUDGE_MODEL", "Usage", "estimate_cost", "estimate_request_tokens",
    "judge_many", "price_for", "read_jsonl", "redact_url", "request_key", "run_sync", "sha256_hex",
]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------
class JudgeConfigError(ValueError):
    """The judge cannot be reached as configured (missing key, missing model name, bad endpoint)."""


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


class _Final(Exception):
    def __init__(self, kind: str, message: str, fatal: bool = False):
        super().__init__(message)
        self.kind, self.message, self.fatal = kind, message, fatal


def redact_url(url: str | None) -> str | None:
    """A URL without user info or query string (either may carry a credential), fit for logs."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<unparseable url>"


def _is_openai_host(base_url: str | None) -> bool:
    if base_url is None:
        return True
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".api.openai.com")


def _retry_after_seconds(headers: Any) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP date), if present and sane."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            v = float(ms) / 1000.0
            if v >= 0:
                return v
    except (TypeError, ValueError):
        pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        v = float(ra)
        return v if v >= 0 else None
    except (TypeError, ValueError):
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(ra)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _status_message(e: Any) -> str:
    body = getattr(e, "body", None)
    msg = None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else (err if isinstance(err, str) else None)
    if not msg:
        msg = getattr(e, "message", None) or str(e)
    msg = " ".join(str(msg).split())
    return msg[:300]


def _deadline(seconds: float) -> Any:
    """A hard wall-clock limit for the block: ``asyncio.timeout`` (3.11+; no extra task per request)."""
    if hasattr(asyncio, "timeout"):
        return asyncio.timeout(seconds)
    return _WaitForDeadline(seconds)


class _WaitForDeadline:
    """Python 3.10: cancel the current task after ``seconds`` and raise TimeoutError."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        self._fired = False

        def fire() -> None:
            self._fired = True
            task.cancel()  # type: ignore[union-attr]

        self._handle = asyncio.get_running_loop().call_later(self.seconds, fire)

    async def __aexit__(self, et: Any, e: Any, tb: Any) -> bool:
        self._handle.cancel()
        if self._fired and et is asyncio.CancelledError:
            raise TimeoutError
        return False


#: The response_format ladder: a strict JSON schema, then plain JSON mode, then nothing (parse leniently).
RESPONSE_FORMATS: tuple[str, ...] = ("json_schema", "json_object", "none")
_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|structured output|guided", re.IGNORECASE)


@dataclass
class ClientStats:
    """What the client did in this run (all attempts, not only the successful ones)."""

    requests_sent: int = 0  # HTTP calls made
    answers: int = 0  # valid answers received
    retries: int = 0  # attempts after a retryable failure
    failed: int = 0  # requests given up on
    errors: Counter = field(default_factory=Counter)  # by kind: 429, 5xx, timeout, connection, malformed, ...
    usage: Usage = field(default_factory=Usage)
    fallbacks: list[str] = field(default_factory=list)  # request parameters dropped because the server refused them


def _http_client() -> Any:
    """The transport under the openai client: aiohttp where installed (``openai[aiohttp]``), else httpx.

    Why: at high concurrency httpx's connection pool checks every pooled connection on every request; on a
    small machine that CPU, not the judge's latency, bounds throughput (benchmarks/annotate_throughput.py).
    """
    import openai

    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return None
    transport = getattr(openai, "DefaultAioHttpClient", None)  # openai releases before the aiohttp transport
    return transport() if transport is not None else None


class JudgeClient:
    """The judge behind one endpoint: an ``AsyncOpenAI`` (or ``AsyncAzureOpenAI``) client plus the kit's policy.

    * ``base_url=None``: api.openai.com, key from ``OPENAI_API_KEY``.
    * ``base_url=URL``: any OpenAI-compatible server (vLLM, the toy judge). No key is sent unless you name the
      variable that holds one with ``api_key_env`` (your OpenAI key never goes to a third party by accident).
    * ``azure_api_version="2024-10-21"`` (with ``base_url`` = the Azure endpoint, ``model`` = the deployment):
      Azure OpenAI, key from ``AZURE_OPENAI_API_KEY``.

    ``max_retries`` is the number of retries after the first try (``max_retries=5``: at most 6 HTTP calls per
    request). ``timeout`` is a hard wall-clock limit per HTTP call. ``price_model`` names the price-table entry
    when the model name is not one (an Azure deployment).
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str | None = None,
                 azure_api_version: str | None = None, concurrency: int = 16, max_retries: int = 5,
                 timeout: float = 60.0, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 max_retry_after: float = 120.0, response_format: str = "json_schema", detail: str = "low",
                 max_tokens: int = 300, temperature: float | None = 0.0, prices: Mapping[str, ModelPrice] | None = None,
                 price_model: str | None = None, seed: int | None = None, model_version: str | None = None):
        if not model:
            raise JudgeConfigError("the judge needs a model name (e.g. model='gpt-4o'; for Azure, the deployment name)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}")
        self.model = model
        #: the judge as the answer cache knows it: ``model``, plus ``/model_version`` where the caller knows a
        #: version the name does not pin (the kit's toy judge: :func:`rewardedit_lib.toy.endpoint.client_options`)
        self.model_version = model_version
        self.cache_model = f"{model}/{model_version}" if model_version else model
        self.base_url = base_url
        self.azure = azure_api_version is not None
        self.azure_api_version = azure_api_version
        if not self.azure and base_url and (urlsplit(base_url).hostname or "").endswith(".openai.azure.com"):
            raise JudgeConfigError(f"{redact_url(base_url)} is an Azure OpenAI endpoint: pass azure_api_version "
                                   f"(e.g. '2024-10-21') and the deployment name as the model")
        if self.azure and not base_url:
            raise JudgeConfigError("Azure OpenAI needs base_url = your endpoint (https://<resource>.openai.azure.com/)")
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, float(timeout)
        self.backoff_base, self.backoff_max, self.max_retry_after = backoff_base, backoff_max, max_retry_after
        self.detail, self.max_tokens, self.temperature = detail, max_tokens, temperature
        self.prices, self.price_model = prices, price_model
        self.stats = ClientStats()
        self._format_level = RESPONSE_FORMATS.index(response_format)
        self._tokens_param = "max_tokens"
        self._fatal: str | None = None
        self._rng = random.Random(seed)
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: Any = None
        self._secret, self.api_key_env = self._resolve_key(api_key_env)
        self._client: Any = None

    # -- configuration ----------------------------------------------------------------------------
    def _resolve_key(self, api_key_env: str | None) -> tuple[str, str | None]:
        if self.azure:
            env = api_key_env or "AZURE_OPENAI_API_KEY"
        elif _is_openai_host(self.base_url):
            env = api_key_env or "OPENAI_API_KEY"
        elif api_key_env:
            env = api_key_env
        else:
            return "no-key-needed", None  # a local / self-hosted server: send a dummy, never a real key
        value = os.environ.get(env, "").strip()
        if not value:
            where = "Azure OpenAI" if self.azure else ("OpenAI" if _is_openai_host(self.base_url)
                                                       else redact_url(self.base_url))
            raise JudgeConfigError(f"{where} needs an API key in the environment variable {env}; set it in your "
                                   f"shell or secret manager (keys are never passed as arguments)")
        return value, env

    @property
    def price(self) -> ModelPrice | None:
        return price_for(self.price_model or self.model, self.prices)

    @property
    def response_format_in_use(self) -> str:
        return RESPONSE_FORMATS[self._format_level]

    @property
    def endpoint(self) -> str:
        """Where requests go, safe to print or log."""
        if self.base_url is None:
            return "https://api.openai.com/v1"
        return redact_url(self.base_url) or ""

    def redact(self, text: str) -> str:
        """``text`` with the API key (and any long substring of it) replaced: for anything written or printed."""
        s = self._secret
        if not text or not s or s == "no-key-needed":
            return text
        text = text.replace(s, "[REDACTED]")
        if len(s) >= 16:  # servers often echo a prefix/suffix of a wrong key ("sk-abc...xyz")
            for part in (s[:12], s[-8:]):
                text = text.replace(part, "[REDACTED]")
        return text

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            common = dict(max_retries=0, timeout=self.timeout + 5.0, http_client=_http_client())
            if self.azure:
                self._client = openai.AsyncAzureOpenAI(azure_endpoint=self.base_url, api_version=self.azure_api_version,
                                                       api_key=self._secret, **common)
            else:
                self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._secret, **common)
        return self._client

    def __repr__(self) -> str:  # never the key
        return (f"JudgeClient(model={self.model!r}, endpoint={self.endpoint!r}, azure={self.azure}, "
                f"concurrency={self.concurrency}, max_retries={self.max_retries}, timeout={self.timeout:g})")

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def __aenter__(self) -> "JudgeClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
            self._client = None  # an httpx client is bound to the loop it was used in
        return self._sem

    # -- one request ------------------------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        delay *= self._rng.uniform(0.5, 1.0)  # jitter: retries of a burst spread out instead of colliding again
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    async def _call(self, messages: list[dict], mode: str) -> tuple[str, Any, int]:
        """One HTTP call. Returns (answer text, usage, format level used); raises _Retryable / _Final."""
        import openai

        level, tokens_param, temperature = self._format_level, self._tokens_param, self.temperature
        body: dict[str, Any] = {"model": self.model, "messages": messages, tokens_param: self.max_tokens}
        if temperature is not None:
            body["temperature"] = temperature
        if level == 0:
            body["response_format"] = prompts.response_format(mode)  # type: ignore[arg-type]
        elif level == 1:
            body["response_format"] = {"type": "json_object"}
        self.stats.requests_sent += 1
        started = time.monotonic()
        try:
            async with _deadline(self.timeout):
                resp = await self._post_chat(body)
        except (asyncio.TimeoutError, TimeoutError):
            raise _Retryable("timeout", f"timed out after {self.timeout:g} s") from None
        except openai.APITimeoutError as e:
            if time.monotonic() - started < 0.9 * self.timeout:
                # the aiohttp transport reports a refused or broken connection as a timeout, at once
                raise _Retryable("connection", f"connection error: {_status_message(e)}") from None
            raise _Retryable("timeout", f"timed out after {self.timeout:g} s") from None
        except openai.APIConnectionError as e:
            raise _Retryable("connection", f"connection error: {_status_message(e)}") from None
        except openai.APIStatusError as e:
            status, msg = e.status_code, _status_message(e)
            if status == 400 and self._downgrade(msg, level, tokens_param, temperature):
                raise _Retryable("parameter", f"HTTP 400: {msg}", retry_after=0.0) from None
            if status == 429:
                raise _Retryable("429", f"HTTP 429: {msg}", _retry_after_seconds(e.response.headers)) from None
            if status >= 500 or status in (408, 409):
                kind = "5xx" if status >= 500 else str(status)
                raise _Retryable(kind, f"HTTP {status}: {msg}", _retry_after_seconds(e.response.headers)) from None
            raise _Final(str(status), f"HTTP {status}: {msg}", fatal=status in (401, 403, 404)) from None
        except openai.OpenAIError as e:
            raise _Retryable("malformed", f"unreadable response: {type(e).__name__}: {e}") from None
        except (ValueError, TypeError, AttributeError, KeyError) as e:  # e.g. a body that is not JSON
            raise _Retryable("malformed", f"unreadable response: {type(e).__name__}: {str(e)[:200]}") from None
        try:
            message = resp["choices"][0]["message"]
            text = message.get("content")
        except (AttributeError, IndexError, TypeError, KeyError):
            self.stats.usage.add(None)
            raise _Retryable("malformed", f"unreadable response: not a chat completion ({str(resp)[:120]!r})") from None
        usage = resp.get("usage")
        self.stats.usage.add(usage)
        if not isinstance(text, str) or not text.strip():
            refusal = message.get("refusal") if isinstance(message, dict) else None
            raise _Retryable("invalid answer", f"empty answer{f' (refusal: {refusal})' if refusal else ''}")
        return text, usage, level

    async def _post_chat(self, body: dict) -> Any:
        """``POST /chat/completions`` through the openai client; the body goes as plain JSON, the answer comes
        back as the decoded JSON.

        The same client, auth, Azure deployment routing and error classes as
        ``client.chat.completions.create(**body)``, without the SDK's per-request walk of the typed parameters
        and construction of the response model (measured: ~4 ms of CPU per request with two images, which on
        a 2-core machine, not the network, capped throughput). The body is plain JSON already, and the kit
        reads three fields of the answer, so neither step had anything to do.
        """
        return await self._openai().post("/chat/completions", body=body, cast_to=object,
                                         options={"timeout": self.timeout + 5.0})

    def _downgrade(self, msg: str, level: int, tokens_param: str, temperature: float | None) -> bool:
        """Adapt to a server that refused a request parameter; True if there is something left to try.

        ``level`` / ``tokens_param`` / ``temperature``: what the refused request was sent with (several
        requests in flight may report the same refusal; the first one adapts, all of them retry)."""
        low = msg.lower()
        if _FORMAT_WORDS.search(msg) and level < len(RESPONSE_FORMATS) - 1:
            if self._format_level == level:  # several requests in flight may report the same refusal
                self._format_level = level + 1
                self.stats.fallbacks.append(f"response_format {RESPONSE_FORMATS[level]} -> "
                                            f"{RESPONSE_FORMATS[level + 1]}")
            return True
        if "max_tokens" in low and "max_completion_tokens" in low and tokens_param == "max_tokens":
            if self._tokens_param == "max_tokens":
                self._tokens_param = "max_completion_tokens"
                self.stats.fallbacks.append("max_tokens -> max_completion_tokens")
            return True
        if "temperature" in low and temperature is not None:
            if self.temperature is not None:
                self.temperature = None
                self.stats.fallbacks.append("temperature dropped")
            return True
        return False

    async def judge(self, request: JudgeRequest, *, key: str | None = None,
                    on_answer: Callable[[JudgeResult, Any], Awaitable[None]] | None = None) -> JudgeResult:
        """Ask the judge one question, with the retry policy; never raises for a failed request.

        ``on_answer(result, usage)`` runs inside the request's concurrency slot once it has a valid answer
        (``judge_many`` makes the answer durable there), so a kill can lose at most ``concurrency`` answers.
        """
        key = key or request.key(self.cache_model, self.detail)
        result = JudgeResult(request, key)
        sem = self._semaphore()
        messages: list[dict] | None = None
        last = ""
        free_retries = 4  # parameter fallbacks (response_format x2, max_tokens, temperature) cost no attempt
        while True:
            if self._fatal:
                result.error = self.redact(f"not sent: an earlier request failed with {self._fatal}")
                break
            delay: float | None = None
            async with sem:
                if self._fatal:
                    continue
                if messages is None:
                    try:
                        if request.cheap_to_encode():
                            messages = request.messages(self.detail)
                        else:  # decoding / re-encoding a large image must not stall the event loop
                            messages = await asyncio.to_thread(request.messages, self.detail)
                    except Exception as e:  # noqa: BLE001 - recorded, not raised
                        result.error = self.redact(f"could not read the images: {type(e).__name__}: {e}")
                        break
                result.attempts += 1
                try:
                    text, usage, _ = await self._call(messages, request.mode)
                    try:
                        answer = request.parse(text)
                    except AnswerError as e:
                        raise _Retryable("invalid answer", f"invalid answer: {e}") from None
                except _Retryable as e:
                    self.stats.errors[e.kind] += 1
                    last = e.message
                    if e.kind == "parameter" and free_retries > 0:
                        free_retries -= 1
                        result.attempts -= 1
                        continue
                    if result.attempts > self.max_retries:
                        n = result.attempts
                        result.error = self.redact(f"failed after {n} {'try' if n == 1 else 'tries'}: {last}")
                        break
                    delay = self._backoff(result.attempts, e.retry_after)
                except _Final as e:
                    self.stats.errors[e.kind] += 1
                    if e.fatal and not self._fatal:
                        self._fatal = self.redact(e.message)
                    result.error = self.redact(f"{e.message} (not retried)")
                    break
                except Exception as e:  # noqa: BLE001 - one odd failure must not end a 20K run
                    self.stats.errors["unexpected"] += 1
                    result.error = self.redact(f"unexpected error: {type(e).__name__}: {e}")
                    break
                else:
                    result.answer, result.text = answer, text
                    self.stats.answers += 1
                    if on_answer is not None:
                        await on_answer(result, usage)
                    return result
            if delay is not None:
                self.stats.retries += 1
                await asyncio.sleep(delay)
        self.stats.failed += 1
        return result


# --------------------------------------------------------------------------------------------------
# Many requests
# --------------------------------------------------------------------------------------------------
def _cache_record(client: JudgeClient, result: JudgeResult, usage: Any, run_id: str | None) -> dict:
    req = result.request
    src, edt = req.hashes()
    ans = result.answer
    if isinstance(ans, Annotation):
        answer = {"score": ans.score, "feedback": ans.feedback}
    else:
        assert isinstance(ans, Verdict)
        answer = {"yes": ans.yes, "score": ans.score, "reason": ans.reason}
    u = None
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        u = {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage.get("completion_tokens")}
    return {
        "key": result.key, "model": client.model, "protocol": req.protocol, "prompt_version": req.prompt_version,
        "perspective": req.perspective, "mode": req.mode, "detail": client.detail, "instruction": req.instruction,
        "source_sha256": src, "edited_sha256": edt, "id": req.id, "answer": answer,
        "text": client.redact(result.text or ""), "usage": u, "attempts": result.attempts,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run": run_id,
    }


def _progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="req", disable=not enabled, dynamic_ncols=True,
                leave=True)


async def judge_many(requests: Sequence[JudgeRequest], client: JudgeClient, *, cache: AnswerCache | None = None,
                     progress: bool = True, desc: str = "judging", run_id: str | None = None,
                     on_result: Callable[[JudgeResult], Any] | None = None) -> list[JudgeResult]:
    """Judge every request (cache first), ``client.concurrency`` at a time; results in the order of ``requests``.

    * With a ``cache``, answered requests are not sent, and each new answer is durable on disk before its
      request releases its concurrency slot. Requests with equal keys are sent once.
    * Never raises for a failed request: its :class:`JudgeResult` carries ``error`` (retry later: failures
      are never cached). ``on_result`` (sync or async) sees every result as it completes, cached ones too.
    * Image hashing runs in a worker thread, and so does the encoding of large or non-PNG images, so the
      event loop keeps the network busy.
    """
    requests = list(requests)
    keys = await asyncio.to_thread(lambda: [r.key(client.cache_model, client.detail) for r in requests])
    results: list[JudgeResult | None] = [None] * len(requests)
    todo: dict[str, list[int]] = {}
    for i, (req, key) in enumerate(zip(requests, keys)):
        found = cache.lookup(key) if cache is not None else None
        if found is not None:
            results[i] = JudgeResult(req, key, answer=found[0], text=found[1].get("text"), from_cache=True)
        else:
            todo.setdefault(key, []).append(i)
    n_cached = len(requests) - sum(len(v) for v in todo.values())

    async def notify(res: JudgeResult) -> None:
        if on_result is not None:
            out = on_result(res)
            if inspect.isawaitable(out):
                await out

    for res in results:
        if res is not None:
            await notify(res)

    bar = _progress_bar(len(requests), n_cached, desc, progress)
    failed = 0

    async def record(res: JudgeResult, usage: Any) -> None:
        if cache is not None:
            await cache.put(_cache_record(client, res, usage, run_id))

    async def one(key: str, idxs: list[int]) -> None:
        nonlocal failed
        res = await client.judge(requests[idxs[0]], key=key, on_answer=record)
        for j, i in enumerate(idxs):
            r = res if j == 0 else JudgeResult(requests[i], key, res.answer, res.text, res.error, 0, res.from_cache)
            results[i] = r
            await notify(r)
        if not res.ok:
            failed += len(idxs)
            bar.set_postfix(failed=failed, refresh=False)
        bar.update(len(idxs))

    tasks: list[asyncio.Future] = []
    try:
        tasks = [asyncio.ensure_future(one(k, v)) for k, v in todo.items()]
        if tasks:
            await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    finally:
        bar.close()
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------------------------------
# Running async code from sync code (scripts, CLI, notebooks)
# --------------------------------------------------------------------------------------------------
def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, also inside Jupyter (whose event loop is already running:
    there the coroutine runs on a fresh loop in a worker thread, and interrupting the cell cancels it, so no
    request is sent after the interrupt; what was answered is in the cache)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    async def main() -> T:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        return await coro

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        fut = ex.submit(asyncio.run, main())
        try:
            return fut.result()
        except KeyboardInterrupt:
            if "task" in box:
                box["loop"].call_soon_threadsafe(box["task"].cancel)
            raise
