"""The project's own files: pyproject and environment.yml agree; the README's commands are what CI runs."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    reqs = list(meta["dependencies"]) + list(extras["lab"]) + list(extras["test"])
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "pip" in deps, "environment.yml must list pip"
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-")}, pip


def test_environment_yml_and_pyproject_agree():
    py = _pyproject_requirements()
    env, pip = _environment_requirements()
    assert set(env) == set(py), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    for name in py:
        assert env[name] == py[name], f"{name}: pyproject says {py[name]!r}, environment.yml says {env[name]!r}"
    assert any(r.startswith("-e") and r.split()[-1].startswith(".") for r in pip), "the pip section installs the kit"


def test_chosen_dependencies_are_declared():
    py = _pyproject_requirements()
    for name in ("torch", "diffusers", "transformers", "accelerate", "openai", "papermill", "nbval", "jupyterlab",
                 "ipykernel", "ipywidgets", "matplotlib", "numpy", "pillow", "safetensors"):
        assert name in py, name
    assert "torchvision" not in py  # it breaks beside the CPU torch build; PIL and numpy do its job


def test_colab_kernel_packages_are_extras_not_core():
    """Colab pins jupyterlab, ipykernel and ipywidgets in the live kernel: installing the kit there (core
    dependencies only) must not upgrade them, so they are the [lab] extra; nbval is [test]; bitsandbytes
    (CUDA only) is [t4]. `make setup` installs [lab,test] and `make lab` opens the course."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in meta["dependencies"]}
    extras = {k: {_name(r) for r in v} for k, v in meta["optional-dependencies"].items()}
    assert not core & {"jupyterlab", "ipykernel", "ipywidgets", "nbval", "notebook", "bitsandbytes"}
    assert {"jupyterlab", "ipykernel", "ipywidgets"} <= extras["lab"] and "nbval" in extras["test"]
    assert extras["t4"] == {"bitsandbytes"}
    makefile = (REPO / "Makefile").read_text()
    assert '-e ".[lab,test]"' in makefile and re.search(r"^lab: .*\n\t.*jupyter lab", makefile, flags=re.MULTILINE)


def test_console_script_declared():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["rewardedit"] == "rewardedit_lib.cli:main"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("make ")]
    assert "make course" in commands and "make test" in commands
    assert re.search(r"^make test$", ci, flags=re.MULTILINE), ".ci/run must call the README's test command"


def test_notebooks_are_stored_without_outputs():
    """Executed copies go to runs/; the stored notebooks carry no outputs except NBVAL_CHECK_OUTPUT cells."""
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            if cell.get("outputs"):
                assert "# NBVAL_CHECK_OUTPUT" in src, f"{nb_path.name}: a cell is stored with outputs"
                assert all(o["output_type"] == "stream" for o in cell["outputs"]), f"{nb_path.name}: rich output stored"


def test_every_notebook_opens_with_title_colab_cell_and_parameters():
    for nb_path in sorted((REPO / "notebooks").glob("0*.ipynb")):
        cells = json.loads(nb_path.read_text())["cells"]
        assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# " + nb_path.name[:2])
        install = "".join(cells[1]["source"])
        assert '"google.colab" in sys.modules' in install and "pip" in install, nb_path.name
        assert "parameters" in cells[2]["metadata"].get("tags", []), nb_path.name
        assert "runtime.device_summary" in "".join(cells[3]["source"]), nb_path.name


def test_notebooks_open_on_colab_with_a_pinned_install_and_the_right_runtime():
    """A badge and a runtime note in the first cell; a GPU runtime in the metadata of the notebooks that train
    or edit (04-06); the install cell pins the kit to this version's tag, shows pip's output (no -q) and says
    whether a restart is needed; the setup cell maps Colab secrets and checks the GPU through the library."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for nb_path in sorted((REPO / "notebooks").glob("0*.ipynb")):
        nb = json.loads(nb_path.read_text())
        cells, gpu = nb["cells"], nb_path.name[:2] in ("04", "05", "06")
        first = "".join(cells[0]["source"])
        assert ("https://colab.research.google.com/github/rewardedit/rewardedit-kit/blob/main/notebooks/"
                f"{nb_path.name})") in first and "colab-badge.svg" in first, nb_path.name
        assert ("Runtime > Change runtime type > T4 GPU" in first) == gpu, nb_path.name
        assert (nb["metadata"].get("accelerator"), nb["metadata"].get("colab", {}).get("gpuType")) == \
            (("GPU", "T4") if gpu else (None, None)), nb_path.name
        install = "".join(cells[1]["source"])
        assert f'KIT_REF = "v{version}"' in install and "@{KIT_REF}" in install, nb_path.name
        assert '"-q"' not in install and "runtime.restart_advice(before)" in install, nb_path.name
        assert ("[t4] @ git+" in install) == (nb_path.name[:2] in ("04", "06")), nb_path.name
        assert len(install.splitlines()) <= 12
        setup = "".join(cells[3]["source"])
        assert f"runtime.setup_notebook(profile, device, out_dir{', gpu=True' if gpu else ''})" in setup, nb_path.name
