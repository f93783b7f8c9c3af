"""The trainer: the objective's pieces, exact resume after kill -9, NaN stop, missing rewards, outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from rewardedit_lib import formats
from rewardedit_lib import train as T
from rewardedit_lib.pipeline import RewardEditPipeline
from toy_data import annotated_toy_data

TINY = dict(model="toy", batch_size=4, lr=1e-3, lr_schedule="constant_with_warmup", warmup_steps=2,
            ema_decay=0.99, log_every=1, checkpoint_every=0, validation_examples=2, validation_steps=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return annotated_toy_data(tmp_path_factory.mktemp("train-data"), n=16, seed=3)


def tiny(**changes) -> T.TrainConfig:
    return T.TrainConfig(**{**TINY, **changes})


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from rewardedit_lib.reward import RewardUNet

    m = RewardUNet.from_pretrained(model_dir)
    out = {f"unet.{k}": v for k, v in m.unet.state_dict().items()}
    if m.reward is not None:
        out.update({f"reward.{k}": v for k, v in m.reward.state_dict().items()})
    return out


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("stage", 3), ("rewards", "all"), ("lr", 0.0), ("grad_accum", 3),
                                          ("mixed_precision", "fp8"), ("conditioning_dropout", 0.5),
                                          ("compile_mode", "fast"), ("ema_power", 0.0), ("ema_power", 1.5)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value})


def test_presets_and_unknown_settings():
    assert T.preset("sd15").resolution == 256 and T.preset("sd15-t4").use_8bit_adam
    assert T.preset("toy-cpu", max_steps=7).max_steps == 7
    with pytest.raises(ValueError, match="toy-tpu"):
        T.preset("toy-tpu")
    with pytest.raises(ValueError, match="learning_rate"):
        T.preset("toy-cpu", learning_rate=1.0)


def test_every_yaml_preset_builds_a_valid_config_of_the_fields_types():
    """The presets live in profiles/train_presets.yaml: each builds a TrainConfig (validated as it is made)
    whose values have the types of TrainConfig's defaults (a YAML ``3e-4`` would be a string)."""
    import yaml
    from dataclasses import fields

    names = list(yaml.safe_load(T.PRESETS_FILE.read_text()))
    assert names == list(T.PRESETS) and {"toy-cpu", "toy-gpu", "toy-stage1", "sd15", "sd15-t4"} <= set(names)
    for name in names:
        config = T.preset(name)
        for f in fields(T.TrainConfig):
            value = getattr(config, f.name)
            if value is not None and f.default is not None:
                assert type(value) is type(f.default), (name, f.name, value)
        assert {k: getattr(config, k) for k in T.PRESETS[name]} == T.PRESETS[name]


def test_a_presets_file_with_an_unknown_field_or_a_string_number_is_refused(tmp_path):
    path = tmp_path / "presets.yaml"
    path.write_text("mine:\n  model: toy\n  learning_rate: 1.0e-3\n")
    with pytest.raises(ValueError, match="'mine' has unknown training setting.*learning_rate"):
        T.load_presets(path)
    path.write_text("mine:\n  model: toy\n  lr: 3e-4\n")  # YAML reads 3e-4 as a string
    with pytest.raises(ValueError, match=r"mine\.lr = '3e-4' is a string"):
        T.load_presets(path)
    path.write_text("mine:\n  reward_lr_scale: 10\n  lr: 3.0e-4\n")
    assert T.load_presets(path) == {"mine": {"reward_lr_scale": 10.0, "lr": 3e-4}}
    assert type(T.load_presets(path)["mine"]["reward_lr_scale"]) is float


# -- the per-step plan ----------------------------------------------------------------------------
def test_example_order_is_a_seeded_permutation_per_epoch():
    order = T.example_order(10, seed=1, start=0, count=30)
    for epoch in range(3):
        assert sorted(order[epoch * 10:(epoch + 1) * 10].tolist()) == list(range(10))
    assert torch.equal(T.example_order(10, 1, 7, 9), order[7:16])  # any window of the same stream
    assert not torch.equal(T.example_order(10, 2, 0, 10), order[:10])


def test_step_plan_is_a_pure_function_of_seed_and_step():
    cfg = tiny(batch_size=6000, conditioning_dropout=0.05, reward_dropout=0.1)
    a, b = T.plan_step(5, 40, cfg, 1000), T.plan_step(5, 40, cfg, 1000)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("indices", "timesteps", "drop_text", "drop_image"))
    assert not torch.equal(a.timesteps, T.plan_step(6, 40, cfg, 1000).timesteps)
    # diffusers' InstructPix2Pix rule: text dropped with 2p, image with 2p, both with p
    assert abs(a.drop_text.float().mean() - 0.10) < 0.02 and abs(a.drop_image.float().mean() - 0.10) < 0.02
    assert abs((a.drop_text & a.drop_image).float().mean() - 0.05) < 0.015
    assert abs(a.drop_reward.float().mean() - 0.10) < 0.02 and not a.flip.any()  # toy: no flips


# -- a run and its outputs ------------------------------------------------------------------------
def test_stage1_run_learns_and_writes_a_loadable_pipeline(data, tmp_path):
    d, _ = data
    res = T.train(tiny(stage=1, max_steps=12, checkpoint_every=4, keep_checkpoints=2), d, tmp_path / "run",
                  progress=False)
    losses = [r["loss"] for r in res.metrics]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3  # it learns
    assert [p.name for p in T.list_checkpoints(tmp_path / "run")] == ["checkpoint-000008", "checkpoint-000012"]
    pipe = RewardEditPipeline.from_pretrained(res.model_dir)
    assert pipe.reward_encoder is None and pipe.unet.config.in_channels == 6
    assert (tmp_path / "run" / "samples" / "step-000012.png").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["images_per_s"] > 0


def test_stage2_from_stage1_adds_rewards_and_starts_where_stage1_ended(data, tmp_path):
    d, rewards = data
    s1 = T.train(tiny(stage=1, max_steps=3), d, tmp_path / "s1", progress=False)
    cfg = tiny(stage=2, max_steps=2, init=str(s1.model_dir), zero_init_rewards=True, ema_decay=None)
    trainer = T.Trainer(cfg, d, tmp_path / "s2", rewards, progress=False)
    trainer._setup()
    before = weights(s1.model_dir)
    now = trainer.raw_model.unet.state_dict()
    assert all(torch.equal(before[f"unet.{k}"], v) for k, v in now.items())
    assert trainer.raw_model.reward is not None and trainer.raw_model.reward.config.rewards == "both"
    assert trainer.data.scores.shape == (16, 3) and trainer.data.pooled is not None
    res = T.train(cfg, d, tmp_path / "s2b", rewards, progress=False)
    assert (res.model_dir / "reward_encoder" / "config.json").exists()
    # the model records its data's most frequent failure sentence per perspective (what the knob asks with)
    from rewardedit_lib import dataset, formats
    from rewardedit_lib.pipeline import RewardEditPipeline

    recorded = RewardEditPipeline.from_pretrained(res.model_dir).low_reward_text
    assert recorded == dataset.common_failure_text(formats.read_rewards(rewards).items.values())
    assert json.loads((s1.model_dir / "model_index.json").read_text()).get("failure_reward_text") is None


def test_reward_lr_scale_gives_the_new_reward_modules_their_own_learning_rate(data, tmp_path):
    d, rewards = data
    trainer = T.Trainer(tiny(stage=2, lr=1e-3, reward_lr_scale=10.0), d, tmp_path / "s", rewards, progress=False)
    trainer._setup()
    groups = trainer.optimizer.param_groups
    reward_ids = {id(p) for p in trainer.raw_model.reward.parameters()}
    assert [g["initial_lr"] for g in groups] == [pytest.approx(1e-3), pytest.approx(1e-2)]  # before warm-up
    assert {id(p) for p in groups[1]["params"]} == reward_ids and not reward_ids & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(trainer.params)


def test_ema_power_sets_how_many_steps_the_ema_averages(data, tmp_path):
    """The EMA's warm-up decays at step s as 1 - (1 + s)^-power: a larger power averages over more steps."""
    d, _ = data
    decays = {}
    for power in (2 / 3, 0.8):
        trainer = T.Trainer(tiny(stage=1, max_steps=1, ema_decay=0.999, ema_power=power), d, tmp_path / f"p{power}",
                            progress=False)
        trainer._setup()
        decays[power] = trainer.ema.get_decay(900)
    assert decays[2 / 3] == pytest.approx(1 - 900 ** (-2 / 3)) and 1 / (1 - decays[2 / 3]) == pytest.approx(93, abs=1)
    assert 1 / (1 - decays[0.8]) == pytest.approx(231, abs=1)


def test_reward_warmup_trains_only_the_reward_modules_first_and_the_baseline_idles(data, tmp_path):
    d, rewards = data
    s1 = T.train(tiny(stage=1, max_steps=2, checkpoint_every=0), d, tmp_path / "s1", progress=False)
    start = weights(s1.model_dir)
    common = dict(stage=2, init=str(s1.model_dir), ema_decay=None, lr_schedule="constant", checkpoint_every=0)
    multi = T.train(tiny(max_steps=2, reward_warmup_steps=2, **common), d, tmp_path / "m", rewards, progress=False)
    w = weights(multi.model_dir)
    assert all(torch.equal(w[k], v) for k, v in start.items())  # the UNet waited
    assert any(k.startswith("reward.") and v.abs().sum() > 0 for k, v in w.items())  # the rewards learned
    base = tiny(max_steps=3, reward_warmup_steps=2, rewards="none", **common)
    trainer = T.Trainer(base, d, tmp_path / "b", progress=False)
    trainer._setup()
    assert [trainer.lr_scheduler.lr_lambdas[0](s) for s in (0, 1, 2)] == [0.0, 0.0, 1.0]
    w = weights(T.train(base, d, tmp_path / "b2", progress=False).model_dir)
    assert any(not torch.equal(w[k], v) for k, v in start.items())  # and trains after them
    with pytest.raises(ValueError, match="reward_warmup_steps"):
        tiny(max_steps=2, reward_warmup_steps=3)


def test_center_rewards_makes_the_perfect_rewards_leave_the_time_embedding_alone(data, tmp_path):
    from rewardedit_lib import models, text
    from rewardedit_lib.pipeline import RewardEditPipeline

    d, rewards = data
    res = T.train(tiny(stage=2, max_steps=2, center_rewards=True, checkpoint_every=0), d, tmp_path / "c", rewards,
                  progress=False)
    pipe = RewardEditPipeline.from_pretrained(res.model_dir)
    reward = pipe.reward_unet.reward
    assert reward.config.centered
    pooled = text.encode_text(pipe.tokenizer, pipe.text_encoder, [models.DEFAULT_REWARD_TEXT], "cpu").pooled
    with torch.no_grad():
        at_perfect = reward(torch.tensor([[5.0, 5.0, 5.0]]), pooled).time
        at_low = reward(torch.tensor([[0.0, 2.0, 2.0]]), pooled).time
    assert at_perfect.abs().max() < 1e-6 and at_low.abs().max() > 0


def test_unknown_rewards_without_instruction_hide_the_rewards_where_the_instruction_is_dropped(data, tmp_path):
    """With the switch, an example whose instruction is dropped trains with its rewards unknown: its loss does not
    depend on them; with the instruction it does. The switch is recorded in the reward encoder's config (the
    pipeline guides by it) and a model continued under the other setting is refused."""
    from dataclasses import replace

    d, rewards = data
    for flag in (True, False):
        trainer = T.Trainer(tiny(stage=2, unknown_rewards_without_instruction=flag), d, tmp_path / f"u{flag}",
                            rewards, progress=False)
        trainer._setup()
        trainer.model.eval()  # no dropout: the same inputs give the same loss
        assert bool(trainer.raw_model.reward.config.unknown_without_instruction) == flag
        plan = T.plan_step(0, trainer.data.n, trainer.config, trainer.noise_scheduler.config.num_train_timesteps)
        n = len(plan.indices)
        noise = torch.randn(n, trainer.raw_model.unet.config.out_channels, *trainer.data.latent_hw,
                            generator=torch.Generator().manual_seed(0))
        dropped = replace(plan, drop_text=torch.ones(n, dtype=torch.bool))
        kept = replace(plan, drop_text=torch.zeros(n, dtype=torch.bool))

        def losses() -> tuple[float, float]:
            with torch.no_grad():
                return trainer._micro_loss(dropped, noise, None).item(), trainer._micro_loss(kept, noise, None).item()

        before = losses()
        trainer.data.scores = 5.0 - trainer.data.scores  # other rewards for the same triplets
        after = losses()
        assert before[1] != after[1]  # heard with the instruction
        assert (before[0] == after[0]) == flag  # and, with the switch, not without it
    made = T.train(tiny(stage=2, max_steps=1, unknown_rewards_without_instruction=True), d, tmp_path / "m", rewards,
                   progress=False)
    with pytest.raises(T.TrainingError, match="unknown_without_instruction"):
        T.Trainer(tiny(stage=2, init=str(made.model_dir)), d, tmp_path / "c", rewards, progress=False)._setup()


def test_a_missing_rewards_entry_names_the_folder_or_is_skipped(data, tmp_path):
    d, rewards = data
    entries = json.loads(Path(rewards).read_text())
    gone = sorted(entries)[3]
    del entries[gone]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(entries))
    cfg = tiny(stage=2, max_steps=1, ema_decay=None)
    with pytest.raises(formats.DataError, match=gone):
        T.train(cfg, d, tmp_path / "a", partial, progress=False)
    trainer = T.Trainer(cfg.updated(missing_rewards="skip"), d, tmp_path / "b", partial, progress=False)
    trainer._setup()
    assert trainer.data.n == 15 and gone not in {t.id for t in trainer.data.triplets}
    with pytest.raises(T.TrainingError, match="rewards file"):
        T.train(cfg, d, tmp_path / "c", None, progress=False)


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(data, tmp_path):
    d, _ = data
    cfg = tiny(stage=1, max_steps=10, checkpoint_every=2)
    trainer = T.Trainer(cfg, d, tmp_path / "run", progress=False)
    calls = {"n": 0}
    real_step = trainer._step

    def poisoned(step):  # corrupt the model's output from the 6th step on (a real NaN through the loss)
        if step == 5:
            trainer.raw_model.unet.conv_out.register_forward_hook(lambda m, i, o: o * float("nan"))
        calls["n"] += 1
        return real_step(step)

    trainer._step = poisoned
    with pytest.raises(T.TrainingError, match=r"became nan at step 6.*checkpoint-000004"):
        trainer.train()
    assert [p.name for p in T.list_checkpoints(tmp_path / "run")][-1] == "checkpoint-000004"
    assert not (tmp_path / "run" / "model").exists()
    good = weights(tmp_path / "run" / "checkpoints" / "checkpoint-000004" / "model")
    assert all(torch.isfinite(v).all() for v in good.values())


# -- exact resume after kill -9 -------------------------------------------------------------------
RUNNER = textwrap.dedent("""
    import json, os, sys, time, torch
    torch.set_num_threads(1)
    from rewardedit_lib import train as T
    cfg = T.TrainConfig.from_json(json.loads(sys.argv[1]))
    slow = float(sys.argv[5])
    limit = float(os.environ["TEST_TIME_LIMIT"]) if "TEST_TIME_LIMIT" in os.environ else None
    T.Trainer(cfg, sys.argv[2], sys.argv[3], sys.argv[4] if sys.argv[4] != "-" else None, progress=False,
              step_callback=lambda step, row: time.sleep(slow)).train(resume=sys.argv[6] if len(sys.argv) > 6 else None,
                                                                      time_limit_s=limit)
""")


def _runner(cfg, d, out, rewards, slow=0.0, resume=None):
    script = Path(out).parent / "runner.py"
    script.write_text(RUNNER)
    argv = [sys.executable, str(script), json.dumps(cfg.to_json()), str(d), str(out), str(rewards or "-"), str(slow)]
    return argv + ([resume] if resume else [])


def test_kill_9_then_resume_ends_with_the_same_weights_as_an_uninterrupted_run(data, tmp_path):
    d, rewards = data
    cfg = tiny(stage=2, max_steps=9, checkpoint_every=3, keep_checkpoints=5, reward_dropout=0.2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_runner(cfg, d, tmp_path / "straight", rewards), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_runner(cfg, d, tmp_path / "killed", rewards, slow=0.4), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not T.list_checkpoints(tmp_path / "killed") and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = T.list_checkpoints(tmp_path / "killed")
    assert done and done[-1].name in ("checkpoint-000003", "checkpoint-000006")
    assert not (tmp_path / "killed" / "model").exists()  # it really died mid-run
    subprocess.run(_runner(cfg, d, tmp_path / "killed", rewards, resume="latest"), check=True, env=env,
                   capture_output=True)

    a, b = weights(tmp_path / "straight" / "model"), weights(tmp_path / "killed" / "model")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    la = [r["loss"] for r in T.read_metrics(tmp_path / "straight")]
    lb = [r["loss"] for r in T.read_metrics(tmp_path / "killed")]
    assert len(lb) == 9 and torch.allclose(torch.tensor(la), torch.tensor(lb), atol=1e-6)


def test_a_time_limit_stops_at_a_step_saves_and_resumes_to_the_uninterrupted_run(data, tmp_path):
    d, _ = data
    cfg = tiny(stage=1, max_steps=5, checkpoint_every=2)
    straight = T.train(cfg, d, tmp_path / "straight", progress=False)
    stopped = T.train(cfg, d, tmp_path / "run", progress=False, time_limit_s=0)  # out of time after step 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert stopped.steps == 1 and summary["steps"] == 1 and summary["stopped_early"] is True
    assert [c.name for c in T.list_checkpoints(tmp_path / "run")] == ["checkpoint-000001"]
    assert (tmp_path / "run" / "model" / "model_index.json").exists()  # a usable model of step 1
    assert [r["step"] for r in T.read_metrics(tmp_path / "run")] == [1]
    done = T.train(cfg, d, tmp_path / "run", resume="latest", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert done.steps == 5 and summary["stopped_early"] is False and summary["resumed_from"] == 1
    assert summary["wall_s_total"] >= summary["wall_s"] > 0
    a, b = weights(tmp_path / "straight" / "model"), weights(tmp_path / "run" / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    la = [r["loss"] for r in straight.metrics]
    lb = [r["loss"] for r in T.read_metrics(tmp_path / "run")]
    assert torch.allclose(torch.tensor(la), torch.tensor(lb), atol=1e-6)


def test_master_weights_train_bf16_weights_from_an_fp32_copy_and_resume_exactly(data, tmp_path):
    """bf16 weights in the model (no autocast casts), fp32 in the optimizer, the checkpoints and the saved
    model: the run learns like the fp32 one, and a stopped run resumes to the same fp32 weights."""
    d, rewards = data
    cfg = tiny(stage=2, max_steps=6, checkpoint_every=2, mixed_precision="bf16", master_weights=True,
               reward_lr_scale=3.0)
    trainer = T.Trainer(cfg, d, tmp_path / "probe", rewards, progress=False)
    trainer._setup()
    assert {p.dtype for p in trainer.raw_model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.params} == {torch.float32} and len(trainer.params) == len(
        [p for p in trainer.raw_model.parameters() if p.requires_grad])
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(0.0), pytest.approx(0.0)]  # warm-up
    trainer._step(0)
    trainer._step(1)
    for p, m in zip(trainer.master.params, trainer.master.tensors):  # the model holds the master, rounded
        assert p.dtype == torch.bfloat16 and torch.equal(p.detach(), m.detach().to(torch.bfloat16))
    assert all(p.grad is None for p in trainer.raw_model.parameters())

    straight = T.train(cfg, d, tmp_path / "straight", rewards, progress=False)
    fp32 = T.train(cfg.updated(mixed_precision="no", master_weights=False), d, tmp_path / "fp32", rewards,
                   progress=False)
    lb, lf = [r["loss"] for r in straight.metrics], [r["loss"] for r in fp32.metrics]
    assert all(abs(a - b) < 0.05 * b + 1e-3 for a, b in zip(lb, lf)), (lb, lf)
    saved = weights(tmp_path / "straight" / "model")
    assert {v.dtype for v in saved.values()} == {torch.float32}
    # the saved model is the fp32 EMA, not a bf16 rounding of it
    assert any((v != v.to(torch.bfloat16).float()).any() for v in saved.values())

    T.train(cfg, d, tmp_path / "run", rewards, progress=False, time_limit_s=0)  # stops after step 1
    T.train(cfg, d, tmp_path / "run", rewards, resume="latest", progress=False)
    resumed = weights(tmp_path / "run" / "model")
    assert max((saved[k] - resumed[k]).abs().max().item() for k in saved) < 1e-6


def test_master_weights_need_bf16():
    with pytest.raises(ValueError, match="master_weights"):
        tiny(master_weights=True)
    with pytest.raises(ValueError, match="master_weights"):
        tiny(master_weights=True, mixed_precision="fp16")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_compiled_model_trains_like_the_eager_one(data, tmp_path, mode):
    """torch.compile (on a CPU: ~3 min of inductor compilation, hence slow) follows the eager run's losses;
    on CUDA, reduce-overhead replays the steps as CUDA graphs (gpu_session.sh: COMPILE_MODE)."""
    d, _ = data
    runs = {}
    for name, extra in (("eager", {}), ("compiled", {"compile": True, "compile_mode": mode})):
        T.train(tiny(stage=1, max_steps=3, checkpoint_every=0, **extra), d, tmp_path / name, progress=False)
        runs[name] = [r["loss"] for r in T.read_metrics(tmp_path / name)]
    # the first step is the same computation; after it, fused kernels round differently and Adam's first
    # steps (about lr * sign(grad)) carry that into the weights
    assert runs["compiled"][0] == pytest.approx(runs["eager"][0], rel=1e-4)
    assert runs["compiled"] == pytest.approx(runs["eager"], rel=0.1)


def test_ensure_trained_reuses_a_run_recorded_before_a_setting_existed(data, tmp_path):
    """A course folder trained before a TrainConfig field was added is the same run, not "another run"."""
    d, _ = data
    cfg = tiny(stage=1, max_steps=1, checkpoint_every=0)
    out = tmp_path / "run"
    first = T.ensure_trained(cfg, d, out, progress=False)
    stamp = (out / "summary.json").stat().st_mtime_ns
    record = json.loads((out / "run.json").read_text())
    del record["compile_mode"], record["master_weights"]  # as a run.json from before those settings reads
    (out / "run.json").write_text(json.dumps(record))
    again = T.ensure_trained(cfg, d, out, progress=False)
    assert again.final_loss == first.final_loss and (out / "summary.json").stat().st_mtime_ns == stamp  # not retrained
    with pytest.raises(T.TrainingError, match="compile_mode"):  # a non-default value still differs
        T.ensure_trained(tiny(stage=1, max_steps=1, checkpoint_every=0, compile_mode="max-autotune"), d, out,
                         progress=False)


def test_a_run_from_the_bundled_stage1_is_recorded_by_its_weights_not_by_the_kits_install_path(data, tmp_path,
                                                                                                monkeypatch):
    """A course folder outlives the kit's install (Colab: the folder on Drive, the kit reinstalled each
    session): the same bundled model elsewhere reuses the run, another bundled model does not."""
    from rewardedit_lib.train import runs

    d, rewards = data
    out = tmp_path / "run"
    first = T.ensure_trained(tiny(stage=2, max_steps=1, init=str(T.TOY_STAGE1)), d, out, rewards, progress=False)
    stamp = (out / "summary.json").stat().st_mtime_ns
    recorded = json.loads((out / "run.json").read_text())["init"]
    assert recorded == f"bundled:toy-stage1@{runs.model_digest(T.TOY_STAGE1)}"
    assert str(T.TOY_STAGE1.parent) not in (out / "run.json").read_text()

    moved = tmp_path / "elsewhere" / "rewardedit_lib" / "assets" / "toy-stage1"  # the kit installed elsewhere
    shutil.copytree(T.TOY_STAGE1, moved)
    (moved / "README.md").write_text("a re-measured card")  # the card is not the model
    monkeypatch.setattr(runs, "TOY_STAGE1", moved)
    again = T.ensure_trained(tiny(stage=2, max_steps=1, init=str(moved)), d, out, rewards, progress=False)
    assert again.final_loss == first.final_loss and (out / "summary.json").stat().st_mtime_ns == stamp

    weights_file = moved / "unet" / "diffusion_pytorch_model.safetensors"
    raw = bytearray(weights_file.read_bytes())
    raw[-1] ^= 1  # another bundled model
    weights_file.write_bytes(bytes(raw))
    with pytest.raises(T.TrainingError, match="differs in init"):
        T.ensure_trained(tiny(stage=2, max_steps=1, init=str(moved)), d, out, rewards, progress=False)

    monkeypatch.undo()  # a run.json written before digests named the bundled model by its path: still this run
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "init": str(T.TOY_STAGE1)}))
    T.ensure_trained(tiny(stage=2, max_steps=1, init=str(T.TOY_STAGE1)), d, out, rewards, progress=False)
    assert (out / "summary.json").stat().st_mtime_ns == stamp


def test_ensure_trained_resumes_a_run_that_a_time_limit_stopped(data, tmp_path):
    d, _ = data
    cfg = tiny(stage=1, max_steps=3, checkpoint_every=0)
    out = tmp_path / "run"
    T.train(cfg, d, out, progress=False, time_limit_s=0)  # a model, a summary and a checkpoint of step 1
    (out / "run.json").write_text(json.dumps(T._run_record(cfg, d, None)))  # as ensure_trained marks its runs
    result = T.ensure_trained(cfg, d, out, progress=False)
    assert result.steps == 3 and result.resumed_from == 1


def test_resume_refuses_other_settings_and_a_missing_checkpoint(data, tmp_path):
    d, _ = data
    T.train(tiny(stage=1, max_steps=2, checkpoint_every=1), d, tmp_path / "run", progress=False)
    with pytest.raises(T.TrainingError, match="lr"):
        T.train(tiny(stage=1, max_steps=4, lr=5e-4), d, tmp_path / "run", resume="latest", progress=False)
    with pytest.raises(T.TrainingError, match="no checkpoint"):
        T.train(tiny(stage=1, max_steps=4), d, tmp_path / "empty", resume="latest", progress=False)
    # a checkpoint that lost its weights is named, not read as a Hub id (which would report a network error)
    latest = T.list_checkpoints(tmp_path / "run")[-1]
    shutil.rmtree(latest / T.MODEL_SUBDIR)
    with pytest.raises(T.TrainingError, match=r"incomplete \(missing model/unet\)"):
        T.train(tiny(stage=1, max_steps=4), d, tmp_path / "run", resume="latest", progress=False)


# -- several processes ----------------------------------------------------------------------------
def test_two_gloo_processes_train_on_the_same_global_batch_as_one(data, tmp_path):
    d, rewards = data
    # Stage 2 without attention dropout randomness differences: reward_dropout 0 and the reward encoder's
    # own dropout draws per process differ, so compare stage 1 (deterministic given the plan) tightly.
    cfg = tiny(stage=1, max_steps=4, batch_size=8, grad_accum=2, ema_decay=None, validation_examples=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_runner(cfg, d, tmp_path / "one", None), check=True, env=env, capture_output=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(29500 + os.getpid() % 1000), *(_runner(cfg, d, tmp_path / "two", None)[1:])],
                         env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    config = json.loads((tmp_path / "two" / "train_config.json").read_text())
    assert config["num_processes"] == 2
    l1 = torch.tensor([r["loss"] for r in T.read_metrics(tmp_path / "one")])
    l2 = torch.tensor([r["loss"] for r in T.read_metrics(tmp_path / "two")])
    assert len(l1) == len(l2) == 4 and torch.allclose(l1, l2, rtol=1e-4, atol=1e-5), (l1, l2)
    a, b = weights(tmp_path / "one" / "model"), weights(tmp_path / "two" / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    # a time limit stops both processes at the same step (process 0's clock), with no process left waiting
    stopped = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_port", str(29500 + (os.getpid() + 1) % 1000),
                              *(_runner(cfg, d, tmp_path / "limited", None)[1:])],
                             env={**env, "TEST_TIME_LIMIT": "0"}, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    summary = json.loads((tmp_path / "limited" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["stopped_early"] and summary["num_processes"] == 2
    assert (tmp_path / "limited" / "model" / "model_index.json").exists()
    # bf16 weights with an fp32 master copy: the gradients are all-reduced in bf16, the updates made in fp32
    mw = cfg.updated(mixed_precision="bf16", master_weights=True)
    subprocess.run(_runner(mw, d, tmp_path / "mw-one", None), check=True, env=env, capture_output=True)
    mw2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(29500 + (os.getpid() + 2) % 1000),
                          *(_runner(mw, d, tmp_path / "mw-two", None)[1:])], env=env, capture_output=True, text=True)
    assert mw2.returncode == 0, mw2.stderr[-3000:]
    m1 = torch.tensor([r["loss"] for r in T.read_metrics(tmp_path / "mw-one")])
    m2 = torch.tensor([r["loss"] for r in T.read_metrics(tmp_path / "mw-two")])
    assert len(m2) == 4 and torch.allclose(m1, m2, rtol=2e-2, atol=1e-3) and torch.allclose(m1, l1, rtol=5e-2), (
        m1, m2, l1)


def test_the_train_throughput_benchmark_runs_tiny_and_prints_the_ratio(capsys):
    """A smoke test of benchmarks/train_throughput.py (no timing assertion: CPU timings are noise)."""
    import importlib.util
    import re

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--tiny", "--batch", "2", "--steps", "2", "--warmup", "1", "--resolution", "64"])
    text = capsys.readouterr().out
    assert re.search(r"^batch   2: kit +\d+\.\d\d img/s \(no, \d+ TFLOP/s\); reference +\d+\.\d\d img/s .* "
                     r"ratio kit/reference = \d+\.\d\dx", text, re.M), text
    r = out["results"]["2"]
    assert r["kit"]["images_per_s"] > 0 and r["reference"]["images_per_s"] > 0 and r["ratio"] > 0
    # forward + backward of a UNet is several times its forward: at least 2x the conv/matmul work of one pass
    assert out["flops_per_image"] > 1e8 and r["kit"]["mfu"] is None  # no utilisation figure without a GPU peak


def test_the_train_throughput_benchmark_times_the_master_weights_variant(capsys):
    """`--set master_weights=true` (what the GPU session times against the default) runs the bf16 model
    with its fp32 master copy, also on a CPU."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--tiny", "--batch", "2", "--steps", "2", "--warmup", "1", "--resolution", "64",
                      "--no-reference", "--set", "master_weights=true"])
    r = out["results"]["2"]
    assert out["changes"] == {"master_weights": True} and r["kit"]["images_per_s"] > 0
    assert r["kit"]["precision"] == "bf16", r["kit"]


def test_loss_lines_writes_a_line_every_n_steps_and_at_the_end():
    lines: list[str] = []
    cb = T.loss_lines("multi-reward", 250, every=100, write=lines.append)
    for step in range(10, 251, 10):
        cb(step, {"loss": step / 1000, "images_per_s": 120.4})
    assert lines == ["multi-reward: step 100/250  loss 0.1000  (120 img/s)",
                     "multi-reward: step 200/250  loss 0.2000  (120 img/s)",
                     "multi-reward: step 250/250  loss 0.2500  (120 img/s)"]


def test_ensure_trained_under_a_time_limit_saves_raises_and_resumes(data, tmp_path):
    """Notebooks 04 and 06 pass their ``time_limit``: a stopped run raises (no later cell evaluates a
    half-trained model), keeps its checkpoint, and the same call finishes it exactly."""
    d, _ = data
    cfg = tiny(stage=1, max_steps=3, checkpoint_every=0)
    out = tmp_path / "run"
    with pytest.raises(T.TimeLimitReached, match=r"step 1 of 3; the checkpoint is saved: run the same cell again"):
        T.ensure_trained(cfg, d, out, progress=False, time_limit_s=0.001)
    with pytest.raises(T.TimeLimitReached, match="no training time left.*resume from step 1"):
        T.ensure_trained(cfg, d, out, progress=False, time_limit_s=0)
    assert [c.name for c in T.list_checkpoints(out)] == ["checkpoint-000001"]
    result = T.ensure_trained(cfg, d, out, progress=False, time_limit_s=None)
    assert result.steps == 3 and result.resumed_from == 1
    straight = T.train(cfg, d, tmp_path / "straight", progress=False)
    a, b = weights(tmp_path / "straight" / "model"), weights(out / "model")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert T.ensure_trained(cfg, d, out, progress=False, time_limit_s=0).steps == 3  # finished: no time needed
    assert straight.steps == 3
