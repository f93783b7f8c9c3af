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

from ..judge.request import TOY_JUDGE_MODEL
from .judge import JUDGE_VERSION


def client_options(model: str | None) -> dict[str, Any]:
    """The :class:`~rewardedit_lib.judge.client.JudgeClient` options a judge ``model`` needs beyond its name:
    the toy judge's version (it joins the name in the cache keys); nothing for any other model."""
    return {"model_version": JUDGE_VERSION} if model == TOY_JUDGE_MODEL else {}


@contextlib.contextmanager
def judge_endpoint(base_url: str | None = None, model: str = TOY_JUDGE_MODEL, **server_options: Any) -> Iterator[str]:
    """The base URL to send judge requests to: ``base_url`` itself, or (None) a local toy judge server that
    runs for the duration of the ``with`` block. Lets one notebook cell serve GPT-4o and the toy judge alike."""
    if base_url:
        yield base_url
        return
    from .server import ToyJudgeServer  # the server (aiohttp, threads) only when one is needed

    with ToyJudgeServer(model=model, **server_options) as srv:
        yield srv.base_url


def annotate(data_dir: str | Path, out_path: str | Path, *, base_url: str | None = None, model: str | None = None,
             azure_api_version: str | None = None, **kwargs: Any):
    """:func:`rewardedit_lib.judge.annotate.annotate`, with the kit's default judge.

    ``base_url=None`` (and no ``azure_api_version``): a local toy judge server runs for the duration (model
    ``toy-judge``; any other model is refused). The toy judge's version joins its cache keys wherever it is
    served. Every other argument is :func:`~rewardedit_lib.judge.annotate.annotate`'s.
    """
    from ..judge.annotate import annotate as annotate_with

    local = base_url is None and azure_api_version is None
    if local:
        model = model or TOY_JUDGE_MODEL
        if model != TOY_JUDGE_MODEL:
            raise ValueError(f"base_url=None runs the local toy judge ({TOY_JUDGE_MODEL!r}), not {model!r}; for OpenAI "
                             f"give base_url='https://api.openai.com/v1' (key from OPENAI_API_KEY)")
    options = {**client_options(model), **kwargs}
    with (judge_endpoint(None, model) if local else contextlib.nullcontext(base_url)) as url:
        if local:
            options.setdefault("endpoint_label", f"local toy judge ({url})")
        return annotate_with(data_dir, out_path, base_url=url, model=model, azure_api_version=azure_api_version,
                             **options)


__all__ = ["annotate", "client_options", "judge_endpoint"]
