"""Notebooks as tests (``pytest --nbval-lax notebooks``) run on small parameters in a fresh folder.

A learner opening a notebook gets the ``toy-cpu`` course defaults stored in its ``parameters`` cell; the test
run appends the overrides below to that cell, so training and evaluation take seconds instead of minutes,
and every notebook writes into one temporary ``out_dir`` per test session (notebook 04 reads what 01 wrote,
as in the course; nothing from an earlier run is reused).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

#: Per notebook (file stem): parameters that make the test run small. Everything else keeps its default.
#: The toy training set stays at 700 triplets (the course writes 3,000): large enough for notebook 01's
#: agreement check to mean something, small enough to generate and annotate in seconds.
TEST_PARAMETERS: dict[str, dict[str, object]] = {
    "01_annotation": {"n_train": 700},
    "02_dataset": {"n_train": 700},
    "04_training": {"n_train": 700, "train_steps": 8, "validate_every": 4, "probe_triplets": 24},
    "05_evaluation": {"bench_images": 2, "steps": 3},
    # 06 reuses 04's models and 05's verdicts only when its parameters match theirs: keep these in step.
    "06_ablations": {"n_train": 700, "train_steps": 8, "validate_every": 4, "bench_images": 2, "steps": 3, "sweep_steps": 2},
}


def pytest_collection_modifyitems(config, items):
    out_dir = Path(tempfile.mkdtemp(prefix="rewardedit-nbval-")) / "toy-cpu"
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        overrides = {"out_dir": str(out_dir), **TEST_PARAMETERS.get(Path(str(item.fspath)).stem, {})}
        cell.source += "\n# test-run overrides (notebooks/conftest.py)\n" + "\n".join(
            f"{name} = {value!r}" for name, value in overrides.items())
