"""The authors' released weights: a folder in the reference's layout (a diffusers InstructPix2Pix folder whose
``unet/`` weights carry the forked UNet's reward keys) loads with its rewards, its feedback text and the
paper's sampler. No hub can be reached: a tiny SD-1.5-shaped random model (VAE latents, CLIP text encoder,
8-channel UNet) is saved in that layout, and the hub's functions are replaced by local stand-ins."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, PNDMScheduler,
                       StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel)
from PIL import Image
from safetensors.torch import load_file, save_file

from rewardedit_lib import evaluate, hub, models, pipeline
from rewardedit_lib.pipeline import DEFAULT_REWARD_TEXT, RewardEditPipeline
from rewardedit_lib.reward import RewardEncoder
from rewardedit_lib.toy.text_encoder import toy_text_encoder

UNET_CONFIG = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64, attention_head_dim=8,
                   norm_num_groups=8)
SCORE_DIM = 16  # the reference hard-codes 256; the converter reads it off the weights
PNDM = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            steps_offset=1, skip_prk_steps=True, set_alpha_to_one=False)  # what an SD 1.5 folder carries


def to_reference_keys(encoder: RewardEncoder) -> dict[str, torch.Tensor]:
    """A kit reward encoder's weights under the reference fork's names (the converter's inverse)."""
    inverse = {kit: ref for ref, kit in models.REFERENCE_KEYS.items()}
    out = {}
    for key, value in encoder.state_dict().items():
        kit = max((k for k in inverse if key.startswith(k)), key=len)
        out[inverse[kit] + key[len(kit):]] = value.clone().contiguous()
    return out


def save_reference_folder(path: Path, seed: int = 0, extra_keys: dict[str, torch.Tensor] | None = None,
                          rewards: bool = True) -> dict[str, torch.Tensor]:
    """What the reference's train_sd15.py saves: StableDiffusionInstructPix2PixPipeline.save_pretrained with its
    forked UNet, i.e. the stock layout (PNDM scheduler from SD 1.5) and a UNet state dict with reward keys."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    unet = models.widen_conv_in(UNet2DConditionModel(**UNET_CONFIG))
    tokenizer, encoder = toy_text_encoder(seed)
    StableDiffusionInstructPix2PixPipeline(vae, encoder, tokenizer, unet, PNDMScheduler(**PNDM), safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False).save_pretrained(path)
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    reward = {}
    if rewards:
        torch.manual_seed(seed + 1)
        enc = RewardEncoder(**models.reward_config("sd15", unet.config, score_embed_dim=SCORE_DIM, text_dim=64))
        reward = to_reference_keys(enc)
    save_file({**state, **reward, **(extra_keys or {})}, str(path / "unet" / "diffusion_pytorch_model.safetensors"))
    return reward


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("released") / "stage2_reward_instruct_pix2pix"
    return path, save_reference_folder(path)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def edit(pipe, photo, **kw) -> np.ndarray:
    return pipe("make the sky red", photo, num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(0), **kw).images


def test_a_reference_folder_loads_with_its_rewards_feedback_text_and_sampler(reference, photo):
    path, reward_keys = reference
    pipe = RewardEditPipeline.from_instruct_pix2pix(path, resolution=64)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.uses_rewards and isinstance(pipe.reward_encoder, RewardEncoder)
    # every reward weight arrived, under the kit's names
    assert len(pipe.reward_encoder.state_dict()) == len(reward_keys)
    assert torch.equal(pipe.reward_encoder.latent.attn.ff_out.weight, reward_keys["ca.output.dense.weight"])
    assert torch.equal(pipe.reward_encoder.score_to_time.linear_1.weight, reward_keys["add_embedding.linear_1.weight"])
    assert pipe.reward_encoder.config.score_embed_dim == SCORE_DIM and pipe.reward_encoder.config.heads == 8
    # the reference's inference settings are recorded with the model and used by default
    assert pipe.config.default_reward_text == hub.REFERENCE_REWARD_TEXT == "None; None; None"
    assert isinstance(pipe.scheduler, EulerAncestralDiscreteScheduler)  # the folder holds PNDM
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"  # on the folder's noise schedule
    assert evaluate.default_settings(pipe).reward_text == "None; None; None"
    # the rewards change the output, and the default feedback text is the recorded one
    base = edit(pipe, photo)
    assert np.array_equal(base, edit(pipe, photo, reward_text="None; None; None"))
    assert not np.allclose(base, edit(pipe, photo, reward_text=DEFAULT_REWARD_TEXT))
    assert not np.allclose(base, edit(pipe, photo, reward_scores=(0, 0, 0)))


def test_a_converted_reference_model_saves_and_loads_back_the_same(reference, photo, tmp_path):
    pipe = RewardEditPipeline.from_instruct_pix2pix(reference[0], resolution=64)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "kit")
    back = evaluate.load_model(tmp_path / "kit")
    assert back.config.default_reward_text == "None; None; None" and back.uses_rewards
    assert isinstance(back.scheduler, EulerAncestralDiscreteScheduler)
    assert np.array_equal(edit(back, photo), edit(pipe, photo))


def test_evaluate_load_model_converts_a_reference_folder(reference):
    pipe = evaluate.load_model(reference[0])
    assert pipe.uses_rewards and pipe.config.default_reward_text == "None; None; None"


def test_an_unknown_unet_key_is_an_error_naming_it(tmp_path):
    extra = {"image_proj.weight": torch.zeros(4, 4), "image_proj.bias": torch.zeros(4)}
    save_reference_folder(tmp_path / "odd", extra_keys=extra)
    with pytest.raises(models.WeightsError, match=r"image_proj\.bias.*image_proj\.weight") as err:
        RewardEditPipeline.from_instruct_pix2pix(tmp_path / "odd")
    assert "diffusion_pytorch_model.safetensors" in str(err.value)
    # without reward keys too: diffusers alone would only log "weights not used"
    save_reference_folder(tmp_path / "plain", extra_keys=extra, rewards=False)
    with pytest.raises(models.WeightsError, match=r"image_proj\.weight"):
        RewardEditPipeline.from_instruct_pix2pix(tmp_path / "plain")


def test_a_partial_set_of_reward_keys_is_an_error_naming_the_missing_ones(tmp_path):
    save_reference_folder(tmp_path / "partial")
    weights = tmp_path / "partial" / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    del sd["ca.output.dense.weight"]
    save_file(sd, str(weights))
    with pytest.raises(models.WeightsError, match=r"missing keys \['latent\.attn\.ff_out\.weight'\]"):
        RewardEditPipeline.from_instruct_pix2pix(tmp_path / "partial")


def test_dropping_the_reference_rewards_is_refused(reference):
    with pytest.raises(ValueError, match="carries the reference's reward modules"):
        RewardEditPipeline.from_instruct_pix2pix(reference[0], reward_encoder=None)


def test_every_sd15_model_samples_with_euler_ancestral(tmp_path):
    """A model trained from an SD 1.5 folder kept that folder's PNDM; any latent-space pipeline now samples
    with Euler-ancestral, however it is built or loaded. The pixel-space toy keeps its DDIM."""
    save_reference_folder(tmp_path / "stage1", rewards=False)
    s1 = RewardEditPipeline.from_instruct_pix2pix(tmp_path / "stage1", scheduler=None)  # what the trainer asks
    assert isinstance(s1.scheduler, EulerAncestralDiscreteScheduler) and not s1.uses_rewards
    assert s1.config.default_reward_text is None and s1.inference_reward_text == DEFAULT_REWARD_TEXT
    parts = {k: v for k, v in s1.components.items() if k != "scheduler"}
    built = RewardEditPipeline(**parts, scheduler=PNDMScheduler(**PNDM))
    assert isinstance(built.scheduler, EulerAncestralDiscreteScheduler)
    built.save_pretrained(tmp_path / "kit")
    assert "EulerAncestral" in (tmp_path / "kit" / "scheduler" / "scheduler_config.json").read_text()
    toy = pipeline.toy_pipeline(stage=1)
    assert type(toy.scheduler).__name__ == "DDIMScheduler"
    assert type(RewardEditPipeline(**toy.components).scheduler).__name__ == "DDIMScheduler"


# -------------------------------------------------------------------------------------------------
# The hub: ids in one place, only the needed files downloaded
# -------------------------------------------------------------------------------------------------
def _repo_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_needed_files_take_one_copy_of_each_component():
    files = ["stage2/model_index.json", "stage2/scheduler/scheduler_config.json", "stage2/tokenizer/vocab.json",
             "stage2/tokenizer/merges.txt", "stage2/safety_checker/model.safetensors",
             "stage2/feature_extractor/preprocessor_config.json", "stage2/unet_ema/diffusion_pytorch_model.bin",
             "stage2/unet/config.json", "stage2/unet/diffusion_pytorch_model.bin",
             "stage2/unet/diffusion_pytorch_model.safetensors", "stage2/unet/diffusion_pytorch_model.fp16.safetensors",
             "stage2/vae/config.json", "stage2/vae/diffusion_pytorch_model.bin",
             "stage2/text_encoder/config.json", "stage2/text_encoder/model.safetensors", "stage1/model_index.json"]
    assert hub.needed_files(files, "stage2") == [
        "stage2/model_index.json", "stage2/scheduler/scheduler_config.json", "stage2/tokenizer/merges.txt",
        "stage2/tokenizer/vocab.json", "stage2/unet/config.json", "stage2/unet/diffusion_pytorch_model.safetensors",
        "stage2/vae/config.json", "stage2/vae/diffusion_pytorch_model.bin", "stage2/text_encoder/config.json",
        "stage2/text_encoder/model.safetensors"]
    with pytest.raises(hub.HubError, match=r"stage2/unet/ has no weights"):
        hub.needed_files([f for f in files if not f.startswith("stage2/unet/diffusion")], "stage2")
    with pytest.raises(hub.HubError, match=r"no model_index.json in stage3/"):
        hub.needed_files(files, "stage3")


def test_the_released_model_downloads_only_what_the_kit_reads_and_loads(reference, tmp_path, monkeypatch):
    remote = tmp_path / "remote"  # the hub repo: both stages, plus files the kit must not fetch
    shutil.copytree(reference[0], remote / hub.RELEASED_STAGES["stage2"])
    (remote / hub.RELEASED_STAGES["stage2"] / "unet_ema").mkdir()
    (remote / hub.RELEASED_STAGES["stage2"] / "unet_ema" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (remote / hub.RELEASED_STAGES["stage1"]).mkdir()
    (remote / hub.RELEASED_STAGES["stage1"] / "model_index.json").write_text("{}")
    calls = []

    def list_repo_files(repo_id, revision=None, **kw):
        assert repo_id == "Gstar666/Reward-InsPix2Pix"
        return _repo_files(remote)

    def snapshot_download(repo_id, *, revision=None, allow_patterns=None, local_dir=None, **kw):
        calls.append(dict(repo_id=repo_id, allow_patterns=allow_patterns))
        target = Path(local_dir) if local_dir else tmp_path / "cache"
        for f in allow_patterns:
            (target / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(remote / f, target / f)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert hub.RELEASED_STAGE2 == "Gstar666/Reward-InsPix2Pix/stage2_reward_instruct_pix2pix"
    pipe = RewardEditPipeline.from_instruct_pix2pix(hub.RELEASED_STAGE2, resolution=64)
    assert pipe.uses_rewards and pipe.config.default_reward_text == "None; None; None"
    [call] = calls
    assert call["repo_id"] == "Gstar666/Reward-InsPix2Pix"
    assert all(f.startswith("stage2_reward_instruct_pix2pix/") for f in call["allow_patterns"])
    assert not any("unet_ema" in f or "safety_checker" in f for f in call["allow_patterns"])
    got = hub.download_released("stage2", tmp_path / "local")
    assert got == tmp_path / "local" / "stage2_reward_instruct_pix2pix" and (got / "unet" / "config.json").exists()
    with pytest.raises(hub.HubError, match="stage='stage3'"):
        hub.download_released("stage3")


def test_the_rewardedit_dataset_id_lives_in_hub():
    from rewardedit_lib import formats

    assert formats.REWARDEDIT_REPO == hub.REWARDEDIT_DATASET == "Gstar666/RewardEdit"
    with pytest.raises(hub.HubError, match="neither a local folder nor a hub id"):
        hub.resolve_model("no-such-folder")


def test_offline_a_model_downloaded_before_loads_from_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "stage2_reward_instruct_pix2pix"
    cache.mkdir(parents=True)

    def list_repo_files(repo_id, revision=None, **kw):
        raise OSError("offline")

    def snapshot_download(repo_id, *, revision=None, local_dir=None, local_files_only=False, **kw):
        assert local_files_only
        return str(tmp_path / "cache")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert hub.resolve_model(hub.RELEASED_STAGE2) == cache
