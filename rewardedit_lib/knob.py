"""The reward knob: does a multi-reward model obey its rewards at all?

Every comparison of a multi-reward model with the no-reward baseline rests on it: a model that does not hear
its rewards can differ from the baseline only by chance. :func:`reward_knob` edits the benchmark asking for a
low score in one perspective (the other two at 5) and at (5, 5, 5), judges every edit as
:func:`~rewardedit_lib.evaluate.evaluate` does, and measures how far the judge's yes-rate in that
perspective moves, with a paired-bootstrap interval (the same item and noise at both settings, so only the
rewards differ).

Files: one :func:`~rewardedit_lib.evaluate.evaluate` folder per setting under ``out_dir``, named after its
requested scores (:func:`knob_slug`: ``F0-P5-Q5`` ...), and ``knob.json`` (:class:`KnobReport`).

Built on :mod:`.evaluate`'s editing, judging and paired statistics (it adds no protocol of its own); split
from it so that each module holds one idea.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .evaluate import (EditSettings, _bench_items, _evaluate_loaded, _model_id, _paired_cells, load_model,
                       markdown_table, model_kind, paired_difference, read_results)
from .formats import PERFECT_FEEDBACK, PERSPECTIVES
from .guidance import LOW_REWARD_TEXT
from .judge.paper_protocol import judge_arguments
from .pipeline import DEFAULT_REWARD_TEXT, PERFECT_SCORES, RewardEditPipeline
from .plumbing import atomic_write_json, read_json

KNOB_NAME = "knob.json"
#: The letter a perspective's requested score is spelled with (folder names, sweep labels, table titles).
SCORE_LETTERS: dict[str, str] = {"following": "F", "preserving": "P", "quality": "Q"}


def _num(x: float) -> str:
    return f"{float(x):g}"


def knob_slug(scores: Sequence[float], sep: str = "-") -> str:
    """The folder name of a knob setting, spelling out the requested scores: ``F0-P5-Q5`` (``sep=" "``: the
    same as a label, ``F0 P5 Q5``)."""
    return sep.join(f"{SCORE_LETTERS[p]}{_num(s)}" for p, s in zip(PERSPECTIVES, scores))


def knob_settings(low: float = 0.0, failure_text: str = LOW_REWARD_TEXT) -> dict[str, dict[str, Any]]:
    """The knob's rewards: ``"high"`` -- (5, 5, 5) with :data:`~rewardedit_lib.pipeline.DEFAULT_REWARD_TEXT`,
    exactly what :func:`~rewardedit_lib.evaluate.evaluate` asks for -- and, per perspective, its score at
    ``low`` with its failure sentence of ``failure_text`` (three sentences joined by "; "; the model's own, its
    :attr:`~rewardedit_lib.pipeline.RewardEditPipeline.low_reward_text`, in :func:`reward_knob`), the other
    two at 5 with the perfect-score feedback. ``{name: {"reward_scores": (f, p, q), "reward_text": str}}``."""
    if not 0 <= float(low) < PERFECT_SCORES[0]:
        raise ValueError(f"low={low}: the knob's low score must be in [0, {PERFECT_SCORES[0]:g})")
    sentences = failure_text.split("; ")
    if len(sentences) != len(PERSPECTIVES):
        raise ValueError(f"failure_text={failure_text!r}: expected {len(PERSPECTIVES)} sentences joined by '; '")
    out: dict[str, dict[str, Any]] = {"high": {"reward_scores": tuple(PERFECT_SCORES), "reward_text": DEFAULT_REWARD_TEXT}}
    for k, p in enumerate(PERSPECTIVES):
        scores = tuple(float(low) if j == k else PERFECT_SCORES[j] for j in range(len(PERSPECTIVES)))
        text = "; ".join(sentences[j] if j == k else PERFECT_FEEDBACK for j in range(len(PERSPECTIVES)))
        out[p] = {"reward_scores": scores, "reward_text": text}
    return out


def _verdict(ci: Sequence[float]) -> str:
    lo, hi = ci
    if lo > 0:
        return "obeys"
    if hi < 0:
        return "reversed"
    return "not shown" if lo == lo else "-"  # NaN: nothing judged


@dataclass
class KnobReport:
    """What :func:`reward_knob` measured; ``perspectives[p]`` holds, on the items judged at both settings,
    ``yes_rate_high`` / ``yes_rate_low`` (%), ``score_high`` / ``score_low``, ``knob`` (yes-rate at 5 minus at
    ``low``, points), ``knob_ci`` (its paired-bootstrap 95% interval), ``score_diff`` / ``score_diff_ci``,
    ``n`` and ``verdict`` (``obeys``: the interval lies above 0; ``not shown``: it contains 0; ``reversed``)."""

    out_dir: Path
    low: float
    n: int
    perspectives: dict[str, dict[str, Any]]
    settings: dict[str, dict[str, Any]]  # name -> reward_scores, reward_text, folder
    edit_settings: dict[str, Any]  # what every setting shares (steps, guidance, seed, ...), as (5, 5, 5)'s
    model: str = ""
    edit_s: float = 0.0
    judge_s: float = 0.0

    def table(self) -> dict[str, Any]:
        """The knob as a table of strings, ``{"columns", "rows"}``: what the notebook records and the report shows."""
        lo = _num(self.low)
        columns = ["perspective", "edits", "yes % at 5", f"yes % at {lo}", "knob (points) [95% CI]",
                   "score at 5", f"score at {lo}", "obeys?"]
        rows = []
        for p, c in self.perspectives.items():
            rows.append([p, str(c["n"]), f"{c['yes_rate_high']:.1f}", f"{c['yes_rate_low']:.1f}",
                         f"{c['knob']:+.1f} [{c['knob_ci'][0]:+.1f}, {c['knob_ci'][1]:+.1f}]",
                         f"{c['score_high']:.2f}", f"{c['score_low']:.2f}", c["verdict"]])
        return {"columns": columns, "rows": rows}

    def table_markdown(self) -> str:
        return markdown_table(self.table())

    def verdict(self) -> str:
        """One sentence: which rewards the model was shown to obey."""
        heard = [p for p, c in self.perspectives.items() if c["verdict"] == "obeys"]
        deaf = [p for p in self.perspectives if p not in heard]
        if not deaf:
            return "The model obeys all three rewards: asking for a low score lowers that perspective's yes-rate."
        head = (f"The model obeys its {', '.join(heard)} reward(s); " if heard
                else "The model obeys none of its rewards: ")
        return head + (f"asking for {_num(self.low)} instead of 5 does not measurably lower the yes-rate of "
                       f"{', '.join(deaf)}, so no difference from the baseline there can come from the rewards.")

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "n": self.n, "model": self.model, "out_dir": str(self.out_dir),
                "perspectives": self.perspectives,
                "settings": {k: {**v, "reward_scores": list(v["reward_scores"]), "folder": str(v["folder"])}
                             for k, v in self.settings.items()},
                "edit_settings": self.edit_settings, "edit_s": self.edit_s, "judge_s": self.judge_s,
                "table": self.table(), "verdict": self.verdict()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "KnobReport":
        return cls(Path(d["out_dir"]), float(d["low"]), int(d["n"]), dict(d["perspectives"]),
                   {k: {**v, "reward_scores": tuple(v["reward_scores"]), "folder": Path(v["folder"])}
                    for k, v in d["settings"].items()}, dict(d["edit_settings"]), d.get("model", ""),
                   float(d.get("edit_s", 0.0)), float(d.get("judge_s", 0.0)))

    def __str__(self) -> str:
        return (f"reward knob of {self.model or 'the model'} on {self.n} edits (low score {_num(self.low)}, "
                f"{self.edit_settings.get('num_inference_steps')} steps, seed {self.edit_settings.get('seed')}; "
                f"editing {self.edit_s:.1f} s, judging {self.judge_s:.1f} s) in {self.out_dir}\n"
                f"{self.table_markdown()}\n{self.verdict()}")


def read_knob(out_dir: str | Path) -> KnobReport:
    """The knob :func:`reward_knob` saved in ``out_dir`` (``knob.json``)."""
    path = Path(out_dir) / KNOB_NAME
    if not path.exists():
        raise FileNotFoundError(f"no reward knob in {out_dir} (expected {KNOB_NAME})")
    return KnobReport.from_json(read_json(path))


def reward_knob(model: str | Path | RewardEditPipeline, bench_dir: str | Path, out_dir: str | Path, *,
                low: float = 0.0, high_dir: str | Path | None = None, settings: EditSettings | None = None,
                changes: Mapping[str, Any] | None = None, seed: int | None = None, base_url: str | None = None,
                judge_model: str | None = None, api_key_env: str | None = None,
                device: torch.device | str | None = None, batch_size: int = 32, limit: int | None = None,
                n_boot: int = 1000, progress: bool = True, protocol: str | None = None,
                client_options: Mapping[str, Any] | None = None, workers: int | str = "auto") -> KnobReport:
    """The reward knob: does a multi-reward model obey the rewards it is asked for, on images it never saw?

    For each perspective the model edits the benchmark with that perspective's requested score at ``low``
    (and the model's failure sentence for it: its training data's most frequent, recorded with the model, else
    ``LOW_REWARD_TEXT``'s), the other two at 5 with the perfect-score feedback;
    and once at (5, 5, 5) with the default feedback text (:func:`knob_settings`). Every edit is judged as in
    :func:`~rewardedit_lib.evaluate.evaluate`. The knob of a perspective is its yes-rate at 5 minus its
    yes-rate at ``low``, with the paired-bootstrap 95% interval of that per-edit difference
    (:func:`~rewardedit_lib.evaluate.paired_difference`): the same item and noise at both settings, so only
    the rewards differ. A knob near 0 means the model does not hear that reward -- and then no difference
    between it and the baseline can come from the rewards.

    Every setting is one :func:`~rewardedit_lib.evaluate.evaluate` folder under ``out_dir`` named after its
    scores (``F0-P5-Q5``, ``F5-P0-Q5``, ``F5-P5-Q0``, ``F5-P5-Q5``), all edited together
    (:func:`~rewardedit_lib.evaluate.evaluate_many`: cheap, resumable, other settings in a folder refused).
    ``high_dir``: an existing (5, 5, 5) evaluation of this model to reuse instead of ``out_dir/F5-P5-Q5``
    (notebook 05's ``eval/multi-reward``); its settings file refuses it if it was made otherwise (steps, seed,
    another model folder), and it must hold the same items. ``settings`` / ``changes`` / ``seed`` set how to
    edit (as in :func:`~rewardedit_lib.evaluate.evaluate`; the rewards are the knob's); the judge and ``workers``
    (:func:`~rewardedit_lib.evaluate.edit_split`) as there.
    Writes ``out_dir/knob.json``. A model that reads no rewards is refused (``ValueError``).
    """
    changes = dict(changes or {})
    clash = sorted({"reward_scores", "reward_text"} & set(changes))
    if clash:
        raise ValueError(f"the reward knob sets the rewards itself; drop {clash} from changes")
    if seed is not None:
        changes["seed"] = seed
    knob_settings(low)  # a bad low score is refused before the model loads
    items = _bench_items(bench_dir, limit)
    pipe = load_model(model, device)
    model_id = _model_id(model)
    if not pipe.uses_rewards:
        raise ValueError(f"the reward knob needs a multi-reward model (one conditioned on rewards); "
                         f"{model if not isinstance(model, RewardEditPipeline) else 'this pipeline'} reads no "
                         f"rewards (a no-reward baseline?)")
    wanted = knob_settings(low, pipe.low_reward_text)
    out = Path(out_dir)
    folders = {name: out / knob_slug(w["reward_scores"]) for name, w in wanted.items()}
    if high_dir is not None:
        folders["high"] = Path(high_dir)
        done = folders["high"] / "results.jsonl"
        if done.exists():
            have = [r["id"] for r in read_results(folders["high"])]
            if have != [it.id for it in items]:
                raise ValueError(f"high_dir {high_dir} holds an evaluation of {len(have)} items, the knob asks for "
                                 f"{len(items)} (give the same benchmark and limit, or no high_dir)")
    runs = {folders[name]: {**changes, **w} for name, w in wanted.items()}
    judge = judge_arguments(protocol, model_kind(pipe), bench_dir, base_url, judge_model, api_key_env, client_options)
    reports = _evaluate_loaded(pipe, model_id, items, runs, settings=settings, judge=judge, batch_size=batch_size,
                               n_boot=n_boot, progress=progress, workers=workers)
    high = reports[folders["high"]]

    def mean(xs: Sequence[float]) -> float:
        return float(np.mean(xs)) if len(xs) else float("nan")

    per: dict[str, dict[str, Any]] = {}
    for p in PERSPECTIVES:
        low_rep = reports[folders[p]]
        pairs = _paired_cells(high.rows, low_rep.rows, p)
        d = paired_difference(high.rows, low_rep.rows, p, n_boot=n_boot)
        per[p] = {"n": d["n"],
                  "yes_rate_high": mean([100.0 * bool(a["yes"]) for a, _ in pairs]),
                  "yes_rate_low": mean([100.0 * bool(b["yes"]) for _, b in pairs]),
                  "score_high": mean([float(a["score"]) for a, _ in pairs]),
                  "score_low": mean([float(b["score"]) for _, b in pairs]),
                  "knob": d["yes_diff"], "knob_ci": d["yes_diff_ci"],
                  "score_diff": d["score_diff"], "score_diff_ci": d["score_diff_ci"],
                  "verdict": _verdict(d["yes_diff_ci"])}
    knob = KnobReport(out, float(low), len(items), per,
                      {name: {**w, "folder": folders[name]} for name, w in wanted.items()},
                      {k: v for k, v in high.settings.to_json().items() if k not in ("reward_scores", "reward_text")},
                      model_id, sum(r.edit_s for r in reports.values()), sum(r.judge_s for r in reports.values()))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / KNOB_NAME, knob.to_json(), indent=1, trailing_newline=False)
    return knob
