"""The committed sample in data/ is exactly what its data card's commands regenerate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rewardedit_lib import toyworld

DATA = Path(__file__).resolve().parent.parent / "data"


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _same(committed: Path, fresh: Path) -> None:
    a, b = _files(committed), _files(fresh)
    assert sorted(a) == sorted(b)
    for name in a:
        if a[name].read_bytes() == b[name].read_bytes():
            continue
        # Only PNG bytes may differ (another zlib build); the pixels may not.
        assert name.endswith(".png"), f"{name} differs from a fresh regeneration"
        assert np.array_equal(np.asarray(Image.open(a[name])), np.asarray(Image.open(b[name]))), name


def test_toy_sample_regenerates_identically(tmp_path):
    toyworld.write_toy_dataset(tmp_path / "toy-sample", n=42, seed=0)
    _same(DATA / "toy-sample", tmp_path / "toy-sample")


def test_bench_sample_regenerates_identically(tmp_path):
    toyworld.write_toy_bench(tmp_path / "toy-bench-sample", n_images=1, seed=0)
    _same(DATA / "toy-bench-sample", tmp_path / "toy-bench-sample")


def test_data_card_numbers_are_the_sample_s(tmp_path):
    from rewardedit_lib import dataset

    rates = dataset.flaw_rates(toyworld.read_truth(DATA / "toy-sample"))["all"]
    card = (DATA / "README.md").read_text()
    for name in ("following", "preserving", "quality", "any"):
        assert f"{name} {rates[name]:.1%}".replace("%", " %") in card, name
