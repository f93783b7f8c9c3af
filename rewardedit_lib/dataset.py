"""Dataset statistics: counts per edit type and score, agreement between perspectives, failure phrases.

Why separate from :mod:`viz`: the same numbers feed ``rewardedit validate`` (text), notebook 02 (figures)
and tests, so they are computed once here, as plain data, and only drawn in :mod:`viz`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np

from .formats import EDIT_TYPES, MAX_SCORE, PERFECT_FEEDBACK, PERSPECTIVES, Rewards, Triplet
from .guidance import LOW_REWARD_TEXT

UNKNOWN_TYPE = "unknown"  # real InstructPix2Pix data carries no edit type


def count_by_edit_type(triplets: Iterable[Triplet]) -> dict[str, int]:
    """Number of triplets per edit type: the seven in Real-Edit order, then any others (``unknown``) found."""
    c = Counter(t.edit_type or UNKNOWN_TYPE for t in triplets)
    out = {t: c.get(t, 0) for t in EDIT_TYPES}
    out.update({k: c[k] for k in sorted(c) if k not in EDIT_TYPES})
    return out


def score_counts(triplets: Iterable[Triplet]) -> dict[str, list[int]]:
    """For each perspective, how many triplets got each score 0..5 (triplets without rewards are ignored)."""
    out = {p: [0] * (MAX_SCORE + 1) for p in PERSPECTIVES}
    for t in triplets:
        if t.rewards is None:
            continue
        for p, s in zip(PERSPECTIVES, t.rewards.scores):
            out[p][s] += 1
    return out


def score_matrix(triplets: Iterable[Triplet]) -> np.ndarray:
    """``(n, 3)`` array of scores (following, preserving, quality) of the triplets that have rewards."""
    rows = [t.rewards.scores for t in triplets if t.rewards is not None]
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def truth_matrix(truth: Mapping[str, dict], folders: Sequence[str] | None = None) -> np.ndarray:
    """``(n, 3)`` array of the toy world's ground truth, 1.0 = ok, 0.0 = flawed, per perspective."""
    keys = list(truth) if folders is None else list(folders)
    return np.asarray([[float(truth[k][f"{p}_ok"]) for p in PERSPECTIVES] for k in keys]).reshape(-1, 3)


def correlation(matrix: np.ndarray) -> np.ndarray:
    """Pearson correlation between the three perspectives (NaN where a column is constant).

    Why it matters: if the three rewards were strongly correlated, one score would do; the paper's case
    for *multi*-reward is that they measure different failures.
    """
    m = np.asarray(matrix, dtype=float)
    out = np.full((m.shape[1], m.shape[1]), np.nan)
    if len(m) < 2:
        return out
    std = m.std(axis=0)
    for i in range(m.shape[1]):
        for j in range(m.shape[1]):
            if std[i] > 0 and std[j] > 0:
                out[i, j] = float(np.corrcoef(m[:, i], m[:, j])[0, 1])
    return out


def flaw_rates(truth: Mapping[str, dict]) -> dict[str, dict[str, float]]:
    """Share of flawed triplets per perspective and of imperfect ones ("any"), overall ("all") and per edit
    type, with the group size "n" (from ``_truth/flaws.jsonl``)."""
    groups: dict[str, list[dict]] = {"all": list(truth.values())}
    for d in truth.values():
        groups.setdefault(d["edit_type"], []).append(d)
    out = {}
    for g in ["all"] + [t for t in EDIT_TYPES if t in groups]:
        lines = groups[g]
        rates = {p: float(np.mean([not d[f"{p}_ok"] for d in lines])) for p in PERSPECTIVES}
        rates["any"] = float(np.mean([not all(d[f"{p}_ok"] for p in PERSPECTIVES) for d in lines]))
        rates["n"] = float(len(lines))
        out[g] = rates
    return out


_COLOR_WORDS = r"\b(red|green|blue|yellow|purple|orange|white|gray|grey|black|teal)\b"


def normalise_phrase(text: str) -> str:
    """Lower-case a feedback sentence and replace colour words by ``<colour>``, numbers by ``<n>``.

    So "The red square was not removed." and "The blue circle was not removed." count as one *kind* of
    failure ("the <colour> square was not removed"), which is what a reader of the dataset wants to see.
    """
    t = text.strip().lower().rstrip(".")
    t = re.sub(_COLOR_WORDS, "<colour>", t)
    t = re.sub(r"\d+(\.\d+)?", "<n>", t)
    return " ".join(t.split())


def failure_phrases(triplets: Iterable[Triplet], top: int = 10) -> dict[str, list[tuple[str, int]]]:
    """The most frequent failure phrases per perspective (perfect-score feedback excluded)."""
    counters = {p: Counter() for p in PERSPECTIVES}
    perfect = normalise_phrase(PERFECT_FEEDBACK)
    for t in triplets:
        if t.rewards is None:
            continue
        for p, fb in zip(PERSPECTIVES, t.rewards.feedbacks):
            for sentence in re.split(r"(?<=[.!?])\s+", fb.strip()):
                n = normalise_phrase(sentence)
                if n and n != perfect and n not in ("none", "n/a"):
                    counters[p][n] += 1
    return {p: c.most_common(top) for p, c in counters.items()}


def common_failure_text(rewards: Iterable[Rewards]) -> str:
    """The most frequent failure sentence of each perspective (score below 5), joined by "; ": what a
    model trained on these rewards has heard most often when a perspective failed.

    Why: the reward knob and low-reward guidance ask a model for low rewards, and a model conditioned on
    feedback text hears them only in words it was trained on (a generic "The unrelated details were
    changed." never occurs in toy data). Exact sentences, not :func:`normalise_phrase`'s kinds: the text
    encoder reads the sentence itself. A perspective without failures keeps the generic sentence of
    :data:`~rewardedit_lib.guidance.LOW_REWARD_TEXT`; ties go to the sentence seen first.
    """
    counters = [Counter() for _ in PERSPECTIVES]
    perfect = normalise_phrase(PERFECT_FEEDBACK)
    for r in rewards:
        for c, score, fb in zip(counters, r.scores, r.feedbacks):
            if score < MAX_SCORE and fb.strip() and normalise_phrase(fb) != perfect:
                c[fb.strip()] += 1
    generic = LOW_REWARD_TEXT.split("; ")
    return "; ".join(c.most_common(1)[0][0] if c else g for c, g in zip(counters, generic))


def truth_failure_kinds(truth: Mapping[str, dict], top: int = 10) -> dict[str, list[tuple[str, int]]]:
    """The toy world's own failure kinds per perspective: what the phrases stand for before annotation."""
    return {p: Counter(d[f"{p}_flaw"] for d in truth.values() if d.get(f"{p}_flaw")).most_common(top)
            for p in PERSPECTIVES}


def summary_text(triplets: Sequence[Triplet]) -> str:
    """The plain-text summary ``rewardedit validate`` prints."""
    lines = [f"{len(triplets)} triplets", "per edit type:"]
    lines += [f"  {k:<11} {v}" for k, v in count_by_edit_type(triplets).items()]
    with_rewards = sum(t.rewards is not None for t in triplets)
    if with_rewards:
        lines.append(f"per score ({with_rewards} with rewards):   " + "  ".join(f"{s:>5}" for s in range(MAX_SCORE + 1)))
        for p, counts in score_counts(triplets).items():
            lines.append(f"  {p:<11}" + " " * 12 + "  ".join(f"{c:>5}" for c in counts))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Selection: which triplets a grid or the browser shows (plain data, so tests can check it without a UI)
# --------------------------------------------------------------------------------------------------
TRUTH_FLAGS: tuple[str, ...] = ("ok", "flawed")  # the score filter's values when only ground truth exists


def truth_of(triplet: Triplet, truth: Mapping[str, dict] | None) -> dict | None:
    """The ground-truth line of a triplet (keyed by folder; ``folder#seed`` ids map to their folder)."""
    if truth is None:
        return None
    return truth.get(triplet.id) or truth.get(triplet.id.split("#")[0])


def examples_per_type(triplets: Sequence[Triplet], per_type: int = 3) -> dict[str, list[Triplet]]:
    """The first ``per_type`` triplets of each edit type, in Real-Edit order (``unknown`` last).

    First rather than random: the same data always shows the same examples, so a figure in the notes
    matches the one a reader regenerates.
    """
    out: dict[str, list[Triplet]] = {k: [] for k in count_by_edit_type(triplets)}
    for t in triplets:
        group = out[t.edit_type or UNKNOWN_TYPE]
        if len(group) < per_type:
            group.append(t)
    return {k: v for k, v in out.items() if v}


def score_filter_options(triplets: Sequence[Triplet], truth: Mapping[str, dict] | None = None) -> list:
    """What the score filter can select: the scores 0..5 when rewards exist, else the truth flags, else none."""
    if any(t.rewards is not None for t in triplets):
        return list(range(MAX_SCORE + 1))
    if truth:
        return list(TRUTH_FLAGS)
    return []


def filter_indices(triplets: Sequence[Triplet], truth: Mapping[str, dict] | None = None, *,
                   edit_type: str | None = None, perspective: str = PERSPECTIVES[0],
                   score: int | str | None = None) -> list[int]:
    """Indices of the triplets that pass the filters (``None`` = no filter).

    ``score`` is either an integer (the triplet's reward score for ``perspective``; triplets without
    rewards never match) or ``"ok"`` / ``"flawed"`` (the toy world's ground truth for ``perspective``;
    triplets without a truth line never match).
    """
    if perspective not in PERSPECTIVES:
        raise ValueError(f"unknown perspective {perspective!r}; expected one of {', '.join(PERSPECTIVES)}")
    if isinstance(score, str) and score not in TRUTH_FLAGS:
        raise ValueError(f"score filter {score!r}: expected an integer 0-{MAX_SCORE}, 'ok' or 'flawed'")
    if isinstance(score, str) and truth is None:
        raise ValueError(f"score filter {score!r} needs the ground truth, and none was given")
    p = PERSPECTIVES.index(perspective)
    keep = []
    for i, t in enumerate(triplets):
        if edit_type is not None and (t.edit_type or UNKNOWN_TYPE) != edit_type:
            continue
        if isinstance(score, str):
            line = truth_of(t, truth)
            if line is None or bool(line[f"{perspective}_ok"]) != (score == "ok"):
                continue
        elif score is not None and (t.rewards is None or t.rewards.scores[p] != score):
            continue
        keep.append(i)
    return keep


def correlation_pairs(corr: np.ndarray, labels: Sequence[str] = PERSPECTIVES) -> dict[str, float | None]:
    """The off-diagonal correlations as ``{"following~preserving": r, ...}``, NaN as ``None`` (valid JSON)."""
    out = {}
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            v = float(corr[i, j])
            out[f"{labels[i]}~{labels[j]}"] = None if np.isnan(v) else round(v, 4)
    return out


# --------------------------------------------------------------------------------------------------
# Agreement of a judge with the toy world's ground truth
# --------------------------------------------------------------------------------------------------
def roc_auc(scores: Sequence[float], ok: Sequence[bool]) -> float:
    """ROC AUC of ``scores`` for telling ok (positive) from flawed triplets: the probability that a random
    ok triplet scores higher than a random flawed one, ties counting half (Mann-Whitney U). NaN if a class
    is empty."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(ok, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def agreement(truth: Mapping[str, dict], triplets: Iterable[Triplet], yes_from: int = 4) -> dict[str, dict]:
    """How well reward scores recover the toy world's ground truth, per perspective.

    For each perspective: ``auc`` (scores separating ok from flawed), ``accuracy`` of "score >= yes_from"
    as a verdict, the ``confusion`` counts (truth ok/flawed x judge yes/no) and the score histograms of ok and
    flawed triplets (``scores_ok`` / ``scores_flawed``, counts of 0..5). Triplets without rewards or truth are
    left out; ``n`` says how many were compared.
    """
    pairs = [(truth[t.id], t.rewards) for t in triplets if t.rewards is not None and t.id in truth]
    out = {}
    for i, p in enumerate(PERSPECTIVES):
        ok = np.array([bool(line[f"{p}_ok"]) for line, _ in pairs], dtype=bool)
        scores = np.array([r.scores[i] for _, r in pairs], dtype=int)
        yes = scores >= yes_from
        out[p] = {
            "n": len(pairs),
            "auc": roc_auc(scores, ok),
            "accuracy": float(np.mean(yes == ok)) if len(pairs) else float("nan"),
            "confusion": {"ok_yes": int(np.sum(ok & yes)), "ok_no": int(np.sum(ok & ~yes)),
                          "flawed_yes": int(np.sum(~ok & yes)), "flawed_no": int(np.sum(~ok & ~yes))},
            "scores_ok": np.bincount(scores[ok], minlength=MAX_SCORE + 1).tolist(),
            "scores_flawed": np.bincount(scores[~ok], minlength=MAX_SCORE + 1).tolist(),
        }
    return out


def flawed_examples(triplets: Sequence[Triplet], truth: Mapping[str, dict], perspective: str, k: int = 4,
                    ok: bool = False) -> list[Triplet]:
    """The first ``k`` triplets that are flawed (or, with ``ok=True``, fine) in ``perspective``, each of a
    different failure kind where possible -- examples for a lecture, not a sample."""
    picked, kinds = [], set()
    for t in triplets:
        line = truth.get(t.id)
        if line is None or bool(line[f"{perspective}_ok"]) != ok:
            continue
        kind = line.get(f"{perspective}_flaw")
        if kind in kinds and not ok:
            continue
        kinds.add(kind)
        picked.append(t)
        if len(picked) == k:
            break
    return picked


def feedback_rows(triplets: Sequence[Triplet], truth: Mapping[str, dict], perspective: str,
                  k: int = 5) -> list[tuple[str, str, int, str]]:
    """(instruction, injected flaw, judge score, judge feedback) for ``k`` flawed examples of ``perspective``."""
    i = PERSPECTIVES.index(perspective)
    rows = []
    for t in flawed_examples([t for t in triplets if t.rewards is not None], truth, perspective, k):
        r = t.rewards.following if i == 0 else t.rewards.preserving if i == 1 else t.rewards.quality
        rows.append((t.instruction, str(truth[t.id][f"{perspective}_flaw"]), r.score, r.feedback))
    return rows
