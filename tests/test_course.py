"""The course runner: profiles, parameter checks before anything runs, failure handling, summary.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from notebook_factory import make_notebook as _nb

from rewardedit_lib import course
from rewardedit_lib.course import CourseError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def _profiles(tmp_path: Path, **profiles) -> Path:
    path = tmp_path / f"profiles-{'-'.join(profiles)}.yaml"
    path.write_text(yaml.safe_dump(profiles))
    return path


@pytest.fixture
def mini_course(tmp_path: Path) -> Path:
    """Three tiny notebooks; the middle one fails in its third cell when `fail` is true."""
    d = tmp_path / "nbs"
    d.mkdir()
    rec = "from rewardedit_lib import course\ncourse.record_results({name!r}, out_dir, seed=seed, value=value)"
    _nb(d / "00_first.ipynb", 'out_dir = "x"  # out\nseed = 0  # seed\nvalue = 1  # value',
        "print('first', seed)", rec.format(name="00_first"))
    _nb(d / "01_second.ipynb", 'out_dir = "x"  # out\nseed = 0  # seed\nfail = False  # fail or not',
        "marker = 'before the failure'\nprint(marker)",
        "if fail:\n    raise ValueError('boom in the second notebook')",
        "from rewardedit_lib import course\ncourse.record_results('01_second', out_dir, ok=True)")
    _nb(d / "02_third.ipynb", 'out_dir = "x"  # out\nvalue = 3  # value',
        "from rewardedit_lib import course\ncourse.record_results('02_third', out_dir, value=value)")
    return d


def test_shipped_profiles_plan_cleanly(tmp_path):
    profiles = course.load_profiles()
    assert {"toy-cpu", "toy-gpu", "sd15"} <= set(profiles)
    every = [p.name for p in course.list_notebooks(NOTEBOOKS)]
    for name in ("toy-cpu", "toy-gpu"):
        plan = course.plan_course(name, tmp_path / name, notebooks_dir=NOTEBOOKS)
        assert [nb.name for nb, _ in plan.steps] == every
        assert all(params["profile"] == name for _, params in plan.steps)
    # sd15 names real data that is not here: the plan says which parameter to point where ...
    with pytest.raises(CourseError, match=r"data_dir=.*no such file or folder; point it at your copy"):
        course.plan_course("sd15", tmp_path / "sd15", notebooks_dir=NOTEBOOKS)
    # ... and plans once the inputs exist.
    (tmp_path / "d").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "s1").mkdir(), (tmp_path / "r.json").write_text("{}")
    for name in ("sd15", "sd15-t4"):
        plan = course.plan_course(name, tmp_path / name, notebooks_dir=NOTEBOOKS, overrides={
            "data_dir": str(tmp_path / "d"), "rewards_path": str(tmp_path / "r.json"), "bench_dir": str(tmp_path / "b"),
            "stage1_dir": str(tmp_path / "s1"), "base_url": "http://127.0.0.1:9/v1", "time_limit": 3600})
        params = dict((nb.stem, p) for nb, p in plan.steps)
        assert params["04_training"]["rewards_path"] == str((tmp_path / "r.json").resolve())
        assert params["04_training"]["image_size"] == 256 and params["04_training"]["profile"] == name
        assert params["06_ablations"]["stage1_dir"] == str((tmp_path / "s1").resolve())
        assert params["04_training"]["time_limit"] == params["06_ablations"]["time_limit"] == 3600


def test_a_missing_kernel_names_the_lab_extra(tmp_path, monkeypatch):
    """ipykernel is the [lab] extra (Colab brings its own): without it the runner says what to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipykernel" else real(name, *a))
    with pytest.raises(CourseError, match=r"pip install 'rewardedit-kit\[lab\]'"):
        course.run_course("toy-cpu", tmp_path / "run", notebooks_dir=NOTEBOOKS, log=lambda s: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("profile", ["sd15", "sd15-t4"])
def test_the_sd15_profiles_report_every_missing_input_at_once(tmp_path, profile):
    """Stage-1 folder, judge endpoint, data: all named in one error, before notebook 00 runs."""
    with pytest.raises(CourseError) as err:
        course.run_course(profile, tmp_path / "run", notebooks_dir=NOTEBOOKS, log=lambda s: None)
    text = str(err.value)
    assert "5 input(s) missing, nothing has run" in text
    for name in ("data_dir", "rewards_path", "bench_dir", "stage1_dir"):
        assert re.search(rf"- {name}='data/.*': no such file or folder; point it at your copy with --set {name}=PATH", text)
    assert re.search(r"- base_url is not set: --set base_url=\.\.\. \(notebook 01, 05, 06\); the judge's", text)
    assert "stage1_dir='data/stage1_instruct_pix2pix': no such file or folder; point it at your copy with --set " \
           "stage1_dir=PATH (notebook 04, 06); a stage-1 InstructPix2Pix folder" in text
    assert not (tmp_path / "run").exists()
    # --only 02: only what notebook 02 reads
    with pytest.raises(CourseError) as err:
        course.plan_course(profile, tmp_path / "run", only=["02"], notebooks_dir=NOTEBOOKS)
    assert "2 input(s) missing" in str(err.value) and "stage1_dir" not in str(err.value)


def test_every_notebook_parameters_cell_is_readable_by_papermill():
    nbs = course.list_notebooks(NOTEBOOKS)
    assert [nb.name[:2] for nb in nbs] == ["00", "01", "02", "03", "04", "05", "06"]
    for nb in nbs:
        params = course.notebook_parameters(nb)
        assert {"profile", "seed", "out_dir", "device"} <= set(params), nb.name
        assert params["profile"] == '"toy-cpu"', f"{nb.name}: defaults must be the fast toy profile"


def test_unknown_profile_fails_before_anything_runs(tmp_path):
    with pytest.raises(CourseError, match=r"unknown profile 'toy-tpu'.*toy-cpu"):
        course.run_course("toy-tpu", tmp_path / "out", notebooks_dir=NOTEBOOKS)
    assert not (tmp_path / "out").exists()


def test_unknown_parameter_fails_before_anything_runs(tmp_path, mini_course):
    prof = _profiles(tmp_path, p={"parameters": {"seed": 1}})
    with pytest.raises(CourseError, match=r"unknown parameter 'n_trian'"):
        course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof,
                          overrides={"n_trian": 5})
    bad = _profiles(tmp_path, q={"parameters": {"seed": 1, "colour": "red"}})
    with pytest.raises(CourseError, match=r"unknown parameter 'colour' \(profile 'q'\)"):
        course.run_course("q", tmp_path / "out", notebooks_dir=mini_course, profiles_file=bad)
    per_nb = _profiles(tmp_path, r={"parameters": {}, "notebooks": {"02_third": {"fail": True}}})
    with pytest.raises(CourseError, match=r"unknown parameter 'fail' for notebook 02_third"):
        course.run_course("r", tmp_path / "out", notebooks_dir=mini_course, profiles_file=per_nb)
    ghost = _profiles(tmp_path, s={"parameters": {}, "notebooks": {"07_ghost": {}}})
    with pytest.raises(CourseError, match=r"notebook '07_ghost', which does not exist"):
        course.run_course("s", tmp_path / "out", notebooks_dir=mini_course, profiles_file=ghost)
    with pytest.raises(CourseError, match=r"unknown notebook '09'"):
        course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof, only=["09"])
    assert not (tmp_path / "out").exists()


def test_secret_parameters_are_refused(tmp_path, mini_course):
    prof = _profiles(tmp_path, p={"parameters": {}})
    with pytest.raises(CourseError, match=r"'openai_api_key'.*environment"):
        course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof,
                          overrides={"openai_api_key": "sk-should-never-be-written"})
    assert not (tmp_path / "out").exists()


def test_missing_input_path_fails_before_anything_runs(tmp_path, mini_course):
    _nb(mini_course / "03_data.ipynb", 'out_dir = "x"  # out\ndata_dir = None  # data', "print(data_dir)")
    prof = _profiles(tmp_path, p={"parameters": {"data_dir": str(tmp_path / "nope")}, "inputs": ["data_dir"]})
    with pytest.raises(CourseError, match=r"data_dir=.*nope.*no such file or folder"):
        course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof)
    assert not (tmp_path / "out").exists()


def test_a_parameter_line_papermill_cannot_read_is_reported(tmp_path):
    nb = _nb(tmp_path / "00_bad.ipynb", 'data_dir = None  # None = generate it\nseed = 0  # seed')
    with pytest.raises(CourseError, match=r"line 1 \(data_dir\) cannot be read by papermill"):
        course.notebook_parameters(nb)


def test_runs_in_order_and_writes_summary(tmp_path, mini_course):
    prof = _profiles(tmp_path, p={"parameters": {"seed": 7, "value": 2}, "notebooks": {"02_third": {"value": 9}}})
    summary = course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof,
                                log=lambda s: None)
    assert summary["status"] == "ok"
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [n["notebook"] for n in on_disk["notebooks"]] == ["00_first", "01_second", "02_third"]
    assert all(n["status"] == "ok" and n["seconds"] > 0 for n in on_disk["notebooks"])
    assert on_disk["notebooks"][0]["results"] == {"seed": 7, "value": 2}
    assert on_disk["notebooks"][2]["results"] == {"value": 9}  # the per-notebook override won
    executed = nbformat.read(str(tmp_path / "out" / "00_first.ipynb"), as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "first 7" in outputs


def test_failing_notebook_stops_the_run_and_keeps_what_ran(tmp_path, mini_course):
    prof = _profiles(tmp_path, p={"parameters": {}, "notebooks": {"01_second": {"fail": True}}})
    with pytest.raises(CourseError) as err:
        course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof,
                          log=lambda s: None)
    msg = str(err.value)
    assert "01_second.ipynb" in msg and "cell" in msg and "boom in the second notebook" in msg
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed"
    status = {n["notebook"]: n["status"] for n in summary["notebooks"]}
    assert status == {"00_first": "ok", "01_second": "failed", "02_third": "not run"}
    failed = summary["notebooks"][1]["error"]
    assert failed["ename"] == "ValueError" and failed["cell_index"] is not None
    # What was executed so far is kept: the first notebook, and the failing one up to the failure.
    assert (tmp_path / "out" / "00_first.ipynb").exists()
    partial = nbformat.read(str(tmp_path / "out" / "01_second.ipynb"), as_version=4)
    text = json.dumps([c.get("outputs", []) for c in partial.cells])
    assert "before the failure" in text and "boom in the second notebook" in text
    assert not (tmp_path / "out" / "02_third.ipynb").exists()


def test_parse_overrides():
    assert course.parse_overrides(["n_train=28", "data_dir=/x/y", "base_url=null", "flag=true"]) == {
        "n_train": 28, "data_dir": "/x/y", "base_url": None, "flag": True}
    with pytest.raises(CourseError, match="NAME=VALUE"):
        course.parse_overrides(["n_train"])


def test_record_results_merges(tmp_path):
    course.record_results("05_x", tmp_path, a=1)
    import numpy as np

    merged = course.record_results("05_x", tmp_path, b=np.float32(0.5), c=np.arange(3))
    assert merged == {"a": 1, "b": 0.5, "c": [0, 1, 2]}
    assert course.read_results(tmp_path, "05_x") == merged


def test_the_toy_course_runs_end_to_end(tmp_path):
    """The real notebooks on the toy profile, at small parameters: every notebook ok, results recorded."""
    summary = course.run_course("toy-cpu", tmp_path / "run", notebooks_dir=NOTEBOOKS, log=lambda s: None,
                                overrides={"n_train": 28, "bench_images": 2, "train_steps": 4, "validate_every": 2,
                                           "steps": 2, "sweep_steps": 2})
    assert summary["status"] == "ok"
    by_name = {n["notebook"]: n for n in summary["notebooks"]}
    assert len(by_name) == 7 and all(n["status"] == "ok" for n in by_name.values())
    assert by_name["01_annotation"]["results"]["n_triplets"] == 28
    ev = by_name["05_evaluation"]["results"]
    assert ev["bench_images"] == 2 and ev["bench_edits"] == 14
    assert set(ev["headline"]) == {"baseline", "multi-reward"} and "following_yes_rate" in ev["headline"]["baseline"]
    assert sum(ev["paired"]["quality"].values()) == 14
    assert by_name["04_training"]["results"]["steps"] == 4
    assert by_name["00_setup"]["parameters"]["out_dir"] == str((tmp_path / "run").resolve())
    # 06 reused 04's two models (a retrain of another config would have failed the notebook) and measured them
    ab = by_name["06_ablations"]["results"]
    assert ab["grid"] == "small" and ab["trained"] == ["baseline", "multi-reward"]
    measured = {r["name"]: r for r in ab["rows"] if r["kind"] == "trained" and r["measured"]}
    assert set(measured) == {"baseline", "multi-reward"}
    assert measured["baseline"]["metrics"] == pytest.approx(ev["headline"]["baseline"])  # 05's verdicts, reused
    assert all(r["metrics"] is None for r in ab["rows"] if not r["measured"])
    assert sum(r["kind"] == "inference" and r["measured"] for r in ab["rows"]) == 18
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Ablations (notebook 06)" in html and "rewards text, injection time" in html
    assert html.count("<td class='ok'>ok</td>") == 7  # every notebook's row


# --------------------------------------------------------------------------------------------------
# The course's data: one helper for notebooks 01, 02, 04 and 06
# --------------------------------------------------------------------------------------------------
def test_training_data_writes_the_toy_world_at_the_asked_flaw_rates_and_reuses_it(tmp_path):
    from rewardedit_lib import toyworld

    data = course.training_data(tmp_path, n=14, flaw_rates="0.5,0,1", seed=3, size=32)
    assert data == tmp_path / "toy-data"
    truth = toyworld.read_truth(data)
    assert len(truth) == 14
    assert all(t["quality_flaw"] for t in truth.values()) and not any(t["preserving_flaw"] for t in truth.values())
    manifest = json.loads((data / "_truth" / "generator.json").read_text())
    assert manifest["flaw_rates"] == {"following": 0.5, "preserving": 0.0, "quality": 1.0}
    stamp = (data / "seeds.json").stat().st_mtime_ns
    assert course.training_data(tmp_path, n=14, flaw_rates="0.5,0,1", seed=3) == data
    assert (data / "seeds.json").stat().st_mtime_ns == stamp  # the same settings: nothing rewritten


def test_training_data_takes_a_given_folder_as_it_is_and_names_bad_rates(tmp_path):
    assert course.training_data(tmp_path, tmp_path / "mine") == tmp_path / "mine"
    assert not (tmp_path / "toy-data").exists()
    with pytest.raises(ValueError, match=r"flaw_rates='0.5,0.5'"):
        course.training_data(tmp_path, n=7, flaw_rates="0.5,0.5")
    with pytest.raises(ValueError, match=r"flaw_rates='0.7,0.7,1.5'.*quality"):
        course.training_data(tmp_path, n=7, flaw_rates="0.7,0.7,1.5")
    with pytest.raises(ValueError, match=r"systematic_flaws='colour_leek'.*unknown 'colour_leek'.*colour_leak"):
        course.training_data(tmp_path, n=7, systematic_flaws="colour_leek")
    assert not (tmp_path / "toy-data").exists()  # refused before anything was written


def test_training_data_writes_the_systematic_flaws_asked_for(tmp_path):
    from rewardedit_lib import toyworld

    assert course.parse_systematic_flaws("") == {"leak": False, "confuse": False}
    assert course.parse_systematic_flaws(" attribute_confusion ,colour_leak") == {"leak": True, "confuse": True}
    data = course.training_data(tmp_path, n=28, flaw_rates="1,0,0", seed=3, systematic_flaws="attribute_confusion")
    manifest = json.loads((data / "_truth" / "generator.json").read_text())
    assert manifest.get("attribute_confusion") is True and "colour_leak" not in manifest
    kinds = [t["following_flaw"] for t in toyworld.read_truth(data).values()
             if t["edit_type"] in ("Local", "Add") and t["following_flaw"]]
    # the confusion, or a random flaw where the neighbour colour would duplicate an object
    assert kinds and kinds.count("wrong_attribute") > len(kinds) / 2
    data = course.training_data(tmp_path, n=14, seed=3, systematic_flaws="")  # random flaws: rewritten as such
    manifest = json.loads((data / "_truth" / "generator.json").read_text())
    assert "colour_leak" not in manifest and "attribute_confusion" not in manifest


def test_rewards_file_defaults_to_notebook_01s_output(tmp_path):
    assert course.rewards_file(tmp_path) == tmp_path / "rewards" / "RewardEdit_toy.json"
    assert course.rewards_file(tmp_path, "x/R.json") == Path("x/R.json")


def test_the_toy_profile_uses_the_course_data_constants():
    params = course.get_profile("toy-cpu").parameters
    assert params["n_train"] == course.COURSE_N_TRAIN
    assert params["flaw_rates"] == course.COURSE_FLAW_RATES
    assert params["systematic_flaws"] == course.COURSE_SYSTEMATIC_FLAWS
    for nb in ("01_annotation", "02_dataset", "04_training", "06_ablations"):
        declared = course.notebook_parameters(NOTEBOOKS / f"{nb}.ipynb")
        assert declared["n_train"] == str(course.COURSE_N_TRAIN), nb
        assert declared["flaw_rates"] == repr(course.COURSE_FLAW_RATES).replace("'", '"'), nb
        assert declared["systematic_flaws"] == repr(course.COURSE_SYSTEMATIC_FLAWS).replace("'", '"'), nb
    assert params["bench_images"] == course.COURSE_BENCH_IMAGES
    for nb in ("05_evaluation", "06_ablations"):
        assert course.notebook_parameters(NOTEBOOKS / f"{nb}.ipynb")["bench_images"] == str(
            course.COURSE_BENCH_IMAGES), nb


# --------------------------------------------------------------------------------------------------
# Parameter types: values are checked against the notebooks' defaults before anything runs
# --------------------------------------------------------------------------------------------------
def test_parameter_types_come_from_the_notebook_defaults():
    pt = course.parameter_type
    assert pt("seed", "0") == course.ParameterType((int,), False, (), "0")
    assert pt("device", '"auto"').kinds == (str,) and pt("fail", "False").kinds == (bool,)
    assert pt("rate", "0.5").describe() == "a float (a number)"
    assert pt("sizes", "[1, 2.5]").describe() == "a list of float"
    assert pt("pair", "(1, 2)").kinds == (list,)  # papermill writes lists
    assert pt("data_dir", "None").describe() == "a string or None"  # known from NULL_DEFAULT_TYPES
    assert pt("time_limit", "None").describe() == "a float (a number) or None"
    assert pt("mystery", "None").describe() == "any value"  # a None default alone says nothing
    assert pt("where", 'Path("x")').describe() == "any value"  # not a literal


def test_coerce_parameter_accepts_what_fits_and_refuses_the_rest():
    c, pt, S = course.coerce_parameter, course.parameter_type, course.SetValue
    assert c(S("12"), pt("n", "3")) == 12 and c(12.0, pt("n", "3")) == 12 and c("12", pt("n", "3")) == 12
    assert c(S("1e3"), pt("n", "3")) == 1000
    for bad in (S("abc"), S("1.5"), S("true"), True, S("null"), None, [1]):
        with pytest.raises(ValueError, match="an int"):
            c(bad, pt("n", "3"))
    assert c(S("3"), pt("x", "0.5")) == 3.0 and isinstance(c(3, pt("x", "0.5")), float)
    assert c(S("yes"), pt("b", "False")) is True and c(S("0"), pt("b", "True")) is False
    with pytest.raises(ValueError, match="a bool"):
        c(S("2"), pt("b", "False"))
    # text stays text for a string parameter, exactly as typed
    assert c(S("0.10"), pt("s", '"a"')) == "0.10" and c(S("null"), pt("s", '"a"')) == "null"
    assert c(S("null"), pt("data_dir", "None")) is None and c(S("~"), pt("limit", "None")) is None
    assert c(S("/x/y"), pt("data_dir", "None")) == "/x/y"
    assert c(S("1,2"), pt("l", "[0]")) == [1, 2] and c(S("[3]"), pt("l", "[0]")) == [3]
    assert c((4,), pt("l", "[0]")) == [4]
    with pytest.raises(ValueError, match="a list of int"):
        c(S("a,b"), pt("l", "[0]"))
    assert c(S("whatever: [1]"), pt("mystery", "None")) == {"whatever": [1]}  # untyped: YAML, as before



def test_train_workers_takes_a_number_or_auto_from_the_command_line(tmp_path):
    """notebook 04's train_workers: a number of processes, or "auto" (what the README tells a user to --set)."""
    c, pt, S = course.coerce_parameter, course.parameter_type, course.SetValue
    for default in ("1", '"auto"'):  # whichever the notebook defaults to
        t = pt("train_workers", default)
        assert c(S("auto"), t) == "auto" and c(S("2"), t) == 2 and c(1, t) == 1
        for bad in (S("autoo"), S("1.5"), S("null")):
            with pytest.raises(ValueError, match="an int or 'auto'"):
                c(bad, t)
    plan = course.plan_course("toy-cpu", tmp_path / "run", notebooks_dir=NOTEBOOKS,
                              overrides=course.parse_overrides(["train_workers=auto"], raw=True))
    assert dict((nb.stem, p) for nb, p in plan.steps)["04_training"]["train_workers"] == "auto"

def test_every_parameter_with_only_none_defaults_has_a_type():
    """A new notebook parameter defaulting to None must say what it takes (NULL_DEFAULT_TYPES), or --set
    could pass anything to it."""
    defaults: dict[str, set[str]] = {}
    for nb in course.list_notebooks(NOTEBOOKS):
        for name, default in course.notebook_parameters(nb).items():
            defaults.setdefault(name, set()).add(default)
    only_none = sorted(name for name, values in defaults.items() if values == {"None"})
    assert only_none and set(only_none) <= set(course.NULL_DEFAULT_TYPES), only_none


def test_plan_types_every_value_and_reports_all_bad_ones(tmp_path, mini_course):
    prof = _profiles(tmp_path, p={"parameters": {"seed": "x"}, "notebooks": {"01_second": {"fail": "no way"}}})
    with pytest.raises(CourseError) as err:
        course.plan_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof,
                           overrides={"value": "many"})
    text = str(err.value)
    assert "3 parameter value(s) of the wrong type, nothing has run" in text
    assert "seed='x' (profile 'p'): seed takes an int (default 0 in notebook 00, 01)" in text
    assert "fail='no way' (profile 'p', notebook 01_second): fail takes a bool (true or false) (default False in " \
           "notebook 01)" in text
    assert "value='many' (--set): value takes an int (default 1 in notebook 00; 3 in notebook 02)" in text
    # values that fit are typed: text from the command line becomes the default's type
    plan = course.plan_course(course.Profile("q", "A test profile.", {}), tmp_path / "out",
                              notebooks_dir=mini_course,
                              overrides=course.parse_overrides(["seed=4", "value=2.0"], raw=True))
    params = dict((nb.stem, p) for nb, p in plan.steps)
    assert params["00_first"]["seed"] == 4 and params["00_first"]["value"] == 2
    assert plan.origins["00_first"] == {"seed": "--set", "value": "--set", "out_dir": "runner"}
    assert not (tmp_path / "out").exists()


def test_parse_overrides_raw_keeps_the_text_for_the_plan_to_type():
    raw = course.parse_overrides(["seed=4", "judge_model=0.10", "empty="], raw=True)
    assert raw == {"seed": "4", "judge_model": "0.10", "empty": ""}
    assert all(isinstance(v, course.SetValue) for v in raw.values())


def test_profile_summaries_are_one_line_each():
    rows = dict(course.profile_summaries())
    assert list(rows) == list(course.load_profiles())
    assert all(line and "\n" not in line for line in rows.values())
    assert rows["sd15"].startswith("The real thing:") and rows["sd15"].endswith("never a parameter).")
    assert course.one_line("") == "(no description)"


def test_notebook_05_evaluates_the_course_models_or_the_released_weights(tmp_path):
    from rewardedit_lib import hub

    with pytest.raises(FileNotFoundError, match=r"run notebook 04 first.*models='released'"):
        course.models_to_evaluate(tmp_path, "course")
    for name in ("baseline", "multi-reward"):
        (tmp_path / "models" / name / "model").mkdir(parents=True)
    assert course.models_to_evaluate(tmp_path) == {n: tmp_path / "models" / n / "model" for n in ("baseline", "multi-reward")}
    released = course.models_to_evaluate(tmp_path, "released")
    assert released == {"baseline": hub.RELEASED_STAGE1, "multi-reward": hub.RELEASED_STAGE2}
    assert released["baseline"].startswith("Gstar666/Reward-InsPix2Pix/")
    with pytest.raises(ValueError, match="models='paper'.*course, released"):
        course.models_to_evaluate(tmp_path, "paper")
    assert course.notebook_parameters(course.default_notebooks_dir() / "05_evaluation.ipynb")["models"] == '"course"'


def _kernel_children() -> list[int]:
    """Live ipykernel processes whose parent is this process (Linux: read from /proc)."""
    import os

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == os.getpid() and b"ipykernel" in cmd and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_each_notebook_runs_in_a_kernel_warmed_ahead_and_none_is_left_running(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    probe = ("import sys\nfrom rewardedit_lib import course\n"
             "course.record_results({name!r}, out_dir, torch_at_start='torch' in sys.modules)")
    for name in ("00_a", "01_b", "02_c"):
        _nb(d / f"{name}.ipynb", 'out_dir = "x"  # out', probe.format(name=name))
    prof = _profiles(tmp_path, p={"parameters": {}})
    lines: list[str] = []
    summary = course.run_course("p", tmp_path / "out", notebooks_dir=d, profiles_file=prof, log=lines.append)
    assert summary["status"] == "ok"
    # torch was imported before each notebook's first cell: its kernel had been started and warmed ahead
    assert [n["results"]["torch_at_start"] for n in summary["notebooks"]] == [True, True, True]
    executed = nbformat.read(str(tmp_path / "out" / "01_b.ipynb"), as_version=4)
    counts = [c.execution_count for c in executed.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))  # the warm-up is silent: it takes no execution count
    assert not any("failed" in line for line in lines)
    assert _kernel_children() == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_a_kernel_that_fails_to_warm_up_is_replaced_by_a_fresh_one(tmp_path, mini_course, monkeypatch):
    from rewardedit_lib import kernels

    monkeypatch.setattr(kernels, "WARM_IMPORTS", "import no_such_module_for_the_warm_up")
    prof = _profiles(tmp_path, p={"parameters": {"seed": 1}})
    lines: list[str] = []
    summary = course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof,
                                log=lines.append)
    assert summary["status"] == "ok" and summary["notebooks"][0]["results"]["seed"] == 1
    failed = [line for line in lines if "started ahead" in line]
    assert len(failed) == 3 and "no_such_module_for_the_warm_up" in failed[0]
    assert _kernel_children() == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_a_failing_notebook_leaves_no_warm_kernel_running(tmp_path, mini_course):
    prof = _profiles(tmp_path, p={"parameters": {}, "notebooks": {"01_second": {"fail": True}}})
    with pytest.raises(CourseError):
        course.run_course("p", tmp_path / "out", notebooks_dir=mini_course, profiles_file=prof, log=lambda s: None)
    assert _kernel_children() == []  # the kernel warmed for 02_third, never used, was stopped too
