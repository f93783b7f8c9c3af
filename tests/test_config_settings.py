"""One table of per-config settings (``models.CONFIG_SETTINGS``): the code reads it, and every saved model
folder records its config's entry (``config_settings`` in ``model_index.json``)."""

from __future__ import annotations

import json

import pytest
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

from rewardedit_lib import evaluate, models, pipeline
from rewardedit_lib.judge.paper_protocol import choose_protocol


def test_the_table_holds_the_kits_defaults_and_the_code_reads_it():
    toy, sd15 = models.CONFIG_SETTINGS["toy"], models.CONFIG_SETTINGS["sd15"]
    # toy: 10 deterministic DDIM steps without guidance (the flawless-data model's best, RESULTS.md)
    assert evaluate.EDIT_DEFAULTS["toy"] == evaluate.EditSettings(num_inference_steps=10, guidance_scale=1.0,
                                                                  image_guidance_scale=1.0, eta=0.0)
    assert evaluate.EDIT_DEFAULTS["sd15"] == evaluate.EditSettings(num_inference_steps=30, guidance_scale=7.5,
                                                                   image_guidance_scale=1.5, eta=0.0)
    assert (toy.latent_space, toy.default_resolution, toy.judge_protocol) == (False, None, "kit")
    assert (sd15.latent_space, sd15.default_resolution, sd15.judge_protocol) == (True, 512, "paper")
    assert pipeline.SAMPLER_ETA == {"sd15": 0.0, "toy": 0.0}
    assert pipeline.DEFAULT_RESOLUTION == {"sd15": 512, "toy": None} and pipeline.DEFAULT_STEPS == 30
    assert pipeline.SCHEDULER_CONFIGS["toy"]["prediction_type"] == "sample"
    assert pipeline.SCHEDULER_CONFIGS["sd15"]["beta_schedule"] == "scaled_linear"
    assert isinstance(pipeline.scheduler_for("toy"), DDIMScheduler)
    assert isinstance(pipeline.scheduler_for("sd15"), EulerAncestralDiscreteScheduler)
    assert pipeline.scheduler_for("toy").config.beta_end == toy.noise_schedule["beta_end"]
    assert choose_protocol(None, "sd15", "http://judge", None) == "paper"
    assert choose_protocol(None, "toy", "http://judge", None) == "kit"
    with pytest.raises(ValueError, match="unknown model config"):
        models.config_settings("sd21")


def test_a_saved_toy_model_records_its_configs_settings_and_an_older_folder_still_loads(tmp_path):
    pipeline.toy_pipeline(seed=0, stage=2).save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["model_config"] == "toy"
    assert index["config_settings"] == models.CONFIG_SETTINGS["toy"].to_json()
    back = evaluate.load_model(tmp_path / "m")
    assert back.config.config_settings == models.CONFIG_SETTINGS["toy"].to_json()
    assert evaluate.default_settings(back) == evaluate.EDIT_DEFAULTS["toy"]

    # a folder written before the settings were recorded loads, and edits with the table's settings
    del index["config_settings"]
    (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
    old = evaluate.load_model(tmp_path / "m")
    assert old.config.config_settings is None and evaluate.model_kind(old) == "toy"
    assert evaluate.default_settings(old) == evaluate.EDIT_DEFAULTS["toy"]
