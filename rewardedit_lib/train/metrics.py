"""A run's log: ``metrics.jsonl`` (one row per ``log_every`` steps), the ``summary.json`` it ends with, and
:func:`loss_lines`, the live view of the rows for a notebook.

On resume the log is cut back to the checkpoint's step and the steps after it are logged again: training is
deterministic, so they are the same rows, and a resumed run's log reads as one uninterrupted run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..formats import atomic_write_text

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(out_dir: str | Path) -> list[dict]:
    """A run's metrics log (``metrics.jsonl``): ``[{"step", "loss", "lr", "images_per_s", "epoch"}, ...]``."""
    return _read_rows(Path(out_dir) / METRICS_FILE)


def append_metrics(out_dir: str | Path, row: dict) -> None:
    """Add one row to the log (a line of JSON)."""
    with (Path(out_dir) / METRICS_FILE).open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def truncate_metrics(out_dir: str | Path, step: int) -> None:
    """On resume, drop log lines after the checkpoint's step (they will be written again, identically)."""
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return
    keep = [r for r in _read_rows(path) if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def read_summary(out_dir: str | Path) -> dict:
    """A run's ``summary.json``, or ``{}`` when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(out_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def loss_lines(name: str, max_steps: int, every: int = 100,
               write: Callable[[str], None] = print) -> Callable[[int, dict], None]:
    """A ``step_callback`` that writes one line per ``every`` steps (and at the last step): the live view of a
    run for a notebook. A progress bar redraws itself hundreds of times into a stored notebook's output; a
    line per hundred steps stays readable there and in a log."""
    def callback(step: int, row: dict) -> None:
        if step % every == 0 or step == max_steps:
            write(f"{name}: step {step}/{max_steps}  loss {row['loss']:.4f}  ({row['images_per_s']:.0f} img/s)")
    return callback
