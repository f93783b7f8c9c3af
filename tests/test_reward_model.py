"""The reward-conditioned model: composed onto a stock UNet, the paper's sizes, switches, save/load, converter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel

from rewardedit_lib import models
from rewardedit_lib.reward import INJECTIONS, REWARD_MODES, RewardEncoder, RewardUNet

B = 2


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return dict(
        sample=torch.randn(B, 6, 32, 32, generator=g),
        timestep=torch.tensor([10, 700]),
        encoder_hidden_states=torch.randn(B, 7, 64, generator=g),
        reward_scores=torch.tensor([[5.0, 5.0, 5.0], [1.0, 3.0, 0.0]]),
        reward_text_embeds=torch.randn(B, 64, generator=g),
    )


def run(model, inputs, **changes):
    args = dict(inputs, **changes)
    with torch.no_grad():
        return model(args.pop("sample"), args.pop("timestep"), args.pop("encoder_hidden_states"), **args).sample


def test_sd15_reward_modules_hold_the_reference_parameter_count():
    with init_empty_weights():  # the real SD 1.5 architecture, no memory, no download
        model = models.build("sd15", stage=2)
    counts = models.parameter_counts(model)
    assert counts["reward (all)"] == 5_026_880
    assert counts["reward.score_to_time"] == 2_624_000
    assert counts["reward.score_to_token"] == 348_800
    assert counts["reward.text_to_time"] == 984_320
    assert counts["reward.text_to_token"] == 246_080
    attn = sum(p.numel() for p in model.reward.latent.attn.parameters())
    assert attn == 617_600 and counts["reward.latent"] - attn == 206_080  # ca and proj_deal
    assert model.unet.config.in_channels == 8 and model.unet.time_embedding.linear_2.out_features == 1280


def test_the_unet_is_the_stock_diffusers_class(inputs):
    model = models.build("toy")
    assert type(model.unet) is UNet2DConditionModel
    assert not any(name.startswith("reward") for name, _ in model.unet.named_modules())


def test_widened_conv_in_computes_what_the_text_to_image_unet_did(inputs):
    t2i = models.text_to_image_unet("toy", seed=3)
    x = inputs["sample"][:, :3]
    with torch.no_grad():
        before = t2i(x, inputs["timestep"], inputs["encoder_hidden_states"]).sample
        stage1 = models.stage1_from_text_to_image(t2i)
        after = stage1(torch.cat([x, torch.randn_like(x)], 1), inputs["timestep"], inputs["encoder_hidden_states"]).sample
    assert stage1.unet.config.in_channels == 6
    assert torch.allclose(before, after, atol=1e-5)


def test_the_switch_names_have_one_definition():
    """reward_modes defines them (torch-free, for the command line); everyone else uses those tuples."""
    from rewardedit_lib import ablation, cli, reward_modes
    from rewardedit_lib.train import config

    for module in (cli, ablation, config):
        assert module.REWARD_MODES is reward_modes.REWARD_MODES is REWARD_MODES
        assert module.INJECTIONS is reward_modes.INJECTIONS is INJECTIONS
    train = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "rewards_mode")
    assert tuple(train.choices) == REWARD_MODES


@pytest.mark.parametrize("rewards", REWARD_MODES)
@pytest.mark.parametrize("injection", INJECTIONS)
def test_switches_build_only_what_they_ask_for(rewards, injection, inputs):
    model = models.build("toy", rewards=rewards, injection=injection).eval()
    names = set() if model.reward is None else {n for n, _ in model.reward.named_children()}
    expect = set()
    if rewards in ("scores", "both"):
        expect |= {"score_proj"} | ({"score_to_time"} if injection != "latent" else set()) \
                  | ({"score_to_token"} if injection != "time" else set())
    if rewards in ("text", "both"):
        expect |= ({"text_to_time"} if injection != "latent" else set()) | ({"text_to_token"} if injection != "time" else set())
    if rewards != "none" and injection != "time":
        expect |= {"latent"}
    assert names == expect
    out = run(model, inputs)
    assert out.shape == (B, 3, 32, 32)
    if rewards == "none":
        assert model.reward_parameters() == 0
        return
    # the rewards the model is conditioned on change its output; the others do not
    changed_scores = run(model, inputs, reward_scores=torch.zeros(B, 3))
    changed_text = run(model, inputs, reward_text_embeds=torch.zeros(B, 64))
    assert (not torch.allclose(out, changed_scores)) == (rewards in ("scores", "both"))
    assert (not torch.allclose(out, changed_text)) == (rewards in ("text", "both"))


def test_none_is_exactly_stage_one(inputs):
    stage1 = models.build("toy", stage=1).eval()
    none = models.stage2_from_stage1(stage1, "toy", rewards="none")
    assert none.unet is stage1.unet and none.reward is None
    assert torch.equal(run(stage1, inputs), run(none, inputs))


def test_zero_init_stage2_starts_as_its_stage1(inputs):
    stage1 = models.build("toy", stage=1).eval()
    before = run(stage1, inputs)
    stage2 = models.stage2_from_stage1(stage1, "toy", zero_init=True).eval()
    assert torch.allclose(run(stage2, inputs), before, atol=1e-6)
    random_init = models.stage2_from_stage1(models.build("toy", stage=1), "toy").eval()
    assert not torch.allclose(run(random_init, inputs), before, atol=1e-3)


def test_a_centered_encoder_adds_nothing_at_the_perfect_rewards_and_keeps_them_when_saved(tmp_path, inputs):
    stage1 = models.build("toy", stage=1).eval()
    model = models.stage2_from_stage1(stage1, "toy", centered=True).eval()  # random (not zero) init
    perfect_text = inputs["reward_text_embeds"][:1]
    model.reward.set_reference(torch.tensor([5.0, 5.0, 5.0]), perfect_text)
    time = model.reward(torch.full((B, 3), 5.0), perfect_text.repeat(B, 1)).time
    assert torch.allclose(time, torch.zeros_like(time), atol=1e-6)  # the UNet's own time embedding
    other = model.reward(inputs["reward_scores"], inputs["reward_text_embeds"])
    assert other.time[1].abs().max() > 1e-3  # other rewards still move it
    model.save_pretrained(tmp_path / "m")
    loaded = RewardUNet.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded.reward.reference_text, perfect_text[0])
    # The same function, not the same bits: a model loaded from safetensors may take another CPU kernel path
    # (seen with diffusers 0.42.1 / safetensors 0.8.0: 1.3e-6 apart); a lost reference text moves it by 0.58.
    torch.testing.assert_close(run(model, inputs), run(loaded, inputs), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="not centered"):
        models.build("toy").reward.set_reference(torch.ones(3), None)


def test_missing_rewards_and_direct_unet_calls_are_clear_errors(inputs):
    model = models.build("toy").eval()
    with pytest.raises(ValueError, match="reward_scores"):
        run(model, inputs, reward_scores=None)
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        run(model, inputs, reward_scores=torch.ones(B, 2))
    with pytest.raises(RuntimeError, match="call it through RewardUNet"):
        model.unet(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"])


def test_one_reward_broadcasts_over_guidance_branches(inputs):
    """Classifier-free guidance runs 3 branches in one batch; the same reward goes to each."""
    model = models.build("toy").eval()
    one = dict(inputs, sample=inputs["sample"][:1], timestep=inputs["timestep"][:1],
               encoder_hidden_states=inputs["encoder_hidden_states"][:1],
               reward_scores=inputs["reward_scores"][:1], reward_text_embeds=inputs["reward_text_embeds"][:1])
    single = run(model, one)
    tripled = run(model, one, sample=one["sample"].repeat(3, 1, 1, 1), timestep=one["timestep"].repeat(3),
                  encoder_hidden_states=one["encoder_hidden_states"].repeat(3, 1, 1))
    assert torch.allclose(tripled, single.repeat(3, 1, 1, 1), atol=1e-5)


def test_float_scores_interpolate_between_integers(inputs):
    model = models.build("toy").eval()
    outs = [run(model, inputs, reward_scores=torch.full((B, 3), s)) for s in (4.0, 4.5, 5.0)]
    d_mid, d_ends = (outs[1] - outs[0]).abs().mean(), (outs[2] - outs[0]).abs().mean()
    assert 0 < d_mid < d_ends * 1.5


def test_save_and_load_round_trip(tmp_path, inputs):
    model = models.build("toy", rewards="both", injection="both").eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "unet" / "config.json").exists()
    assert (tmp_path / "m" / "reward_encoder" / "config.json").exists()
    loaded = RewardUNet.from_pretrained(tmp_path / "m").eval()
    assert loaded.reward.config.rewards == "both" and loaded.unet.config.in_channels == 6
    assert torch.equal(run(model, inputs), run(loaded, inputs))
    # the UNet folder is plain diffusers: any diffusers code can load it
    plain = UNet2DConditionModel.from_pretrained(tmp_path / "m", subfolder="unet")
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in model.unet.parameters())
    # stage 1 saves no reward folder and loads back as stage 1
    stage1 = models.build("toy", stage=1)
    stage1.save_pretrained(tmp_path / "s1")
    assert not (tmp_path / "s1" / "reward_encoder").exists()
    assert RewardUNet.from_pretrained(tmp_path / "s1").reward is None


# -------------------------------------------------------------------------------------------------
# The reference converter, checked against a functional re-implementation of the reference forward
# -------------------------------------------------------------------------------------------------
HEADS, SCORE_DIM = 8, 32


def _reference_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A stage-2 state dict in the reference's layout: stock UNet keys + the reward keys, random values."""
    unet = models.widen_conv_in(models.text_to_image_unet("toy", seed=seed))
    sd = {k: v.clone() for k, v in unet.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    widths = models.UNET_CONFIGS["toy"]["block_out_channels"]
    t, c, txt, s3 = 4 * widths[0], widths[0], 64, 3 * SCORE_DIM  # time embedding, first block, CLIP, scores

    def lin(name, n_in, n_out):
        sd[f"{name}.weight"] = torch.randn(n_out, n_in, generator=g) / math.sqrt(n_in)
        sd[f"{name}.bias"] = torch.randn(n_out, generator=g) * 0.1

    lin("add_embedding.linear_1", s3, t), lin("add_embedding.linear_2", t, t)
    lin("add_embedding2.linear_1", s3, c), lin("add_embedding2.linear_2", c, c)
    lin("text_linear2", txt, t), lin("text_linear", txt, c)
    sd["proj_deal.norm.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
    sd["proj_deal.norm.bias"] = 0.1 * torch.randn(c, generator=g)
    sd["proj_deal.proj_in.weight"] = torch.randn(c, c, 1, 1, generator=g) / math.sqrt(c)
    sd["proj_deal.proj_in.bias"] = 0.1 * torch.randn(c, generator=g)
    sd["proj_deal.proj_out.weight"] = torch.randn(c, c, 1, 1, generator=g) / math.sqrt(c)
    sd["proj_deal.proj_out.bias"] = 0.1 * torch.randn(c, generator=g)
    for name in ("ca.attention.self.query", "ca.attention.self.key", "ca.attention.self.value",
                 "ca.attention.output.dense", "ca.hidden_intermediate.dense", "ca.output.dense"):
        lin(name, c, c)
    for name in ("ca.attention.output.LayerNorm", "ca.output.LayerNorm"):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
    return sd


def _sinusoid(x: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # flip_sin_to_cos: cos first


def _reference_forward(sd, x, t, ctx, scores, pooled):
    """The reference stage-2 forward, written from the paper's description with plain torch functions."""
    lin = lambda h, n: F.linear(h, sd[f"{n}.weight"], sd[f"{n}.bias"])  # noqa: E731
    mlp = lambda h, n: lin(F.silu(lin(h, f"{n}.linear_1")), f"{n}.linear_2")  # noqa: E731
    unet = UNet2DConditionModel(**dict(models.UNET_CONFIGS["toy"], in_channels=6))
    unet.load_state_dict({k: v for k, v in sd.items() if not k.startswith(("add_embedding", "text_linear",
                                                                            "proj_deal", "ca."))})
    unet.eval()
    s = torch.cat([_sinusoid(scores[:, i], SCORE_DIM) for i in range(3)], dim=-1)
    emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
    emb = emb + mlp(s, "add_embedding") + lin(pooled, "text_linear2")
    tokens = torch.stack([mlp(s, "add_embedding2"), lin(pooled, "text_linear")], dim=1)  # (B, 2, C)

    h = unet.conv_in(x)
    b, c, hh, ww = h.shape
    z = F.group_norm(h, 8, sd["proj_deal.norm.weight"], sd["proj_deal.norm.bias"], eps=1e-6)
    z = F.conv2d(z, sd["proj_deal.proj_in.weight"], sd["proj_deal.proj_in.bias"]).flatten(2).transpose(1, 2)
    q = lin(z, "ca.attention.self.query").view(b, -1, HEADS, c // HEADS).transpose(1, 2)
    k = lin(tokens, "ca.attention.self.key").view(b, -1, HEADS, c // HEADS).transpose(1, 2)
    v = lin(tokens, "ca.attention.self.value").view(b, -1, HEADS, c // HEADS).transpose(1, 2)
    a = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // HEADS), -1) @ v).transpose(1, 2).reshape(b, -1, c)
    ln = lambda y, n: F.layer_norm(y, (c,), sd[f"{n}.weight"], sd[f"{n}.bias"], eps=1e-12)  # noqa: E731
    y = ln(z + lin(a, "ca.attention.output.dense"), "ca.attention.output.LayerNorm")
    y = ln(y + lin(F.gelu(lin(y, "ca.hidden_intermediate.dense")), "ca.output.dense"), "ca.output.LayerNorm")
    y = F.conv2d(y.transpose(1, 2).reshape(b, c, hh, ww), sd["proj_deal.proj_out.weight"], sd["proj_deal.proj_out.bias"])
    h = h + y

    res = (h,)
    for blk in unet.down_blocks:
        kw = {"encoder_hidden_states": ctx} if getattr(blk, "has_cross_attention", False) else {}
        h, r = blk(hidden_states=h, temb=emb, **kw)
        res += r
    h = unet.mid_block(h, emb, encoder_hidden_states=ctx)
    for blk in unet.up_blocks:
        r, res = res[-len(blk.resnets):], res[: -len(blk.resnets)]
        kw = {"encoder_hidden_states": ctx} if getattr(blk, "has_cross_attention", False) else {}
        h = blk(hidden_states=h, temb=emb, res_hidden_states_tuple=r, **kw)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))


def test_reference_state_dict_converts_and_computes_the_reference_forward(inputs):
    sd = _reference_state_dict()
    model = models.convert_reference_state_dict(sd, name="toy", heads=HEADS, score_embed_dim=SCORE_DIM).eval()
    # strict both ways: every reference key landed somewhere, and nothing was left uninitialised
    assert len(model.unet.state_dict()) + len(model.reward.state_dict()) == len(sd)
    with torch.no_grad():
        ours = run(model, inputs)
        ref = _reference_forward(sd, inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"],
                                 inputs["reward_scores"], inputs["reward_text_embeds"])
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


def test_converter_names_missing_and_unexpected_keys():
    sd = _reference_state_dict()
    del sd["ca.output.dense.weight"]
    with pytest.raises(KeyError, match=r"missing keys \['latent.attn.ff_out.weight'\]"):
        models.convert_reference_state_dict(sd, name="toy", heads=HEADS, score_embed_dim=SCORE_DIM)
    sd = _reference_state_dict()
    sd["image_encoder.proj.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"unexpected keys \['image_encoder.proj.weight'\]"):
        models.convert_reference_state_dict(sd, name="toy", heads=HEADS, score_embed_dim=SCORE_DIM)


def test_reward_encoder_config_round_trips(tmp_path):
    enc = RewardEncoder(rewards="scores", injection="latent", time_embed_dim=128, block_dim=32, text_dim=64,
                        score_embed_dim=32, heads=4, norm_groups=8)
    enc.save_pretrained(tmp_path)
    back = RewardEncoder.from_pretrained(tmp_path)
    assert back.config.rewards == "scores" and back.config.injection == "latent"
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), back.state_dict().values()))
