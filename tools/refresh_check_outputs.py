"""Refresh the stored outputs of the notebooks' ``# NBVAL_CHECK_OUTPUT`` cells (and strip all others).

Notebooks are stored without outputs, except cells marked ``# NBVAL_CHECK_OUTPUT``: nbval compares their
output with the stored one, so they must carry it. Run this after a change that legitimately changes such an
output (e.g. the toy world's generator), then review the diff:

    .venv/bin/python tools/refresh_check_outputs.py notebooks/00_setup.ipynb [...]

Each notebook is executed with its default parameters plus the small test-run overrides of
``notebooks/conftest.py`` (papermill, in a temporary folder): the same parameters the test run uses.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

MARK = "# NBVAL_CHECK_OUTPUT"


def test_parameters(path: Path) -> dict:
    """The overrides ``notebooks/conftest.py`` gives this notebook in the test run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_conftest", path.resolve().parent / "conftest.py")
    if spec is None or spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(getattr(module, "TEST_PARAMETERS", {}).get(path.stem, {}))


def refresh(path: Path, tmp: str) -> int:
    """Execute ``path`` in the shared folder ``tmp`` and store the outputs of its checked cells."""
    out = Path(tmp) / path.name
    papermill.execute_notebook(str(path), str(out), cwd=tmp, progress_bar=False,
                               parameters={"out_dir": str(Path(tmp) / "toy-cpu"), **test_parameters(path)})
    executed = nbformat.read(str(out), as_version=4)
    stored = nbformat.read(str(path), as_version=4)
    by_source = {c.source: c for c in executed.cells if c.cell_type == "code"}
    n = 0
    for cell in stored.cells:
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        cell.outputs = []
        if cell.source.lstrip().startswith(MARK):
            ran = by_source[cell.source]
            cell.outputs = [o for o in ran.outputs if o.output_type == "stream"]
            cell.execution_count = 1  # nbval refuses a stored output on a cell that never ran
            n += 1
    nbformat.write(stored, str(path))
    return n


def main(paths: list[Path]) -> None:
    """Later notebooks read what earlier ones wrote (05 evaluates 04's models), as in the test run: so every
    notebook of the folder up to the last one asked for runs, in order, in one shared folder; only the
    notebooks asked for are rewritten."""
    wanted = {p.resolve() for p in paths}
    folder = paths[0].resolve().parent
    last = max(p.name for p in wanted)
    with tempfile.TemporaryDirectory() as tmp:
        for nb in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
            if nb.name > last:
                break
            if nb.resolve() in wanted:
                print(f"{nb}: {refresh(nb, tmp)} checked cell(s) refreshed", flush=True)
            else:
                papermill.execute_notebook(str(nb), str(Path(tmp) / nb.name), cwd=tmp, progress_bar=False,
                                           parameters={"out_dir": str(Path(tmp) / "toy-cpu"), **test_parameters(nb)})


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
