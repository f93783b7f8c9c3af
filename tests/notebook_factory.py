"""Tiny papermill-ready notebooks that tests write (the course runner's and the report's tests)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def make_notebook(path: Path, params: str, *cells: str, title: str = "# test") -> Path:
    """A notebook at ``path``: a markdown ``title`` cell, a ``parameters`` cell holding ``params``, then
    one code cell per ``cells``."""
    pc = new_code_cell(params)
    pc.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(title), pc] + [new_code_cell(c) for c in cells],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(path))
    return path
