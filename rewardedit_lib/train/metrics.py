"""A run's log: ``metrics.jsonl`` (one row per ``log_every`` steps), the ``summary.json`` it ends with, and
:func:`loss_lines`, the live view of the rows for a notebook.

On resume the log is cut back to the checkpoint's step and the steps after it are logged again: training is
deterministic, so they are the same rows, and a resumed run's log reads as one uninterrupted run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..plumbing import append_jsonl, atomic_write_jsonl, read_json, read_jsonl

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def read_metrics(out_dir: str | Path) -> list[dict]:
    """A run's metrics log (``metrics.jsonl``): ``[{"step", "loss", "lr", "images_per_s", "epoch"}, ...]``."""
    return read_jsonl(Path(out_dir) / METRICS_FILE, missing_ok=True)


def append_metrics(out_dir: str | Path, row: dict) -> None:
    """Add one row to the log (a line of JSON)."""
    append_jsonl(Path(out_dir) / METRICS_FILE, row)


def truncate_metrics(out_dir: str | Path, step: int) -> None:
    """On resume, drop log lines after the checkpoint's step (they will be written again, identically)."""
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return
    atomic_write_jsonl(path, [r for r in read_jsonl(path) if r["step"] <= step])


def read_summary(out_dir: str | Path) -> dict:
    """A run's ``summary.json``, or ``{}`` when there is none (or it cannot be read)."""
    return read_json(Path(out_dir) / SUMMARY_FILE, missing={}, invalid={})


def loss_lines(name: str, max_steps: int, every: int = 100,
               write: Callable[[str], None] = print) -> Callable[[int, dict], None]:
    """A ``step_callback`` that writes one line per ``every`` steps (and at the last step): the live view of a
    run for a notebook. A progress bar redraws itself hundreds of times into a stored notebook's output; a
    line per hundred steps stays readable there and in a log."""
    def callback(step: int, row: dict) -> None:
        if step % every == 0 or step == max_steps:
            write(f"{name}: step {step}/{max_steps}  loss {row['loss']:.4f}  ({row['images_per_s']:.0f} img/s)")
    return callback
