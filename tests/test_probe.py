"""Loss probes: paired losses per reward condition and noise level (rewardedit_lib.probe)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewardedit_lib import probe
from rewardedit_lib.formats import read_instructpix2pix
from rewardedit_lib.pipeline import toy_pipeline
from toy_data import annotated_toy_data


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return annotated_toy_data(tmp_path_factory.mktemp("probe-data"), n=12, seed=5)


def _saved(tmp_path: Path, name: str, **kw) -> Path:
    pipe = toy_pipeline(seed=1, **kw)
    pipe.save_pretrained(tmp_path / name)
    return tmp_path / name


def test_a_model_whose_reward_modules_output_zero_shows_no_gap(data, tmp_path):
    """Zero-initialised reward modules add exactly nothing: every condition gives the same losses, to the bit."""
    d, rewards = data
    p = probe.loss_by_noise(_saved(tmp_path, "zero", zero_init=True), d, rewards, batch=5)
    assert p.n == 12 and list(p.losses) == list(probe.CONDITIONS)
    a = p.per_item["as annotated"]
    assert torch.equal(a, p.per_item["shuffled"]) and torch.equal(a, p.per_item["perfect"])


def test_a_model_that_reads_its_rewards_is_told_apart_and_probes_are_paired(data, tmp_path):
    d, rewards = data
    path = _saved(tmp_path, "reads")
    p = probe.loss_by_noise(path, d, rewards, bins=2, batch=5)
    assert not torch.equal(p.per_item["as annotated"], p.per_item["shuffled"])
    assert p.edges == [0, 500, 1000] and all(len(v) == 2 for v in p.losses.values())
    # the same seed draws the same timesteps and noise, whatever the batching: probes of two models are paired
    again = probe.loss_by_noise(path, d, rewards, bins=2, batch=12)
    assert torch.allclose(again.per_item["as annotated"], p.per_item["as annotated"], atol=1e-6)
    other = probe.loss_by_noise(path, d, rewards, bins=2, seed=1)
    assert not torch.allclose(other.per_item["as annotated"], p.per_item["as annotated"])
    assert p.overall["as annotated"] == pytest.approx(float(p.per_item["as annotated"].mean()))
    # each triplet's noise level comes back with it: a bin's loss is the mean over the triplets drawn into it
    assert p.timesteps.shape == (12,) and torch.equal(p.timesteps, again.timesteps)
    assert p.ids == [t.id for t in read_instructpix2pix(d).items] and len(set(p.ids)) == 12
    low = p.timesteps < 500
    assert p.losses["shuffled"][0] == pytest.approx(float(p.per_item["shuffled"][low].mean()))
    assert p.losses["shuffled"][1] == pytest.approx(float(p.per_item["shuffled"][~low].mean()))


def test_a_baseline_is_probed_once_and_needs_no_rewards(data, tmp_path):
    d, _ = data
    p = probe.loss_by_noise(_saved(tmp_path, "base", rewards="none"), d, limit=7)
    assert list(p.losses) == [probe.NO_REWARDS] and p.n == 7
    assert p.rows("baseline")[0][:2] == ["baseline", probe.NO_REWARDS]


def test_bad_requests_name_the_parameter(data, tmp_path):
    d, rewards = data
    path = _saved(tmp_path, "m")
    with pytest.raises(ValueError, match="rewards_path"):
        probe.loss_by_noise(path, d)
    with pytest.raises(ValueError, match="conditions"):
        probe.loss_by_noise(path, d, rewards, conditions=("best",))
    only = probe.loss_by_noise(path, d, conditions=("perfect",))  # the inference condition needs no file
    assert list(only.losses) == ["perfect"]
