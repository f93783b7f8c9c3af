"""The ``rewardedit`` command's usability (issue 20): complete help, ``course --dry-run`` / ``--list-profiles``,
``--set`` values typed against the notebooks' defaults, counts refused below 1, ``validate``'s summary, and the
known harmless warnings kept from the user."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from notebook_factory import make_notebook as _nb

from rewardedit_lib import cli, course, formats, runtime, toyworld

REPO = Path(__file__).resolve().parent.parent


def run(*argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "rewardedit_lib.cli", *argv], capture_output=True, text=True,
                          cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (command path, parser, help line) below ``parser``, nested sub-commands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), sub, helps.get(name)
                yield from _subparsers(sub, path + (name,))


@pytest.fixture
def mini_nbs(tmp_path: Path) -> Path:
    """Two tiny notebooks declaring every parameter of the toy-cpu profile and one of each type."""
    d = tmp_path / "nbs"
    d.mkdir()
    _nb(d / "00_first.ipynb",
        'profile = "toy-cpu"  # p\nout_dir = "x"  # out\nseed = 0  # seed\ndevice = "auto"  # d\n'
        'n_train = 3000  # n\nflaw_rates = "0.5,0.5,0.5"  # f\nsystematic_flaws = ""  # s\n'
        'image_size = 32  # i\nbench_images = 20  # b\n'
        'flag = False  # f\nrate = 0.5  # r\nsizes = [1, 2]  # s\njudge_model = "toy-judge"  # j',
        "print('first', seed, flag, rate, sizes, judge_model)")
    _nb(d / "01_second.ipynb", 'out_dir = "x"  # out\nseed = 0  # seed\ntime_limit = None  # t', "print(seed)")
    return d


# --------------------------------------------------------------------------------------------------
# Help
# --------------------------------------------------------------------------------------------------
def test_every_subcommand_has_a_description_and_no_help_shows_a_literal_percent_pair(capsys):
    parser = cli.build_parser()
    found = list(_subparsers(parser))
    assert len(found) >= 11
    assert "%%" not in parser.format_help()
    for path, sub, help_line in found:
        name = " ".join(path)
        assert help_line and help_line.strip(), f"{name}: no help line in the command list"
        assert sub.description and sub.description.strip(), f"{name}: no description="
        text = sub.format_help()
        assert "%%" not in text, f"{name}: a literal %% in its help"
        assert " ".join(sub.description.split())[:40] in " ".join(text.split()), name
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        # what the user sees, printed by the command itself
        with pytest.raises(SystemExit) as e:
            cli.main([*path, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "%%" not in out and f"usage: rewardedit {name}" in out


# --------------------------------------------------------------------------------------------------
# course --list-profiles / --dry-run / --set typing
# --------------------------------------------------------------------------------------------------
def test_course_list_profiles_prints_one_line_per_profile(capsys):
    assert cli.main(["course", "--list-profiles"]) == 0
    lines = capsys.readouterr().out.splitlines()
    profiles = course.load_profiles()
    assert len(lines) == len(profiles)
    for line, (name, prof) in zip(lines, profiles.items()):
        assert line.split()[0] == name
        description = line[len(name):].strip()
        assert description and " ".join(prof.description.split()).startswith(description)
    assert any(line.startswith("toy-cpu ") and "CPU" in line for line in lines)
    sd15 = next(line for line in lines if line.split()[0] == "sd15")
    assert "Point the inputs" not in sd15  # the first sentence only


def test_course_dry_run_prints_the_plan_and_runs_nothing(tmp_path, mini_nbs, capsys):
    out = tmp_path / "run"
    code = cli.main(["course", "--out", str(out), "--notebooks", str(mini_nbs), "--dry-run",
                     "--set", "seed=3", "--set", "sizes=4,5", "--set", "judge_model=4", "--set", "time_limit=60"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    text = printed.out
    assert not out.exists()  # nothing written
    assert "profile 'toy-cpu'" in text and str(out.resolve()) in text and "summary.json" in text
    assert "nothing run or written" in text
    first = text.index(f"1. 00_first.ipynb -> {out.resolve() / '00_first.ipynb'}")
    second = text.index(f"2. 01_second.ipynb -> {out.resolve() / '01_second.ipynb'}")
    assert first < second
    block0, block1 = text[first:second], text[second:]
    # typed values, each with where it comes from
    assert re.search(r"seed\s+= 3\s+\[--set\]", block0) and re.search(r"seed\s+= 3\s+\[--set\]", block1)
    assert re.search(r"sizes\s+= \[4, 5\]\s+\[--set\]", block0)
    assert re.search(r"judge_model\s+= '4'\s+\[--set\]", block0)  # a string parameter keeps its text
    assert re.search(r"time_limit\s+= 60.0\s+\[--set\]", block1)
    assert re.search(r"n_train\s+= 3000\s+\[profile\]", block0)
    assert re.search(rf"out_dir\s+= '{re.escape(str(out.resolve()))}'\s+\[runner\]", block0)
    assert re.search(r"flag\s+= False\s+\[default\]", block0)


def test_course_dry_run_on_the_shipped_notebooks_lists_them_in_order(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["course", "--out", str(out), "--notebooks", str(REPO / "notebooks"), "--dry-run",
                     "--only", "05", "2"]) == 0
    text = capsys.readouterr().out
    assert "2 of 7 notebook(s)" in text
    assert text.index("1. 02_dataset.ipynb") < text.index("2. 05_evaluation.ipynb")
    assert "not run (--only): 00_setup, 01_annotation, 03_reward_encoder, 04_training, 06_ablations" in text
    assert not out.exists()


def test_course_dry_run_still_reports_missing_inputs(tmp_path, capsys):
    assert cli.main(["course", "--profile", "sd15", "--out", str(tmp_path / "o"), "--dry-run",
                     "--notebooks", str(REPO / "notebooks")]) == 2
    assert "input(s) missing, nothing has run" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_course_needs_out_except_to_list_profiles(capsys):
    assert cli.main(["course", "--dry-run"]) == 2
    assert "--out is required" in capsys.readouterr().err


@pytest.mark.parametrize("setting, expected", [
    ("seed=abc", "seed=abc (--set): seed takes an int"),
    ("seed=1.5", "seed=1.5 (--set): seed takes an int"),
    ("seed=true", "seed=true (--set): seed takes an int"),
    ("flag=maybe", "flag=maybe (--set): flag takes a bool"),
    ("rate=fast", "rate=fast (--set): rate takes a float"),
    ("sizes=a,b", "sizes=a,b (--set): sizes takes a list of int"),
    ("time_limit=soon", "time_limit=soon (--set): time_limit takes a float (a number) or None"),
    ("seed=null", "seed=null (--set): seed takes an int"),
])
def test_a_set_value_of_the_wrong_type_is_refused_before_anything_runs(tmp_path, mini_nbs, capsys, setting,
                                                                       expected):
    out = tmp_path / "run"
    assert cli.main(["course", "--out", str(out), "--notebooks", str(mini_nbs), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert "rewardedit course: error:" in err and expected in err and "nothing has run" in err
    assert not out.exists()


def test_every_bad_set_value_is_reported_at_once(tmp_path, mini_nbs, capsys):
    assert cli.main(["course", "--out", str(tmp_path / "o"), "--notebooks", str(mini_nbs), "--dry-run",
                     "--set", "seed=abc", "--set", "rate=x"]) == 2
    err = capsys.readouterr().err
    assert "2 parameter value(s) of the wrong type" in err
    assert "seed takes an int (default 0 in notebook 00, 01)" in err and "rate takes a float" in err


@pytest.mark.parametrize("setting, shown", [
    ("seed=7", re.compile(r"seed\s+= 7\s")), ("flag=true", re.compile(r"flag\s+= True\s")),
    ("flag=0", re.compile(r"flag\s+= False\s")), ("rate=2", re.compile(r"rate\s+= 2.0\s")),
    ("sizes=[3, 4]", re.compile(r"sizes\s+= \[3, 4\]\s")), ("sizes=", re.compile(r"sizes\s+= \[\]\s")),
    ("time_limit=null", re.compile(r"time_limit\s+= None\s")), ("seed=2e3", re.compile(r"seed\s+= 2000\s")),
    ("time_limit=1.5e3", re.compile(r"time_limit\s+= 1500.0\s")), ("rate=.5", re.compile(r"rate\s+= 0.5\s")),
])
def test_set_values_that_fit_are_typed(tmp_path, mini_nbs, capsys, setting, shown):
    assert cli.main(["course", "--out", str(tmp_path / "o"), "--notebooks", str(mini_nbs), "--dry-run",
                     "--set", setting]) == 0
    assert shown.search(capsys.readouterr().out)


def test_an_unknown_set_name_gets_a_did_you_mean(tmp_path, capsys):
    assert cli.main(["course", "--out", str(tmp_path / "o"), "--notebooks", str(REPO / "notebooks"), "--dry-run",
                     "--set", "n_trian=5"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'n_trian' (--set)" in err and "did you mean 'n_train'?" in err
    assert cli.main(["course", "--out", str(tmp_path / "o"), "--notebooks", str(REPO / "notebooks"), "--dry-run",
                     "--set", "zzz=5"]) == 2
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no suggestion


def test_an_unknown_profile_gets_a_did_you_mean(tmp_path, capsys):
    assert cli.main(["course", "--profile", "toy-cpi", "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'toy-cpi'" in err and "did you mean 'toy-cpu'" in err


# --------------------------------------------------------------------------------------------------
# toy-data counts
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["toy-data", "--n", "0"], ["toy-data", "--n", "-3"], ["toy-data", "--n", "x"],
                                  ["toy-bench", "--images", "0"]])
def test_counts_below_one_are_refused_naming_the_option(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main([argv[0], "--out", str(tmp_path / "d"), *argv[1:]])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[1]}:" in err and ("at least 1" in err or ">= 1" in err)
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------------------------------
# validate's summary
# --------------------------------------------------------------------------------------------------
def test_validate_summarises_by_kind_and_lists_the_first_20(tmp_path):
    toyworld.write_toy_dataset(tmp_path / "d", n=30, seed=0)
    folders = [f for f, _ in formats.read_seeds(tmp_path / "d")]
    for f in folders[:22]:  # 22 empty instructions ...
        (tmp_path / "d" / f / "prompt.json").write_text('{"edit": ""}')
    for f in folders[22:24]:  # ... and 2 missing edited images
        next((tmp_path / "d" / f).glob("*_1.png")).unlink()
    code, out, err = run("validate", "--data", str(tmp_path / "d"))
    assert code == 1, err
    assert "checked 30 dataset folder(s): 6 ok, 24 bad" in out
    assert "24 bad record(s), by kind of problem:" in out
    assert re.search(r"^\s+22  field 'edit': empty instruction$", out, re.M)
    assert re.search(r"^\s+2  field 'edited': image file is missing$", out, re.M)
    assert "the first 20 of 24 bad record(s) (--max-problems 0 lists all):" in out
    assert len(re.findall(r"^  - ", out, re.M)) == 20
    code, out, _ = run("validate", "--data", str(tmp_path / "d"), "--max-problems", "0")
    assert code == 1 and "all 24 bad record(s):" in out and len(re.findall(r"^  - ", out, re.M)) == 24


def test_validate_counts_every_input_and_says_when_all_is_well(tmp_path):
    toyworld.write_toy_dataset(tmp_path / "d", n=7, seed=0)
    toyworld.write_toy_bench(tmp_path / "b", n_images=2, seed=0)
    code, out, err = run("validate", "--data", str(tmp_path / "d"), "--bench", str(tmp_path / "b"))
    assert code == 0, err
    assert "checked 7 dataset folder(s): 7 ok, 0 bad" in out and "checked 14 benchmark edits: 14 ok, 0 bad" in out
    assert "no bad records" in out and "by kind of problem" not in out


def test_problem_kinds_drop_the_record_s_details():
    kind = cli._problem_kind
    assert kind(formats.Problem("a/r.json[x]", "Score", "9 is outside 0-5")) == "field 'Score': N is outside 0-5"
    assert kind(formats.Problem("x.png", "edited", "image is corrupt or unreadable (cannot identify)")) == \
        "field 'edited': image is corrupt or unreadable"
    assert kind(formats.Problem("r.json", None, "malformed JSON at line 3 column 7: Expecting value")) == \
        "malformed JSON at line N column N"
    assert kind(formats.Problem("k", "Score", "must be an integer 0-5, got 'x'")) == \
        "field 'Score': must be an integer 0-5"


# --------------------------------------------------------------------------------------------------
# Known harmless warnings: gone, by message; everything else still shows
# --------------------------------------------------------------------------------------------------
def test_the_torchvision_fallback_message_does_not_reach_the_cli_user(tmp_path):
    code, out, err = run("evaluate", "--model", "m", "--bench", str(tmp_path / "no-such-bench"), "--out",
                         str(tmp_path / "o"))  # imports the pipeline (and so transformers' image processors)
    assert code == 2 and "rewardedit evaluate: error:" in err and "no-such-bench" in err
    assert "requires torchvision" not in err + out


def test_the_torchvision_filter_is_narrow():
    runtime.quiet_known_warnings()
    runtime.quiet_known_warnings()  # idempotent
    logger = logging.getLogger(runtime.TORCHVISION_LOGGER)
    assert sum(isinstance(f, runtime._DropMessages) for f in logger.filters) == 1
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                       "`CLIPImageProcessorPil` for backward compatibility.")
        logger.warning("something else went wrong")
    finally:
        logger.removeHandler(handler)
    assert seen == ["something else went wrong"]


def test_filtered_stderr_drops_only_the_kernel_transport_lines(capfd):
    noise = ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication (including "
             "code and outputs) is sent in plain text and is susceptible to eavesdropping.\n")
    with runtime.filtered_stderr():
        os.write(2, b"kept before\n" + noise.encode() + b"kept after\n")
        subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({noise!r} + 'child kept\\n')"],
                       check=True)
        sys.stderr.write("python-level kept\n")
    err = capfd.readouterr().err
    assert "kept before" in err and "kept after" in err and "child kept" in err and "python-level kept" in err
    assert "without encryption" not in err
    os.write(2, noise.encode())  # outside the block: untouched
    assert "without encryption" in capfd.readouterr().err


def test_a_course_run_does_not_show_the_kernel_transport_warning(tmp_path, mini_nbs):
    out = tmp_path / "run"
    code, stdout, err = run("course", "--out", str(out), "--notebooks", str(mini_nbs), "--set", "seed=5")
    assert code == 0, err
    assert "without encryption" not in err + stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "ok"]
    assert summary["notebooks"][0]["parameters"]["seed"] == 5
