"""Inference with reward conditions: the toy pipeline on the CPU, the guidance branches, save/load."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from PIL import Image

from rewardedit_lib import models, pipeline, text, toyworld
from rewardedit_lib.formats import Rewards
from rewardedit_lib.guidance import LOW_REWARD_TEXT
from rewardedit_lib.pipeline import RewardEditPipeline
from rewardedit_lib.reward import RewardEncoder
from rewardedit_lib.toy.text_encoder import toy_text_encoder

STEPS = 2


@pytest.fixture(scope="module")
def example():
    t = toyworld.make_triplet(0, 3)
    return t.instruction, Image.fromarray(t.source)


@pytest.fixture(scope="module")
def pipe():
    return pipeline.toy_pipeline(seed=0)


def edit(p, example, seed=0, **kw):
    prompt, image = example
    kw = {"num_inference_steps": STEPS, "output_type": "np", **kw}
    return p(prompt, image, generator=torch.Generator().manual_seed(seed), **kw).images


class Spy:
    """Records what the reward encoder is called with (the rewards of every UNet batch row)."""

    def __init__(self, encoder: RewardEncoder):
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.handle = encoder.register_forward_pre_hook(self.record)

    def record(self, module, args):
        scores, text_embeds = args
        self.calls.append((scores.clone(), None if text_embeds is None else text_embeds.clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def pooled(p, texts):
    return text.encode_text(p.tokenizer, p.text_encoder, texts).pooled


def test_the_toy_pipeline_edits_a_toy_image_on_the_cpu(pipe, example):
    prompt, image = example
    out = pipe(prompt, image, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 1 and isinstance(out.images[0], Image.Image)
    assert out.images[0].size == image.size == (32, 32) and out.images[0].mode == "RGB"
    arrays = edit(pipe, example, num_images_per_prompt=2)
    assert arrays.shape == (2, 32, 32, 3) and arrays.dtype == np.float32 and 0 <= arrays.min() <= arrays.max() <= 1
    assert pipe.vae is None and pipe.config.default_resolution is None  # pixel space, the image's own size


def test_a_generator_makes_it_deterministic(pipe, example):
    a, b, c = edit(pipe, example, seed=1), edit(pipe, example, seed=1), edit(pipe, example, seed=2)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_the_requested_rewards_reach_every_guidance_branch(pipe, example):
    prompts = [example[0], "make the image darker"]
    feedback = ["Instruction Following: 2; The red square was not removed.", Rewards.perfect().text]
    scores = [[2, 5, 4], [5, 5, 5]]
    with Spy(pipe.reward_encoder) as spy:
        pipe(prompts, example[1], reward_scores=scores, reward_text=feedback, num_inference_steps=STEPS,
             num_images_per_prompt=2, output_type="np")
    assert len(spy.calls) == STEPS
    # rows: 3 branches (full, image only, uncond) x 2 prompts x 2 images, branch-major, each prompt's images together
    per_branch = torch.tensor(scores, dtype=torch.float32).repeat_interleave(2, dim=0)
    text_rows = pooled(pipe, feedback).repeat_interleave(2, dim=0)
    for s, t in spy.calls:
        assert torch.equal(s, per_branch.repeat(3, 1))
        assert torch.allclose(t, text_rows.repeat(3, 1), atol=1e-6)


def test_the_low_reward_branch_appears_only_with_reward_guidance(pipe, example):
    with Spy(pipe.reward_encoder) as spy:
        edit(pipe, example, reward_guidance_scale=2.0, reward_scores=(4, 4, 3))
    s, t = spy.calls[0]
    assert s.shape == (4, 3)  # full, image only, uncond, full with low rewards
    assert torch.equal(s[:3], torch.tensor([[4.0, 4, 3]] * 3)) and torch.equal(s[3], torch.zeros(3))
    assert torch.allclose(t[3], pooled(pipe, [LOW_REWARD_TEXT])[0], atol=1e-6)
    with Spy(pipe.reward_encoder) as spy:
        edit(pipe, example, guidance_scale=1.0)  # no classifier-free guidance, no reward guidance: one branch
    assert spy.calls[0][0].shape == (1, 3)
    with Spy(pipe.reward_encoder) as spy:
        edit(pipe, example, guidance_scale=1.0, reward_guidance_scale=1.0, low_reward_scores=(1, 2, 3))
    assert torch.equal(spy.calls[0][0], torch.tensor([[5.0, 5, 5], [1, 2, 3]]))


def test_the_default_rewards_are_the_perfect_score_of_the_training_data(pipe, example):
    assert pipeline.DEFAULT_REWARD_TEXT == Rewards.perfect().text == "; ".join(
        ["There are no noticeable negative aspects."] * 3)
    with Spy(pipe.reward_encoder) as spy:
        edit(pipe, example)
    s, t = spy.calls[0]
    assert torch.equal(s, torch.full((3, 3), 5.0))
    assert torch.allclose(t, pooled(pipe, [Rewards.perfect().text]).expand(3, -1), atol=1e-6)
    assert not torch.allclose(t[0], pooled(pipe, ["None; None; None"])[0])  # not the reference's text


def test_rewards_change_a_reward_model_but_not_a_stage1_model(pipe, example):
    good, bad = edit(pipe, example), edit(pipe, example, reward_scores=(0, 0, 0))
    assert not np.allclose(good, bad)
    assert not np.allclose(good, edit(pipe, example, reward_text="The image is blurry."))
    stage1 = pipeline.toy_pipeline(seed=0, stage=1)
    assert stage1.reward_encoder is None and not stage1.uses_rewards
    base = edit(stage1, example)
    assert np.array_equal(base, edit(stage1, example, reward_scores=(0, 0, 0), reward_text="The image is blurry."))
    with pytest.warns(UserWarning, match="no reward encoder"):
        assert np.array_equal(base, edit(stage1, example, reward_guidance_scale=3.0))


@pytest.mark.parametrize("reward_guidance,contrast,unknown_without_instruction",
                         [(0.0, "low", False), (2.0, "low", False), (2.0, "unknown", False), (0.0, "low", True),
                          (2.0, "low", True)])
def test_the_step_uses_diffusers_guidance_formula_from_separate_unet_calls(pipe, example, reward_guidance, contrast,
                                                                          unknown_without_instruction):
    """The noise the scheduler gets equals the formula applied to separate, independently built UNet calls.
    Reward guidance against unknown rewards contrasts with the stage-1 UNet's own prediction (no reward added).
    A model trained with its rewards unknown without the instruction gets them unknown in the two branches
    without it, and the requested ones where the instruction is."""
    prompt, image = example
    seen = []
    step = pipe.scheduler.step

    def spy_step(model_output, timestep, sample, **kw):
        seen.append((model_output.clone(), timestep, sample.clone()))
        return step(model_output, timestep, sample, **kw)

    pipe.scheduler.step = spy_step
    pipe.reward_encoder.register_to_config(unknown_without_instruction=unknown_without_instruction)
    assert pipe.rewards_without_instruction == ("unknown" if unknown_without_instruction else "requested")
    try:
        pipe(prompt, image, num_inference_steps=2, guidance_scale=5.0, image_guidance_scale=1.8,
             reward_guidance_scale=reward_guidance, reward_scores=(3, 4, 5), generator=torch.Generator().manual_seed(0),
             **({"low_reward_scores": None} if contrast == "unknown" else {}))
    finally:
        del pipe.scheduler.step
        pipe.reward_encoder.register_to_config(unknown_without_instruction=False)
    used, t, sample = seen[0]
    ref = type(pipe.scheduler).from_config(pipe.scheduler.config)
    ref.set_timesteps(2)
    assert t == ref.timesteps[0]
    x = ref.scale_model_input(sample, t)
    source = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    instr = text.encode_text(pipe.tokenizer, pipe.text_encoder, [prompt]).hidden_states
    empty = text.encode_text(pipe.tokenizer, pipe.text_encoder, [""]).hidden_states

    def eps(ctx, src, scores, feedback, known=1.0):
        with torch.no_grad():
            return pipe.reward_unet(torch.cat([x, src], 1), t, ctx, reward_scores=torch.tensor([scores]).float(),
                                    reward_text_embeds=pooled(pipe, [feedback]),
                                    reward_known=torch.full((1,), known)).sample

    perfect = Rewards.perfect().text
    without = 0.0 if unknown_without_instruction else 1.0  # the rewards of the branches without the instruction
    full = eps(instr, source, [3, 4, 5], perfect)
    image_only = eps(empty, source, [3, 4, 5], perfect, without)
    uncond = eps(empty, torch.zeros_like(source), [3, 4, 5], perfect, without)
    assert unknown_without_instruction != torch.allclose(image_only, eps(empty, source, [3, 4, 5], perfect))
    expected = uncond + 5.0 * (full - image_only) + 1.8 * (image_only - uncond)
    if reward_guidance and contrast == "low":
        expected = expected + reward_guidance * (full - eps(instr, source, [0, 0, 0], LOW_REWARD_TEXT))
    elif reward_guidance:
        with torch.no_grad():
            unknown = pipe.reward_unet(torch.cat([x, source], 1), t, instr, reward_scores=torch.tensor([[0.0, 1, 2]]),
                                       reward_text_embeds=pooled(pipe, ["anything"]),
                                       reward_known=torch.zeros(1)).sample  # the reward modules add nothing
        assert not torch.allclose(unknown, full)
        expected = expected + reward_guidance * (full - unknown)
    assert torch.allclose(used, expected, atol=1e-4, rtol=1e-4), (used - expected).abs().max()


def test_pipeline_save_and_load_round_trip(pipe, example, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    assert {p.name for p in (tmp_path / "p").iterdir()} >= {"unet", "reward_encoder", "text_encoder", "tokenizer",
                                                            "scheduler", "model_index.json"}
    assert not (tmp_path / "p" / "vae").exists()
    back = RewardEditPipeline.from_pretrained(tmp_path / "p")
    back.set_progress_bar_config(disable=True)
    assert back.vae is None and isinstance(back.reward_encoder, RewardEncoder)
    from rewardedit_lib.evaluate import model_kind

    assert back.config.model_config == "toy" and model_kind(back) == "toy"  # the config travels with the model
    assert np.array_equal(edit(back, example), edit(pipe, example))
    assert np.array_equal(edit(back, example, reward_guidance_scale=1.0),
                          edit(pipe, example, reward_guidance_scale=1.0))
    stage1 = pipeline.toy_pipeline(seed=0, stage=1)
    stage1.save_pretrained(tmp_path / "s1")
    assert not (tmp_path / "s1" / "reward_encoder").exists()
    back1 = RewardEditPipeline.from_pretrained(tmp_path / "s1")
    back1.set_progress_bar_config(disable=True)
    assert back1.reward_encoder is None and np.array_equal(edit(back1, example), edit(stage1, example))


def test_a_second_pipeline_on_the_same_components_does_not_add_the_rewards_twice(pipe, example):
    again = RewardEditPipeline(**pipe.components)
    again.set_progress_bar_config(disable=True)
    assert again.reward_unet is pipe.reward_unet
    assert np.array_equal(edit(again, example), edit(pipe, example))
    other = models.build("toy", seed=5).reward
    with pytest.raises(ValueError, match="already composed"):
        RewardEditPipeline(**{**pipe.components, "reward_encoder": other}).reward_unet


def test_bad_reward_arguments_are_clear_errors(pipe, example):
    with pytest.raises(ValueError, match=r"reward_scores: expected 3 scores"):
        edit(pipe, example, reward_scores=(5, 5))
    with pytest.raises(ValueError, match=r"reward_text: got 2 values for 1 prompt"):
        edit(pipe, example, reward_text=["a", "b"])


# -------------------------------------------------------------------------------------------------
# The latent-space (sd15) path, at toy size: a VAE, a plain InstructPix2Pix folder, a reward encoder beside it
# -------------------------------------------------------------------------------------------------
def _tiny_latent_parts(seed=0):
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4).eval()
    unet_config = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                       down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                       attention_head_dim=8, norm_num_groups=8)
    stage1 = models.stage1_from_text_to_image(UNet2DConditionModel(**unet_config))
    tokenizer, encoder = toy_text_encoder(seed)
    reward = RewardEncoder(**models.reward_config("toy", stage1.unet.config)).eval()
    return vae, stage1.unet.eval(), tokenizer, encoder, reward


def test_latent_space_pipeline_from_a_plain_instruct_pix2pix_folder(tmp_path, example):
    vae, unet, tokenizer, encoder, reward = _tiny_latent_parts()
    plain = StableDiffusionInstructPix2PixPipeline(vae, encoder, tokenizer, unet, pipeline.scheduler_for("sd15"),
                                                   safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    plain.save_pretrained(tmp_path / "ip2p")
    stage1 = RewardEditPipeline.from_instruct_pix2pix(tmp_path / "ip2p", resolution=64)
    assert stage1.reward_encoder is None and stage1.vae is not None
    assert isinstance(stage1.scheduler, EulerAncestralDiscreteScheduler)
    reward.save_pretrained(tmp_path / "ip2p" / "reward_encoder")  # a stage-2 reward encoder beside it
    p = RewardEditPipeline.from_instruct_pix2pix(tmp_path / "ip2p", resolution=64)
    p.set_progress_bar_config(disable=True)
    assert isinstance(p.reward_encoder, RewardEncoder) and p.uses_rewards
    wide = example[1].resize((48, 32))  # InstructPix2Pix's rule: longer side ~ resolution, multiples of 64
    out = p(example[0], wide, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (64, 64)
    assert pipeline.instruct_pix2pix_size(768, 512, 512) == (576, 384)  # edit_cli.py gives the same
    latents = p(example[0], wide, num_inference_steps=2, height=32, width=64, output_type="latent").images
    assert latents.shape == (1, 4, 4, 8)  # height and width set the size exactly (VAE: 8x smaller)
    # the whole stage-2 pipeline saves (vae/ too) and loads back to the same edits
    p.save_pretrained(tmp_path / "stage2")
    assert (tmp_path / "stage2" / "vae").is_dir() and (tmp_path / "stage2" / "reward_encoder").is_dir()
    back = RewardEditPipeline.from_pretrained(tmp_path / "stage2")
    back.set_progress_bar_config(disable=True)
    a = back(example[0], wide, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    b = p(example[0], wide, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert back.config.default_resolution == 64 and np.array_equal(a.images, b.images)


def test_inspection_helpers_trace_shapes_and_attention(pipe, example):
    rows = pipeline.trace_shapes(pipe, example[1], example[0])
    by_module = {r[0]: r for r in rows}
    assert [r[3] for r in rows[:4]] == ["1x77", "1x77x64", "1x77", "1x64"]  # instruction states, feedback pooled
    assert by_module["(input)"][3] == "1x6x32x32"
    assert by_module["reward.score_proj"][3] == "3x32"  # three scores, 32-d each (flattened to 1x96 after)
    assert by_module["reward.score_to_token"][3] == "1x16" and by_module["reward.text_to_time"][3] == "1x64"
    assert by_module["reward.latent.attn"][2:] == ("1x1024x16", "1x1024x16")
    order = [r[0] for r in rows]
    assert order.index("unet.conv_in") < order.index("reward.latent.norm") < order.index("unet.down_blocks.0")
    assert rows[-1][0] == "unet.conv_out" and rows[-1][3] == "1x3x32x32"
    w = pipeline.reward_attention(pipe, example[1], example[0])
    assert w.shape == (4, 32, 32, 2) and torch.allclose(w.sum(-1), torch.ones(4, 32, 32), atol=1e-5)
    with pytest.raises(ValueError, match="no latent-space reward attention"):
        pipeline.reward_attention(pipeline.toy_pipeline(stage=2, injection="time"), example[1], example[0])


def test_the_reward_overhead_benchmark_runs_tiny_and_prints_the_ratio(capsys):
    """A smoke test of benchmarks/reward_overhead.py (no timing assertion: CPU timings are noise)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reward_overhead.py"
    spec = importlib.util.spec_from_file_location("reward_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--repeats", "1",
                         "--resolution", "64", "--batch", "1"])
    out = capsys.readouterr().out
    assert re.search(r"^ratio reward/baseline = \d+\.\d{4} \([+-]\d+\.\d+ %\); target <= 1\.05", out, re.M), out
    assert result["reward_parameters"] > 0 and result["ratio"] > 0 and "config=tiny" in out
