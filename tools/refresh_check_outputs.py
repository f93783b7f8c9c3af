"""Refresh the stored outputs of the notebooks' ``# NBVAL_CHECK_OUTPUT`` cells (and strip all others).

Notebooks are stored without outputs, except cells marked ``# NBVAL_CHECK_OUTPUT``: nbval compares their
output with the stored one, so they must carry it. Run this after a change that legitimately changes such an
output (e.g. the toy world's generator), then review the diff:

    .venv/bin/python tools/refresh_check_outputs.py notebooks/00_setup.ipynb [...]

Each notebook is executed with its default parameters (papermill, in a temporary folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

MARK = "# NBVAL_CHECK_OUTPUT"


def refresh(path: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        papermill.execute_notebook(str(path), str(out), cwd=tmp, progress_bar=False)
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


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {refresh(Path(arg))} checked cell(s) refreshed")
