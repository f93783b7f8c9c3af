"""What the toy judge says: the verdicts, their scores, and the one sentence that names a failure.

Why a module of its own: the sentences are the judge's voice in the paper's style ("The red square was not
removed."), and the dataset's feedback is made of them; keeping them in tables makes every sentence the
judge can say readable in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..formats import MAX_SCORE, PERFECT_FEEDBACK, PERSPECTIVES

if TYPE_CHECKING:  # for annotations only
    from .quality import QualityReport
    from .world import EditSpec

#: A judgement passes the evaluation question ("is this perspective satisfied?") from this score up.
YES_THRESHOLD = 4


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Judgement:
    """One perspective's verdict: an integer 0-5 and one sentence naming the failure (or none)."""

    score: int
    feedback: str

    @property
    def yes(self) -> bool:
        return self.score >= YES_THRESHOLD


@dataclass(frozen=True)
class Assessment:
    """All three perspectives of one triplet, plus what the judge saw (for notebooks and debugging)."""

    following: Judgement
    preserving: Judgement
    quality: Judgement
    #: what the judge made of the pixels: the edit it read, the explanation it chose, the defect it measured
    notes: dict = field(default_factory=dict, compare=False)

    def __getitem__(self, perspective: str) -> Judgement:
        if perspective not in PERSPECTIVES:
            raise KeyError(f"unknown perspective {perspective!r}; expected one of {', '.join(PERSPECTIVES)}")
        return getattr(self, perspective)


def perfect() -> Judgement:
    return Judgement(MAX_SCORE, PERFECT_FEEDBACK)


#: The toy judge's sentence for each quality flaw it finds (scores 0-3); tools ask the model for these by name.
QUALITY_FEEDBACK = {
    "noise": "The image is covered in noise.",
    "blur": "The image is blurry.",
    "blocky": "The image has blocky compression artifacts.",
}
_QUALITY_FEEDBACK_MILD = {
    "noise": "The image has some grainy noise.",
    "blur": "The image is slightly blurry.",
    "blocky": "The image has some blocky artifacts.",
}


def quality_judgement(q: QualityReport) -> Judgement:
    if q.finding is None:
        return perfect()
    return Judgement(q.score, (_QUALITY_FEEDBACK_MILD if q.score >= 4 else QUALITY_FEEDBACK)[q.finding])


# --------------------------------------------------------------------------------------------------
# Following: one sentence per (edit type, outcome)
# --------------------------------------------------------------------------------------------------
#: ``(edit type, outcome) -> sentence``; ``None`` is every other outcome that is not "done" (nothing done,
#: or a failure the edit type has no sentence of its own for). An edit type missing here (Style) uses
#: :data:`_OTHER_FOLLOWING_FEEDBACK`. Fields: ``tgt`` the named object, ``other`` the object the edit hit
#: instead, ``want`` the object to add, ``value`` / ``size`` / ``shape`` / ``region`` the instruction's,
#: ``got`` / ``got_size`` / ``got_name`` what the edited image shows instead.
_FOLLOWING_FEEDBACK: dict[str, dict[str | None, str]] = {
    "Local": {
        "wrong_object": "The {other} turned {got} instead of the {tgt}.",
        "wrong_attribute": "The {tgt} turned {got} instead of {value}.",
        "partial": "The {tgt} was only partly turned {value}.",
        None: "The {tgt} did not turn {value}.",
    },
    "Remove": {
        "wrong_object": "The {other} was removed instead of the {tgt}.",
        "partial": "The {tgt} was only partly removed.",
        None: "The {tgt} was not removed.",
    },
    "Texture": {
        "wrong_object": "The {other} was filled with {got} instead of the {tgt}.",
        "wrong_attribute": "The {tgt} was filled with {got} instead of {value}.",
        "partial": "The {tgt} was only partly filled with {value}.",
        None: "The {tgt} was not filled with {value}.",
    },
    "Add": {
        "partial": "The {want} at the {region} was only partly drawn.",
        "wrong_size": "The added {want} is {got_size} instead of {size}.",
        "wrong_attribute": "The added {shape} is {got} instead of {value}.",
        "wrong_object": "A {got_name} was added instead of a {want}.",
        None: "No {want} was added at the {region}.",
    },
    "Background": {
        "wrong_attribute": "The background turned {got} instead of {value}.",
        "partial": "The background was only partly turned {value}.",
        None: "The background did not turn {value}.",
    },
    "Global": {
        "wrong_attribute": "The image was made {got} instead of {value}.",
        "partial": "Only part of the image was made {value}.",
        None: "The image was not made {value}.",
    },
}
_OTHER_FOLLOWING_FEEDBACK = {
    "partial": "The objects were only partly drawn as outlines.",
    None: "The objects were not drawn as outlines.",
}


def _name(color: str, shape: str) -> str:
    return f"{color} {shape}"


def following_feedback(spec: EditSpec, hyp) -> str:
    """One sentence naming what went wrong with the edit itself, in the paper's style (``hyp``: the
    :class:`.explanation._Hyp` the judge chose; its ``label`` and ``what``)."""
    lab, w = hyp.label, hyp.what
    if lab == "done":
        return PERFECT_FEEDBACK
    table = _FOLLOWING_FEEDBACK.get(spec.edit_type, _OTHER_FOLLOWING_FEEDBACK)
    sentence = table.get(lab, table[None])
    return sentence.format(
        tgt=_name(*spec.target) if spec.target else None,
        other=w["object"].name if "object" in w else None,
        want=_name(spec.value, spec.shape),
        value=spec.value, size=spec.size, shape=spec.shape, region=spec.region,
        got=w.get("value"), got_size=w.get("size"),
        got_name=_name(w["value"], w["shape"]) if "shape" in w else None,
    )


FOLLOWING_SCORES = {"done": 5, "wrong_size": 3, "partial": 2, "wrong_attribute": 1, "wrong_object": 1,
                     "no_change": 0}
