"""The paper's evaluation protocol: the reference's released GPT-4o questions, asked and read as it asked them.

Why a second protocol: the kit's own evaluation (:mod:`.prompts`, mode ``evaluate``: one structured JSON
answer per perspective, low-detail PNGs of both images) is designed for the toy world and for robustness, but
its numbers cannot stand beside the paper's Table 1: another question gets another answer. The reference
released the questions it asked (github.com/bytedance/Multi-Reward-Editing, commit e72d782,
``gpt_eval/eval_following.py``, ``eval_keep_detail.py``, ``eval_quality.py``, driven by ``eval.py``), so
``--protocol paper`` asks exactly those:

* the system and user texts below, character for character (the reference builds them from adjacent string
  literals, so some sentences run together without a space: kept, since the judge saw them that way);
* model ``gpt-4o-2024-05-13``, ``max_tokens=50``, no ``temperature`` (the API's default), no
  ``response_format`` and no image ``detail`` (the reference sent neither), a 100 s timeout;
* following and preserving see the source then the edited image; **quality sees the edited image alone**;
* images prepared as ``eval.py`` does: both resized to height 512 at the source's aspect ratio
  (``(int(512 * W / H), 512)``, PIL's default bicubic resize), sent as JPEG at PIL's default quality (75).
  The reference's source is its model input (a crop of the photo to multiples of 64, resized back to the
  photo's aspect); the kit's pipeline resizes instead of cropping, so its model input *is* the whole photo and
  the photo resized to height 512 is the same view.

What this module does not inherit from ``eval.py`` (see :func:`parse_paper_answer`): its parser rejected
valid answers and dropped items silently, which biased the reported rates. Here every answer the released
prompt allows is read, and an answer that cannot be read is retried and then recorded as that item's error.

Everything else (endpoint, Azure, key from the environment, retries, concurrency, the answer cache) is the
kit's one judge client (:mod:`.client`): a :class:`PaperRequest` only changes what is asked and how the answer
is read. Its cache keys carry ``protocol="paper"`` and :data:`PAPER_PROMPT_VERSION`, so paper and kit verdicts
never mix, even in one cache.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from ..formats import MAX_SCORE, PERSPECTIVES
from .client import TOY_JUDGE_MODEL, ImageLike, JudgeClient, JudgeRequest, _image_bytes, redact_url, request_key
from .prompts import AnswerError, Verdict, decode_data_url

#: The protocols ``rewardedit evaluate --protocol`` knows.
PROTOCOLS: tuple[str, ...] = ("kit", "paper")
#: The judge the reference's evaluation called (``model=`` in each ``gpt_eval/*.py``).
PAPER_JUDGE_MODEL = "gpt-4o-2024-05-13"
#: Part of every paper cache key: the reference commit the prompts come from, and how images are prepared.
PAPER_PROMPT_VERSION = "paper/e72d782/h512-jpeg75"
PAPER_HEIGHT = 512
PAPER_JPEG_QUALITY = 75  # PIL's default, what ``img.save(buf, format='JPEG')`` writes
#: :class:`~.client.JudgeClient` options that reproduce the reference's request (the caller's options win).
PAPER_CLIENT_DEFAULTS: dict[str, Any] = {"max_tokens": 50, "temperature": None, "response_format": "none",
                                         "timeout": 100.0, "detail": "auto"}  # detail: not sent, recorded as such
#: The key of the yes/no answer each released prompt asks for.
ANSWER_KEYS: dict[str, str] = {"following": "following", "preserving": "consistent", "quality": "clear"}

# The released texts, verbatim (gpt_eval/eval_following.py, eval_keep_detail.py, eval_quality.py).
SYSTEM_PROMPTS: dict[str, str] = {
    "following": (
        "You are an advanced AI designed to assess the accuracy of image edits based on given instructions."
        "Your task is to examine an edited image and determine if it has been modified according to the provided instructions. Here's how you can perform the evaluation:"
        "------"
        "## INSTRUCTIONS: "
        "- Focus on the adherence of the edited image to the given instructions. The modifications should accurately reflect the requested changes without introducing any inaccuracies or misinterpretations.\n"
        "- The edited image must be consistent with the original image and the editing instructions.\n"
        "- Consider alternative interpretations or creative approaches that still meet the editing criteria as valid.\n"
        "- Assess the accuracy of the edits in comparison to the original image and the instructions provided."),
    "preserving": (
        "You are an advanced AI designed to assess the consistency of image edits in areas unrelated to the given instructions."
        "Your task is to examine an edited image and determine if the areas unrelated to the editing instructions remain consistent with the original image. Here's how you can perform the evaluation:"
        "------"
        "## INSTRUCTIONS: "
        "- Focus on the areas of the edited image that are unrelated to the given instructions. These areas should remain consistent with the original image and should not be affected by the editing process.\n"
        "- The edited image must be consistent with the original image in the areas unrelated to the editing instructions.\n"
        "- Consider alternative interpretations or creative approaches that still meet the consistency criteria as valid.\n"
        "- Assess the consistency of the non-edited areas in comparison to the original image."),
    "quality": (
        "You are a sophisticated AI model trained to evaluate the quality of images.\n"
        "Your task is to examine an image and evaluate its quality based on various aspects such as clarity, composition, lighting, subject matter, and whether the edits appear natural. Here's how you can perform the evaluation:\n"
        "------"
        "## INSTRUCTIONS:\n"
        "- Pay close attention to the clarity of the image. The image should be sharp and the details should be clear.\n"
        "- Look for any generated artifacts in the image. There should be no artificial patterns or distortions caused by the image generation process.\n"
        "- Assess the composition of the image. The arrangement of elements should be balanced and visually appealing.\n"
        "- Evaluate the lighting in the image. The lighting should be appropriate for the scene and enhance the subject matter.\n"
        "- Consider the subject matter of the image. The subject should be well-defined and contribute to the overall quality of the image.\n"
        "- Check if the edits made to the image appear natural. The modifications should blend seamlessly with the original elements, without any obvious signs of tampering or inconsistency."),
}
_FOLLOWING_USER = (
    "Please evaluate the following image edit based on the provided instructions:\n\n"
    "The first image is the original image and the second image is the edited image\n"
    "Editing Instructions: {prompt}\n"
    "Based on your evaluation, answer the following two questions:\n"
    "1. Does the edited image follow the editing instructions? Please respond with 'yes' or 'no'.\n"
    "2. Provide your evaluation solely as an image edit accuracy score where the image edit accuracy score is a float value between 0 and 5, with 5 indicating the highest level of adherence to the instructions.\n"
    "Please generate the response in the form of a Python dictionary string with keys 'following' and 'score'. The value of 'following' should be a string ('yes' or 'no') indicating whether the edited image follows the instructions, and the value of 'score' should be a float indicating the image edit accuracy score.\n"
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string.\n"
    "For example, your response should look like this: \"{{'following': 'yes', 'score': 4.5}}\".")
_PRESERVING_USER = (
    "Please evaluate the following image edit based on the provided instructions and the original image:\n\n"
    "The first image is the original image and the second image is the edited image\n"
    "Editing Instructions: {prompt}\n"
    "Based on your evaluation, answer the following two questions:\n"
    "1. Does the area of the edited image that is unrelated to the editing instructions remain consistent with the original image? Please respond with 'yes' or 'no'.\n"
    "2. Provide your evaluation solely as an image consistency score where the image consistency score is a float value between 0 and 5, with 5 indicating the highest level of consistency with the original image.\n"
    "Please generate the response in the form of a Python dictionary string with keys 'consistent' and 'score'. The value of 'consistent' should be a string ('yes' or 'no') indicating whether the area of the edited image that is unrelated to the editing instructions remains consistent with the original image, and the value of 'score' should be a float indicating the image consistency score.\n"
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string.\n"
    "For example, your response should look like this: \"{{'consistent': 'yes', 'score': 4.5}}\".")
_QUALITY_USER = (
    "Please evaluate the quality of the following image based on its clarity, the presence of any generated artifacts, composition, lighting, subject matter, and whether the edits appear natural.\n"
    "Based on your evaluation, answer the following two questions:\n"
    "1. Is the image clear, free of generated artifacts, well-composed, properly lit, with a well-defined subject, and do the edits appear natural? Please respond with 'yes' or 'no'.\n"
    "2. Provide your evaluation as an image quality score where the image quality score is a float value between 0 and 5, with 5 indicating the highest level of quality.\n"
    "Please generate the response in the form of a Python dictionary string with keys 'clear' and 'score'. The value of 'clear' should be a string ('yes' or 'no') indicating whether the image meets all the criteria, and the value of 'score' should be a float indicating the image quality score.\n"
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string.\n"
    "For example, your response should look like this: \"{{'clear': 'yes', 'score': 4.5}}\".")
_USER_TEMPLATES = {"following": _FOLLOWING_USER, "preserving": _PRESERVING_USER, "quality": _QUALITY_USER}


def user_text(perspective: str, instruction: str) -> str:
    """The released user text of one perspective (quality's names no instruction: it judges the image alone)."""
    return _USER_TEMPLATES[perspective].format(prompt=instruction)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
def _jpeg(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=PAPER_JPEG_QUALITY)
    return buf.getvalue()


def prepare_images(source: ImageLike, edited: ImageLike) -> tuple[bytes, bytes]:
    """(source JPEG, edited JPEG) as ``eval.py`` sends them: both resized to ``(int(512 * W / H), 512)``, where
    W x H is the source's size (so an edit made at another size is brought back to the photo's aspect)."""
    from PIL import Image

    with Image.open(io.BytesIO(_image_bytes(source))) as s, Image.open(io.BytesIO(_image_bytes(edited))) as e:
        w, h = s.size
        size = (int(PAPER_HEIGHT * w / h), PAPER_HEIGHT)
        return (_jpeg(s.convert("RGB").resize(size, Image.Resampling.BICUBIC)),
                _jpeg(e.convert("RGB").resize(size, Image.Resampling.BICUBIC)))


def _jpeg_url(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")}}


def build_paper_messages(perspective: str, instruction: str, source_jpeg: bytes, edited_jpeg: bytes) -> list[dict]:
    """The reference's chat messages for one perspective: system text, then the user text and the images
    (source and edited for following and preserving, the edited image alone for quality)."""
    images = [edited_jpeg] if perspective == "quality" else [source_jpeg, edited_jpeg]
    return [{"role": "system", "content": SYSTEM_PROMPTS[perspective]},
            {"role": "user", "content": [{"type": "text", "text": user_text(perspective, instruction)},
                                         *(_jpeg_url(b) for b in images)]}]


def identify_paper(messages: list[dict]) -> tuple[str, str | None, list[bytes]]:
    """(perspective, instruction or None for quality, image bytes) of a request :func:`build_paper_messages`
    built: what a server (a test's, a stand-in judge's) needs to answer it."""
    system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    perspective = next((p for p, t in SYSTEM_PROMPTS.items() if t == system), None)
    if perspective is None or not isinstance(user, list):
        raise ValueError("not a paper-protocol request (its system message is none of the released prompts)")
    text = " ".join(part.get("text", "") for part in user if part.get("type") == "text")
    m = re.search(r"Editing Instructions: (.*)\n", text)
    images = [decode_data_url(part["image_url"]["url"]) for part in user if part.get("type") == "image_url"]
    return perspective, (m.group(1) if m else None), images


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_YES_NO = {"yes": True, "no": False, "true": True, "false": False}


def _mapping(text: str) -> dict[str, Any] | None:
    """The first ``{...}`` of ``text`` as a dict (a Python literal, as asked, or JSON), keys lower-cased."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    body = text[start:end + 1]
    for load in (ast.literal_eval, json.loads):
        try:
            obj = load(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(obj, dict):
            return {str(k).strip().lower(): v for k, v in obj.items()}
    return None


def _yes(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _YES_NO.get(value.strip().strip(".!").lower())
    return None


def parse_paper_answer(text: str, perspective: str) -> Verdict:
    """Read a released-prompt answer (``{'following': 'yes', 'score': 4.5}``) into a :class:`~.prompts.Verdict`.

    The reference (``eval.py``) read answers with ``re.search(r"'score': (\\d+\\.\\d+)")`` and
    ``"yes" in answer``. What that got wrong, and what this parser does instead:

    * an integer score (``'score': 5``, which GPT-4o often gives), a JSON-quoted key (``"score": 4.5``) or no
      space after the colon raised, and ``eval.py`` then dropped the whole item without a word -- so the
      reported rates were computed on the items whose answers happened to match. Here any number 0-5 is read,
      as a Python literal or JSON, in or out of a code fence;
    * the yes/no test was a case-sensitive substring: ``'Yes'`` counted as no, and any ``yes`` anywhere in the
      text counted as yes. Here it is the value of the perspective's key (``following`` / ``consistent`` /
      ``clear``), exactly yes/no (any case) or a boolean;
    * ``eval.py`` appended an item's yes before reading its score, so when a score failed the yes was counted
      and the score was not: yes-rates and mean scores came from different items. Here an item's verdict is
      all or nothing.

    Anything else -- no yes/no under the asked key (nor a single other yes/no entry), no score, a score outside
    0-5 -- raises :class:`~.prompts.AnswerError`: the client retries, then records the item's error; an
    evaluation never drops an item silently.
    """
    key = ANSWER_KEYS[perspective]
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    obj = _mapping(body)
    if obj is None:  # not a literal: read "key: value" pairs off the text
        pairs = re.findall(r"""['"]?([A-Za-z_]+)['"]?\s*:\s*['"]?([A-Za-z]+|[+-]?(?:\d+(?:\.\d*)?|\.\d+))""", body)
        obj = {k.lower(): v for k, v in reversed(pairs)}  # reversed: the first occurrence wins
    if key in obj:
        yes = _yes(obj[key])
    else:  # the asked key is missing: accept one unambiguous yes/no entry (e.g. 'answer': 'no')
        found = [v for k, v in obj.items() if k != "score" and _yes(v) is not None]
        yes = _yes(found[0]) if len(found) == 1 else None
    if yes is None:
        raise AnswerError(f"no yes/no under {key!r} in the answer: {text[:120]!r}")
    score = obj.get("score")
    if isinstance(score, str):
        try:
            score = float(score.strip())
        except ValueError:
            score = None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or score != score:
        raise AnswerError(f"no numeric 'score' in the answer: {text[:120]!r}")
    if not 0 <= score <= MAX_SCORE:
        raise AnswerError(f"'score' = {score} is outside 0-{MAX_SCORE}: {text[:120]!r}")
    return Verdict(yes, float(score), text.strip())


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------
class PaperRequest(JudgeRequest):
    """One paper-protocol judgement: the kit's request (same client, cache, retries) asking the released
    question. ``mode`` is always ``"evaluate"``; the answer is a :class:`~.prompts.Verdict` whose reason is the
    judge's raw answer (the released prompt asks for no reason)."""

    protocol: ClassVar[str] = "paper"

    def __init__(self, perspective: str, instruction: str, source: ImageLike, edited: ImageLike, id: str = "",
                 source_sha256: str | None = None, edited_sha256: str | None = None) -> None:
        super().__init__(perspective, "evaluate", instruction, source, edited, id, source_sha256, edited_sha256)

    @property
    def prompt_version(self) -> str:
        return PAPER_PROMPT_VERSION

    def key(self, model: str, detail: str = "low") -> str:
        """The kit's key with ``protocol="paper"``; no image detail is sent, so none is keyed. Quality's key
        has no source image: the judge never sees it."""
        src, edt = self.hashes()
        return request_key(model, self.perspective, self.mode, self.instruction, "" if self.perspective == "quality"
                           else src, edt, detail="auto", prompt_version=PAPER_PROMPT_VERSION, protocol="paper")

    def cheap_to_encode(self, limit: int = 1 << 16) -> bool:
        return False  # resizing to 512 px and JPEG-encoding: in a worker thread, never on the event loop

    def messages(self, detail: str = "low") -> list[dict]:
        src, edt = prepare_images(self.source, self.edited)
        return build_paper_messages(self.perspective, self.instruction, src, edt)

    def parse(self, text: str) -> Verdict:
        return parse_paper_answer(text, self.perspective)


# --------------------------------------------------------------------------------------------------
# Choosing the protocol and the judge
# --------------------------------------------------------------------------------------------------
def default_protocol(model_kind: str) -> str:
    """The protocol of a model kind when none is asked for and a judge endpoint is given: its config's
    ``judge_protocol`` (:data:`~rewardedit_lib.models.CONFIG_SETTINGS`): ``sd15`` models are judged as the
    paper judged them, so their numbers can stand beside Table 1; the toy world keeps the kit's protocol, the
    only one the local toy judge answers. ``"kit"`` for a kind the table does not know."""
    from ..models import CONFIG_SETTINGS  # here, not above: the judge package loads without torch

    settings = CONFIG_SETTINGS.get(model_kind)
    return settings.judge_protocol if settings is not None else "kit"


def is_toy_bench(bench_dir: str | Path) -> bool:
    """Whether a benchmark folder was drawn by the toy world (``rewardedit toy-bench`` leaves
    ``_truth/generator.json``): the only images the local toy judge can judge."""
    manifest = Path(bench_dir) / "_truth" / "generator.json"
    try:
        return str(json.loads(manifest.read_text()).get("generator", "")).startswith("toyworld")
    except (OSError, ValueError, AttributeError):
        return False


def paper_needs_endpoint() -> ValueError:
    """The refusal of ``paper`` without a judge endpoint (the local toy judge answers only the kit's questions),
    naming the option; :func:`choose_protocol` and :func:`~rewardedit_lib.evaluate.judge_edits` raise it."""
    return ValueError("the paper protocol asks a real judge (GPT-4o) the released questions; give its "
                      "endpoint with --base-url (base_url=) and the model with --judge-model "
                      f"(default {PAPER_JUDGE_MODEL}); the local toy judge answers only --protocol kit")


def choose_protocol(protocol: str | None, model_kind: str, base_url: str | None, bench_dir: str | Path | None,
                    azure: bool = False, judge_model: str | None = None) -> str:
    """The protocol to judge with, or a ``ValueError`` naming the option that is missing.

    * ``protocol=None``: :func:`default_protocol` of the model kind when a judge endpoint is given; ``"kit"``
      for the toy judge, local or at a URL (``judge_model="toy-judge"``): it answers only the kit's questions.
    * No endpoint (``base_url=None``, no Azure) means the local toy judge, a pixel judge of toy-world drawings:
      on any other benchmark it would print numbers that mean nothing, so that is refused, naming
      ``--base-url``; so is ``paper`` without an endpoint (the toy judge cannot answer the released prompts,
      which ask about photographs).
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if azure and base_url is None:
        raise ValueError("Azure OpenAI needs its endpoint: give --base-url https://<resource>.openai.azure.com/")
    local = base_url is None and not azure
    if local:
        if protocol == "paper":
            raise paper_needs_endpoint()
        if bench_dir is not None and not is_toy_bench(bench_dir):
            raise ValueError(f"{bench_dir} is not a toy-world benchmark, and without --base-url (base_url=) the "
                             f"judge is the local toy judge, which only judges toy drawings; give a real judge's "
                             f"endpoint with --base-url and --judge-model (e.g. https://api.openai.com/v1 and "
                             f"{PAPER_JUDGE_MODEL})")
        return "kit"
    if judge_model == TOY_JUDGE_MODEL:
        if protocol == "paper":
            raise ValueError(f"the toy judge ({TOY_JUDGE_MODEL}) answers only --protocol kit; the paper protocol "
                             f"needs a real judge (--judge-model {PAPER_JUDGE_MODEL} at its --base-url)")
        return "kit"
    return protocol or default_protocol(model_kind)


def judge_model_for(protocol: str, judge_model: str | None, local: bool) -> str | None:
    """The judge model: the caller's, else the toy judge's (local) or the paper's (``paper``); None = ask."""
    if judge_model:
        return judge_model
    if local:
        return TOY_JUDGE_MODEL
    return PAPER_JUDGE_MODEL if protocol == "paper" else None


def client_options_for(protocol: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :class:`~.client.JudgeClient` options for a protocol: the paper's request settings
    (:data:`PAPER_CLIENT_DEFAULTS`) under the caller's (``timeout``, ``max_retries``, ``concurrency``,
    ``azure_api_version`` ...)."""
    base = PAPER_CLIENT_DEFAULTS if protocol == "paper" else {}
    return {**base, **{k: v for k, v in (options or {}).items() if v is not None}}


def evaluation_requests(protocol: str, items: Iterable[Any], edits: Mapping[str, Path]) -> list[JudgeRequest]:
    """The three judgements of every benchmark item's edit (``items``: :class:`~..formats.BenchItem`), asked in
    ``protocol``'s words: the kit's ``evaluate`` mode, or the released prompts (:class:`PaperRequest`)."""
    if protocol == "paper":
        return [PaperRequest(p, it.instruction, it.image_path, edits[it.id], id=it.id)
                for it in items for p in PERSPECTIVES]
    return [JudgeRequest(p, "evaluate", it.instruction, it.image_path, edits[it.id], id=it.id)
            for it in items for p in PERSPECTIVES]


def judge_arguments(protocol: str | None, model_kind: str, bench_dir: str | Path, base_url: str | None,
                    judge_model: str | None, api_key_env: str | None,
                    client_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The judge arguments of :func:`~rewardedit_lib.evaluate.judge_edits` for one evaluation, the protocol
    chosen -- or refused, naming the missing option -- before anything is edited: a run that cannot be judged
    must not spend an hour editing first."""
    options = dict(client_options or {})
    azure = bool(options.get("azure_api_version"))
    chosen = choose_protocol(protocol, model_kind, base_url, bench_dir, azure=azure, judge_model=judge_model)
    model = judge_model_for(chosen, judge_model, base_url is None and not azure)
    if base_url is not None or azure:  # a missing key or model fails now, not after the editing
        if model is None:
            raise ValueError(f"give the judge model for {redact_url(base_url)} with --judge-model (judge_model=), "
                             f"e.g. gpt-4o")
        JudgeClient(model, base_url=base_url, api_key_env=api_key_env, **client_options_for(chosen, options))
    return {"base_url": base_url, "judge_model": judge_model, "api_key_env": api_key_env, "protocol": chosen,
            "client_options": options}


def judge_is_local(judge: Mapping[str, Any]) -> bool:
    """These judge arguments (:func:`judge_arguments`) mean the local toy judge: no URL and no Azure."""
    return judge["base_url"] is None and not judge["client_options"].get("azure_api_version")


def judge_record(judge: Mapping[str, Any]) -> dict[str, Any]:
    """Who judged, for ``summary.json``: endpoint (never a key), protocol and model."""
    return {"base_url": redact_url(judge["base_url"]) or "local toy judge", "protocol": judge["protocol"],
            "model": judge_model_for(judge["protocol"], judge["judge_model"], judge_is_local(judge))}


__all__ = ["ANSWER_KEYS", "PAPER_CLIENT_DEFAULTS", "PAPER_JUDGE_MODEL", "PAPER_PROMPT_VERSION",
           "PROTOCOLS", "PaperRequest", "SYSTEM_PROMPTS", "build_paper_messages", "choose_protocol", "client_options_for",
           "default_protocol",
           "evaluation_requests", "identify_paper", "is_toy_bench", "judge_arguments", "judge_is_local", "judge_model_for",
           "judge_record",
           "paper_needs_endpoint", "parse_paper_answer",
           "prepare_images", "user_text"]
