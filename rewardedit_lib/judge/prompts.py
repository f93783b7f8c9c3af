"""The judge's prompts, versioned, and the parsing of its answers.

Why versioned: an answer is only meaningful together with the question that produced it. The prompt version
is part of every cache key, so changing a prompt (and bumping :data:`PROMPT_VERSION`) re-asks; leaving it
alone never pays twice.

The paper's annotation prompts were never released; these are the kit's own. Each perspective is asked
separately (one request = one perspective), which keeps every answer small and lets a failed answer be
retried alone. Two modes:

* ``annotate`` (training data, RewardEdit20K-style): ``{"score": int 0-5, "feedback": str}``;
* ``evaluate`` (Real-Edit, as the paper reports it): ``{"yes": bool, "score": number 0-5, "reason": str}``.

The request is the same for GPT-4o, any OpenAI-compatible server and the kit's toy judge: a system message
with the perspective's prompt, and a user message with the instruction and two base64 PNG images (source,
then edited). The toy judge finds the perspective and mode with :func:`identify`.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..formats import MAX_SCORE, PERFECT_FEEDBACK, PERSPECTIVE_TITLES, PERSPECTIVES

PROMPT_VERSION = "v1"
Mode = Literal["annotate", "evaluate"]
MODES: tuple[str, ...] = ("annotate", "evaluate")

_QUESTIONS = {
    "following": (
        "Judge INSTRUCTION FOLLOWING only: was the instruction carried out, completely, on the object or region "
        "it names, with the attribute it asks for (colour, pattern, position, tone, style)? Ignore changes to "
        "other content and ignore image quality: other perspectives judge those."
    ),
    "preserving": (
        "Judge DETAIL PRESERVING only: is everything the instruction did not ask to change unchanged -- the other "
        "objects (their position, colour, shape and presence), the background and the composition? A change the "
        "instruction asks for is not a preservation failure. Ignore whether the instruction was followed and "
        "ignore image quality: other perspectives judge those."
    ),
    "quality": (
        "Judge GENERATION QUALITY only: does the edited image look clean and natural -- no noise, blur, blocky or "
        "compression artifacts, distorted shapes, or smeared colours? Ignore whether the instruction was "
        "followed and whether other content changed: other perspectives judge those."
    ),
}
_SCALE = ("Scores: 5 = perfect; 4 = a minor flaw; 3 = a clear flaw; 2 = a serious flaw; 1 = the aspect "
          "largely failed; 0 = completely failed.")

_ANNOTATE_FORMAT = (
    'Answer with JSON only: {{"score": <integer 0-5>, "feedback": "<one short sentence>"}}. The feedback names '
    'the concrete failure point, e.g. "The red square was not removed." or "The blue circle moved to the top '
    'left." If there is no failure, the score is 5 and the feedback is exactly "{perfect}"'
)
_EVALUATE_FORMAT = (
    'Answer with JSON only: {"yes": <true or false>, "score": <number 0-5>, "reason": "<one short sentence>"}. '
    '"yes" answers the question "is this perspective satisfied?"; the reason names the failure, or says none.'
)


def system_prompt(perspective: str, mode: Mode = "annotate") -> str:
    """The system message for one perspective and mode."""
    if perspective not in PERSPECTIVES:
        raise ValueError(f"unknown perspective {perspective!r}; expected one of {', '.join(PERSPECTIVES)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    fmt = _ANNOTATE_FORMAT.format(perfect=PERFECT_FEEDBACK) if mode == "annotate" else _EVALUATE_FORMAT
    return (
        f"You are an expert judge of instruction-based image editing. Perspective: "
        f"{PERSPECTIVE_TITLES[perspective]}. You see an editing instruction, the source image (image 1) and the "
        f"edited image (image 2).\n{_QUESTIONS[perspective]}\n{_SCALE}\n{fmt}"
    )


def png_data_url(image: Any) -> str:
    """A PIL image (or PNG bytes) as a ``data:image/png;base64,...`` URL, the way images travel to the judge."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def decode_data_url(url: str) -> bytes:
    """The image bytes of a base64 data URL (raises ValueError for anything else)."""
    m = re.match(r"^data:image/[a-zA-Z0-9.+-]+;base64,(.*)$", url, flags=re.DOTALL)
    if not m:
        raise ValueError("expected a base64 data URL (data:image/...;base64,...)")
    return base64.b64decode(m.group(1), validate=True)


def user_text(instruction: str) -> str:
    return f"Instruction: {instruction}\nImage 1 is the source image; image 2 is the edited image."


def build_messages(perspective: str, mode: Mode, instruction: str, source: Any, edited: Any,
                   detail: str = "low") -> list[dict]:
    """The chat messages for one judgement. ``source``/``edited``: PIL images or PNG bytes.

    ``detail="low"`` asks OpenAI for its fixed-cost 512 px view: enough for edit judgements, a fraction
    of the tokens of ``"high"``.
    """
    return [
        {"role": "system", "content": system_prompt(perspective, mode)},
        {"role": "user", "content": [
            {"type": "text", "text": user_text(instruction)},
            {"type": "image_url", "image_url": {"url": png_data_url(source), "detail": detail}},
            {"type": "image_url", "image_url": {"url": png_data_url(edited), "detail": detail}},
        ]},
    ]


def response_format(mode: Mode) -> dict:
    """The structured-output request (``response_format``) for a mode: a strict JSON schema."""
    if mode == "annotate":
        props = {"score": {"type": "integer", "minimum": 0, "maximum": MAX_SCORE}, "feedback": {"type": "string"}}
    else:
        props = {"yes": {"type": "boolean"}, "score": {"type": "number", "minimum": 0, "maximum": MAX_SCORE},
                 "reason": {"type": "string"}}
    return {"type": "json_schema", "json_schema": {
        "name": f"rewardedit_{mode}", "strict": True,
        "schema": {"type": "object", "properties": props, "required": list(props), "additionalProperties": False},
    }}


def identify(messages: list[dict]) -> tuple[str, Mode, str, list[bytes]]:
    """(perspective, mode, instruction, [source PNG, edited PNG]) of a request built by :func:`build_messages`.

    The toy judge server uses this to read requests exactly as a real judge receives them.
    """
    system = next((m["content"] for m in messages if m.get("role") == "system"), None)
    user = next((m["content"] for m in messages if m.get("role") == "user"), None)
    if not isinstance(system, str) or user is None:
        raise ValueError("expected a system message (the prompt) and a user message (instruction and images)")
    perspective = next((p for p, title in PERSPECTIVE_TITLES.items() if f"Perspective: {title}." in system), None)
    if perspective is None:
        raise ValueError("the system message names no known perspective")
    mode: Mode = "evaluate" if '"yes"' in system else "annotate"
    parts = user if isinstance(user, list) else [{"type": "text", "text": user}]
    text = " ".join(p.get("text", "") for p in parts if p.get("type") == "text")
    m = re.search(r"Instruction:\s*(.*?)\s*(?:\nImage 1|$)", text, flags=re.DOTALL)
    if not m or not m.group(1).strip():
        raise ValueError("the user message has no 'Instruction: ...' line")
    images = [decode_data_url(p["image_url"]["url"]) for p in parts if p.get("type") == "image_url"]
    if len(images) != 2:
        raise ValueError(f"expected 2 images (source, edited), got {len(images)}")
    return perspective, mode, m.group(1).strip(), images


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------
class AnswerError(ValueError):
    """The judge's answer could not be read or is out of range (the request is retried, then recorded as failed)."""


@dataclass(frozen=True)
class Annotation:
    score: int
    feedback: str


@dataclass(frozen=True)
class Verdict:
    yes: bool
    score: float
    reason: str


def _extract_json(text: str) -> dict:
    t = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", t, flags=re.DOTALL | re.IGNORECASE)
    if fenced:
        t = fenced.group(1).strip()
    try:
        obj = json.loads(t)
    except json.JSONDecodeError:
        start, end = t.find("{"), t.rfind("}")
        if start < 0 or end <= start:
            raise AnswerError(f"no JSON object in the answer: {text[:120]!r}") from None
        try:
            obj = json.loads(t[start:end + 1])
        except json.JSONDecodeError as e:
            raise AnswerError(f"malformed JSON in the answer ({e.msg}): {text[:120]!r}") from None
    if not isinstance(obj, dict):
        raise AnswerError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _number(obj: dict, key: str) -> float:
    if key not in obj:
        raise AnswerError(f"the answer has no {key!r}")
    v = obj[key]
    if isinstance(v, bool):
        raise AnswerError(f"{key!r} must be a number, got {v!r}")
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise AnswerError(f"{key!r} must be a number, got {v!r}") from None
    if not isinstance(v, (int, float)) or v != v:
        raise AnswerError(f"{key!r} must be a number, got {v!r}")
    if not 0 <= v <= MAX_SCORE:
        raise AnswerError(f"{key!r} = {v} is outside 0-{MAX_SCORE}")
    return float(v)


def _text(obj: dict, key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise AnswerError(f"the answer has no text {key!r}")
    return v.strip()


def parse_annotation(text: str) -> Annotation:
    """Read an ``annotate`` answer leniently (fenced JSON, a float or string score) and validate it.

    A non-integral score is rounded (a judge answering 3.5 meant between 3 and 4; RewardEdit stores integers).
    A perfect score with an empty or "none" feedback gets the dataset's perfect-score sentence, so training
    and inference see one text for "no failure".
    """
    obj = _extract_json(text)
    score = int(round(_number(obj, "score")))
    feedback = _text(obj, "feedback")
    if score == MAX_SCORE and feedback.lower().strip(". ") in ("", "none", "n/a", "no failure", "no issues"):
        feedback = PERFECT_FEEDBACK
    if not feedback:
        raise AnswerError("the feedback is empty although the score is below 5")
    return Annotation(score, feedback)


def parse_verdict(text: str) -> Verdict:
    """Read an ``evaluate`` answer: ``yes`` must be a boolean or exactly yes/no/true/false (never a substring)."""
    obj = _extract_json(text)
    if "yes" not in obj:
        raise AnswerError("the answer has no 'yes'")
    yes = obj["yes"]
    if isinstance(yes, str) and yes.strip().lower() in ("yes", "true", "no", "false"):
        yes = yes.strip().lower() in ("yes", "true")
    if not isinstance(yes, bool):
        raise AnswerError(f"'yes' must be true or false, got {obj['yes']!r}")
    return Verdict(yes, _number(obj, "score"), _text(obj, "reason"))


def parse_answer(text: str, mode: Mode) -> Annotation | Verdict:
    return parse_annotation(text) if mode == "annotate" else parse_verdict(text)
