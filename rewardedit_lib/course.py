"""Profiles and the course runner: the numbered notebooks, executed in order with papermill.

Why a runner rather than "open the notebooks and press run": the same notebooks serve three uses --
learning (open them), experiments (papermill with parameters) and the full course on a profile
(``rewardedit course``). The runner makes the third reproducible: named parameter sets (profiles) live in
the package, every mistake in them is reported before any notebook runs, a failing notebook stops the run
naming the notebook and the cell, and ``summary.json`` records status, wall time and key results.

Notebooks report key results with :func:`record_results`; the runner gathers them, and ends every run (a
failed one too) by writing ``report.html`` (:mod:`rewardedit_lib.report`).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from . import hub, runtime, toyworld
from .plumbing import atomic_write_json, read_json

PROFILES_FILE = Path(__file__).parent / "profiles" / "profiles.yaml"
NOTEBOOK_PATTERN = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
#: Parameter names that look like credentials. Papermill writes parameters into the executed notebook,
#: so a key passed this way would end up on disk: refuse, and point at the environment instead.
_SECRET_NAME = re.compile(r"(api_?key|token|secret|password|passwd)", re.IGNORECASE)


class CourseError(RuntimeError):
    """A problem found before or while running the course (bad profile, parameter, notebook, failure)."""


# --------------------------------------------------------------------------------------------------
# Results that notebooks record
# --------------------------------------------------------------------------------------------------
def record_results(notebook: str, out_dir: str | Path, **results: Any) -> dict:
    """Record a notebook's key results in ``<out_dir>/results/<notebook>.json`` (merged with earlier ones).

    Values must be JSON-serialisable (numbers, strings, lists, dicts). Returns everything recorded so far.
    """
    path = Path(out_dir) / "results" / f"{notebook}.json"
    have = read_json(path, missing={})
    have.update(results)
    text = atomic_write_json(path, have, indent=2, sort_keys=True, default=_jsonable)
    return json.loads(text)  # what is on disk: numpy values become plain numbers and lists


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def read_results(out_dir: str | Path, notebook: str) -> dict:
    path = Path(out_dir) / "results" / f"{notebook}.json"
    return read_json(path, missing={})


# --------------------------------------------------------------------------------------------------
# Where a course run keeps its data (notebooks 01, 02, 04 and 06 share these)
# --------------------------------------------------------------------------------------------------
#: The course's training triplets and flaw rates (notebooks' ``n_train`` / ``flaw_rates`` defaults). Half
#: of the triplets are flawed in each perspective (7 in 8 flawed somewhere): stage 2 must see many flawed
#: examples of every score to learn what a score means rather than which triplet carries it. The course's
#: 700 triplets at the world's default 0.2 gave a flat knob; 3,000 at 0.5 made the model obey its
#: following and preserving rewards (RESULTS.md, 2026-12-03). 0.5 is the issue's honesty bound: no
#: perspective is mostly flawed. Quality at 0.2, the world's default (rule R6, RESULTS.md, tenth session):
#: world version 4 plants blur, a flaw an editor can draw, and every blurred target wipes out what following
#: and preserving are judged on for both models; the following gain fell as the quality rate rose (0.5 and
#: 1/3 in the ninth session).
COURSE_N_TRAIN = 3000
COURSE_FLAW_RATES = "0.5,0.5,0.2"
#: The toy world's flaws that point one way for the same instruction, as generated InstructPix2Pix pairs' flaws
#: do (notebooks' ``systematic_flaws``): ``colour_leak``, an instruction's colour tinting the background (a
#: preserving flaw), and ``attribute_confusion``, the instruction's colour, pattern, background or tone confused
#: with another, always the same one (a following flaw).
#: A model trained without rewards learns a flaw with a direction, so such a world gives the rewards more to fix;
#: but the multi-reward model, asked for a perfect edit, also drifts towards a confused attribute, and neither
#: world met the adoption rule fixed before its runs (RESULTS.md, seventh session). The course keeps the world
#: of random flaws ("").
SYSTEMATIC_FLAWS = ("colour_leak", "attribute_confusion")
COURSE_SYSTEMATIC_FLAWS = ""
#: The course benchmark's source images (x 7 edit types; notebooks 05/06 ``bench_images``). Chosen by power,
#: not by any result: a paired per-edit yes/no difference has a spread of about 0.54 (the course's preserving,
#: seeds 0-2), so its 95 % interval is +-1.96 * 0.54 / sqrt(n) wide; 140 edits (20 images) gave +-9 points,
#: wider than the +5 points the paper's effect on preserving is asked to show, and 455 edits (65 images) give
#: +-5. Real-Edit has 80 images; 65 keeps the course within 15 minutes on 2 cores (RESULTS.md, eighth session).
COURSE_BENCH_IMAGES = 65


def parse_systematic_flaws(text: str) -> dict[str, bool]:
    """``"colour_leak,attribute_confusion"`` -> the toy generator's switches (``leak``, ``confuse``); names the
    parameter and the allowed names on a typo."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    unknown = [t for t in names if t not in SYSTEMATIC_FLAWS]
    if unknown:
        raise ValueError(f"systematic_flaws={text!r}: unknown {', '.join(map(repr, unknown))}; "
                         f"expected a comma-separated subset of {', '.join(SYSTEMATIC_FLAWS)} (or \"\")")
    return {"leak": "colour_leak" in names, "confuse": "attribute_confusion" in names}


def training_data(out_dir: str | Path, data_dir: str | Path | None = None, *, n: int = COURSE_N_TRAIN,
                  flaw_rates: str = COURSE_FLAW_RATES, seed: int = 0, size: int = 32,
                  systematic_flaws: str = COURSE_SYSTEMATIC_FLAWS) -> Path:
    """The course's training set: ``data_dir`` when given (an InstructPix2Pix-layout folder, e.g.
    RewardEdit20K), else the toy world's ``n`` triplets at ``flaw_rates`` ("following,preserving,quality")
    with the :data:`SYSTEMATIC_FLAWS` named in ``systematic_flaws``, under ``<out_dir>/toy-data``, written once
    and reused while the settings stay the same."""
    if data_dir:
        return Path(data_dir)
    try:
        rates = toyworld.FlawRates.parse(flaw_rates)
    except ValueError as e:
        raise ValueError(f"flaw_rates={flaw_rates!r}: {e}") from None
    switches = parse_systematic_flaws(systematic_flaws)
    return toyworld.ensure_toy_dataset(Path(out_dir) / "toy-data", n=n, seed=seed, rates=rates, size=size,
                                       **switches)


def rewards_file(out_dir: str | Path, rewards_path: str | Path | None = None) -> Path:
    """Where the training set's rewards are: ``rewards_path`` when given, else notebook 01's annotation
    (``<out_dir>/rewards/RewardEdit_toy.json``; it may not exist yet)."""
    return Path(rewards_path) if rewards_path else Path(out_dir) / "rewards" / "RewardEdit_toy.json"


#: What notebook 05 can evaluate: the course's own two models, or the authors' released weights.
MODEL_SOURCES: tuple[str, ...] = ("course", "released")


def models_to_evaluate(out_dir: str | Path, models: str = "course") -> dict[str, str | Path]:
    """``{"baseline": ..., "multi-reward": ...}`` for notebook 05.

    ``"course"``: the two models notebook 04 trained under ``<out_dir>/models`` (a missing one is an error that
    names it and both ways out). ``"released"``: the paper's published SD 1.5 weights, as hub ids
    (:data:`hub.RELEASED_STAGE1`, the InstructPix2Pix stage-1 model, as the baseline;
    :data:`hub.RELEASED_STAGE2` as the multi-reward model), downloaded with only the files the kit reads
    when first loaded -- what a reader who opens notebook 05 from its Colab badge, without notebook 04's
    hours of training, evaluates against Table 1.
    """
    if models not in MODEL_SOURCES:
        raise ValueError(f"models={models!r}: expected one of {', '.join(MODEL_SOURCES)}")
    if models == "released":
        return {"baseline": hub.RELEASED_STAGE1, "multi-reward": hub.RELEASED_STAGE2}
    found = {name: Path(out_dir) / "models" / name / "model" for name in ("baseline", "multi-reward")}
    missing = [str(p) for p in found.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no trained model at {', '.join(missing)}: run notebook 04 first with the same "
                                f"out_dir, or set models='released' to evaluate the paper's published weights "
                                f"({hub.RELEASED_MODEL_REPO}; an sd15 profile and a judge endpoint)")
    return found


# --------------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------------
@dataclass
class Profile:
    name: str
    description: str
    parameters: dict[str, Any]
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    required: list[str] = field(default_factory=list)  # parameters that must not be null where declared


#: What to point a missing input at (the plan's report names it beside the parameter).
INPUT_HINTS: dict[str, str] = {
    "stage1_dir": "a stage-1 InstructPix2Pix folder: the authors' stage1_instruct_pix2pix "
                  "(rewardedit_lib.hub.download_released('stage1', DIR)) or one `rewardedit train --stage 1` wrote",
    "base_url": "the judge's OpenAI-compatible endpoint, e.g. --set base_url=https://api.openai.com/v1 "
                "--set judge_model=gpt-4o (the key is read from OPENAI_API_KEY)",
    "data_dir": "the training images in InstructPix2Pix folders (`rewardedit prepare` writes them)",
    "rewards_path": "RewardEdit_20K.json (rewardedit_lib.hub.download_dataset)",
    "bench_dir": "the Real-Edit benchmark (real_edit_instruct.json and its images)",
}


def load_profiles(path: str | Path = PROFILES_FILE) -> dict[str, Profile]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    out = {}
    for name, spec in data.items():
        unknown = set(spec) - {"description", "parameters", "notebooks", "inputs", "required"}
        if unknown:
            raise CourseError(f"{path}: profile {name!r} has unknown field(s) {sorted(unknown)}")
        out[name] = Profile(name, spec.get("description", "").strip(), dict(spec.get("parameters") or {}),
                            {k: dict(v or {}) for k, v in (spec.get("notebooks") or {}).items()},
                            list(spec.get("inputs") or []), list(spec.get("required") or []))
    return out


def get_profile(name: str, path: str | Path = PROFILES_FILE) -> Profile:
    profiles = load_profiles(path)
    if name not in profiles:
        raise CourseError(f"unknown profile {name!r}; available profiles: {', '.join(profiles)}"
                          f"{_did_you_mean(name, list(profiles))}")
    return profiles[name]


def parse_overrides(pairs: Sequence[str], *, raw: bool = False) -> dict[str, Any]:
    """``["n_train=2000", "data_dir=/x"]`` -> dict, values parsed as YAML scalars (numbers, null, true); with
    ``raw`` kept as typed (:class:`SetValue`), for :func:`plan_course` to type against the notebooks' defaults
    (what ``rewardedit course --set`` does: a string parameter then keeps its text exactly)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CourseError(f"--set expects NAME=VALUE, got {pair!r}")
        if raw:
            out[key.strip()] = SetValue(value)
        else:
            try:
                out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
            except yaml.YAMLError:
                out[key.strip()] = value
    return out


# --------------------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------------------
def default_notebooks_dir() -> Path:
    """``./notebooks`` if it exists (a clone), else the one beside the package (an editable install)."""
    here = Path.cwd() / "notebooks"
    if here.is_dir():
        return here
    beside = Path(__file__).resolve().parent.parent / "notebooks"
    if beside.is_dir():
        return beside
    raise CourseError("cannot find the notebooks folder: run from the kit's root or pass --notebooks DIR")


def list_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """The course's notebooks, in order: files named ``NN_name.ipynb``."""
    nbs = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if not nbs:
        raise CourseError(f"no notebooks named NN_name.ipynb in {notebooks_dir}")
    return nbs


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The parameters a notebook declares in its ``parameters`` cell (name -> default as written)."""
    import ast
    import logging

    import nbformat
    import papermill

    cells = [c for c in nbformat.read(str(path), as_version=4).cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise CourseError(f"{path}: has no cell tagged 'parameters'")
    logging.getLogger("papermill").setLevel(logging.ERROR)  # we report unparsable lines ourselves, below
    params = papermill.inspect_notebook(str(path))
    # papermill silently drops a line it cannot parse (e.g. a second '=' in its comment): a profile could
    # then not set that parameter. Catch it here, naming the line.
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and target.id not in params:
                raise CourseError(f"{path}: parameters cell line {node.lineno} ({target.id}) cannot be read by "
                                  f"papermill; keep one '=' per line, none in the comment")
    return {k: v.get("default") for k, v in params.items()}


# --------------------------------------------------------------------------------------------------
# Parameter types: what a notebook's default says a parameter takes
# --------------------------------------------------------------------------------------------------
#: What a parameter takes when every notebook that declares it defaults to None (a None default says nothing
#: of the type). A parameter with only None defaults that is not listed here takes any value.
NULL_DEFAULT_TYPES: dict[str, type] = {
    "data_dir": str, "rewards_path": str, "bench_dir": str, "stage1_dir": str, "base_url": str,
    "train_steps": int, "validate_every": int, "steps": int, "sweep_steps": int, "limit": int,
    "time_limit": float,
}
#: Parameters that take a word besides values of one kind, whatever their default says (the default may be
#: either): ``train_workers`` is a number of processes or "auto".
WORD_PARAMETERS: dict[str, tuple[type, tuple[str, ...]]] = {"train_workers": (int, ("auto",))}
_KIND_NAMES: dict[type, str] = {bool: "a bool (true or false)", int: "an int", float: "a float (a number)",
                                str: "a string", list: "a list", dict: "a mapping"}
_NULL_WORDS = ("null", "none", "~")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class ParameterType:
    """What a parameter takes, read from a notebook's default: ``kinds`` (none: anything), whether None is
    fine, the element kinds of a list default, and the default as written (for the error message)."""

    kinds: tuple[type, ...]
    nullable: bool
    items: tuple[type, ...] = ()
    default: str = ""
    words: tuple[str, ...] = ()  # words it takes besides its kinds (WORD_PARAMETERS)

    def describe(self) -> str:
        if not self.kinds:
            return "any value"
        names = []
        for kind in self.kinds:
            name = _KIND_NAMES[kind]
            if kind is list and self.items:
                name += " of " + " or ".join(k.__name__ for k in self.items)
            names.append(name)
        words = [repr(w) for w in self.words]
        return " or ".join(names + words + (["None"] if self.nullable else []))


def _kind_of(value: Any) -> type | None:
    """The kind a literal default stands for (a tuple is a list: papermill writes lists), None if other."""
    for kind in (bool, int, float, str, dict):  # bool before int: True is an int too
        if isinstance(value, kind):
            return kind
    return list if isinstance(value, (list, tuple)) else None


def parameter_type(name: str, default: Any) -> ParameterType:
    """The type of parameter ``name`` from its default as a notebook writes it (``'0'``, ``'"auto"'``,
    ``'None'``); a default that is not a literal (an expression) takes anything."""
    import ast

    text = default if isinstance(default, str) else repr(default)
    if name in WORD_PARAMETERS:
        kind, words = WORD_PARAMETERS[name]
        return ParameterType((kind,), False, default=text, words=words)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return ParameterType((), True, default=text)
    if value is None:
        known = NULL_DEFAULT_TYPES.get(name)
        return ParameterType((known,) if known else (), True, default=text)
    kind = _kind_of(value)
    if kind is None:
        return ParameterType((), True, default=text)
    items: tuple[type, ...] = ()
    if kind is list:
        found = [_kind_of(v) for v in value]
        if found and None not in found:
            items = tuple(dict.fromkeys(found))  # type: ignore[arg-type]
            if int in items and float in items:
                items = tuple(k for k in items if k is not int)
    return ParameterType((kind,), False, items, text)


class SetValue(str):
    """A ``--set`` value as typed on the command line. :func:`plan_course` types it against the notebooks'
    defaults, so text stays text for a string parameter (``--set judge_model=4`` is ``"4"``) and becomes a
    number, bool, list or None where the default says so."""


def _parse_text(text: str, ptype: ParameterType) -> Any:
    """Text -> a value: YAML scalars and flow lists (``3``, ``0.5``, ``true``, ``[1, 2]``); for a list
    parameter also ``1,2,3``. Unparsable YAML stays text (to be refused by the type check if need be)."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 3e3 as text; a user means 3000
    if list in ptype.kinds and not isinstance(value, list):
        if not text.strip():
            return []
        parts = []
        for part in text.split(","):
            try:
                parts.append(yaml.safe_load(part) if part.strip() else "")
            except yaml.YAMLError:
                parts.append(part.strip())
        return parts
    return value


def _convert(value: Any, kind: type, items: tuple[type, ...]) -> tuple[bool, Any]:
    """``(True, value as kind)`` when ``value`` is (or plainly stands for) a ``kind``, else ``(False, None)``."""
    if kind is bool:
        if isinstance(value, bool):
            return True, value
        if isinstance(value, int) and value in (0, 1):
            return True, bool(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
    elif kind is str:
        if isinstance(value, str):
            return True, str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
    elif kind is list:
        if isinstance(value, (list, tuple)):
            if not items:
                return True, list(value)
            out = []
            for v in value:
                converted = [t for ok, t in (_convert(v, k, ()) for k in items) if ok]
                if not converted:
                    return False, None
                out.append(converted[0])
            return True, out
    elif kind is dict:
        if isinstance(value, dict):
            return True, value
    return False, None


def coerce_parameter(value: Any, ptype: ParameterType) -> Any:
    """``value`` as a parameter of type ``ptype`` takes it: a number from text, a float from an int, a list
    from ``"a,b"``, None from ``null``. Raises ValueError when it is not one (the caller names the parameter).

    Why here and not in the notebook: a wrong type found by the runner costs nothing; found by papermill in
    notebook 04 it costs the hour of notebooks before it."""
    if isinstance(value, str) and value.strip() in ptype.words:
        return value.strip()
    if isinstance(value, SetValue):
        if value.strip().lower() in _NULL_WORDS and (ptype.nullable or str not in ptype.kinds):
            value = None  # null, None, ~ (a string parameter that cannot be None keeps the word)
        elif str in ptype.kinds:
            return str(value)  # as typed: "0.10" stays "0.10"
        else:
            value = _parse_text(value, ptype)
    elif isinstance(value, str) and ptype.kinds and str not in ptype.kinds:
        value = _parse_text(value, ptype)
    if value is None:
        if ptype.nullable or not ptype.kinds:
            return None
        raise ValueError(ptype.describe())
    if not ptype.kinds:
        return value
    for kind in ptype.kinds:
        ok, typed = _convert(value, kind, ptype.items)
        if ok:
            return typed
    raise ValueError(ptype.describe())


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'n_train'?"`` for a misspelt name, ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


@dataclass
class Plan:
    """What the runner will do: notebooks in order and the parameters each gets."""

    profile: Profile
    out_dir: Path
    steps: list[tuple[Path, dict[str, Any]]]
    notebooks: list[str] = field(default_factory=list)  # every notebook of the course (the report lists them all)
    #: per selected notebook: where each passed parameter comes from (profile, profile:<notebook>, --set, runner)
    origins: dict[str, dict[str, str]] = field(default_factory=dict)
    #: per selected notebook: every parameter it declares, with its default as written
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    notebooks_dir: Path | None = None


def plan_course(profile: str | Profile, out_dir: str | Path, *, only: Sequence[str] | None = None,
                overrides: Mapping[str, Any] | None = None, notebooks_dir: str | Path | None = None,
                profiles_file: str | Path = PROFILES_FILE) -> Plan:
    """Check everything that can be checked before running, and return the plan. Raises CourseError; every
    value of the wrong type (typed against the notebooks' defaults, see :func:`coerce_parameter`) and every
    missing input (a required parameter left null, a file or folder that is not there) is reported at once,
    so a GPU session is not spent finding them one notebook at a time. Nothing is written."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile, profiles_file)
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    notebooks = list_notebooks(nb_dir)
    declared = {nb.stem: notebook_parameters(nb) for nb in notebooks}
    all_declared = sorted(set().union(*declared.values()))

    common = dict(prof.parameters)
    overrides = dict(overrides or {})
    for source, names in (("profile " + repr(prof.name), common), ("--set", overrides)):
        for name in names:
            if _SECRET_NAME.search(name):
                raise CourseError(f"parameter {name!r} ({source}) looks like a credential: parameters are written "
                                  f"into the executed notebooks, so secrets are read from the environment only "
                                  f"(e.g. OPENAI_API_KEY)")
            if name == "out_dir":
                raise CourseError(f"parameter 'out_dir' ({source}) is set by the runner from --out")
            if name not in all_declared:
                raise CourseError(f"unknown parameter {name!r} ({source}): no notebook in {nb_dir} declares it"
                                  f"{_did_you_mean(name, all_declared)}")
    for stem, params in prof.notebooks.items():
        if stem not in declared:
            raise CourseError(f"profile {prof.name!r} configures notebook {stem!r}, which does not exist; "
                              f"notebooks: {', '.join(declared)}{_did_you_mean(stem, list(declared))}")
        for name in params:
            if name not in declared[stem]:
                raise CourseError(f"unknown parameter {name!r} for notebook {stem} in profile {prof.name!r}"
                                  f"{_did_you_mean(name, sorted(declared[stem]))}")

    selected = notebooks
    if only:
        selected = []
        for key in only:
            hits = [nb for nb in notebooks if nb.stem == key or nb.stem.split("_")[0] == key or nb.name == key
                    or (key.isdigit() and nb.stem.split("_")[0].isdigit() and int(key) == int(nb.stem.split("_")[0]))]
            if not hits:
                raise CourseError(f"unknown notebook {key!r}; notebooks: {', '.join(declared)}"
                                  f"{_did_you_mean(key, list(declared))}")
            selected.extend(h for h in hits if h not in selected)
        selected.sort()

    types = {stem: {name: parameter_type(name, default) for name, default in params.items()}
             for stem, params in declared.items()}
    # (source, name, value as given) -> type -> default -> notebooks: one line per bad value
    bad: dict[tuple[str, str, str], dict[str, dict[str, list[str]]]] = {}

    def typed(name: str, value: Any, stem: str, source: str) -> Any:
        ptype = types[stem][name]
        try:
            return coerce_parameter(value, ptype)
        except ValueError:
            shown = str(value) if isinstance(value, SetValue) else repr(value)
            nbs = bad.setdefault((source, name, shown), {}).setdefault(ptype.describe(), {}) \
                .setdefault(ptype.default, [])
            if stem[:2] not in nbs:
                nbs.append(stem[:2])
            return value

    layers = (("profile", f"profile {prof.name!r}", common), ("--set", "--set", overrides))
    out_dir = Path(out_dir).resolve()
    steps, origins, defaults = [], {}, {}
    missing: dict[str, tuple[str, list[str]]] = {}  # parameter -> (what is wrong, notebooks)
    for nb in selected:
        params: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for tag, source, values in (layers[0], ("profile:" + nb.stem, f"profile {prof.name!r}, notebook {nb.stem}",
                                                prof.notebooks.get(nb.stem, {})), layers[1]):
            for k, v in values.items():
                if k in declared[nb.stem]:
                    params[k], origin[k] = typed(k, v, nb.stem, source), tag
        if "out_dir" in declared[nb.stem]:
            params["out_dir"], origin["out_dir"] = str(out_dir), "runner"
        for name in prof.inputs:
            value = params.get(name)
            if value is None:
                continue
            p = Path(str(value)).expanduser()
            if not p.exists():
                missing.setdefault(name, (f"{name}={value!r}: no such file or folder; point it at your copy with "
                                          f"--set {name}=PATH", []))[1].append(nb.stem[:2])
            params[name] = str(p.resolve())
        for name in prof.required:
            if name in declared[nb.stem] and params.get(name) is None:
                missing.setdefault(name, (f"{name} is not set: --set {name}=...", []))[1].append(nb.stem[:2])
        steps.append((nb, params))
        origins[nb.stem] = origin
        defaults[nb.stem] = dict(declared[nb.stem])
    # Values that no selected notebook takes are still checked, against the notebooks that declare them.
    run_stems = {nb.stem for nb in selected}
    for _, source, values in layers:
        for k, v in values.items():
            if not any(k in declared[s] for s in run_stems):
                for stem in declared:
                    if k in declared[stem]:
                        typed(k, v, stem, source)
    for stem, values in prof.notebooks.items():
        if stem not in run_stems:
            for k, v in values.items():
                typed(k, v, stem, f"profile {prof.name!r}, notebook {stem}")

    lines = [f"  - {name}={shown} ({source}): {name} takes "
             + "; ".join(f"{what} (default " + "; ".join(f"{default} in notebook {', '.join(nbs)}"
                                                        for default, nbs in by_default.items()) + ")"
                         for what, by_default in expected.items())
             for (source, name, shown), expected in bad.items()]
    lines += [f"  - {what} (notebook {', '.join(nbs)}){'; ' + INPUT_HINTS[name] if name in INPUT_HINTS else ''}"
              for name, (what, nbs) in missing.items()]
    if lines:
        counts = ([f"{len(bad)} parameter value(s) of the wrong type"] if bad else []) + \
                 ([f"{len(missing)} input(s) missing"] if missing else [])
        raise CourseError(f"profile {prof.name!r}: {', '.join(counts)}, nothing has run:\n" + "\n".join(lines))
    return Plan(prof, out_dir, steps, [nb.stem for nb in notebooks], origins, defaults, nb_dir)


def describe_plan(plan: Plan, kernel_name: str | None = None) -> str:
    """The plan in words (``rewardedit course --dry-run``): which notebooks run, in order, with which
    parameters (and where each value comes from), and where every output goes -- to read before a long run."""
    lines = [f"profile {plan.profile.name!r}: {one_line(plan.profile.description)}",
             f"notebooks: {plan.notebooks_dir}",
             f"kernel:    {kernel_name or 'the one each notebook names'}",
             f"outputs:   {plan.out_dir}/ -- the executed notebooks, results/<notebook>.json, summary.json, "
             f"report.html",
             f"{len(plan.steps)} of {len(plan.notebooks)} notebook(s), in this order "
             f"(value [from]: profile, profile:<notebook>, --set, runner, default):"]
    for i, (nb, params) in enumerate(plan.steps, 1):
        lines.append(f"{i:>3}. {nb.name} -> {plan.out_dir / nb.name}")
        declared = plan.defaults.get(nb.stem, {})
        origin = plan.origins.get(nb.stem, {})
        width = max((len(n) for n in [*declared, *params]), default=0)
        for name in [*declared, *(n for n in params if n not in declared)]:
            if name in params:
                lines.append(f"       {name:<{width}} = {params[name]!r}  [{origin.get(name, 'profile')}]")
            else:
                lines.append(f"       {name:<{width}} = {declared[name]}  [default]")
    skipped = [n for n in plan.notebooks if n not in {nb.stem for nb, _ in plan.steps}]
    if skipped:
        lines.append(f"not run (--only): {', '.join(skipped)}")
    return "\n".join(lines)


def one_line(description: str) -> str:
    """A profile description's first sentence, on one line (``rewardedit course --list-profiles``)."""
    text = " ".join(description.split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", text, maxsplit=1)[0] if text else "(no description)"


def profile_summaries(path: str | Path = PROFILES_FILE) -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every profile, in the file's order: what ``--profile`` accepts."""
    return [(name, one_line(p.description)) for name, p in load_profiles(path).items()]


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------
@dataclass
class NotebookRun:
    notebook: str
    status: str  # ok | failed | not run
    seconds: float | None = None
    output: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


def run_course(profile: str | Profile, out_dir: str | Path, *, only: Sequence[str] | None = None,
               overrides: Mapping[str, Any] | None = None, notebooks_dir: str | Path | None = None,
               kernel_name: str | None = None, log: Callable[[str], None] = print,
               profiles_file: str | Path = PROFILES_FILE) -> dict:
    """Run the course's notebooks in order; write the executed copies, ``summary.json`` and ``report.html``
    to ``out_dir``.

    A failing notebook stops the run: its executed copy (with everything up to the failing cell), the
    summary and the report (which marks it failed) are kept, and :class:`CourseError` names the notebook
    and the cell.
    """
    plan = plan_course(profile, out_dir, only=only, overrides=overrides, notebooks_dir=notebooks_dir,
                       profiles_file=profiles_file)
    check_kernel(kernel_name)
    with runtime.filtered_stderr():  # the kernels' TCP-transport warning, once per notebook, is noise here
        return _execute(plan, kernel_name, log)


def check_kernel(kernel_name: str | None) -> None:
    """Refuse before anything runs when no Jupyter kernel can start (``ipykernel`` missing, no kernel named)."""
    if kernel_name is None and importlib.util.find_spec("ipykernel") is None:
        raise CourseError("the course runs its notebooks in a Jupyter kernel and ipykernel is not installed: "
                          "pip install 'rewardedit-kit[lab]' (Colab and `make setup` have one)")


def _execute(plan: Plan, kernel_name: str | None, log: Callable[[str], None]) -> dict:
    """Run a checked plan's notebooks (the body of :func:`run_course`)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .kernels import WarmKernel, notebook_kernel_name

    plan.out_dir.mkdir(parents=True, exist_ok=True)
    runs = [NotebookRun(nb.stem, "not run", parameters=params) for nb, params in plan.steps]
    summary = {"profile": plan.profile.name, "out_dir": str(plan.out_dir), "status": "running",
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "total_seconds": 0.0, "notebooks": []}
    t_start = time.perf_counter()

    def write_summary() -> None:
        summary["notebooks"] = [asdict(r) for r in runs]
        summary["total_seconds"] = round(time.perf_counter() - t_start, 2)
        atomic_write_json(plan.out_dir / "summary.json", summary, indent=2, default=_jsonable)

    def write_report() -> None:
        from .report import build_report

        try:
            log(f"course: report at {build_report(plan.out_dir, plan.notebooks)}")
        except Exception as e:  # noqa: BLE001 -- a broken report must never hide the course's own outcome
            log(f"course: could not write the report: {type(e).__name__}: {e}")

    kernels = contextlib.ExitStack()  # stops each kernel started ahead that is still running when the run ends

    def warm(i: int) -> WarmKernel | None:
        """Notebook i's kernel, started now and warmed while the notebook before it runs (:mod:`.kernels`)."""
        if i >= len(plan.steps):
            return None
        w = WarmKernel(notebook_kernel_name(plan.steps[i][0], kernel_name), plan.out_dir)
        kernels.callback(w.shutdown, now=True)  # if the run stops before it is used
        return w

    log(f"course: profile {plan.profile.name!r}, {len(plan.steps)} notebook(s) -> {plan.out_dir}")
    with kernels:
        nxt = warm(0)
        for i, (run, (nb, params)) in enumerate(zip(runs, plan.steps)):
            log(f"  running {nb.name} ...")
            t0 = time.perf_counter()  # a notebook's time includes any wait for its kernel's warm-up
            current, nxt = nxt, None
            km = current.take() if current is not None else None
            if current is not None and km is None:
                log(f"  (a kernel started ahead for {nb.name} failed, {current.error}; papermill starts one)")
            nxt = warm(i + 1)  # its start and imports overlap with this notebook
            output = plan.out_dir / nb.name
            run.output = str(output)
            try:
                papermill.execute_notebook(str(nb), str(output), parameters=params, kernel_name=kernel_name,
                                           cwd=str(plan.out_dir), progress_bar=False, log_output=False,
                                           **({"km": km} if km is not None else {}))
            except PapermillExecutionError as e:
                run.seconds = round(time.perf_counter() - t0, 2)
                run.status = "failed"
                run.error = {"cell_index": e.cell_index, "execution_count": e.exec_count, "ename": e.ename,
                             "evalue": e.evalue}
                summary["status"] = "failed"
                write_summary()
                write_report()
                raise CourseError(f"notebook {nb.name} failed in cell {e.cell_index} (execution count "
                                  f"{e.exec_count}): {e.ename}: {e.evalue}\n  executed copy kept at {output}; "
                                  f"summary at {plan.out_dir / 'summary.json'}") from None
            except Exception as e:  # the kernel died, or papermill itself failed: still keep the record
                run.seconds = round(time.perf_counter() - t0, 2)
                run.status = "failed"
                run.error = {"cell_index": None, "execution_count": None, "ename": type(e).__name__,
                             "evalue": str(e)}
                summary["status"] = "failed"
                write_summary()
                write_report()
                raise CourseError(f"notebook {nb.name} failed: {type(e).__name__}: {e}") from e
            finally:
                if current is not None:
                    current.shutdown()  # papermill leaves a kernel it was given running
            run.seconds = round(time.perf_counter() - t0, 2)
            run.status = "ok"
            run.results = read_results(plan.out_dir, nb.stem)
            log(f"  ok      {nb.name} ({run.seconds:.1f} s)")
            write_summary()
    summary["status"] = "ok"
    write_summary()
    write_report()
    log(f"course: done in {summary['total_seconds']:.1f} s; summary at {plan.out_dir / 'summary.json'}")
    return summary
