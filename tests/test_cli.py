"""The ``rewardedit`` command: every sub-command has help, does its job, and fails clearly on bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewardedit_lib import cli, formats, toyworld


def run(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "rewardedit_lib.cli", *argv], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


COMMANDS = ["toy-data", "toy-bench", "validate", "judge-server", "annotate", "train", "evaluate", "knob", "course",
            "report", "prepare"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: rewardedit {command}" in capsys.readouterr().out


def test_the_top_level_help_describes_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(COMMANDS)  # a new command is added to the list above (and so tested)
    described = {a.dest: a.help for a in sub._choices_actions}
    assert all(described.get(c) for c in COMMANDS), described
    assert "knob" in out and "does a multi-reward model obey its rewards?" in " ".join(out.split())


def test_knob_shares_evaluate_s_judge_options():
    def options(command: str) -> set[str]:
        sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        return {o for a in sub.choices[command]._actions for o in a.option_strings}

    judge = {"--base-url", "--judge-model", "--api-key-env", "--device", "--limit", "--no-progress", "--steps",
             "--seed", "--guidance-scale", "--image-guidance-scale", "--eta"}
    assert judge <= options("evaluate") and judge <= options("knob")
    assert {"--model", "--bench", "--out", "--low", "--high-dir"} <= options("knob")
    knob = cli.build_parser().parse_args(["knob", "--model", "m", "--bench", "b", "--out", "o",
                                          "--guidance-scale", "1", "--image-guidance-scale", "1", "--eta", "0"])
    assert cli._edit_changes(knob) == {"guidance_scale": 1.0, "image_guidance_scale": 1.0, "eta": 0.0}


def test_every_judging_command_declares_the_same_judge_options():
    """annotate, evaluate and knob take the judge's options from one declaration and read them with one function."""
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    shared = {"--base-url", "--judge-model", "--api-key-env", "--concurrency", "--max-retries", "--timeout",
              "--azure-api-version", "--limit", "--no-progress", "--workers"}
    for command in ("annotate", "evaluate", "knob"):
        assert shared <= {o for a in sub.choices[command]._actions for o in a.option_strings}, command
    parse = cli.build_parser().parse_args
    annotating = cli._judge_kwargs(parse(["annotate", "--data", "d", "--out", "o", "--model", "gpt-4o",
                                          "--timeout", "5", "--limit", "3"]))
    assert annotating == dict(base_url=None, judge_model="gpt-4o", api_key_env=None, limit=3, progress=True,
                              workers="auto", client_options={"timeout": 5.0})
    assert cli._judge_kwargs(parse(["annotate", "--data", "d", "--out", "o", "--judge-model", "x"]))["judge_model"] == "x"
    evaluating = cli._judge_kwargs(parse(["evaluate", "--model", "m", "--bench", "b", "--out", "o", "--judge-model",
                                          "gpt-4o", "--max-retries", "1", "--protocol", "paper", "--no-progress"]))
    assert evaluating == dict(base_url=None, judge_model="gpt-4o", api_key_env=None, limit=None, progress=False,
                              workers="auto", client_options={"max_retries": 1}, protocol="paper", device=None)


@pytest.mark.parametrize("argv, names", [
    (["train", "--data", "no-such-data", "--out", "o", "--stage", "1"], "no-such-data"),
    (["evaluate", "--model", "m", "--bench", "no-such-bench", "--out", "o"], "no-such-bench"),
])
def test_train_and_evaluate_name_a_missing_input(argv, names, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"rewardedit {argv[0]}: error:" in err and names in err


def test_train_passes_the_schedule_and_ema_flags_to_the_config_and_refuses_a_bad_one(tmp_path, capsys, monkeypatch):
    import rewardedit_lib.train as train_pkg

    seen = {}

    def fake_train(config, *args, **kwargs):  # the config the command built; nothing is trained
        seen["config"] = config
        raise train_pkg.TrainingError("stopped by the test")

    monkeypatch.setattr(train_pkg, "train", fake_train)
    argv = ["train", "--profile", "toy-cpu", "--stage", "2", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main(argv + ["--lr-schedule", "cosine", "--ema-decay", "0.99", "--ema-power", "0.8"]) != 0
    c = seen.pop("config")
    assert (c.lr_schedule, c.ema_decay, c.ema_power) == ("cosine", 0.99, 0.8)
    assert cli.main(argv) != 0  # not given: the preset's
    c = seen.pop("config")
    assert (c.lr_schedule, c.ema_decay, c.ema_power) == ("constant_with_warmup", 0.999, 2 / 3)
    capsys.readouterr()
    assert cli.main(argv + ["--lr-schedule", "wavy"]) == 2 and "config" not in seen
    assert "lr_schedule" in capsys.readouterr().err


def test_toy_data_and_validate_round_trip(tmp_path):
    code, out, err = run("toy-data", "--out", str(tmp_path / "d"), "--n", "21", "--seed", "4",
                         "--flaw-rates", "following=0.5,quality=0.1")
    assert code == 0, err
    assert "wrote 21 toy triplets" in out and "following=0.5" in out
    manifest = json.loads((tmp_path / "d" / "_truth" / "generator.json").read_text())
    assert manifest["flaw_rates"] == {"following": 0.5, "preserving": 0.2, "quality": 0.1}
    assert len(formats.read_seeds(tmp_path / "d")) == 21

    code, out, err = run("toy-bench", "--out", str(tmp_path / "b"), "--images", "3")
    assert code == 0, err
    code, out, err = run("validate", "--data", str(tmp_path / "d"), "--bench", str(tmp_path / "b"))
    assert code == 0, err
    assert "21 triplets" in out and "no bad records" in out
    for t in formats.EDIT_TYPES:
        assert f"  {t:<11} 3" in out  # 21 triplets cycle through the 7 edit types: 3 each
    assert "3 images, 21 edits" in out


def test_toy_data_switches_on_the_systematic_flaws(tmp_path):
    code, out, err = run("toy-data", "--out", str(tmp_path / "d"), "--n", "14", "--seed", "4",
                         "--flaw-rates", "1,1,0", "--colour-leak", "--attribute-confusion")
    assert code == 0, err
    manifest = json.loads((tmp_path / "d" / "_truth" / "generator.json").read_text())
    assert manifest["colour_leak"] is True and manifest["attribute_confusion"] is True
    assert manifest["command"].endswith("--colour-leak --attribute-confusion")
    truth = toyworld.read_truth(tmp_path / "d")
    assert sum(t["following_flaw"] == "wrong_attribute" for t in truth.values()) >= 6  # 10 of the 14 instructions have an attribute


def test_validate_lists_bad_records_and_fails(tmp_path):
    toyworld.write_toy_dataset(tmp_path / "d", n=7, seed=0)
    folders = [f for f, _ in formats.read_seeds(tmp_path / "d")]
    # break two records in two different ways
    (tmp_path / "d" / folders[1] / "prompt.json").write_text('{"edit": ""}')
    img = next((tmp_path / "d" / folders[3]).glob("*_1.png"))
    img.write_bytes(b"not a png")
    rewards = {f: formats.Rewards.perfect() for f in folders}
    formats.write_rewards(tmp_path / "r.json", rewards)
    data = json.loads((tmp_path / "r.json").read_text())
    data[folders[5]][2]["Score"] = 9
    (tmp_path / "r.json").write_text(json.dumps(data))

    code, out, err = run("validate", "--data", str(tmp_path / "d"), "--rewards", str(tmp_path / "r.json"))
    assert code == 1
    assert "3 bad record(s)" in out
    assert f"{folders[1]}/prompt.json: field 'edit': empty instruction" in out
    assert f"{img}: field 'edited'" in out and "corrupt" in out
    assert f"field 'Score': 9 is outside 0-5" in out
    # the good ones are still counted, with their scores
    assert "4 triplets" in out and "per score (4 with rewards)" in out


def test_validate_missing_dataset_is_a_clear_error(tmp_path):
    code, out, err = run("validate", "--data", str(tmp_path / "nothing"))
    assert code == 2
    assert "seeds.json: file is missing" in err


def test_course_unknown_profile_is_a_clear_error(tmp_path):
    code, out, err = run("course", "--profile", "nope", "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown profile 'nope'" in err
    assert not (tmp_path / "o").exists()


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "rewardedit"
    assert exe.exists(), "pip install -e . should install the `rewardedit` console script"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("rewardedit-kit ")


def test_judge_server_command_serves_the_openai_api():
    import re
    import signal
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "rewardedit_lib.cli", "judge-server", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"serving at (http://127\.0\.0\.1:\d+/v1)", line)
        assert m, line
        with urllib.request.urlopen(m.group(1) + "/models", timeout=10) as r:
            assert "toy-judge" in r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stopped" in out


def test_judge_server_rejects_bad_fault_spec(capsys):
    assert cli.main(["judge-server", "--faults", "429"]) == 2
    assert "KIND=RATE" in capsys.readouterr().err


def test_annotate_command_writes_rewards_and_resumes(tmp_path):
    toyworld.write_toy_dataset(tmp_path / "d", n=7, seed=1)
    out = tmp_path / "r.json"
    code, stdout, err = run("annotate", "--data", str(tmp_path / "d"), "--out", str(out), "--no-progress")
    assert code == 0, err
    rewards = formats.read_rewards(out).items
    assert sorted(rewards) == sorted(f for f, _ in formats.read_seeds(tmp_path / "d"))
    assert "annotated 7/7 folders" in stdout
    code, stdout, err = run("annotate", "--data", str(tmp_path / "d"), "--out", str(out), "--no-progress")
    assert code == 0 and "21 from cache" in stdout and "HTTP requests sent: 0" in stdout
