"""Annotate an InstructPix2Pix-layout dataset from the three perspectives: the kit's RewardEdit20K builder.

``annotate(data_dir, out_path)`` judges every folder of ``seeds.json`` for instruction following, detail
preserving and generation quality (mode ``annotate``) and writes ``RewardEdit_20K.json`` with the fully
annotated folders, three entries each in the order following, preserving, quality.

Files, for ``out_path = X/REWARDS.json``::

    X/REWARDS.json                 the rewards (written atomically at the end of the run)
    X/REWARDS.failures.json        every folder NOT in the rewards, with its reason (rewritten every run)
    X/REWARDS.judge/answers.jsonl  the answer cache (``cache_dir=`` moves it; see :mod:`.client`)
    X/REWARDS.judge/journal.jsonl  the run journal: one ``run_start`` / ``request_failed`` /
                                   ``folder_skipped`` / ``run_end`` line per event, append-only, fsync-ed

The cache is the only state a resumed run needs: a kill at any instant loses at most the answers of the
requests in flight, and running the same call again sends only what the cache lacks. Failed requests are
journaled, listed in the failures file and asked again by the next run.

The run talks to one endpoint: GPT-4o with ``base_url="https://api.openai.com/v1", model="gpt-4o"`` (key from
``OPENAI_API_KEY``), Azure with ``azure_api_version=`` (key from ``AZURE_OPENAI_API_KEY``), or any
OpenAI-compatible URL. This module knows no particular judge: starting the kit's local toy judge when no URL
is given is :func:`rewardedit_lib.toy.endpoint.annotate`'s job (what the CLI and the notebooks call).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

from ..formats import (
    PERSPECTIVES,
    Problem,
    Reward,
    Rewards,
    Triplet,
    read_instructpix2pix,
    read_seeds,
    write_rewards,
)
from ..plumbing import atomic_write_text
from . import prompts
from .client import (
    AnswerCache,
    CostEstimate,
    JsonlLog,
    JudgeClient,
    JudgeRequest,
    JudgeResult,
    estimate_cost,
    judge_many,
    redact_url,
    run_sync,
    sha256_hex,
)



@dataclass
class AnnotationReport:
    """What an annotation run did. ``str(report)`` is the summary the CLI prints."""

    out_path: Path
    failures_path: Path
    journal_path: Path
    cache_path: Path
    model: str
    endpoint: str  # where requests went (no credentials)
    folders: int  # folders in seeds.json
    annotated: int  # folders with all three rewards, written to out_path
    failed: int  # folders not annotated (data errors + judge failures)
    requests: int  # judgements needed (3 per readable folder)
    from_cache: int  # judgements answered from the cache (nothing sent)
    answered: int  # judgements answered by the judge in this run
    failed_requests: int  # judgements that failed after all retries (asked again by the next run)
    requests_sent: int  # HTTP calls made, retries included
    retries: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: the model's price is unknown
    wall_s: float
    estimate: CostEstimate
    response_format: str  # the structured-output level the run ended on
    failures: dict[str, str] = field(default_factory=dict)  # folder -> reason
    errors: dict[str, int] = field(default_factory=dict)  # retryable errors seen, by kind

    @property
    def cost_text(self) -> str:
        if self.cost_usd is None:
            return f"cost UNKNOWN (no price for model {self.model!r}; pass price_model=)"
        return f"${self.cost_usd:,.4f}"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("out_path", "failures_path", "journal_path", "cache_path"):
            d[k] = str(d[k])
        d["estimate"] = asdict(self.estimate)
        return d

    def __str__(self) -> str:
        lines = [
            f"annotated {self.annotated}/{self.folders} folders -> {self.out_path}",
            f"  judge: {self.model} at {self.endpoint} (response_format: {self.response_format})",
            f"  judgements: {self.requests} needed, {self.from_cache} from cache, {self.answered} answered now, "
            f"{self.failed_requests} failed",
            f"  HTTP requests sent: {self.requests_sent} ({self.retries} retries"
            + (", " + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) if self.errors else "") + ")",
            f"  tokens: {self.prompt_tokens:,} input + {self.completion_tokens:,} output; {self.cost_text} "
            f"(estimated before the run: "
            + ("unknown" if self.estimate.cost_usd is None else f"${self.estimate.cost_usd:,.4f}") + ")",
            f"  wall time: {self.wall_s:.1f} s",
        ]
        if self.failed:
            lines.append(f"  {self.failed} folder(s) not annotated, reasons in {self.failures_path}; "
                         f"run the same command again to retry them")
            for folder, reason in list(self.failures.items())[:5]:
                lines.append(f"    - {folder}: {reason}")
            if self.failed > 5:
                lines.append(f"    ... and {self.failed - 5} more")
        return "\n".join(lines)


def default_paths(out_path: str | Path, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Where a run writes, for ``out_path``: rewards, failures, journal and cache."""
    out = Path(out_path)
    work = out.parent / f"{out.stem}.judge"
    cache = Path(cache_dir) if cache_dir is not None else work
    return {"out": out, "failures": out.parent / f"{out.stem}.failures.json", "journal": work / "journal.jsonl",
            "cache_dir": cache, "cache": cache / AnswerCache.FILENAME}


def annotation_requests(triplets: Iterable[Triplet]) -> list[JudgeRequest]:
    """The three judgements (following, preserving, quality) of every triplet, as the annotator sends them."""
    return [JudgeRequest(p, "annotate", t.instruction, t.source, t.edited, id=t.id)
            for t in triplets for p in PERSPECTIVES]


def _folder_of(problem: Problem) -> str:
    """The seeds.json folder a reader problem belongs to (the reader records it; else where it happened)."""
    return problem.record or problem.where


def _hash_triplet_images(triplets: list[Any]) -> dict[str, tuple[str, str] | str]:
    """folder -> (source sha256, edited sha256), or the reason its images could not be read."""
    out: dict[str, tuple[str, str] | str] = {}
    for t in triplets:
        try:
            out[t.id] = (sha256_hex(Path(t.source).read_bytes()), sha256_hex(Path(t.edited).read_bytes()))
        except OSError as e:
            out[t.id] = f"could not read the images: {e}"
    return out


async def annotate_async(data_dir: str | Path, out_path: str | Path, *, base_url: str | None = None,
                         model: str | None = None, concurrency: int = 16, max_retries: int = 5,
                         timeout: float = 60.0, azure_api_version: str | None = None,
                         api_key_env: str | None = None, cache_dir: str | Path | None = None,
                         key_prefix: str = "", limit: int | None = None, progress: bool = True,
                         log: Callable[[str], Any] | None = print, endpoint_label: str | None = None,
                         only: Collection[str] | None = None, **client_options: Any) -> AnnotationReport:
    """The async form of :func:`annotate` (same arguments), for code that already runs an event loop.
    ``endpoint_label``: how the log and the journal name the endpoint (default: the client's redacted URL).
    ``only``: annotate only these folders of ``seeds.json`` (a worker's share, :func:`~rewardedit_lib.toy.endpoint.annotate`)."""
    import asyncio

    t0 = time.perf_counter()
    if base_url is None and azure_api_version is None:
        raise ValueError("give the judge's base_url (e.g. 'https://api.openai.com/v1' with model='gpt-4o'); "
                         "rewardedit_lib.toy.endpoint.annotate starts the local toy judge when there is none")
    if not model:
        raise ValueError(f"give the judge model for {redact_url(base_url)} (e.g. model='gpt-4o'; "
                         f"for Azure, the deployment name)")
    say = log or (lambda _msg: None)
    root = Path(data_dir)
    paths = default_paths(out_path, cache_dir)
    folders = [f for f, _ in read_seeds(root)]  # a broken seeds.json is an error the user must fix: raises
    if limit is not None:
        folders = folders[:limit]
    if only is not None:
        folders = [f for f in folders if f in only]
    wanted = set(folders)
    loaded = await asyncio.to_thread(read_instructpix2pix, root, check_images=True, require_rewards=False,
                                     on_error="skip")
    failures: dict[str, str] = {}
    data_failed: dict[str, str] = {}
    for p in loaded.skipped:
        folder = _folder_of(p)
        if limit is None or folder in wanted:
            data_failed[folder] = str(p) if folder not in data_failed else data_failed[folder] + "; " + str(p)
    triplets = [t for t in loaded.items if t.id in wanted]
    hashes = await asyncio.to_thread(_hash_triplet_images, triplets)
    requests: list[JudgeRequest] = []
    for t in triplets:
        h = hashes[t.id]
        if isinstance(h, str):
            data_failed[t.id] = h
            continue
        for persp in PERSPECTIVES:
            requests.append(JudgeRequest(persp, "annotate", t.instruction, t.source, t.edited, id=t.id,
                                         source_sha256=h[0], edited_sha256=h[1]))

    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    journal = JsonlLog(paths["journal"])
    cache = AnswerCache(paths["cache_dir"])
    if cache.skipped_lines:
        say(f"cache {paths['cache']}: ignored {cache.skipped_lines} incomplete or invalid line(s) "
            f"(e.g. torn by a kill); those answers will be asked again")
    base, endpoint = base_url, endpoint_label or ""
    client = JudgeClient(model, base_url=base, api_key_env=api_key_env, azure_api_version=azure_api_version,
                         concurrency=concurrency, max_retries=max_retries, timeout=timeout, **client_options)
    endpoint = endpoint or client.endpoint
    try:
        keys = [r.key(client.cache_model, client.detail) for r in requests]
        to_send = [r for r, k in zip(requests, keys) if cache.get(k) is None]
        est = estimate_cost(to_send, client.model, cached=len(requests) - len(to_send),
                            prices=client.prices, price_model=client.price_model)
        say(f"annotating {len(folders)} folders ({len(data_failed)} unreadable) with {client.model} at "
            f"{endpoint}, {concurrency} at a time")
        say(f"cache: {paths['cache']} ({len(cache)} answers); journal: {paths['journal']}")
        say(str(est))
        journal.append_now({
            "event": "run_start", "run": run_id, "time": time.time(), "data": str(root),
            "out": str(paths["out"]), "model": client.model, "endpoint": endpoint,
            "prompt_version": prompts.PROMPT_VERSION, "folders": len(folders), "requests": len(requests),
            "to_send": len(to_send), "concurrency": concurrency, "max_retries": max_retries, "timeout": timeout,
        })
        journal.append_many([{"event": "folder_skipped", "run": run_id, "folder": folder, "reason": reason}
                             for folder, reason in data_failed.items()])

        async def on_result(res: JudgeResult) -> None:
            if not res.ok:
                await journal.append({"event": "request_failed", "run": run_id, "folder": res.request.id,
                                      "perspective": res.request.perspective, "key": res.key,
                                      "attempts": res.attempts, "reason": res.error})

        results = await judge_many(requests, client, cache=cache, progress=progress, desc="annotating",
                                   run_id=run_id, on_result=on_result)
    finally:
        await client.aclose()
        cache.close()

    by_folder: dict[str, dict[str, JudgeResult]] = {}
    for res in results:
        by_folder.setdefault(res.request.id, {})[res.request.perspective] = res
    rewards: dict[str, Rewards] = {}
    for folder in folders:
        if folder in data_failed:
            failures[folder] = data_failed[folder]
            continue
        got = by_folder.get(folder, {})
        bad = [f"{p}: {got[p].error}" if p in got else f"{p}: not judged" for p in PERSPECTIVES
               if p not in got or not got[p].ok]
        if bad:
            failures[folder] = "; ".join(bad)
            continue
        anns = [got[p].answer for p in PERSPECTIVES]
        rewards[folder] = Rewards(*(Reward(a.score, a.feedback) for a in anns))  # type: ignore[union-attr]
    write_rewards(paths["out"], rewards, key_prefix=key_prefix)
    failure_list = [{"folder": f, "stage": "data" if f in data_failed else "judge", "reason": r}
                    for f, r in failures.items()]
    atomic_write_text(paths["failures"], json.dumps({"failed": len(failure_list), "folders": failure_list},
                                                    indent=1, ensure_ascii=False) + "\n")
    st = client.stats
    price = client.price
    report = AnnotationReport(
        out_path=paths["out"], failures_path=paths["failures"], journal_path=paths["journal"],
        cache_path=paths["cache"], model=client.model, endpoint=endpoint, folders=len(folders),
        annotated=len(rewards), failed=len(failures), requests=len(requests),
        from_cache=sum(1 for r in results if r.from_cache), answered=sum(1 for r in results if r.ok and not r.from_cache),
        failed_requests=sum(1 for r in results if not r.ok), requests_sent=st.requests_sent, retries=st.retries,
        prompt_tokens=st.usage.prompt_tokens, completion_tokens=st.usage.completion_tokens,
        cost_usd=price.cost(st.usage.prompt_tokens, st.usage.completion_tokens) if price is not None else None,
        wall_s=time.perf_counter() - t0, estimate=est, response_format=client.response_format_in_use,
        failures=failures, errors=dict(st.errors),
    )
    journal.append_now({"event": "run_end", "run": run_id, "time": time.time(), "report": report.to_dict()})
    journal.close()
    say(str(report))
    return report


def annotate(data_dir: str | Path, out_path: str | Path, *, base_url: str | None = None, model: str | None = None,
             concurrency: int = 16, max_retries: int = 5, timeout: float = 60.0,
             azure_api_version: str | None = None, api_key_env: str | None = None,
             cache_dir: str | Path | None = None, key_prefix: str = "", limit: int | None = None,
             progress: bool = True, log: Callable[[str], Any] | None = print, endpoint_label: str | None = None,
             only: Collection[str] | None = None, **client_options: Any) -> AnnotationReport:
    """Judge every folder of an InstructPix2Pix-layout dataset from three perspectives; write RewardEdit_20K.json.

    * ``base_url`` and ``model`` name the judge (``base_url`` may be None only with ``azure_api_version``; the
      local toy judge is started by :func:`rewardedit_lib.toy.endpoint.annotate`, which then calls this);
      keys come from the environment only (see :class:`.client.JudgeClient`; ``api_key_env`` names the
      variable for a self-hosted server that wants one).
    * Re-running the same call resumes: cached answers are not asked again; failed ones are.
    * A corrupt or missing image, or a bad ``prompt.json``, fails that folder only (listed in the failures
      file with the reason); judge failures likewise, after ``max_retries`` retries.
    * ``limit``: only the first ``limit`` folders of ``seeds.json`` (try a paid judge on a few first);
      ``only``: only these folders (of those).
    * ``key_prefix``: prepended to every key of the output (``"pix2pix-clip-filtered/train/"`` reproduces the
      released file's keys).
    * ``log``: where the estimate and the summary are printed (``None``: silent).
    * ``client_options``: passed to :class:`.client.JudgeClient` (``backoff_base``, ``response_format``,
      ``price_model``, ``detail``, ``max_tokens`` ...).

    Works from scripts and from Jupyter (inside a running event loop it runs on a worker thread).
    Raises :class:`~rewardedit_lib.formats.DataError` for an unreadable ``seeds.json`` and
    :class:`.client.JudgeConfigError` for a missing key or model; never for a single bad folder or request.
    """
    return run_sync(annotate_async(data_dir, out_path, base_url=base_url, model=model, concurrency=concurrency,
                                   max_retries=max_retries, timeout=timeout, azure_api_version=azure_api_version,
                                   api_key_env=api_key_env, cache_dir=cache_dir, key_prefix=key_prefix,
                                   limit=limit, progress=progress, log=log,
                                   endpoint_label=endpoint_label, only=only, **client_options))


__all__ = ["AnnotationReport", "annotate", "annotate_async", "default_paths"]
