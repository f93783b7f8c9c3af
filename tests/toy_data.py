"""Annotated toy training data that tests make (the trainer's and the loss probe's tests)."""

from __future__ import annotations

from pathlib import Path

from rewardedit_lib import toyworld
from rewardedit_lib.toy.endpoint import annotate


def annotated_toy_data(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    """``n`` toy triplets in ``root/d`` and the toy judge's ``root/rewards.json`` for them."""
    toyworld.write_toy_dataset(root / "d", n=n, seed=seed)
    annotate(root / "d", root / "rewards.json", progress=False, log=None)
    return root / "d", root / "rewards.json"
