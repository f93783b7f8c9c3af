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
The cache *is* an append-only JSON-lines journal of answers, ``<cache_dir>/answers.jsonl``: one line per valid
answer, keyed by :func:`request_key` = sha256 of (model, prompt version, perspective, mode, image detail,
sha256 of both images' bytes, instruction). Why this design and not sqlite or one file per answer:

* an append of one line is the only write; nothing is ever rewritten, so no write can destroy an earlier
  answer. Each batch of lines is written, flushed and ``fsync``-ed before the requests it answers release
  their slot (group commit: one fsync serves every answer that arrived meanwhile);
* a kill at any instant leaves at worst a torn last line; readers skip any line that is not a complete JSON
  record, and the next writer first ends the torn line with a newline, so it can never glue onto a new record;
* loading 60K lines (a full RewardEdit20K run) takes a second or two; the file is greppable and diffable; there are no
  locks, WAL files or schema migrations. Two runs appending to one cache at once (``O_APPEND``, one write
  per batch) at worst ask a question twice; the first answer for a key wins on read.

Resuming is then nothing special: a run looks every request up in the cache and sends only the missing
ones. A request that fails after all retries is *not* an answer, so it is not cached; the caller records it
(``annotate`` writes it to the run's journal and failures file) and the next run asks again.

:func:`judge_many` is the generic entry point (``mode="annotate"`` for training data, ``"evaluate"`` for
Real-Edit); :mod:`.annotate` builds the RewardEdit_20K annotation run on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import inspect
import io
import json
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar, Union
from urllib.parse import urlsplit, urlunsplit

from ..formats import MAX_SCORE
from . import prompts
from .prompts import Annotation, AnswerError, Verdict

T = TypeVar("T")
#: The model name the kit's toy judge answers to (its server's default).
TOY_JUDGE_MODEL = "toy-judge"

# --------------------------------------------------------------------------------------------------
# Prices and estimates
# --------------------------------------------------------------------------------------------------
#: When :data:`PRICES` was last checked against the providers' price pages. Pass ``prices=`` to override.
PRICES_AS_OF = "2025-06"


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens, and the tokens one low-detail image is billed as (for estimates only)."""

    input_per_mtok: float
    output_per_mtok: float
    image_tokens_low: int = 85

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


#: Standard (non-batch) prices. gpt-4o-mini bills a low-detail image as 2833 tokens at its lower rate,
#: so it is not 16x cheaper than gpt-4o for image judgements. Dated snapshots (``gpt-4o-2024-08-06``) use
#: their base model's price. Azure deployments have their own names: pass ``price_model=``.
PRICES: dict[str, ModelPrice] = {
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, image_tokens_low=2833),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "toy-judge": ModelPrice(0.0, 0.0, image_tokens_low=85),
}
#: Output tokens of one answer (a score and one sentence), for estimates.
OUTPUT_TOKENS_ESTIMATE = 40
#: Tokens per image when the model's price entry is unknown (OpenAI's fixed low-detail cost).
DEFAULT_IMAGE_TOKENS = 85


def price_for(model: str, prices: Mapping[str, ModelPrice] | None = None) -> ModelPrice | None:
    """The price entry of ``model`` (or of its base name without a ``-YYYY-MM-DD`` suffix); None if unknown."""
    table = PRICES if prices is None else prices
    if model in table:
        return table[model]
    return table.get(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model))


def estimate_request_tokens(perspective: str, mode: str, instruction: str,
                            price: ModelPrice | None = None) -> tuple[int, int]:
    """(input, output) tokens of one request: prompt text / 4 + two low-detail images, ~40 output tokens."""
    text = prompts.system_prompt(perspective, mode) + prompts.user_text(instruction)  # type: ignore[arg-type]
    image = price.image_tokens_low if price is not None else DEFAULT_IMAGE_TOKENS
    return len(text) // 4 + 2 * image, OUTPUT_TOKENS_ESTIMATE


@dataclass
class CostEstimate:
    """What a run will cost before it starts (requests to send x estimated tokens)."""

    model: str
    requests: int
    cached: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price entry

    def scaled(self, requests: int) -> "CostEstimate":
        """The same per-request estimate for ``requests`` requests (e.g. from a sample to all of RewardEdit20K)."""
        f = requests / self.requests if self.requests else 0.0
        cost = None if self.cost_usd is None else self.cost_usd * f
        return CostEstimate(self.model, requests, 0, round(self.input_tokens * f), round(self.output_tokens * f), cost)

    def __str__(self) -> str:
        head = (f"estimate: {self.requests} request(s) to send to {self.model!r} ({self.cached} answered from cache), "
                f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens")
        if self.cost_usd is None:
            return head + f"; cost UNKNOWN: no price for model {self.model!r} in the price table (pass price_model=)"
        return head + f", ~${self.cost_usd:,.4f} at {PRICES_AS_OF} list prices"


def estimate_cost(requests: Iterable["JudgeRequest"], model: str, *, cached: int = 0,
                  prices: Mapping[str, ModelPrice] | None = None, price_model: str | None = None) -> CostEstimate:
    """Estimate the tokens and cost of sending ``requests`` to ``model`` (cache hits excluded by the caller)."""
    price = price_for(price_model or model, prices)
    n = tin = tout = 0
    for r in requests:
        i, o = estimate_request_tokens(r.perspective, r.mode, r.instruction, price)
        n, tin, tout = n + 1, tin + i, tout + o
    cost = price.cost(tin, tout) if price is not None else None
    return CostEstimate(model, n, cached, tin, tout, cost)


@dataclass
class Usage:
    """Tokens actually billed, summed from the responses' ``usage`` (invalid answers are billed too)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    responses: int = 0
    without_usage: int = 0  # responses that carried no usage (their tokens are unknown)

    def add(self, usage: Any) -> None:
        self.responses += 1
        get = usage.get if isinstance(usage, dict) else (lambda k: getattr(usage, k, None))
        pt, ct = (get("prompt_tokens"), get("completion_tokens")) if usage is not None else (None, None)
        if not isinstance(pt, int) or not isinstance(ct, int):
            self.without_usage += 1
            return
        self.prompt_tokens += pt
        self.completion_tokens += ct

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --------------------------------------------------------------------------------------------------
# Requests and their keys
# --------------------------------------------------------------------------------------------------
ImageLike = Union[str, os.PathLike, bytes, Any]  # a path, image-file bytes, or a PIL image
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image_bytes(image: ImageLike) -> bytes:
    """The bytes whose hash identifies an image: the file's bytes, given bytes, or a PIL image's PNG encoding."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _png_for_request(data: bytes) -> bytes:
    """PNG bytes to send: PNG files travel as they are, anything else (JPEG, WebP) is re-encoded as PNG."""
    if data.startswith(_PNG_MAGIC):
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request_key(model: str, perspective: str, mode: str, instruction: str, source_sha256: str,
                edited_sha256: str, *, detail: str = "low", prompt_version: str | None = None,
                protocol: str = "kit") -> str:
    """The cache key of one judgement: any change to what is asked, or to whom, asks again.

    For the kit's toy judge "whom" includes its version: a judgement cached by an older toy judge is not
    reused after the judge changed (a hosted model's name is all the kit can know of it).

    ``protocol``: whose questions these are -- ``"kit"`` (:mod:`.prompts`) or ``"paper"`` (the reference's
    released evaluation, :mod:`.paper_protocol`). A non-kit protocol is a field of the hashed payload, so a
    paper verdict can never be read as a kit verdict or the other way round; the kit's payload is left as it
    was before protocols existed, so caches written then stay valid.
    """
    if model == TOY_JUDGE_MODEL:  # imported here: the toy judge (numpy, the toy world) is no cost to other judges
        from .toy_judge import JUDGE_VERSION

        model = f"{model}/{JUDGE_VERSION}"
    payload = {
        "model": model,
        "prompt_version": prompts.PROMPT_VERSION if prompt_version is None else prompt_version,
        "perspective": perspective,
        "mode": mode,
        "detail": detail,
        "source": source_sha256,
        "edited": edited_sha256,
        "instruction": instruction,
    }
    if protocol != "kit":
        payload["protocol"] = protocol
    return sha256_hex(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8"))


@dataclass
class JudgeRequest:
    """One judgement to make: a perspective and mode, an instruction, the source and edited images.

    ``id`` is the caller's name for the item (a folder, a benchmark edit); it is not part of the cache key.
    Images may be paths (read when needed, so 20K requests cost no memory), bytes or PIL images. The hashes
    may be given when the caller already has them (the three perspectives of one triplet share them).
    """

    perspective: str
    mode: str
    instruction: str
    source: ImageLike
    edited: ImageLike
    id: str = ""
    source_sha256: str | None = None
    edited_sha256: str | None = None

    #: Whose questions: the kit's (:mod:`.prompts`). A subclass asks another protocol's questions by
    #: overriding :meth:`key`, :meth:`messages` and :meth:`parse` (:class:`.paper_protocol.PaperRequest`).
    protocol: ClassVar[str] = "kit"

    @property
    def prompt_version(self) -> str:
        """The version of the questions asked, as recorded in the cache (part of :meth:`key`)."""
        return prompts.PROMPT_VERSION

    def parse(self, text: str) -> Annotation | Verdict:
        """The validated answer in the judge's ``text``; raises :class:`.prompts.AnswerError` (then retried)."""
        return prompts.parse_answer(text, self.mode)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.mode not in prompts.MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(prompts.MODES)}")
        prompts.system_prompt(self.perspective, self.mode)  # type: ignore[arg-type]  # validates perspective

    def hashes(self) -> tuple[str, str]:
        if self.source_sha256 is None:
            self.source_sha256 = sha256_hex(_image_bytes(self.source))
        if self.edited_sha256 is None:
            self.edited_sha256 = sha256_hex(_image_bytes(self.edited))
        return self.source_sha256, self.edited_sha256

    def key(self, model: str, detail: str = "low") -> str:
        src, edt = self.hashes()
        return request_key(model, self.perspective, self.mode, self.instruction, src, edt, detail=detail)

    def cheap_to_encode(self, limit: int = 1 << 16) -> bool:
        """Both images are small PNGs: building the messages takes microseconds (no thread hop needed)."""
        try:
            for img in (self.source, self.edited):
                if isinstance(img, (bytes, bytearray)):
                    if len(img) > limit or not bytes(img[:8]) == _PNG_MAGIC:
                        return False
                elif isinstance(img, (str, os.PathLike)):
                    if not str(img).lower().endswith(".png") or os.path.getsize(img) > limit:
                        return False
                else:
                    return False
        except OSError:
            return False
        return True

    def messages(self, detail: str = "low") -> list[dict]:
        src = _png_for_request(_image_bytes(self.source))
        edt = _png_for_request(_image_bytes(self.edited))
        return prompts.build_messages(self.perspective, self.mode, self.instruction, src, edt,  # type: ignore[arg-type]
                                      detail=detail)


@dataclass
class JudgeResult:
    """The outcome of one request: an answer, or the reason there is none."""

    request: JudgeRequest
    key: str
    answer: Annotation | Verdict | None = None
    text: str | None = None  # the judge's raw answer text
    error: str | None = None  # why it failed; None when answered
    attempts: int = 0  # HTTP calls made for it in this run (0 when it came from the cache)
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        return self.answer is not None


# --------------------------------------------------------------------------------------------------
# Append-only JSON lines
# --------------------------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> tuple[list[dict], int]:
    """The records of a JSON-lines file, and how many lines were skipped (torn or not an object).

    A kill during an append leaves a torn last line; it is skipped, as is any other line that does not hold
    one complete JSON object. A missing file has no records.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records, bad = [], 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad += 1
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            bad += 1
    return records, bad


class JsonlLog:
    """An append-only JSON-lines file whose appends are durable (written, flushed, fsync-ed) when they return.

    Opening it ends a torn last line (left by a kill) with a newline, so a new record never glues onto it.
    The file and its folder are created on the first append, not before.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: Any = None
        self._lock = threading.Lock()
        self._writer: _GroupCommit | None = None

    def _open(self) -> Any:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "ab")
            size = fh.seek(0, os.SEEK_END)
            if size:
                with open(self.path, "rb") as r:
                    r.seek(size - 1)
                    if r.read(1) != b"\n":
                        fh.write(b"\n")
                        fh.flush()
                        os.fsync(fh.fileno())
            self._fh = fh
        return self._fh

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records as one write and one fsync (blocking)."""
        if not records:
            return
        data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                        for r in records)
        with self._lock:
            fh = self._open()
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def append_now(self, record: Mapping[str, Any]) -> None:
        self.append_many([record])

    async def append(self, record: Mapping[str, Any]) -> None:
        """Append from async code: returns once the record is durable; concurrent appends share one fsync."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.loop is not loop:
            self._writer = _GroupCommit(self, loop)
        await self._writer.append(record)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class _GroupCommit:
    """Batches the appends that arrive while a write+fsync is running into the next write (in a thread)."""

    def __init__(self, log: JsonlLog, loop: asyncio.AbstractEventLoop):
        self.log, self.loop = log, loop
        self._pending: list[tuple[Mapping[str, Any], asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def append(self, record: Mapping[str, Any]) -> None:
        fut = self.loop.create_future()
        self._pending.append((record, fut))
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        # Single-threaded event loop: between the last emptiness check and this task finishing there is no
        # await, so an append either joins a batch or sees the task done and starts a new one.
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self.log.append_many, [r for r, _ in batch])
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
                if not isinstance(e, Exception):
                    raise
                continue
            for _, f in batch:
                if not f.done():
                    f.set_result(None)


# --------------------------------------------------------------------------------------------------
# The answer cache
# --------------------------------------------------------------------------------------------------
def _answer_from_record(mode: str, ans: dict) -> Annotation | Verdict | None:
    """The validated answer stored in a cache record (as :mod:`.prompts` produced it), or None if it is not
    one: a hand-edited or foreign line is asked again rather than trusted."""
    score = ans.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= MAX_SCORE:
        return None
    if mode == "annotate":
        fb = ans.get("feedback")
        if not isinstance(score, int) or not isinstance(fb, str) or not fb.strip():
            return None
        return Annotation(score, fb)
    yes, reason = ans.get("yes"), ans.get("reason")
    if not isinstance(yes, bool) or not isinstance(reason, str):
        return None
    return Verdict(yes, float(score), reason)


class AnswerCache:
    """Valid answers on disk, keyed by :func:`request_key`: ``<directory>/answers.jsonl`` (see module doc).

    Each record: ``key``, ``model``, ``prompt_version``, ``perspective``, ``mode``, ``instruction``, the two
    image hashes, ``answer`` (the validated fields), ``text`` (the raw answer), ``usage``, ``time``, ``run``.
    Records are re-validated on load; one that no longer validates is ignored (and so asked again).
    """

    FILENAME = "answers.jsonl"

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / self.FILENAME
        records, self.skipped_lines = read_jsonl(self.path)
        self._records: dict[str, dict] = {}
        self._answers: dict[str, Annotation | Verdict] = {}
        self.duplicate_lines = 0
        for rec in records:
            key, mode, ans = rec.get("key"), rec.get("mode"), rec.get("answer")
            if not isinstance(key, str) or mode not in prompts.MODES or not isinstance(ans, dict):
                self.skipped_lines += 1
                continue
            if key in self._records:
                self.duplicate_lines += 1
                continue
            parsed = _answer_from_record(mode, ans)
            if parsed is None:
                self.skipped_lines += 1
                continue
            self._records[key] = rec
            self._answers[key] = parsed
        self._log = JsonlLog(self.path)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def get(self, key: str) -> Annotation | Verdict | None:
        return self._answers.get(key)

    def record(self, key: str) -> dict | None:
        return self._records.get(key)

    async def put(self, record: dict, answer: Annotation | Verdict) -> None:
        """Append one answer record; returns once it is durable on disk."""
        await self._log.append(record)
        self._records.setdefault(record["key"], record)
        self._answers.setdefault(record["key"], answer)

    def close(self) -> None:
        self._log.close()


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
                 price_model: str | None = None, seed: int | None = None):
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
        key = key or request.key(self.model, self.detail)
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
    keys = await asyncio.to_thread(lambda: [r.key(client.model, client.detail) for r in requests])
    results: list[JudgeResult | None] = [None] * len(requests)
    todo: dict[str, list[int]] = {}
    for i, (req, key) in enumerate(zip(requests, keys)):
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            rec = cache.record(key) or {}
            results[i] = JudgeResult(req, key, answer=cached, text=rec.get("text"), from_cache=True)
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
            await cache.put(_cache_record(client, res, usage, run_id), res.answer)  # type: ignore[arg-type]

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
