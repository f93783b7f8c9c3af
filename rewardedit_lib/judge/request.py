"""What is asked of the judge, and under which key its answer is cached.

A :class:`JudgeRequest` is one judgement (a perspective and mode, an instruction, two images); its
:meth:`~JudgeRequest.key` (:func:`request_key`) names the answer in the cache (:mod:`.cache`). Separate from
:mod:`.client` because the key is a promise to users' disks: any change to it asks every cached question
again, so it lives where it can be read, and tested, on its own. :mod:`.paper_protocol` subclasses the request
to ask the reference's questions instead of the kit's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

from . import prompts
from .prompts import Annotation, Verdict

#: The model name the kit's toy judge answers to (its server's default).
TOY_JUDGE_MODEL = "toy-judge"

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

    ``model`` is the judge's identity as the cache knows it: its name, and its version where the caller knows
    one the name does not pin (:attr:`.client.JudgeClient.cache_model`: ``"toy-judge/toy-judge-4"`` for the kit's
    toy judge, so a judgement cached by an older toy judge is not reused after the judge changed; a hosted
    model's name is all the kit can know of it). Nothing here knows any particular judge.

    ``protocol``: whose questions these are -- ``"kit"`` (:mod:`.prompts`) or ``"paper"`` (the reference's
    released evaluation, :mod:`.paper_protocol`). A non-kit protocol is a field of the hashed payload, so a
    paper verdict can never be read as a kit verdict or the other way round; the kit's payload is left as it
    was before protocols existed, so caches written then stay valid.
    """
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
