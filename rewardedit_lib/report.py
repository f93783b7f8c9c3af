"""The course report: one self-contained HTML page, ``<out>/report.html``, from what a course run left behind.

Why a page and not "open the notebooks": after ``rewardedit course`` a reader wants the answer first -- did
every notebook run, how long did each take, does the multi-reward model obey its rewards at all (the
reward knob), does it beat the baseline, what did the ablations show -- and the figures that back it, in one file that can be mailed or archived (images are
embedded as data URIs; nothing is fetched). Every number on the page is read from what the notebooks
recorded (:func:`course.record_results`) and every figure from the executed notebooks; the report
computes nothing, so it can never disagree with them.

Sources, all optional (whatever is missing is shown as missing, never guessed)::

    summary.json          the runner's status and wall time per notebook (the latest ``rewardedit course``)
    NN_name.ipynb         the executed notebooks: their figures; status and time if summary.json lacks them
    results/NN_name.json  each notebook's recorded results (05: the headline table and the paired
                          differences, 06: the reward knob and the ablation table)

No secrets: papermill parameters are not shown, and the page is scrubbed of anything that looks like a
key (``sk-...``, ``hf_...``, bearer tokens) and of the values of credential-like environment variables.

The markup is a jinja2 template, ``templates/report.html`` with its sections in ``templates/report_macros.html``,
rendered with autoescape on: everything a run recorded (instructions, judge reasons, model and file names,
errors) is data the template escapes; the Python side only gathers and formats numbers, and marks nothing safe.

Build it standalone with ``rewardedit report --out runs/toy-cpu``; the course runner builds it at the end of
every run, a failed one included.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jinja2

from .formats import PERSPECTIVES
from .plumbing import atomic_write_text, read_json

REPORT_NAME = "report.html"
_NOTEBOOK = re.compile(r"^\d\d_[A-Za-z0-9_]+$")
#: Notebooks whose figures are the report's key figures (shown open); the others' figures are folded away.
KEY_NOTEBOOKS = ("05_evaluation", "06_ablations")
_SECRET_ENV = re.compile(r"(api_?key|token|secret|password|passwd)", re.IGNORECASE)
_SECRET_PATTERNS = (re.compile(r"sk-[A-Za-z0-9_\-]{16,}"), re.compile(r"hf_[A-Za-z0-9]{16,}"),
                    re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-]{16,}"))
REDACTED = "[redacted]"


@dataclass
class Figure:
    caption: str
    png_base64: str


@dataclass
class NotebookEntry:
    """One notebook as the report shows it."""

    name: str
    status: str  # ok | failed | not run | ok (earlier run) | failed (earlier run)
    seconds: float | None = None
    error: str | None = None
    figures: list[Figure] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def notebook_figures(path: str | Path) -> list[Figure]:
    """The PNG outputs of an executed notebook, each captioned with the heading of the section it is in."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    heading, out = "", []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    heading = line.lstrip("#").strip()
            continue
        for o in cell.get("outputs", []):
            png = o.get("data", {}).get("image/png") if o.get("output_type") in ("display_data", "execute_result") \
                else None
            if png:
                out.append(Figure(heading, png.replace("\n", "") if isinstance(png, str) else "".join(png)))
    return out


def _papermill_status(path: Path) -> tuple[str, float | None]:
    """Status and duration of an executed copy the latest summary does not list (an earlier run)."""
    import nbformat

    try:
        meta = nbformat.read(str(path), as_version=4).metadata.get("papermill", {})
    except Exception:  # a half-written or foreign file: say so, never crash the report
        return "unreadable", None
    if meta.get("exception"):
        return "failed (earlier run)", meta.get("duration")
    if meta.get("end_time") is None:
        return "incomplete (earlier run)", meta.get("duration")
    return "ok (earlier run)", meta.get("duration")


def collect(out_dir: str | Path, notebooks: Iterable[str] = ()) -> tuple[dict[str, Any], list[NotebookEntry]]:
    """The run summary and one entry per notebook: those named in ``notebooks`` (e.g. the course's, so one
    never run shows as "not run"), in ``summary.json``, executed in ``out_dir`` or with recorded results."""
    out = Path(out_dir)
    summary = read_json(out / "summary.json", missing=None, invalid=None) or {}
    listed = {n["notebook"]: n for n in summary.get("notebooks", []) if isinstance(n, dict) and "notebook" in n}
    names = set(notebooks) | set(listed)
    names |= {p.stem for p in out.glob("*.ipynb") if _NOTEBOOK.match(p.stem)}
    names |= {p.stem for p in (out / "results").glob("*.json") if _NOTEBOOK.match(p.stem)}
    entries = []
    for name in sorted(names):
        copy = out / f"{name}.ipynb"
        run = listed.get(name)
        if run is not None:
            status, seconds = run.get("status", "unknown"), run.get("seconds")
            err = run.get("error") or None
            error = None if not err else (f"{err.get('ename')}: {err.get('evalue')}" +
                                          (f" (cell {err['cell_index']})" if err.get("cell_index") is not None else ""))
        elif copy.exists():
            (status, seconds), error = _papermill_status(copy), None
        else:
            status, seconds, error = "not run", None, None
        entry = NotebookEntry(name, status, seconds, error)
        if status != "not run":  # a copy left by an older run is not this run's output
            if copy.exists():
                try:
                    entry.figures = notebook_figures(copy)
                except Exception as e:  # noqa: BLE001 -- an unreadable notebook is reported, not fatal
                    entry.error = (entry.error + "; " if entry.error else "") + f"figures unreadable: {e}"
            entry.results = read_json(out / "results" / f"{name}.json", missing=None, invalid=None) or {}
        entries.append(entry)
    return summary, entries


# --------------------------------------------------------------------------------------------------
# Rendering: the markup is in templates/report.html and templates/report_macros.html (jinja2, autoescaped);
# the functions below only gather and format the numbers, which the templates escape like any other data.
# --------------------------------------------------------------------------------------------------
def redact(text: str, extra: Sequence[str] = ()) -> str:
    """``text`` without anything that looks like a credential, nor the values of credential-like
    environment variables (``OPENAI_API_KEY``, ``HF_TOKEN``, ...) or ``extra``."""
    values = [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8] + list(extra)
    for v in sorted(set(values), key=len, reverse=True):
        text = text.replace(v, REDACTED)
    for pat in _SECRET_PATTERNS:
        text = pat.sub(REDACTED, text)
    return text


@functools.lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """The report's templates, autoescaped (``default=True``: a template of any name escapes what it prints).
    StrictUndefined: a name the Python side forgot to pass is an error, not an empty cell."""
    return jinja2.Environment(loader=jinja2.PackageLoader("rewardedit_lib", "templates"),
                              autoescape=jinja2.select_autoescape(("html",), default=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _macro(name: str, *args: Any) -> str:
    """One macro of ``report_macros.html`` rendered to a plain ``str`` (not ``Markup``: a caller adding text to
    it gets plain string concatenation, as before)."""
    return str(getattr(_templates().get_template("report_macros.html").module, name)(*args))


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """A table; every header and cell is escaped."""
    return _macro("table", list(columns), [list(r) for r in rows], cls)


def _fmt(v: Any, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


_METRIC_COLUMNS = [(f"{p}_{k}", f"{p} {'yes %' if k == 'yes_rate' else 'score'}", 1 if k == "yes_rate" else 2)
                   for p in PERSPECTIVES for k in ("yes_rate", "score")]


def _headline_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    head = results.get("headline")
    if not head:
        return None
    names = list(head)
    view: dict[str, Any] = {
        "edits": results.get("bench_edits", "?"), "images": results.get("bench_images", "?"),
        "judge": results.get("judge", "?"), "columns": ["model"] + [t for _, t, _ in _METRIC_COLUMNS],
        "rows": [[name] + [_fmt(m.get(k), d) for k, _, d in _METRIC_COLUMNS] for name, m in head.items()],
        "diff": None, "paired": None, "paper": None}
    diffs = results.get("paired_difference")
    if diffs:
        view["diff"] = {"who": f"{names[-1]} - {names[0]}" if len(names) == 2 else "A - B",
                        "rows": [[p, d.get("n", "-"), _diff(d.get("yes_diff"), d.get("yes_diff_ci"), 1),
                                  _diff(d.get("score_diff"), d.get("score_diff_ci"), 2)] for p, d in diffs.items()]}
    paired = results.get("paired")
    if paired:
        view["paired"] = {"who": f"{names[-1]} vs {names[0]}" if len(names) == 2 else "paired",
                          "rows": [[p, c.get("win"), c.get("tie"), c.get("loss")] for p, c in paired.items()]}
    paper = _paper_table()
    if paper:
        view["paper"] = [[m, r["following_yes_rate"], r["preserving_score"], r["quality_score"]]
                         for m, r in paper.items()]
    return view


def headline_section(results: Mapping[str, Any]) -> str:
    """05's recorded headline (one row per model), paired comparison and per-type table."""
    return _macro("headline", _headline_view(results))


def _diff(value: Any, ci: Any, digits: int) -> str:
    """``+1.2 [-0.3, +2.8]``: a recorded difference and its interval; ``-`` where nothing was recorded."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)):
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def _knob_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    knob = results.get("knob")
    table = knob.get("table") if isinstance(knob, Mapping) else None
    if not table or "columns" not in table:
        return None
    settings = knob.get("edit_settings", {})
    low = knob.get("low", "?")
    return {"n": knob.get("n", "?"), "low": f"{low:g}" if isinstance(low, (int, float)) else low,
            "steps": settings.get("num_inference_steps", "?"), "seed": settings.get("seed", "?"),
            "columns": table["columns"], "rows": table["rows"], "verdict": knob.get("verdict")}


def knob_section(results: Mapping[str, Any]) -> str:
    """06's recorded reward knob (``evaluate.KnobReport.to_json()``): its table and verdict, as recorded."""
    return _macro("knob", _knob_view(results))


def _paper_table() -> dict[str, dict[str, float]]:
    try:
        from .evaluate import PAPER_TABLE1
    except Exception:  # noqa: BLE001 -- the reference table is a nicety; the report must not need torch
        return {}
    return PAPER_TABLE1


def _by_type_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    by_type = results.get("by_type")
    if not by_type:
        return None
    types: list[str] = []
    for per_model in by_type.values():
        types += [t for t in per_model if t not in types]
    rows = []
    for t in types:
        for model, per_model in by_type.items():
            m = per_model.get(t)
            if m is not None:
                rows.append([t, model, m.get("n", "-")] + [_fmt(m.get(k), d) for k, _, d in _METRIC_COLUMNS])
    return {"columns": ["edit type", "model", "edits"] + [t for _, t, _ in _METRIC_COLUMNS], "rows": rows}


def by_type_section(results: Mapping[str, Any]) -> str:
    """05's recorded per-edit-type numbers: one row per (edit type, model)."""
    return _macro("by_type", _by_type_view(results))


def _ablation_view(results: Mapping[str, Any]) -> dict[str, Any] | None:
    table = results.get("table")
    if not table or "columns" not in table:
        return None
    return {"grid": results.get("grid", "?"), "columns": table["columns"], "rows": table["rows"]}


def ablation_section(results: Mapping[str, Any]) -> str:
    """06's recorded ablation table (``{"columns", "rows"}``), as recorded."""
    return _macro("ablation", _ablation_view(results))


def _probe_views(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    views = []
    for key, what in (("loss_probe", "training triplets"), ("loss_probe_heldout_perfect", "held-out perfect edits")):
        probes = results.get(key)
        if not probes:
            continue
        first = next(iter(probes.values()))
        edges = first.get("edges", [])
        views.append({
            "n": first.get("n", "?"), "what": what,
            "bins": [f"t {a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])],
            "rows": [[model, cond, _fmt(p.get("overall", {}).get(cond), 5)] + [_fmt(v, 5) for v in losses]
                     for model, p in probes.items() for cond, losses in p.get("losses", {}).items()]})
    return views


def probe_section(results: Mapping[str, Any]) -> str:
    """04's recorded loss probes: mean loss per reward condition and noise level, one row per (model, condition)."""
    return _macro("probes", _probe_views(results))


def _status_class(status: str) -> str:
    if status.startswith("ok"):
        return "ok"
    if status.startswith("failed") or status in ("unreadable", "unknown"):
        return "failed"
    return "notrun"


def render(summary: Mapping[str, Any], entries: Sequence[NotebookEntry], out_dir: str | Path) -> str:
    """The report as an HTML string (not yet redacted; :func:`build_report` scrubs it)."""
    by_name = {e.name: e for e in entries}
    status = summary.get("status", "no summary.json")
    ev, ab, tr = (by_name[n].results if n in by_name else {} for n in ("05_evaluation", "06_ablations", "04_training"))
    return _templates().get_template("report.html").render(
        profile=summary.get("profile", "?"), status=status, status_class=_status_class(str(status)),
        started=summary.get("started", "?"), folder=Path(out_dir).name, written=time.strftime("%Y-%m-%d %H:%M:%S"),
        notebooks=[{"name": e.name, "status": e.status, "status_class": _status_class(e.status),
                    "seconds": _fmt(e.seconds, 1), "error": e.error or ""} for e in entries],
        total=f"{sum(e.seconds for e in entries if isinstance(e.seconds, (int, float))):.1f}",
        headline=_headline_view(ev), by_type=_by_type_view(ev), knob=_knob_view(ab), probes=_probe_views(tr),
        ablation=_ablation_view(ab),
        figures=[{"name": e.name, "status": e.status, "open": e.name in KEY_NOTEBOOKS, "figures": e.figures}
                 for e in entries if e.figures],
        results=[{"name": e.name, "json": json.dumps(e.results, indent=1, sort_keys=True)}
                 for e in entries if e.results])


def build_report(out_dir: str | Path, notebooks: Iterable[str] = (), path: str | Path | None = None) -> Path:
    """Write ``<out_dir>/report.html`` (or ``path``) from what the course run left in ``out_dir``; returns it.

    ``notebooks``: names (``NN_name``) that must appear even if they never ran (the course's notebooks)."""
    summary, entries = collect(out_dir, notebooks)
    target = Path(path) if path is not None else Path(out_dir) / REPORT_NAME
    atomic_write_text(target, redact(render(summary, entries, out_dir)))
    return target
