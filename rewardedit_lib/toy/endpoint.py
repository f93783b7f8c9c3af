"""The one place that turns "no judge URL given" into the kit's local toy judge, for annotation and evaluation.

Why it sits above :mod:`rewardedit_lib.judge`: the generic judge code (client, annotation, evaluation
requests) takes a base URL and a model name and knows no particular judge. What is special about the toy
judge lives here, once:

* with no base URL (and no Azure endpoint), a local toy judge server runs for the duration
  (:func:`judge_endpoint`), under the model name :data:`~rewardedit_lib.judge.request.TOY_JUDGE_MODEL`;
* the toy judge's version travels with its model name into the answer cache (:func:`client_options`:
  the cache knows it as ``"toy-judge/toy-judge-4"``), local or at a URL, so a judgement cached by an older
  toy judge is asked again after the judge changed, and a course folder made before this module existed
  resumes without asking again (the key is the one the client used to build itself).

Callers: the CLI (``rewardedit annotate``), the notebooks, :func:`rewardedit_lib.evaluate.judge_edits`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from ..formats import PERSPECTIVES
from ..judge.request import TOY_JUDGE_MODEL
from .judge import JUDGE_VERSION


def client_options(model: str | None) -> dict[str, Any]:
    """The :class:`~rewardedit_lib.judge.client.JudgeClient` options a judge ``model`` needs beyond its name:
    the toy judge's version (it joins the name in the cache keys); nothing for any other model."""
    return {"model_version": JUDGE_VERSION} if model == TOY_JUDGE_MODEL else {}


@contextlib.contextmanager
def judge_endpoint(base_url: str | None = None, model: str = TOY_JUDGE_MODEL, *, own_process: bool | None = None,
                   **server_options: Any) -> Iterator[str]:
    """The base URL to send judge requests to: ``base_url`` itself, or (None) a local toy judge server that
    runs for the duration of the ``with`` block. Lets one notebook cell serve GPT-4o and the toy judge alike.

    ``own_process`` (default: where the machine has two cores or more and no ``server_options``): the server
    runs as ``rewardedit judge-server`` in a process of its own. Why: the judge's pixel work and the client's
    request handling then run on two cores instead of taking turns under one interpreter lock -- annotating
    the course's 3,000 toy triplets (9,000 requests) took 44 s against 53-57 s in-process on 2 cores
    (RESULTS.md, twelfth session). The answers are the same either way (tested). ``server_options``
    (injected latency, faults) need the in-process :class:`~.server.ToyJudgeServer`."""
    if base_url:
        yield base_url
        return
    chosen = own_process is not None
    if own_process is None:
        from ..parallel import cpu_cores

        own_process = not server_options and cpu_cores() >= 2
    if own_process:
        if server_options:
            raise ValueError(f"server options {sorted(server_options)} need the in-process server (own_process=False)")
        with contextlib.ExitStack() as stack:
            try:
                url = stack.enter_context(_server_process(model))
            except RuntimeError as e:
                if chosen:
                    raise
                import warnings

                warnings.warn(f"{e} -- judging in this process instead", RuntimeWarning, stacklevel=3)
            else:
                yield url
                return
    from .server import ToyJudgeServer  # the server (aiohttp, threads) only when one is needed

    with ToyJudgeServer(model=model, **server_options) as srv:
        yield srv.base_url


#: Seconds a toy judge server process may take to say where it serves.
SERVER_START_TIMEOUT_S = 60.0


@contextlib.contextmanager
def _server_process(model: str) -> Iterator[str]:
    """``rewardedit judge-server`` (a free port, quiet) for the duration; yields its base URL, read from the
    first line it prints. The server reads its standard input from a pipe held here: closing it is the stop
    (the server's clean shutdown), and if this process dies without closing it, the operating system does,
    so the server never outlives its caller (:func:`~rewardedit_lib.parallel.when_stdin_closes`). Killed if it
    does not stop within 10 s."""
    import re
    import subprocess
    import sys
    import threading

    from ..parallel import stop_child

    cmd = [sys.executable, "-m", "rewardedit_lib.cli", "judge-server", "--quiet", "--stop-on-stdin-eof",
           "--model", model]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first: list[str] = []
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(SERVER_START_TIMEOUT_S)
        found = re.search(r"serving at (http://\S+/v1)", first[0]) if first else None
        if found is None:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            said = " ".join(part.strip() for part in (first[0] if first else "", err[-2000:]) if part.strip())
            raise RuntimeError(f"the local toy judge server ({' '.join(cmd[1:])}) did not start within "
                               f"{SERVER_START_TIMEOUT_S:.0f} s (exit code {proc.returncode}); it said: "
                               f"{said or 'nothing'}")
        # the server prints nothing more (--quiet); keep its pipes drained so it never blocks on a full one
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=stream.read, daemon=True).start()  # type: ignore[union-attr]
        yield found.group(1)
    finally:
        if proc.poll() is None:
            stop_child(proc)


#: Folders per worker process below which ``workers="auto"`` annotates in one process: a worker first starts
#: an interpreter and a judge (about 2 s of a core), and the caller then reads every answer back.
FOLDERS_PER_WORKER = 500


def annotate(data_dir: str | Path, out_path: str | Path, *, base_url: str | None = None, model: str | None = None,
             azure_api_version: str | None = None, workers: int | str = "auto", **kwargs: Any):
    """:func:`rewardedit_lib.judge.annotate.annotate`, with the kit's default judge.

    ``base_url=None`` (and no ``azure_api_version``): a local toy judge server runs for the duration (model
    ``toy-judge``; any other model is refused). The toy judge's version joins its cache keys wherever it is
    served. Every other argument is :func:`~rewardedit_lib.judge.annotate.annotate`'s.

    ``workers`` (the local toy judge only): processes that share the folders out first, one per core, each
    asking a toy judge served in itself for its share's answers, into the run's answer cache; the annotation
    then finds every answer cached and writes what one process writes. Why: the toy judge answers on one core
    and its client needs most of another; two processes that each hold both halve the work of each core.
    ``"auto"``: on two cores or more, with at least :data:`FOLDERS_PER_WORKER` folders per worker (a number:
    that many; 1: none).
    """
    from ..judge.annotate import annotate as annotate_with
    from ..judge.annotate import default_paths
    from ..parallel import check_workers, cpu_cores, plan_split, run_jobs

    local = base_url is None and azure_api_version is None
    if local:
        model = model or TOY_JUDGE_MODEL
        if model != TOY_JUDGE_MODEL:
            raise ValueError(f"base_url=None runs the local toy judge ({TOY_JUDGE_MODEL!r}), not {model!r}; for OpenAI "
                             f"give base_url='https://api.openai.com/v1' (key from OPENAI_API_KEY)")
    check_workers(workers)
    if workers != "auto" and int(workers) > 1 and not local:
        raise ValueError(f"workers={workers}: annotation side by side serves the local toy judge in each worker; "
                         f"a judge at {base_url or 'Azure'} is asked from one process")
    options = {**client_options(model), **kwargs}
    if local:
        folders = _folders(data_dir, kwargs.get("limit"))
        n = min(cpu_cores(), len(folders) // FOLDERS_PER_WORKER) if workers == "auto" else min(workers, len(folders))
        cache = default_paths(out_path, kwargs.get("cache_dir"))["cache_dir"]
        if n >= 2 and _answers(cache) < len(PERSPECTIVES) * len(folders):  # a rerun finds them cached: no workers
            share = {k: options[k] for k in ("concurrency", "max_retries", "timeout") if k in options}
            run_jobs(_annotate_share, [{"data_dir": str(data_dir), "folders": folders[i::n], "cache_dir": str(cache),
                                        "model": model, "options": {**client_options(model), **share}}
                                       for i in range(n)], plan_split(n, "cpu", workers=n))
    with (judge_endpoint(None, model) if local else contextlib.nullcontext(base_url)) as url:
        if local:
            options.setdefault("endpoint_label", f"local toy judge ({url})")
        return annotate_with(data_dir, out_path, base_url=url, model=model, azure_api_version=azure_api_version,
                             **options)


def _answers(cache_dir: Path) -> int:
    """How many answers the cache holds (any prompt version: a rough test that a rerun has them all)."""
    from ..judge.cache import AnswerCache

    with AnswerCache(cache_dir) as cache:
        return len(cache)


def _folders(data_dir: str | Path, limit: int | None) -> list[str]:
    """The folders an annotation of ``data_dir`` asks about (``seeds.json``'s, the first ``limit``)."""
    from ..formats import read_seeds

    folders = [f for f, _ in read_seeds(Path(data_dir))]
    return folders[:limit] if limit is not None else folders


def _annotate_share(data_dir: str, folders: list[str], cache_dir: str, model: str, options: dict[str, Any],
                    write: Any) -> int:
    """One worker of :func:`annotate`: its folders' answers from a toy judge served in this process, into the
    shared answer cache (its own rewards file, journal and failures go to a folder deleted after). Returns the
    number of answers it got now."""
    import tempfile

    from ..judge.annotate import annotate as annotate_with

    with tempfile.TemporaryDirectory(prefix="rewardedit-annotate-") as tmp, \
            judge_endpoint(None, model, own_process=False) as url:
        report = annotate_with(data_dir, Path(tmp) / "share.json", base_url=url, model=model, cache_dir=cache_dir,
                               only=set(folders), progress=False, log=None, **options)
    return report.answered


__all__ = ["annotate", "client_options", "judge_endpoint"]
