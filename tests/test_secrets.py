"""An API key never reaches a file the kit writes: not the rewards, caches, journals, nor executed notebooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardedit_lib import course

SENTINEL = "sk-test-SENTINEL-0123456789abcdefghijklmnop"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_annotation_notebook_with_a_key_in_the_environment_writes_it_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    summary = course.run_course("toy-cpu", tmp_path / "run", only=["01"], notebooks_dir=NOTEBOOKS,
                                overrides={"n_train": 14}, log=lambda s: None)
    assert summary["notebooks"][0]["results"]["annotated"] == 14
    assert _files_containing(tmp_path / "run", SENTINEL) == []
    assert _files_containing(tmp_path / "run", SENTINEL[8:24]) == []  # nor a piece of it


@pytest.mark.parametrize("name", ["api_key", "openai_api_key", "OPENAI_API_KEY", "hf_token"])
def test_a_key_passed_as_a_notebook_parameter_by_mistake_is_refused_before_anything_is_written(tmp_path, name):
    with pytest.raises(course.CourseError, match="environment"):
        course.run_course("toy-cpu", tmp_path / "run", only=["01"], notebooks_dir=NOTEBOOKS,
                          overrides={name: SENTINEL}, log=lambda s: None)
    assert not (tmp_path / "run").exists()
