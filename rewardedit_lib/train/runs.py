"""Run folders the course can call again: :func:`ensure_trained` trains, reuses or resumes, by what the
folder's ``run.json`` records.

Why: a notebook cell that trains must cost nothing when run again, pick up where an interrupted course
stopped (a Colab session ends on the clock), and never overwrite a folder that holds a different run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from ..plumbing import atomic_write_json, read_json
from .checkpoints import MODEL_SUBDIR, list_checkpoints
from .config import TrainConfig
from .errors import TimeLimitReached, TrainingError
from .metrics import SUMMARY_FILE, loss_lines, read_metrics, read_summary
from .presets import TOY_STAGE1
from .trainer import TrainResult, train

RUN_FILE = "run.json"


def _defaults_json() -> dict[str, Any]:
    """TrainConfig's field defaults as run.json holds them."""
    return json.loads(json.dumps({f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}))


#: How ``run.json`` names the bundled toy stage-1 model (followed by ``@`` and a digest of its weights).
BUNDLED_INIT = "bundled:toy-stage1"
#: What a model folder may hold beside the model: its card, training metrics and sample grids can be
#: re-measured or redrawn without the model changing.
_NOT_THE_MODEL = ("README.md", "metrics.jsonl", "samples")


def model_digest(model_dir: str | Path) -> str:
    """A short SHA-256 of a ``from_pretrained`` folder's files (configs and weights), its card excluded."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root)
        if rel.parts[0] not in _NOT_THE_MODEL and "__pycache__" not in rel.parts:
            h.update(rel.as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _init_record(init: str | None) -> str | None:
    """The bundled toy stage-1 model by what it holds, not by where the kit is installed.

    Why: a course folder outlives the kit's install (on Colab it lives on Drive while the kit is reinstalled
    every session, possibly under another Python), and a newer kit may bundle another stage-1 model: the first
    must still reuse its runs, the second must not."""
    if init and Path(init).resolve() == TOY_STAGE1.resolve():
        return f"{BUNDLED_INIT}@{model_digest(TOY_STAGE1)}"
    return init


def _run_record(config: TrainConfig, data_dir: str | Path, rewards_path: str | Path | None) -> dict[str, Any]:
    """What ``run.json`` records of a run: its config (the bundled init by content), its (absolute) data and
    rewards paths."""
    return {**config.to_json(), "init": _init_record(config.init), "data_dir": str(Path(data_dir).resolve()),
            "rewards_path": str(Path(rewards_path).resolve()) if rewards_path else None}


def ensure_trained(config: TrainConfig, data_dir: str | Path, out_dir: str | Path,
                   rewards_path: str | Path | None = None, progress: bool = True,
                   step_callback: Callable[[int, dict], None] | None = None,
                   time_limit_s: float | None = None) -> TrainResult:
    """Train, unless ``out_dir`` already holds this exact run: then return it (a finished run) or resume its
    latest checkpoint (an interrupted one). A folder holding a *different* run is an error, never overwritten.
    What notebooks call, so re-running a course cell costs nothing and an interrupted course picks up.

    ``time_limit_s`` (a Colab session ends on the clock): train at most that long, then save and raise
    :class:`TimeLimitReached`; with no time left (``<= 0``) an unfinished run raises before loading."""
    out = Path(out_dir)
    record = json.loads(json.dumps(_run_record(config, data_dir, rewards_path)))  # as run.json reads back (tuples: lists)
    marker = out / RUN_FILE
    if marker.exists():
        old = read_json(marker)
        # a setting added to TrainConfig after that run was recorded counts as its default there
        old = {**{k: v for k, v in _defaults_json().items() if k in record and k not in old}, **old}
        old["init"] = _init_record(old.get("init"))  # a run recorded before digests named the bundled model's path
        if old != record:
            diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise TrainingError(f"{out} holds another run (differs in {', '.join(diff)}); use another out_dir")
        summary = out / SUMMARY_FILE
        s = read_json(summary, missing={})
        if s.get("steps") == config.max_steps and (out / MODEL_SUBDIR / "model_index.json").exists():
            return TrainResult(out, out / MODEL_SUBDIR, s["steps"], s["wall_s"], s["images_per_s"], s["final_loss"],
                               s.get("resumed_from", 0), read_metrics(out))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, record, indent=1, trailing_newline=False)
    resume = "latest" if list_checkpoints(out) else None
    again = "run the same cell again (same out_dir and settings) to resume from step"
    if time_limit_s is not None and time_limit_s <= 0:
        done = read_summary(out).get("steps", 0)
        raise TimeLimitReached(f"{out}: no training time left (time_limit); {again} {done}")
    result = train(config, data_dir, out, rewards_path, resume=resume, progress=progress, step_callback=step_callback,
                   time_limit_s=time_limit_s)
    if result.steps < config.max_steps:
        raise TimeLimitReached(f"{out}: the time limit of {time_limit_s:.0f} s stopped training at step "
                               f"{result.steps} of {config.max_steps}; the checkpoint is saved: {again} {result.steps}")
    return result


@dataclass(frozen=True)
class RunSpec:
    """One run for :func:`ensure_trained_all`: what :func:`ensure_trained` takes."""

    config: TrainConfig
    data_dir: Path
    out_dir: Path
    rewards_path: Path | None = None


def _ensure_trained_job(name: str, spec: RunSpec, lines: int, time_limit_s: float | None,
                        write: Callable[[str], None]) -> TrainResult:
    """One run of :func:`ensure_trained_all`, with ``lines`` loss lines (in a worker process or here)."""
    every = max(10, spec.config.max_steps // max(1, lines))
    return ensure_trained(spec.config, spec.data_dir, spec.out_dir, spec.rewards_path, progress=False,
                          step_callback=loss_lines(name, spec.config.max_steps, every=every, write=write),
                          time_limit_s=time_limit_s)


def ensure_trained_all(runs: Mapping[str, RunSpec], *, workers: int | str = "auto",
                       time_limit_s: float | None = None, lines: int = 6,
                       write: Callable[[str], None] = print) -> dict[str, TrainResult]:
    """:func:`ensure_trained` for each named run, side by side on a CPU's cores when that is faster
    (:func:`rewardedit_lib.parallel.plan_split`; on a GPU one after the other), each writing ``lines`` loss
    lines through ``write`` (prefixed with its name). Notebook 04's two models.

    ``time_limit_s`` is one limit for the whole call: side by side every run gets all of it; one after the
    other each gets what the runs before it left. If a run fails or hits the limit, the others still finish
    (or save their checkpoint), then the first failure is raised: running the same call again reuses the
    finished runs and resumes the rest."""
    import torch

    from .. import parallel, runtime

    device = "cuda" if torch.cuda.is_available() else "cpu"
    split = parallel.plan_split(len(runs), device, workers)
    if split.side_by_side:
        jobs = [dict(name=name, spec=spec, lines=lines, time_limit_s=time_limit_s)
                for name, spec in runs.items()]
        write(f"training {split.describe(len(runs))}")
        results = parallel.run_jobs(_ensure_trained_job, jobs, split, write)
        return dict(zip(runs, results))
    budget = runtime.TimeBudget(time_limit_s)
    out: dict[str, TrainResult] = {}
    for name, spec in runs.items():
        out[name] = _ensure_trained_job(name, spec, lines, budget.left(), write)
    return out
