"""Ablations (notebook 06): which parts of the method matter, measured in the toy world.

Three kinds of question:

* **Trained switches** -- which rewards the model reads (none / scores / text / both) and where they enter
  (the latent features / the time embedding / both). Each switch is its own stage-2 model, trained exactly
  as notebook 04 trains its two (same stage-1 start, data, rewards file, seed, steps), then evaluated
  exactly as notebook 05 evaluates them. Both go through functions that reuse finished work
  (:func:`train.ensure_trained`, :func:`evaluate.evaluate`), so the course's baseline and multi-reward
  model are neither retrained nor re-judged here.
* **The reward knob** (:func:`run_knob`) -- the question every comparison depends on: does the multi-reward
  model obey its rewards? Asked for 0 instead of 5 in one perspective, on the whole benchmark at the
  evaluation's own settings, how far does the judge's yes-rate in that perspective drop?
* **Inference-time sweeps** on the multi-reward model -- ask for a worse score in one perspective (0..5,
  the other two at 5) and watch whether the edits follow the request; and add *reward guidance* (the
  pipeline's ``reward_guidance_scale``). No training: only edits and verdicts, all settings of a sweep
  edited together (:func:`evaluate.evaluate_many`).

The grid is a parameter. ``"small"`` (the course default) evaluates the two models notebook 04 trained
plus the sweeps on a few benchmark images: training one more toy model costs about four minutes on
2 CPU cores, more than the course's budget for this notebook. ``"full"`` trains every switch.

The results table says, row by row, whether the row was measured in this run; a switch the grid did not
run shows "not run", never a number from somewhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import evaluate as E
from . import knob as K
from . import runtime, train
from .evaluate import markdown_table  # noqa: F401  (the notebook renders its table with it)
from .formats import PERSPECTIVES, BenchItem
from .reward_modes import INJECTIONS, REWARD_MODES

GRIDS: tuple[str, ...] = ("small", "full")
#: The small grid's sweeps: few images and few denoising steps, so sixteen reward settings and two guidance
#: scales fit the toy-cpu course's budget (the toy model predicts the clean image: 5 DDIM steps already
#: land close to what 20 give).
SMALL_SWEEP_IMAGES, SMALL_SWEEP_STEPS = 1, 5
NOT_RUN = "not run"


# --------------------------------------------------------------------------------------------------
# What is run
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Switch:
    """One trained model of the grid: which rewards it reads and where they enter."""

    rewards: str
    injection: str

    @property
    def name(self) -> str:
        """Its folder name; the two notebook 04 trains keep 04's names, so they are found and reused."""
        if self.rewards == "none":
            return "baseline"
        if (self.rewards, self.injection) == ("both", "both"):
            return "multi-reward"
        return f"{self.rewards}-{self.injection}"

    @property
    def label(self) -> str:
        if self.rewards == "none":
            return "rewards none (baseline)"
        return f"rewards {self.rewards}, injection {self.injection}"


BASELINE, MULTI_REWARD = Switch("none", "both"), Switch("both", "both")
#: What notebook 04 trains (and the small grid therefore evaluates without training).
COURSE_SWITCHES: tuple[Switch, ...] = (BASELINE, MULTI_REWARD)


def switch_grid() -> list[Switch]:
    """Every switch: the baseline once (without rewards the injection point means nothing), then
    scores / text / both x latent / time / both."""
    return [BASELINE] + [Switch(r, i) for r in REWARD_MODES if r != "none" for i in INJECTIONS]


@dataclass(frozen=True)
class Sweep:
    """One inference-time setting of the multi-reward model: the requested scores and the reward guidance."""

    scores: tuple[float, float, float]
    guidance: float = 0.0

    @property
    def slug(self) -> str:
        """A folder name that spells the setting out (so a sweep folder is never mistaken for another)."""
        return f"{K.knob_slug(self.scores)}-g{_num(self.guidance)}"

    @property
    def label(self) -> str:
        return f"asked {K.knob_slug(self.scores, sep=' ')}, reward guidance {_num(self.guidance)}"


def _num(x: float) -> str:
    return f"{float(x):g}"


def sweep_grid(values: Sequence[float] = (0, 1, 2, 3, 4, 5),
               guidance_scales: Sequence[float] = (0, 1, 2)) -> list[Sweep]:
    """The sweeps, each setting once: one perspective's requested score over ``values`` with the other two at 5
    (following first, then preserving, then quality), then reward guidance at (5, 5, 5). The paper's
    setting (5, 5, 5) without guidance is in every sweep, and measured once."""
    out: list[Sweep] = []
    for k in range(len(PERSPECTIVES)):
        for v in values:
            scores = tuple(float(v) if j == k else 5.0 for j in range(len(PERSPECTIVES)))
            out.append(Sweep(scores))  # type: ignore[arg-type]
    out += [Sweep((5.0, 5.0, 5.0), float(g)) for g in guidance_scales]
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Plan:
    """What a grid runs: every switch (``trained`` the ones this grid trains or reuses), and the sweeps."""

    grid: str
    switches: tuple[Switch, ...]
    trained: tuple[Switch, ...]
    sweeps: tuple[Sweep, ...]

    def rows(self) -> tuple[list[list[Any]], list[str]]:
        """The plan as table rows and headers (for :func:`viz.text_table`)."""
        rows: list[list[Any]] = []
        for s in self.switches:
            if s not in self.trained:
                what = "not run (grid='full' trains it)"
            elif s in COURSE_SWITCHES:
                what = "notebook 04's model (reused; trained here only if missing)"
            else:
                what = "trained here (reused if this folder already has it)"
            rows.append(["trained", s.rewards, s.injection, s.name, what])
        for sw in self.sweeps:
            rows.append(["inference", "multi-reward", "", sw.slug, sw.label])
        return rows, ["kind", "rewards", "injection", "name", "in this grid"]


def plan(grid: str = "small", values: Sequence[float] = (0, 1, 2, 3, 4, 5),
         guidance_scales: Sequence[float] = (0, 1, 2)) -> Plan:
    """The plan of ``grid`` ("small": notebook 04's two models and the sweeps; "full": every switch too)."""
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r}: expected one of {GRIDS}")
    switches = tuple(switch_grid())
    trained = COURSE_SWITCHES if grid == "small" else switches
    return Plan(grid, switches, tuple(s for s in switches if s in trained), tuple(sweep_grid(values, guidance_scales)))


def sweep_size(grid: str, sweep_images: int | None, sweep_steps: int | None,
               eval_steps: int | None) -> tuple[int | None, int | None]:
    """The sweeps' (benchmark images, denoising steps); ``None`` = all images / the model's default steps.
    Unset values follow the grid: the small grid sweeps :data:`SMALL_SWEEP_IMAGES` images at
    :data:`SMALL_SWEEP_STEPS` steps, the full grid the whole benchmark at the evaluation's steps."""
    small = grid == "small"
    images = sweep_images if sweep_images is not None else (SMALL_SWEEP_IMAGES if small else None)
    steps = sweep_steps if sweep_steps is not None else (SMALL_SWEEP_STEPS if small else eval_steps)
    return images, steps


def items_of_first_images(items: Sequence[BenchItem], n_images: int | None) -> int:
    """How many leading items belong to the first ``n_images`` images (``evaluate``'s ``limit`` for them)."""
    if n_images is None:
        return len(items)
    seen: list[str] = []
    for k, it in enumerate(items):
        if it.image not in seen:
            if len(seen) == n_images:
                return k
            seen.append(it.image)
    return len(items)


# --------------------------------------------------------------------------------------------------
# Training and evaluating the switches
# --------------------------------------------------------------------------------------------------
def train_config(profile: str, seed: int, stage1: str | Path, train_steps: int | None = None,
                 validate_every: int | None = None) -> train.TrainConfig:
    """Notebook 04's stage-2 recipe (``rewards``/``injection`` at the preset's): the preset of ``profile``
    from ``stage1``, ``train_steps`` if given, a validation grid every third of the run unless
    ``validate_every``. Every switch is this config with its two switches changed, so the two
    models notebook 04 trained are recognised as the same runs and reused."""
    if profile in runtime.CUDA_PROFILES and Path(stage1) == train.TOY_STAGE1:
        raise ValueError(f"the {profile} profile needs stage1_dir: a stage-1 InstructPix2Pix folder")
    changes = {"max_steps": train_steps} if train_steps else {}
    base = train.preset(profile, stage=2, seed=seed, init=str(stage1), **changes)
    base.validate_every = validate_every or max(1, base.max_steps // 3)
    return base


def switch_config(base: train.TrainConfig, switch: Switch) -> train.TrainConfig:
    """``base`` with the switch's two settings: the config :func:`train.ensure_trained` reuses or trains."""
    config = replace(base, rewards=switch.rewards, injection=switch.injection)
    return config


def train_switches(switches: Sequence[Switch], base: train.TrainConfig, data_dir: str | Path,
                   rewards_path: str | Path | None, models_dir: str | Path,
                   progress: bool = False, time_limit_s: float | None = None) -> dict[Switch, train.TrainResult]:
    """Train each switch into ``models_dir/<name>`` -- or reuse it, when that folder already holds the same
    run (notebook 04's baseline and multi-reward model). The baseline reads no rewards file, as in 04.
    ``time_limit_s`` is shared by all the switches; when it runs out, :class:`train.TimeLimitReached` says
    where, and the same call again resumes."""
    out = {}
    budget = runtime.TimeBudget(time_limit_s)
    for s in switches:
        out[s] = train.ensure_trained(switch_config(base, s), data_dir, Path(models_dir) / s.name,
                                      rewards_path if s.rewards != "none" else None, progress=progress,
                                      time_limit_s=budget.left())
    return out


def eval_changes(seed: int, steps: int | None) -> dict[str, Any]:
    """Notebook 05's edit settings (the seed, and the steps when given): same settings, same folder, reused."""
    return {"seed": seed, **({"num_inference_steps": steps} if steps else {})}


def evaluate_switches(models: Mapping[Switch, str | Path], bench_dir: str | Path, eval_dir: str | Path, *,
                      seed: int = 0, steps: int | None = None, limit: int | None = None, **kwargs: Any
                      ) -> dict[Switch, E.EvalReport]:
    """Evaluate each model folder into ``eval_dir/<name>`` with notebook 05's settings (``kwargs``: judge,
    device, ... for :func:`evaluate.evaluate`). Where 05 already evaluated a model, its edits and verdicts
    are read back, not redone."""
    return {s: E.evaluate(path, bench_dir, Path(eval_dir) / s.name, changes=eval_changes(seed, steps),
                          limit=limit, progress=False, **kwargs) for s, path in models.items()}


def run_sweeps(model: str | Path, bench_dir: str | Path, sweeps_dir: str | Path, sweeps: Sequence[Sweep], *,
               seed: int = 0, steps: int | None = None, limit: int | None = None, batch_size: int = 64,
               **kwargs: Any) -> dict[Sweep, E.EvalReport]:
    """Edit and judge the benchmark's first ``limit`` items under every sweep setting, all edits together.

    One folder per setting, ``sweeps_dir/steps-<n>-seed-<s>/<slug>``: the folder name carries what the
    settings file checks, so a rerun with other steps writes beside the old one instead of failing."""
    root = Path(sweeps_dir) / f"steps-{steps if steps else 'default'}-seed-{seed}"
    runs = {root / sw.slug: {"reward_scores": sw.scores, "reward_guidance_scale": sw.guidance,
                             **eval_changes(seed, steps)} for sw in sweeps}
    reports = E.evaluate_many(model, bench_dir, runs, limit=limit, batch_size=batch_size, progress=False, **kwargs)
    return {sw: reports[root / sw.slug] for sw in sweeps}


def run_knob(model: str | Path, bench_dir: str | Path, knob_dir: str | Path, *, seed: int = 0,
             steps: int | None = None, limit: int | None = None, low: float = 0.0,
             high_dir: str | Path | None = None, batch_size: int = 64, **kwargs: Any) -> K.KnobReport:
    """The reward knob (:func:`knob.reward_knob`) of the multi-reward model at notebook 05's settings (its
    seed and steps, on the same items), into ``knob_dir/steps-<n>-seed-<s>``. ``high_dir``: 05's (5, 5, 5)
    folder of this model, reused (refused by its settings file if made otherwise). ``kwargs``: judge,
    device, ... for :func:`knob.reward_knob`."""
    root = Path(knob_dir) / f"steps-{steps if steps else 'default'}-seed-{seed}"
    return K.reward_knob(model, bench_dir, root, low=low, high_dir=high_dir, changes=eval_changes(seed, steps),
                         limit=limit, batch_size=batch_size, progress=False, **kwargs)


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------
def _metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in E.headline(summary).items()}


def result_rows(plan_: Plan, switch_reports: Mapping[Switch, E.EvalReport],
                sweep_reports: Mapping[Sweep, E.EvalReport]) -> list[dict[str, Any]]:
    """One row per switch of the grid and per sweep setting: what was asked, whether it was measured in this
    run, and -- only if it was -- the six headline numbers (yes-rate % and mean score per perspective)."""
    rows: list[dict[str, Any]] = []
    for s in plan_.switches:
        rep = switch_reports.get(s)
        rows.append({"kind": "trained", "name": s.name, "setting": s.label, "rewards": s.rewards,
                     "injection": s.injection, "measured": rep is not None,
                     "note": "" if rep is not None else f"{NOT_RUN}: grid='full' trains it",
                     "edits": len(rep.rows) if rep else None,
                     "steps": rep.settings.num_inference_steps if rep else None,
                     "metrics": _metrics(rep.summary) if rep else None})
    for sw in plan_.sweeps:
        rep = sweep_reports.get(sw)
        rows.append({"kind": "inference", "name": sw.slug, "setting": sw.label, "scores": list(sw.scores),
                     "guidance": sw.guidance, "measured": rep is not None, "note": "" if rep else NOT_RUN,
                     "edits": len(rep.rows) if rep else None,
                     "steps": rep.settings.num_inference_steps if rep else None,
                     "metrics": _metrics(rep.summary) if rep else None})
    return rows


TABLE_METRICS: tuple[tuple[str, str], ...] = tuple(
    (f"{p}_{k}", f"{K.SCORE_LETTERS[p]} {'yes %' if k == 'yes_rate' else 'score'}") for p in PERSPECTIVES
    for k in ("yes_rate", "score"))


def results_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rows as one table of strings, ``{"columns": [...], "rows": [[...], ...]}``: what the notebook shows
    and what the course report renders. A row not measured here shows "not run" and no number."""
    columns = ["kind", "setting", "measured here", "edits", "steps"] + [title for _, title in TABLE_METRICS]
    body = []
    for r in rows:
        if r["measured"]:
            m = r["metrics"]
            cells = [f"{m[k]:.1f}" if k.endswith("yes_rate") else f"{m[k]:.2f}" for k, _ in TABLE_METRICS]
            head = ["yes", str(r["edits"]), str(r["steps"])]
        else:
            cells = ["-"] * len(TABLE_METRICS)
            head = [r["note"] or NOT_RUN, "-", "-"]
        body.append([r["kind"], r["setting"], *head, *cells])
    return {"columns": columns, "rows": body}


def sweep_series(sweep_reports: Mapping[Sweep, E.EvalReport], metric: str = "score"
                 ) -> dict[str, tuple[list[float], dict[str, list[float]]]]:
    """For each swept perspective (and ``"guidance"``): the swept values and, per judged perspective, the
    measured ``metric`` ("score" or "yes_rate") -- the points of :func:`viz.sweep_panels`."""
    out: dict[str, tuple[list[float], dict[str, list[float]]]] = {}

    def add(key: str, x: float, rep: E.EvalReport) -> None:
        xs, ys = out.setdefault(key, ([], {p: [] for p in PERSPECTIVES}))
        xs.append(x)
        for p in PERSPECTIVES:
            ys[p].append(float(rep.summary["overall"][p][metric]))

    for k, p in enumerate(PERSPECTIVES):
        points = sorted(((sw.scores[k], rep) for sw, rep in sweep_reports.items() if sw.guidance == 0 and
                         all(s == 5.0 for j, s in enumerate(sw.scores) if j != k)), key=lambda t: t[0])
        for x, rep in points:
            add(p, x, rep)
    centre = sorted(((sw.guidance, rep) for sw, rep in sweep_reports.items() if sw.scores == (5.0, 5.0, 5.0)),
                    key=lambda t: t[0])
    for g, rep in centre:
        add("guidance", g, rep)
    return {k: v for k, v in out.items() if len(v[0]) > 1}


def sweep_edits(sweep_reports: Mapping[Sweep, E.EvalReport], item_id: str
                ) -> dict[str, list[tuple[float, Path]]]:
    """For one benchmark item: per swept perspective, ``(requested score, edit image)`` in score order."""
    out: dict[str, list[tuple[float, Path]]] = {}
    for k, p in enumerate(PERSPECTIVES):
        for sw, rep in sweep_reports.items():
            if sw.guidance == 0 and all(s == 5.0 for j, s in enumerate(sw.scores) if j != k):
                row = next((r for r in rep.rows if r["id"] == item_id), None)
                if row is not None:
                    out.setdefault(p, []).append((sw.scores[k], Path(row["edit"])))
    return {p: sorted(v, key=lambda t: t[0]) for p, v in out.items()}
