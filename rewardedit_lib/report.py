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

Build it standalone with ``rewardedit report --out runs/toy-cpu``; the course runner builds it at the end of
every run, a failed one included.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .formats import PERSPECTIVES, atomic_write_text

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
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
    summary = _read_json(out / "summary.json") or {}
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
            entry.results = _read_json(out / "results" / f"{name}.json") or {}
        entries.append(entry)
    return summary, entries


# --------------------------------------------------------------------------------------------------
# Rendering
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


def _e(x: Any) -> str:
    return html.escape(str(x))


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


_METRIC_COLUMNS = [(f"{p}_{k}", f"{p} {'yes %' if k == 'yes_rate' else 'score'}", 1 if k == "yes_rate" else 2)
                   for p in PERSPECTIVES for k in ("yes_rate", "score")]


def headline_section(results: Mapping[str, Any]) -> str:
    """05's recorded headline (one row per model), paired comparison and per-type table."""
    head = results.get("headline")
    if not head:
        return "<p class='missing'>Notebook 05 recorded no headline results (not run, or it failed).</p>"
    rows = [[name] + [_fmt(m.get(k), d) for k, _, d in _METRIC_COLUMNS] for name, m in head.items()]
    parts = [f"<p>{_e(results.get('bench_edits', '?'))} edits of {_e(results.get('bench_images', '?'))} benchmark "
             f"images, judged by {_e(results.get('judge', '?'))}: yes-rate (%) and mean score (0-5) per "
             f"perspective.</p>", html_table(["model"] + [t for _, t, _ in _METRIC_COLUMNS], rows, "num")]
    diffs = results.get("paired_difference")
    if diffs:
        names = list(head)
        who = f"{names[-1]} - {names[0]}" if len(names) == 2 else "A - B"
        parts.append(f"<p>The difference, edit by edit ({_e(who)}), with its paired-bootstrap 95% interval: an "
                     f"interval that contains 0 is no measured difference.</p>")
        parts.append(html_table(["perspective", "edits", "yes-rate difference (points) [95% CI]",
                                 "score difference [95% CI]"],
                                [[p, d.get("n", "-"), _diff(d.get("yes_diff"), d.get("yes_diff_ci"), 1),
                                  _diff(d.get("score_diff"), d.get("score_diff_ci"), 2)] for p, d in diffs.items()],
                                "num"))
    paired = results.get("paired")
    if paired:
        names = list(head)
        who = f"{names[-1]} vs {names[0]}" if len(names) == 2 else "paired"
        parts.append(f"<p>Item by item ({_e(who)}): the judge's score higher / equal / lower.</p>")
        parts.append(html_table(["perspective", "win", "tie", "loss"],
                                [[p, c.get("win"), c.get("tie"), c.get("loss")] for p, c in paired.items()], "num"))
    paper = _paper_table()
    if paper:
        parts.append("<p class='note'>For reference only, the paper's Table 1 (real Real-Edit, GPT-4o, SD 1.5 "
                     "models) -- reported there, not measured here:</p>")
        parts.append(html_table(["model", "following yes %", "preserving score", "quality score"],
                                [[m, r["following_yes_rate"], r["preserving_score"], r["quality_score"]]
                                 for m, r in paper.items()], "num"))
    return "\n".join(parts)


def _diff(value: Any, ci: Any, digits: int) -> str:
    """``+1.2 [-0.3, +2.8]``: a recorded difference and its interval; ``-`` where nothing was recorded."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)):
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def knob_section(results: Mapping[str, Any]) -> str:
    """06's recorded reward knob (``evaluate.KnobReport.to_json()``): its table and verdict, as recorded."""
    knob = results.get("knob")
    table = knob.get("table") if isinstance(knob, Mapping) else None
    if not table or "columns" not in table:
        return "<p class='missing'>Notebook 06 recorded no reward knob (not run, or it failed).</p>"
    settings = knob.get("edit_settings", {})
    low = knob.get("low", "?")
    parts = [f"<p>The multi-reward model edits the {_e(knob.get('n', '?'))} benchmark edits asking for "
             f"{_e(f'{low:g}' if isinstance(low, (int, float)) else low)} instead of 5 in one perspective (the "
             f"other two at 5), and at (5, 5, 5); {_e(settings.get('num_inference_steps', '?'))} denoising steps, "
             f"seed {_e(settings.get('seed', '?'))}. The knob is the judge's yes-rate in that perspective at 5 "
             f"minus at the low score, edit by edit, with its paired-bootstrap 95% interval. A knob near 0 means "
             f"the model does not hear that reward: no difference from the baseline there can come from the "
             f"rewards.</p>", html_table(table["columns"], table["rows"], "num")]
    if knob.get("verdict"):
        parts.append(f"<p><b>{_e(knob['verdict'])}</b></p>")
    return "\n".join(parts)


def _paper_table() -> dict[str, dict[str, float]]:
    try:
        from .evaluate import PAPER_TABLE1
    except Exception:  # noqa: BLE001 -- the reference table is a nicety; the report must not need torch
        return {}
    return PAPER_TABLE1


def by_type_section(results: Mapping[str, Any]) -> str:
    """05's recorded per-edit-type numbers: one row per (edit type, model)."""
    by_type = results.get("by_type")
    if not by_type:
        return "<p class='missing'>No per-type results recorded.</p>"
    types: list[str] = []
    for per_model in by_type.values():
        types += [t for t in per_model if t not in types]
    rows = []
    for t in types:
        for model, per_model in by_type.items():
            m = per_model.get(t)
            if m is not None:
                rows.append([t, model, m.get("n", "-")] + [_fmt(m.get(k), d) for k, _, d in _METRIC_COLUMNS])
    return html_table(["edit type", "model", "edits"] + [t for _, t, _ in _METRIC_COLUMNS], rows, "num")


def ablation_section(results: Mapping[str, Any]) -> str:
    """06's recorded ablation table (``{"columns", "rows"}``), as recorded."""
    table = results.get("table")
    if not table or "columns" not in table:
        return "<p class='missing'>Notebook 06 recorded no ablation table (not run, or it failed).</p>"
    note = (f"<p>Grid <b>{_e(results.get('grid', '?'))}</b>. A row marked <i>not run</i> was not measured in this "
            f"run and carries no number.</p>")
    return note + html_table(table["columns"], table["rows"], "num")


def probe_section(results: Mapping[str, Any]) -> str:
    """04's recorded loss probes: mean loss per reward condition and noise level, one row per (model, condition)."""
    parts = []
    for key, what in (("loss_probe", "training triplets"), ("loss_probe_heldout_perfect", "held-out perfect edits")):
        probes = results.get(key)
        if not probes:
            continue
        first = next(iter(probes.values()))
        edges = first.get("edges", [])
        bins = [f"t {a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
        rows = [[model, cond, _fmt(p.get("overall", {}).get(cond), 5)] + [_fmt(v, 5) for v in losses]
                for model, p in probes.items() for cond, losses in p.get("losses", {}).items()]
        parts.append(f"<p>Loss on {_e(first.get('n', '?'))} {what} (the same timesteps and noise in every row; "
                     f"lower is better).</p>")
        parts.append(html_table(["model", "rewards given", "all", *bins], rows, "num"))
    return "\n".join(parts) or "<p class='missing'>Notebook 04 recorded no loss probe (not run, or it failed).</p>"


_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
table.num td { font-variant-numeric: tabular-nums; }
.ok { color: #2a7a2a; } .failed { color: #b22222; font-weight: bold; } .notrun { color: #888; }
.missing { color: #b26b00; } .note { color: #555; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""


def _status_class(status: str) -> str:
    if status.startswith("ok"):
        return "ok"
    if status.startswith("failed") or status in ("unreadable", "unknown"):
        return "failed"
    return "notrun"


def render(summary: Mapping[str, Any], entries: Sequence[NotebookEntry], out_dir: str | Path) -> str:
    """The report as an HTML string (not yet redacted; :func:`build_report` scrubs it)."""
    by_name = {e.name: e for e in entries}
    total = sum(e.seconds for e in entries if isinstance(e.seconds, (int, float)))
    status = summary.get("status", "no summary.json")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>RewardEdit Kit course report</title>"
             f"<style>{_STYLE}</style></head><body>",
             "<h1>RewardEdit Kit &middot; course report</h1>",
             f"<p>Profile <b>{_e(summary.get('profile', '?'))}</b> &middot; course status "
             f"<b class='{_status_class(str(status))}'>{_e(status)}</b> &middot; started "
             f"{_e(summary.get('started', '?'))} &middot; folder <code>{_e(Path(out_dir).name)}</code> &middot; "
             f"report written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
             "<h2>Notebooks</h2>"]
    rows = "".join(
        f"<tr><td>{_e(e.name)}</td><td class='{_status_class(e.status)}'>{_e(e.status)}</td>"
        f"<td>{_fmt(e.seconds, 1)}</td><td>{_e(e.error or '')}</td></tr>" for e in entries)
    parts.append(f"<table class='num'><thead><tr><th>notebook</th><th>status</th><th>wall time (s)</th>"
                 f"<th>error</th></tr></thead><tbody>{rows}<tr><td><b>total</b></td><td></td>"
                 f"<td><b>{total:.1f}</b></td><td></td></tr></tbody></table>")
    ev = by_name.get("05_evaluation")
    parts.append("<h2>Headline: baseline vs multi-reward (notebook 05)</h2>")
    parts.append(headline_section(ev.results if ev else {}))
    parts.append("<h3>Per edit type</h3>")
    parts.append(by_type_section(ev.results if ev else {}))
    ab = by_name.get("06_ablations")
    parts.append("<h2>Reward knob: does the multi-reward model obey its rewards? (notebook 06)</h2>")
    parts.append(knob_section(ab.results if ab else {}))
    tr = by_name.get("04_training")
    parts.append("<h2>Loss probes (notebook 04)</h2>")
    parts.append(probe_section(tr.results if tr else {}))
    parts.append("<h2>Ablations (notebook 06)</h2>")
    parts.append(ablation_section(ab.results if ab else {}))
    parts.append("<h2>Figures</h2>")
    for e in entries:
        if not e.figures:
            continue
        figs = "".join(f"<figure><img alt='{_e(f.caption)}' src='data:image/png;base64,{f.png_base64}'>"
                       f"<figcaption>{_e(f.caption)}</figcaption></figure>" for f in e.figures)
        open_ = " open" if e.name in KEY_NOTEBOOKS else ""
        parts.append(f"<details{open_}><summary><b>{_e(e.name)}</b> ({len(e.figures)} figure(s), "
                     f"{_e(e.status)})</summary>{figs}</details>")
    parts.append("<h2>Recorded results</h2>")
    for e in entries:
        if e.results:
            parts.append(f"<details><summary>{_e(e.name)}</summary><pre>"
                         f"{_e(json.dumps(e.results, indent=1, sort_keys=True))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(out_dir: str | Path, notebooks: Iterable[str] = (), path: str | Path | None = None) -> Path:
    """Write ``<out_dir>/report.html`` (or ``path``) from what the course run left in ``out_dir``; returns it.

    ``notebooks``: names (``NN_name``) that must appear even if they never ran (the course's notebooks)."""
    summary, entries = collect(out_dir, notebooks)
    target = Path(path) if path is not None else Path(out_dir) / REPORT_NAME
    atomic_write_text(target, redact(render(summary, entries, out_dir)))
    return target
