"""Judging a model's benchmark edits from the three perspectives: all at once (:func:`judge_edits`), or while
the next ones are still being made (:class:`EditJudge`).

Why the second: an evaluation edits (on a GPU, or on the CPU's cores) and judges (a remote model's latency, or
the local toy judge's own process). One after the other, each waits for the other: notebook 06's reward knob
spent 48 s editing and then 41 s judging on 2 cores (RESULTS.md, eleventh session). Judged as each batch of
edits is saved, the judging runs beside the editing; with GPT-4o on a GPU nearly all of it hides behind the
editing. Both give the same rows: the same requests, each folder's answers cached in its ``judge/`` folder.

It lives beside :mod:`.evaluate`, not in the generic :mod:`.judge` package, because it starts the local toy
judge when no URL is given.

Both take the judge arguments of :func:`~.judge.paper_protocol.judge_arguments` (URL, model, key variable, protocol,
client options); the key is read from the environment by :class:`~.judge.client.JudgeClient`, never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Hashable, Mapping, Sequence

from .formats import PERSPECTIVES, BenchItem
from .judge import paper_protocol as paper
from .judge.cache import AnswerCache
from .judge.client import TOY_JUDGE_MODEL, JudgeClient, JudgeResult, judge_many, run_sync


@dataclass(frozen=True)
class JudgeSpec:
    """Who judges and how, checked: what :func:`judge_spec` resolves from the judge arguments."""

    base_url: str | None  # None: the local toy judge (started by toy.endpoint.judge_endpoint)
    model: str
    api_key_env: str | None
    protocol: str  # "kit" | "paper"
    options: dict[str, Any]  # JudgeClient options (concurrency, timeout, azure_api_version ...)

    @property
    def local(self) -> bool:
        return self.base_url is None and self.options.get("azure_api_version") is None

    def client(self, url: str | None) -> JudgeClient:
        """A client for ``url`` (the endpoint's, which for the local judge is only known once it runs)."""
        from .toy import endpoint as toy_endpoint

        return JudgeClient(self.model, base_url=url, api_key_env=None if self.local else self.api_key_env,
                           **{**toy_endpoint.client_options(self.model), **self.options})

    def endpoint(self) -> ContextManager[str | None]:
        """The ``with`` block that serves this judge: its URL (None for Azure, whose client finds its endpoint
        itself), or a local toy judge started for the duration."""
        from .toy import endpoint as toy_endpoint

        if not self.local:
            return contextlib.nullcontext(self.base_url)
        return toy_endpoint.judge_endpoint(None, self.model)


def judge_spec(base_url: str | None = None, judge_model: str | None = None, api_key_env: str | None = None, *,
               concurrency: int = 16, protocol: str = "kit",
               client_options: Mapping[str, Any] | None = None) -> JudgeSpec:
    """Check and resolve the judge arguments; raises (naming the option) before anything is judged."""
    options = paper.client_options_for(protocol, {"concurrency": concurrency, **(client_options or {})})
    local = base_url is None and options.get("azure_api_version") is None
    if local and protocol == "paper":
        raise paper.paper_needs_endpoint()
    model = paper.judge_model_for(protocol, judge_model, local)
    if model is None:
        raise ValueError(f"give the judge model for {base_url} (e.g. judge_model='gpt-4o')")
    if local and model != TOY_JUDGE_MODEL:
        raise ValueError(f"base_url=None runs the local toy judge ({TOY_JUDGE_MODEL!r}), not {model!r}")
    return JudgeSpec(base_url, model, api_key_env, protocol, dict(options))


def verdict_rows(items: Sequence[BenchItem], edits: Mapping[str, Path],
                 results: Sequence[JudgeResult]) -> list[dict]:
    """One row per item, in the items' order: instruction, type, edit path and the three verdicts. A
    perspective whose request failed after its retries is ``None``, and the row's ``errors`` says why."""
    by_item: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, str]] = {}
    for res in results:
        v = res.answer
        by_item.setdefault(res.request.id, {})[res.request.perspective] = (
            {"yes": bool(v.yes), "score": float(v.score), "reason": v.reason} if v is not None else None)
        if v is None:
            errors.setdefault(res.request.id, {})[res.request.perspective] = res.error or "not answered"
    rows = []
    for it in items:
        got = by_item.get(it.id, {})
        rows.append({"id": it.id, "image": it.image, "index": it.index, "edit_type": it.edit_type,
                     "instruction": it.instruction, "edit": str(edits[it.id]),
                     **{p: got.get(p) for p in PERSPECTIVES}, **({"errors": errors[it.id]} if it.id in errors else {})})
    return rows


def judge_edits(items: Sequence[BenchItem], edits: Mapping[str, Path], cache_dir: str | Path, *,
                base_url: str | None = None, judge_model: str | None = None, api_key_env: str | None = None,
                concurrency: int = 16, progress: bool = True, protocol: str = "kit",
                client_options: Mapping[str, Any] | None = None) -> list[dict]:
    """Judge every edit from the three perspectives (the evaluation variant: yes + score + reason).

    ``base_url=None`` starts the local toy judge for the duration; any OpenAI-compatible URL works (the key
    is read from the environment variable ``api_key_env`` names; GPT-4o at api.openai.com reads
    ``OPENAI_API_KEY``). ``protocol``: ``"kit"`` (the kit's questions) or ``"paper"`` (the reference's released
    ones, :mod:`.paper_protocol`). ``client_options``: :class:`~.judge.client.JudgeClient` options, as annotation
    takes them (``azure_api_version``, ``timeout``, ``max_retries``, ``concurrency`` ...).

    Returns :func:`verdict_rows`: one row per item, a failed perspective ``None`` with its reason.
    """
    spec = judge_spec(base_url, judge_model, api_key_env, concurrency=concurrency, protocol=protocol,
                      client_options=client_options)
    requests = paper.evaluation_requests(spec.protocol, items, edits)
    cache = AnswerCache(cache_dir)
    try:
        with spec.endpoint() as url:
            async def go():
                client = spec.client(url)
                try:
                    return await judge_many(requests, client, cache=cache, progress=progress, desc="judging")
                finally:
                    await client.aclose()

            results = run_sync(go())
    finally:
        cache.close()
    return verdict_rows(items, edits, results)


class EditJudge:
    """Judges edits in a thread of its own while the caller makes the next ones.

    ``submit(key, cache_dir, items, edits)`` queues the judgements of saved edits (one job's, answered into
    ``cache_dir``) and returns at once; :meth:`finish` waits for all of them and returns each key's
    :func:`verdict_rows`-ready results and judging seconds. The requests are judged in the order submitted,
    ``concurrency`` at a time, with the answer cache as :func:`judge_edits` uses it, so the rows are the
    same. An error in the judging thread is raised by :meth:`finish`; :meth:`close` (also on leaving a
    ``with`` block early) cancels what is in flight -- the answers already received stay in the cache.

    ``url``: the endpoint to send to (the local judge's, from :meth:`JudgeSpec.endpoint`, kept open by the
    caller for as long as this runs).
    """

    def __init__(self, spec: JudgeSpec, url: str | None, *, progress: bool = False, total: int | None = None):
        self.spec, self.url = spec, url
        self._queue: queue.Queue = queue.Queue()
        self._results: dict[Hashable, list[JudgeResult]] = defaultdict(list)
        self._seconds: dict[Hashable, float] = defaultdict(float)
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._started = threading.Event()
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="judging", dynamic_ncols=True, position=1)
        self._thread = threading.Thread(target=self._run, name="edit-judge", daemon=True)
        self._thread.start()
        self._started.wait()

    def submit(self, key: Hashable, cache_dir: str | Path, items: Sequence[BenchItem],
               edits: Mapping[str, Path]) -> None:
        """Queue the three judgements of each item's saved edit (``edits[item.id]``), answered into ``cache_dir``."""
        if items:
            self._queue.put((key, Path(cache_dir), list(items), {it.id: edits[it.id] for it in items}))

    def finish(self) -> tuple[dict[Hashable, list[JudgeResult]], dict[Hashable, float]]:
        """Wait for every submitted judgement: ``({key: results}, {key: seconds spent judging it})``."""
        self._queue.put(None)
        self._thread.join()
        self._close_bar()
        if self._error is not None:
            raise self._error
        return dict(self._results), dict(self._seconds)

    def close(self) -> None:
        """Stop now: cancel the judgements in flight and wait for the thread (idempotent)."""
        if self._thread.is_alive():
            if self._loop is not None and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)
            self._queue.put(None)
            self._thread.join()
        self._close_bar()

    def __enter__(self) -> "EditJudge":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # raised to the caller by finish()
            self._error = e
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._started.set()
        client = self.spec.client(self.url)
        caches: dict[Path, AnswerCache] = {}
        bar = self._bar
        try:
            while True:
                job = await asyncio.to_thread(self._queue.get)
                if job is None:
                    return
                key, cache_dir, items, edits = job
                if cache_dir not in caches:
                    caches[cache_dir] = AnswerCache(cache_dir)
                t0 = time.perf_counter()
                requests = paper.evaluation_requests(self.spec.protocol, items, edits)
                results = await judge_many(requests, client, cache=caches[cache_dir], progress=False,
                                           on_result=(lambda _: bar.update(1)) if bar is not None else None)
                self._results[key].extend(results)
                self._seconds[key] += time.perf_counter() - t0
        finally:
            await client.aclose()
            for c in caches.values():
                c.close()


__all__ = ["EditJudge", "JudgeSpec", "judge_edits", "judge_spec", "verdict_rows"]
