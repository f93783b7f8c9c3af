"""The course report (rewardedit_lib.report, and the runner and CLI writing it).

What must hold: the page shows the numbers the notebooks recorded (headline, per type, the ablation table
with its "not run" rows), every notebook's status and wall time -- a failed one marked failed with its
error, one that never ran marked "not run" -- the executed notebooks' figures embedded, no secret, every
value from a run escaped (the page is a jinja2 template with autoescape on; markupsafe writes ' and " as
&#39; and &#34;), the templates shipped with the package, and a failing course still leaves a report behind.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from notebook_factory import make_notebook
from PIL import Image

from rewardedit_lib import cli, course, report

KEY = "sk-test-4f9a2b7c1d8e6f0a3b5c7d9e"


def _png_b64(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _executed(path: Path, heading: str, png: str, exception: bool = False, duration: float = 1.5) -> Path:
    """A tiny executed notebook as papermill writes it: a heading, a cell with a figure, papermill metadata."""
    cell = new_code_cell("show()", execution_count=1)
    cell.outputs = [new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
                    new_output("stream", name="stdout", text=f"key in the environment: {KEY}\n")]
    nb = new_notebook(cells=[new_markdown_cell(f"# Title\n\n## {heading}\ntext"), cell])
    nb.metadata["papermill"] = {"duration": duration, "exception": True if exception else None,
                                "end_time": "2026-01-01T00:00:00", "parameters": {"seed": 0}}
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A course run the test makes: 00 ok, 05 ok, 06 failed, 03 never ran; results recorded by 05 and 06."""
    out = tmp_path / "run"
    (out / "results").mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({
        "profile": "toy-cpu", "status": "failed", "started": "2026-01-01T00:00:00", "notebooks": [
            {"notebook": "00_setup", "status": "ok", "seconds": 3.21},
            {"notebook": "05_evaluation", "status": "ok", "seconds": 144.12},
            {"notebook": "06_ablations", "status": "failed", "seconds": 9.87,
             "error": {"cell_index": 7, "ename": "ValueError", "evalue": f"boom with {KEY}"}},
            {"notebook": "07_later", "status": "not run", "seconds": None}]}))
    headline = {"baseline": {"following_yes_rate": 7.1428, "following_score": 0.6123, "preserving_yes_rate": 4.2857,
                             "preserving_score": 1.6714, "quality_yes_rate": 84.2857, "quality_score": 3.7214},
                "multi-reward": {"following_yes_rate": 11.4286, "following_score": 0.8357,
                                 "preserving_yes_rate": 6.4286, "preserving_score": 1.8214,
                                 "quality_yes_rate": 77.1429, "quality_score": 3.5786}}
    by_type = {name: {"Add": {"n": 20, **{k: v + 1 for k, v in m.items()}}, "Remove": {"n": 20, **m}}
               for name, m in headline.items()}
    course.record_results("05_evaluation", out, bench_images=20, bench_edits=140, headline=headline, by_type=by_type,
                          paired={"following": {"win": 17, "tie": 115, "loss": 8}}, judge="toy-judge",
                          api_note=f"key {KEY}")
    course.record_results("06_ablations", out, grid="small", table={
        "columns": ["kind", "setting", "measured here", "F score"],
        "rows": [["trained", "rewards none (baseline)", "yes", "0.61"],
                 ["trained", "rewards text, injection time", "not run: grid='full' trains it", "-"]]})
    _executed(out / "00_setup.ipynb", "Environment check", _png_b64((255, 0, 0)))
    _executed(out / "05_evaluation.ipynb", "Per edit type", _png_b64((0, 255, 0)))
    _executed(out / "06_ablations.ipynb", "Asking for other rewards", _png_b64((0, 0, 255)), exception=True)
    _executed(out / "07_later.ipynb", "Stale figure", _png_b64((9, 9, 9)))  # left by an older run
    _executed(out / "04_training.ipynb", "Loss curves", _png_b64((1, 2, 3)), duration=512.04)  # not in summary
    return out


def _rows(html: str) -> dict[str, str]:
    """notebook name -> its row of the notebooks table."""
    return {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>(\d\d_\w+)</td>.*?</tr>", html)}


def test_the_report_shows_recorded_numbers_statuses_and_times(out_dir):
    path = report.build_report(out_dir, ["00_setup", "03_never", "04_training", "05_evaluation", "06_ablations"])
    assert path == out_dir / "report.html"
    html = path.read_text()
    rows = _rows(html)
    assert set(rows) == {"00_setup", "03_never", "04_training", "05_evaluation", "06_ablations", "07_later"}
    assert "ok" in rows["00_setup"] and "3.2" in rows["00_setup"]
    assert "class='failed'>failed<" in rows["06_ablations"] and "ValueError: boom" in rows["06_ablations"]
    assert "(cell 7)" in rows["06_ablations"] and "9.9" in rows["06_ablations"]
    assert ">not run<" in rows["03_never"] and ">not run<" in rows["07_later"]
    assert "ok (earlier run)" in rows["04_training"] and "512.0" in rows["04_training"]  # papermill's own record
    # the headline table: the recorded numbers, rounded (yes-rate 1 decimal, score 2)
    assert re.search(r"<td>baseline</td><td>7\.1</td><td>0\.61</td><td>4\.3</td><td>1\.67</td><td>84\.3</td>"
                     r"<td>3\.72</td>", html)
    assert re.search(r"<td>multi-reward</td><td>11\.4</td><td>0\.84</td>", html)
    assert "<td>following</td><td>17</td><td>115</td><td>8</td>" in html  # paired comparison
    assert "reported there, not measured here" in html and "57.1" in html  # the paper's, labelled as such
    # per edit type
    assert re.search(r"<td>Add</td><td>baseline</td><td>20</td><td>8\.1</td><td>1\.61</td>", html)
    # the ablation table as recorded, its unmeasured row without a number
    assert "<td>rewards text, injection time</td><td>not run: grid=&#39;full&#39; trains it</td><td>-</td>" in html
    assert "Grid <b>small</b>" in html


def test_figures_are_embedded_with_their_section_but_not_from_notebooks_that_did_not_run(out_dir):
    html = report.build_report(out_dir).read_text()
    for color, caption in [((255, 0, 0), "Environment check"), ((0, 255, 0), "Per edit type"),
                           ((0, 0, 255), "Asking for other rewards"), ((1, 2, 3), "Loss curves")]:
        assert f"src='data:image/png;base64,{_png_b64(color)}'><figcaption>{caption}</figcaption>" in html
    assert _png_b64((9, 9, 9)) not in html  # 07's copy is an older run's: this run never ran 07
    assert "<details open><summary><b>05_evaluation</b>" in html  # key figures shown open
    figs = report.notebook_figures(out_dir / "05_evaluation.ipynb")
    assert len(figs) == 1 and Image.open(io.BytesIO(base64.b64decode(figs[0].png_base64))).size == (4, 3)


def test_no_secret_reaches_the_report(out_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plain-looking-secret-value")
    (out_dir / "results" / "01_annotation.json").write_text(json.dumps({"note": "plain-looking-secret-value",
                                                                        "bearer": "Bearer abcdefghijklmnopqrstuv"}))
    html = report.build_report(out_dir).read_text()
    assert KEY not in html and "plain-looking-secret-value" not in html and "abcdefghijklmnopqrstuv" not in html
    assert "[redacted]" in html
    assert "seed" not in _rows(html)["00_setup"]  # parameters are not shown at all


def test_a_folder_with_nothing_in_it_still_gets_a_report(tmp_path):
    html = report.build_report(tmp_path, ["00_setup", "05_evaluation"]).read_text()
    assert ">not run<" in _rows(html)["00_setup"] and "no summary.json" in html
    assert "recorded no headline results" in html and "recorded no ablation table" in html
    assert "recorded no loss probe" in html


def test_the_loss_probes_of_notebook_04_are_tabled_per_model_condition_and_noise_level(out_dir):
    probe = {"edges": [0, 500, 1000], "n": 300}
    course.record_results("04_training", out_dir, loss_probe={
        "multi-reward": {**probe, "losses": {"as annotated": [0.012, 0.05], "shuffled": [0.0121, 0.072]},
                         "overall": {"as annotated": 0.031, "shuffled": 0.04205}},
        "baseline": {**probe, "losses": {"no rewards": [0.0119, 0.066]}, "overall": {"no rewards": 0.03895}}},
        loss_probe_heldout_perfect=None)
    html = report.build_report(out_dir).read_text()
    assert "<th>t 0-499</th><th>t 500-999</th>" in html and "Loss on 300 training triplets" in html
    assert "<td>multi-reward</td><td>shuffled</td><td>0.04205</td><td>0.01210</td><td>0.07200</td>" in html
    assert "<td>baseline</td><td>no rewards</td><td>0.03895</td>" in html
    assert "held-out perfect edits" not in html  # not recorded (real data): no empty table


# --------------------------------------------------------------------------------------------------
# Written by the runner (a failed run too) and by the CLI
# --------------------------------------------------------------------------------------------------
def _nb(path: Path, params: str, *cells: str) -> None:
    make_notebook(path, params, *cells, title="# t\n## The section")


def test_the_course_runner_writes_the_report_even_when_a_notebook_fails(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "00_plot.ipynb", 'out_dir = "x"  # out\nfail = False  # fail',
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(1, 1))\nax.plot([0, 1])\nplt.show()",
        "from rewardedit_lib import course\ncourse.record_results('00_plot', out_dir, answer=42)")
    _nb(d / "01_fails.ipynb", 'out_dir = "x"  # out\nfail = False  # fail',
        "if fail:\n    raise RuntimeError('the second notebook broke')")
    _nb(d / "02_after.ipynb", 'out_dir = "x"  # out', "print('never')")
    profiles = tmp_path / "p.yaml"
    profiles.write_text("p:\n  parameters: {}\n  notebooks: {01_fails: {fail: true}}\n")
    with pytest.raises(course.CourseError, match="01_fails"):
        course.run_course("p", tmp_path / "out", notebooks_dir=d, profiles_file=profiles, log=lambda s: None)
    html = (tmp_path / "out" / "report.html").read_text()
    rows = _rows(html)
    assert "class='ok'>ok<" in rows["00_plot"] and "failed" in rows["01_fails"] and "not run" in rows["02_after"]
    assert "RuntimeError: the second notebook broke" in rows["01_fails"]
    assert "data:image/png;base64," in html and "&#34;answer&#34;: 42" in html


def test_the_cli_rewrites_the_report(out_dir, capsys):
    (out_dir / "report.html").unlink(missing_ok=True)
    assert cli.main(["report", "--out", str(out_dir)]) == 0
    assert "report.html" in capsys.readouterr().out and (out_dir / "report.html").exists()
    assert cli.main(["report", "--out", str(out_dir / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def _knob_record(low: float = 0.0) -> dict:
    """What notebook 06 records as ``knob`` (knob.KnobReport.to_json()), built from hand-made numbers."""
    from rewardedit_lib import knob as K

    per = {"following": dict(n=140, yes_rate_high=12.1, yes_rate_low=11.4, score_high=0.9, score_low=0.8, knob=0.7,
                             knob_ci=[-3.6, 5.0], score_diff=0.1, score_diff_ci=[-0.1, 0.3], verdict="not shown"),
           "preserving": dict(n=140, yes_rate_high=6.4, yes_rate_low=2.1, score_high=1.8, score_low=1.2, knob=4.3,
                              knob_ci=[0.7, 7.9], score_diff=0.6, score_diff_ci=[0.4, 0.8], verdict="obeys"),
           "quality": dict(n=140, yes_rate_high=77.1, yes_rate_low=77.1, score_high=3.6, score_low=3.6, knob=0.0,
                           knob_ci=[0.0, 0.0], score_diff=0.0, score_diff_ci=[0.0, 0.0], verdict="not shown")}
    knob = K.KnobReport(Path("k"), low, 140, per, {name: {**w, "folder": Path("k") / name} for name, w in
                                                   K.knob_settings(low).items()},
                        {"num_inference_steps": 20, "seed": 0}, "models/multi-reward/model")
    return knob.to_json()


def test_the_reward_knob_is_shown_beside_the_headline(out_dir):
    course.record_results("06_ablations", out_dir, knob=_knob_record())
    html = report.build_report(out_dir).read_text()
    head, knob_at, probes = (html.index("Headline: baseline vs multi-reward"), html.index("Reward knob: does the"),
                             html.index("Loss probes (notebook 04)"))
    assert head < knob_at < probes  # right after the headline comparison
    section = html[knob_at:probes]
    assert "<th>knob (points) [95% CI]</th>" in section and "<th>yes % at 0</th>" in section
    assert ("<td>following</td><td>140</td><td>12.1</td><td>11.4</td><td>+0.7 [-3.6, +5.0]</td><td>0.90</td>"
            "<td>0.80</td><td>not shown</td>") in section
    assert "<td>preserving</td><td>140</td><td>6.4</td><td>2.1</td><td>+4.3 [+0.7, +7.9]</td>" in section
    assert "140 benchmark edits asking for 0 instead of 5" in section and "20 denoising steps" in section
    assert "does not hear that reward" in section
    assert "The model obeys its preserving reward(s); asking for 0 instead of 5 does not measurably lower the " \
           "yes-rate of following, quality" in section


def test_without_a_recorded_knob_the_report_says_so(out_dir):
    html = report.build_report(out_dir).read_text()  # the fixture's 06 failed before recording a knob
    assert "Notebook 06 recorded no reward knob" in html


def test_the_headline_shows_the_paired_difference_notebook_05_records(out_dir):
    course.record_results("05_evaluation", out_dir, paired_difference={
        "following": {"n": 140, "yes_diff": 4.2857, "yes_diff_ci": [-1.4286, 10.0], "score_diff": 0.2234,
                      "score_diff_ci": [-0.05, 0.5]},
        "quality": {"n": 140, "yes_diff": -7.1429, "yes_diff_ci": [-12.8571, -1.4286], "score_diff": -0.1429,
                    "score_diff_ci": [-0.3, 0.01]}})
    html = report.build_report(out_dir).read_text()
    assert "edit by edit (multi-reward - baseline)" in html
    assert "<td>following</td><td>140</td><td>+4.3 [-1.4, +10.0]</td><td>+0.22 [-0.05, +0.50]</td>" in html
    assert "<td>quality</td><td>140</td><td>-7.1 [-12.9, -1.4]</td><td>-0.14 [-0.30, +0.01]</td>" in html
    assert html.index("edit by edit (multi-reward") < html.index("Reward knob: does the")


# --------------------------------------------------------------------------------------------------
# Escaping: whatever a run recorded is text on the page, never markup
# --------------------------------------------------------------------------------------------------
EVIL = "<script>alert(1)</script>"
REASON = 'kept the "red" cup & the <b>table</b>'


def test_hostile_strings_from_a_run_are_escaped_everywhere_on_the_page(out_dir):
    summary = json.loads((out_dir / "summary.json").read_text())
    summary["profile"] = EVIL
    summary["notebooks"][2]["error"]["evalue"] = REASON  # 06's error, shown in the notebooks table
    summary["notebooks"].append({"notebook": f"08_{EVIL}", "status": "ok", "seconds": 1.0})
    (out_dir / "summary.json").write_text(json.dumps(summary))
    course.record_results("05_evaluation", out_dir, instruction=EVIL, reason=REASON, judge=EVIL,
                          by_type={"b<i>": {EVIL: {"n": 1}}},
                          headline={"base'line": {"following_yes_rate": 1.0}, f"m{EVIL}": {}})
    course.record_results("06_ablations", out_dir, grid=EVIL, knob={**_knob_record(), "verdict": REASON})
    _executed(out_dir / "09_caption.ipynb", "x' onerror='alert(1)", _png_b64((4, 4, 4)))  # a figure's caption
    html = report.build_report(out_dir).read_text()

    assert "<script" not in html and "<b>table</b>" not in html and "b<i>" not in html and "onerror='" not in html
    esc = "&lt;script&gt;alert(1)&lt;/script&gt;"
    reason = "kept the &#34;red&#34; cup &amp; the &lt;b&gt;table&lt;/b&gt;"
    assert f"Profile <b>{esc}</b>" in html and f"judged by {esc}:" in html and f"Grid <b>{esc}</b>" in html
    assert f"<td>08_{esc}</td>" in html  # a notebook name the summary carries
    assert f"<td>ValueError: {reason} (cell 7)</td>" in html and f"<p><b>{reason}</b></p>" in html
    assert f"<td>{esc}</td><td>b&lt;i&gt;</td><td>1</td>" in html  # per edit type: the type and the model
    assert "<td>base&#39;line</td><td>1.0</td>" in html and f"<td>m{esc}</td><td>-</td>" in html
    assert f"&#34;instruction&#34;: &#34;{esc}&#34;" in html  # the recorded results, as JSON text
    assert '&#34;reason&#34;: &#34;kept the \\&#34;red\\&#34; cup &amp; the &lt;b&gt;table&lt;/b&gt;&#34;' in html
    caption = "x&#39; onerror=&#39;alert(1)"  # cannot close the single-quoted alt attribute
    assert f"alt='{caption}'" in html and f"<figcaption>{caption}</figcaption>" in html


def test_the_section_functions_escape_and_return_plain_strings():
    table = report.html_table(["a<b", 1], [[EVIL, None, 2.5]], "num")
    assert type(table) is str  # not markupsafe.Markup: adding text to it must not escape that text
    assert table == ("<table class='num'><thead><tr><th>a&lt;b</th><th>1</th></tr></thead><tbody><tr>"
                     "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td>None</td><td>2.5</td></tr></tbody></table>")
    section = report.ablation_section({"grid": "g&", "table": {"columns": ["k"], "rows": [[REASON]]}})
    assert type(section) is str and section.startswith("<p>Grid <b>g&amp;</b>.")
    assert "<td>kept the &#34;red&#34; cup &amp; the &lt;b&gt;table&lt;/b&gt;</td>" in section
    for missing in (report.headline_section, report.knob_section, report.by_type_section, report.ablation_section,
                    report.probe_section):
        assert missing({}).startswith("<p class='missing'>")


def test_the_templates_ship_with_the_package():
    """Every file under rewardedit_lib/templates/ matches a package-data pattern of pyproject.toml (a wheel
    without them would install a report that cannot render)."""
    import fnmatch
    import tomllib

    root = Path(report.__file__).parent
    patterns = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "rewardedit_lib"]
    templates = [p.relative_to(root).as_posix() for p in (root / "templates").rglob("*") if p.is_file()]
    assert {"templates/report.html", "templates/report_macros.html"} <= set(templates)
    for t in templates:
        assert any(fnmatch.fnmatch(t, pat) for pat in patterns), f"{t} is not in pyproject's package-data"
