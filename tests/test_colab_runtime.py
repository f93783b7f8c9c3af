"""The Colab side of the notebooks, tested with a fake ``google.colab``: secrets reach the environment and
nowhere else, Drive is mounted only when out_dir asks for it, sd15 profiles refuse a CPU, the install cell
says when a restart is needed."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from rewardedit_lib import runtime

KEY = "sk-colab-SENTINEL-0123456789abcdefghijklmnop"


class SecretNotFoundError(Exception):
    pass


class NotebookAccessError(Exception):
    pass


@pytest.fixture
def fake_colab(monkeypatch):
    """``google.colab`` with ``userdata.get`` over a dict and a ``drive.mount`` that records its calls."""
    secrets = {"OPENAI_API_KEY": KEY, "HF_TOKEN": "hf_SENTINEL_abcdefghijklmnop", "AZURE_OPENAI_API_KEY": None}
    mounted: list[str] = []

    def get(name):
        if name not in secrets:
            raise SecretNotFoundError(name)
        if secrets[name] is None:
            raise NotebookAccessError(name)
        return secrets[name]

    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get)
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    for name in runtime.SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    return types.SimpleNamespace(secrets=secrets, mounted=mounted)


def test_colab_secrets_reach_the_environment_and_are_never_printed(fake_colab, capsys, tmp_path):
    status = runtime.load_colab_secrets()
    assert status == {"OPENAI_API_KEY": "loaded", "AZURE_OPENAI_API_KEY": "no access", "HF_TOKEN": "loaded"}
    import os

    assert os.environ["OPENAI_API_KEY"] == KEY and os.environ["HF_TOKEN"].startswith("hf_SENTINEL")
    assert "AZURE_OPENAI_API_KEY" not in os.environ
    dev = runtime.setup_notebook("toy-cpu", "cpu", tmp_path / "run")  # the setup cell: logs names, not values
    out = capsys.readouterr().out
    assert dev.type == "cpu" and "OPENAI_API_KEY already set" in out
    assert KEY not in out and KEY[8:24] not in out and "SENTINEL" not in out + repr(status)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written


def test_an_environment_key_wins_over_the_colab_secret(fake_colab, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "from-the-environment")
    assert runtime.load_colab_secrets(("OPENAI_API_KEY", "MISSING_KEY")) == {
        "OPENAI_API_KEY": "already set", "MISSING_KEY": "not found"}
    import os

    assert os.environ["OPENAI_API_KEY"] == "from-the-environment"


def test_outside_colab_nothing_is_read_or_mounted(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert runtime.load_colab_secrets() == {}
    assert runtime.mount_drive_for(tmp_path) is False
    with pytest.raises(RuntimeError, match="only Colab mounts"):
        runtime.mount_drive_for("/content/drive/MyDrive/rewardedit")


def test_drive_is_mounted_when_out_dir_is_on_it(fake_colab):
    assert runtime.mount_drive_for("runs/toy-cpu") is False and fake_colab.mounted == []
    assert runtime.mount_drive_for("/content/drive/MyDrive/rewardedit/runs") is True
    assert fake_colab.mounted == ["/content/drive"]


def test_sd15_profiles_refuse_a_device_without_cuda(fake_colab, tmp_path):
    for profile in ("sd15", "sd15-t4"):
        with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*Runtime > Change runtime type > T4 GPU"):
            runtime.require_cuda(profile, torch.device("cpu"))
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            runtime.setup_notebook(profile, "cpu", tmp_path, gpu=True, log=lambda s: None)
        runtime.setup_notebook(profile, "cpu", tmp_path, gpu=False, log=lambda s: None)  # 00-03 inspect on a CPU
    runtime.require_cuda("toy-cpu", "cpu")
    runtime.require_cuda("sd15", "cuda")  # the device is what is checked, not this machine


def test_restart_is_advised_when_an_imported_package_changed_on_disk(monkeypatch):
    messages: list[str] = []
    before = runtime.installed_versions()
    assert runtime.restart_advice(before, log=messages.append) is False and "no restart needed" in messages[0]
    import yaml  # noqa: F401  (imported: pyyaml counts; a distribution nobody imported does not)

    older = {**before, "PyYAML": "0.0.1", "a-package-nobody-imported": "1.0"}  # as the install cell spells them
    del older["pyyaml"]
    assert runtime.stale_modules(older) == [("pyyaml", "0.0.1", before["pyyaml"])]
    assert runtime.restart_advice(older, log=messages.append) is True
    assert messages[1].startswith("RESTART NEEDED: this kernel imported pyyaml 0.0.1")
    import importlib.metadata

    as_the_cell_records = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
    assert runtime.stale_modules(as_the_cell_records) == []  # names spelled either way, nothing changed
    assert "Runtime > Restart session" in messages[1]


def test_the_install_cell_on_colab_shows_pips_report_and_the_restart_verdict(fake_colab, monkeypatch, capsys):
    """Every notebook's install cell, run as Colab would (pip replaced): the pinned requirement, pip's whole
    output, and the verdict on restarting."""
    import json
    import subprocess
    from pathlib import Path

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="Successfully installed rewardedit-kit-0.1.0\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    for nb in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb")):
        exec("".join(json.loads(nb.read_text())["cells"][1]["source"]), {})
        out = capsys.readouterr().out
        assert "Successfully installed rewardedit-kit-0.1.0" in out and "no restart needed" in out, nb.name
        assert calls[-1][-1].endswith("@ git+https://github.com/rewardedit/rewardedit-kit@v0.1.0"), nb.name
