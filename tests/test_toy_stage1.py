"""The bundled toy stage-1 model: what the course starts stage 2 from, and how it is regenerated."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewardedit_lib import train as T
from rewardedit_lib.pipeline import RewardEditPipeline

ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_stage1_model_is_a_stage1_pipeline_made_by_the_preset_its_card_names():
    asset = T.TOY_STAGE1
    pipe = RewardEditPipeline.from_pretrained(asset)
    assert pipe.reward_encoder is None and pipe.vae is None
    assert pipe.unet.config.in_channels == 6 and pipe.scheduler.config.prediction_type == "sample"
    saved = json.loads((asset / "train_config.json").read_text())
    card = (asset / "README.md").read_text()
    profile, steps = _card_recipe(asset)
    preset = T.preset(profile, max_steps=steps).to_json()
    # (a field added to TrainConfig after the model was made counts as its default)
    assert {k: saved.get(k, v) for k, v in preset.items()} == json.loads(json.dumps(preset))  # the card reproduces it
    rows = T.read_metrics(asset)
    assert rows[-1]["step"] == saved["max_steps"] and rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert f"{saved['max_steps']} steps" in card
    world = json.loads((asset / "toy_data.json").read_text())  # the world it learned, as its card says
    assert f"--n {world['n']} --seed {world['seed']}" in card and saved["examples"] == world["n"]


def test_toy_stage2_presets_start_from_the_bundled_model():
    assert T.preset("toy-cpu").init == str(T.TOY_STAGE1)
    assert T.preset("toy-cpu", stage=1).init is None
    assert T.preset("sd15").init is None


def _card_recipe(asset: Path) -> tuple[str, int | None]:
    """(preset, --steps or None) of the command the card says made the model."""
    card = (asset / "README.md").read_text()
    profile = re.search(r"preset `([\w-]+)`", card).group(1)
    m = re.search(rf"rewardedit train --profile {profile} --stage 1 [^\n]*?(?:--steps (\d+))?\n", card)
    return profile, int(m.group(1)) if m and m.group(1) else None


@pytest.mark.slow
def test_regenerating_the_stage1_model_reproduces_the_bundled_one(tmp_path):
    """Runs tools/make_toy_stage1.py with the card's preset (~35-60 min on 2 cores for toy-stage1; a GPU-made
    model needs a GPU) and compares the loss curves."""
    profile, steps = _card_recipe(T.TOY_STAGE1)
    if profile.endswith("-gpu") and not torch.cuda.is_available():
        pytest.skip(f"the bundled model was made with {profile} on a GPU")
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_toy_stage1.py"), "--out", str(tmp_path / "asset"),
                    "--work", str(tmp_path / "work"), "--profile", profile,
                    *(["--steps", str(steps)] if steps else [])], check=True)
    new, old = T.read_metrics(tmp_path / "asset"), T.read_metrics(T.TOY_STAGE1)
    # a model made in time-limited parts has an extra row where each part stopped; one go logs a subset
    steps = {r["step"] for r in new}
    assert steps <= {r["step"] for r in old}
    old = [r for r in old if r["step"] in steps]
    assert len(new) == len(old) >= 10
    # Same data, seed and schedule: the first steps agree to float noise; later, rounding differences of
    # another machine's kernels grow (training is chaotic), so the end is compared as an average.
    a, b = torch.tensor([r["loss"] for r in new]), torch.tensor([r["loss"] for r in old])
    assert torch.allclose(a[:4], b[:4], rtol=1e-3), (a[:4], b[:4])
    assert abs(a[-10:].mean() - b[-10:].mean()) < 0.1 * b[-10:].mean(), (a[-10:].mean(), b[-10:].mean())


def _make_toy_stage1():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_toy_stage1", ROOT / "tools" / "make_toy_stage1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundling_a_stage1_run_records_its_worlds_flaw_rates(tmp_path):
    """The card and ``toy_data.json`` say which world (flaw rates, seed) the model learned."""
    from rewardedit_lib import toyworld as tw

    data = tw.write_toy_dataset(tmp_path / "data", n=8, seed=0, rates=tw.FlawRates(0.4, 0.3, 0.1))
    cfg = T.preset("toy-stage1", max_steps=2, batch_size=4, warmup_steps=1, checkpoint_every=0, validate_every=0,
                   log_every=1)
    T.train(cfg, data, tmp_path / "run", progress=False)
    tool = _make_toy_stage1()
    asset = tool.bundle(tmp_path / "run", tmp_path / "asset", "a test machine", profile="toy-stage1")
    world = json.loads((asset / "toy_data.json").read_text())
    assert world["flaw_rates"] == {"following": 0.4, "preserving": 0.3, "quality": 0.1} and world["seed"] == 0
    card = (asset / "README.md").read_text()
    assert "rewardedit toy-data --out WORK/data --n 8 --seed 0 --flaw-rates 0.4,0.3,0.1\n" in card
    assert "40% following / 30% preserving / 10% quality failures" in card
    assert _card_recipe(asset) == ("toy-stage1", 2)

    # a run whose data folder is gone (and that carries no manifest) is refused, naming the file it needs
    import shutil

    shutil.rmtree(data)
    with pytest.raises(SystemExit, match="generator.json"):
        tool.bundle(tmp_path / "run", tmp_path / "asset2", "a test machine", profile="toy-stage1")
    assert not list(tmp_path.glob("asset2*")) and asset.is_dir()
