"""Make the kit's bundled toy stage-1 model (``rewardedit_lib/assets/toy-stage1``) with the kit's own commands.

    .venv/bin/python tools/make_toy_stage1.py                  # regenerate the bundled model (~35 min, 2 cores)
    .venv/bin/python tools/make_toy_stage1.py --out DIR        # somewhere else (the slow test does this)
    .venv/bin/python tools/make_toy_stage1.py --from-run RUN   # bundle a run that already finished
    python tools/make_toy_stage1.py --profile toy-stage1-gpu --budget-s 480 --steps 50000   # on a GPU
    ... --flaw-rates 0.4,0.4,0.4                               # a world with more flawed triplets

It runs exactly the two commands its card documents --

    rewardedit toy-data --out WORK/data --n N --seed 0
    rewardedit train --profile PROFILE --stage 1 --data WORK/data --out WORK/run --no-progress

-- and copies what the course needs into the asset folder: the pipeline folder (``model_index.json``,
``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), ``metrics.jsonl``, ``train_config.json``,
the first and last validation grids, and a ``README.md`` card with the measured wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSET = ROOT / "rewardedit_lib" / "assets" / "toy-stage1"
SEED = 0
DEFAULT_N = {"toy-stage1": 5000, "toy-stage1-gpu": 40000}

CARD = """# Toy stage-1 model (InstructPix2Pix on the flawed toy world)

The start of the course's stage-2 experiment (notebook 04): both the no-reward baseline and the
multi-reward model are fine-tuned from this model, as the paper fine-tunes its stage-1 InstructPix2Pix.

* **Data**: {n} toy triplets, stream seed {seed} (`rewardedit toy-data --n {n} --seed {seed}{rates_flag}`), flaw
  rates {rates_text}: the model learned the flaws too. `toy_data.json` is the data's
  generator manifest (generator version, seed, size, flaw rates).
* **Model**: the kit's `toy` config -- a pixel-space diffusers `UNet2DConditionModel` (6 channels in:
  noisy image + source; blocks 16/32/64; {unet_params:,} parameters) and the toy CLIP text encoder
  (frozen, random init from seed 0 on the training device: a GPU draws other numbers than a CPU, so the
  folder carries it). Predicts the clean image (`prediction_type="sample"`).
* **Training**: preset `{profile}` -- {steps} steps, batch {batch}, AdamW lr {lr} (warm-up {warmup}),
  EMA {ema} (these weights are the EMA), conditioning dropout {cdrop}; final loss {loss:.4f} (mean of the
  last logged steps).
* **Made by** (wall time {wall:.0f} s on {where}):

```
rewardedit toy-data --out WORK/data --n {n} --seed {seed}{rates_flag}
rewardedit train --profile {profile} --stage 1 --data WORK/data --out WORK/run --no-progress{steps_flag}
python tools/make_toy_stage1.py --from-run WORK/run --profile {profile}   # copies model/ + logs here
```

`tools/make_toy_stage1.py` runs all three; `pytest -m slow tests/test_toy_stage1.py` regenerates the model
and checks it against this one.
"""


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _final_loss(run_dir: Path, summary: dict) -> float:
    """The last metrics row's loss (a mean over ``log_every`` steps): the summary's is one step's, noisier."""
    from rewardedit_lib.train import read_metrics

    rows = read_metrics(run_dir)
    return rows[-1]["loss"] if rows else summary["final_loss"]


def bundle(run_dir: Path, out: Path, where: str, note: str | None = None, profile: str = "toy-stage1") -> Path:
    """Copy a finished stage-1 run into an asset folder and write its card."""
    cfg = json.loads((run_dir / "train_config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    manifest = run_dir / "toy_data.json"  # a run brought back from a GPU session carries its data's manifest
    if not manifest.is_file() and cfg.get("data_dir"):
        manifest = Path(cfg["data_dir"]) / "_truth" / "generator.json"
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: the training data's generator manifest is missing (the card states its "
                         "flaw rates); bundle a run whose --data folder is still there")
    world = json.loads(manifest.read_text())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / "model", tmp)
    shutil.copy2(run_dir / "metrics.jsonl", tmp / "metrics.jsonl")
    (tmp / "toy_data.json").write_text(json.dumps(world, indent=1, sort_keys=True) + "\n")
    public = {k: v for k, v in cfg.items() if k not in ("data_dir", "rewards_path")}
    if summary["steps"] != cfg["max_steps"]:  # `--time-limit` stopped it: it is the run with --steps N ...
        if not cfg["lr_schedule"].startswith("constant"):  # ... when the schedule does not depend on max_steps
            raise SystemExit(f"{run_dir} stopped at step {summary['steps']} of {cfg['max_steps']} with the "
                             f"{cfg['lr_schedule']!r} schedule: finish it (--resume latest) before bundling")
        public["max_steps"] = summary["steps"]
    (tmp / "train_config.json").write_text(json.dumps(public, indent=1) + "\n")
    grids = sorted((run_dir / "samples").glob("step-*.png"))
    if grids:
        (tmp / "samples").mkdir()
        for g in {grids[0], grids[-1]}:
            shutil.copy2(g, tmp / "samples" / g.name)
    from safetensors.torch import load_file

    from rewardedit_lib.train import PRESETS

    steps = summary["steps"]  # a run stopped by --time-limit reached fewer than max_steps: --steps N remakes it
    steps_flag = "" if steps == PRESETS[profile]["max_steps"] else f" --steps {steps}"

    from rewardedit_lib.toyworld import FlawRates

    rates = FlawRates(**world["flaw_rates"])
    default = rates == FlawRates()  # the world's defaults need no flag
    rates_flag = "" if default else f" --flaw-rates {rates.following},{rates.preserving},{rates.quality}"
    rates_text = (f"{rates.following:.0%} following / {rates.preserving:.0%} preserving / {rates.quality:.0%} "
                  "quality failures" + (" (the default)" if default else ""))
    unet_params = sum(t.numel() for t in load_file(str(tmp / "unet" / "diffusion_pytorch_model.safetensors")).values())
    (tmp / "README.md").write_text(CARD.format(
        n=cfg["examples"], seed=world.get("seed", SEED), rates_flag=rates_flag, rates_text=rates_text, profile=profile, steps_flag=steps_flag, unet_params=unet_params, steps=steps, batch=cfg["batch_size"], lr=cfg["lr"],
        warmup=cfg["warmup_steps"], ema=cfg["ema_decay"], cdrop=cfg["conditioning_dropout"],
        loss=_final_loss(run_dir, summary), wall=summary.get("wall_s_total", summary["wall_s"]), where=where) + (f"\n## Measured\n\n{note}\n" if note else ""))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ASSET, help=f"asset folder to write (default {ASSET})")
    ap.add_argument("--work", type=Path, default=None, help="folder for the data and the run (default: temporary)")
    ap.add_argument("--from-run", type=Path, default=None, help="bundle this finished run instead of training")
    ap.add_argument("--where", default=None, help="machine description for the card (default: measured here)")
    ap.add_argument("--note", default=None, help="a measured result to add to the card (with its command)")
    ap.add_argument("--profile", default="toy-stage1", choices=sorted(DEFAULT_N), help="training preset")
    ap.add_argument("--n", type=int, default=None, help="toy triplets (default: 5000 on CPU, 40000 on GPU)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="train for at most this many seconds (`train --time-limit`: it stops at a step "
                         "boundary and saves); the card gives the steps reached, which `--steps` remakes")
    ap.add_argument("--data", type=Path, default=None,
                    help="use this folder, made by `rewardedit toy-data --n N --seed 0`, instead of making it")
    ap.add_argument("--flaw-rates", default=None,
                    help="following,preserving,quality flaw rates of the toy data it makes (default 0.2 each)")
    args = ap.parse_args(argv)
    import os
    import platform

    where = args.where or f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if args.from_run:
        print(bundle(args.from_run, args.out, where, args.note, args.profile))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        exe = [sys.executable, "-m", "rewardedit_lib.cli"]
        t0 = time.perf_counter()
        n = args.n or DEFAULT_N[args.profile]
        data = args.data or work / "data"
        if args.data is None:
            run([*exe, "toy-data", "--out", str(data), "--n", str(n), "--seed", str(SEED),
                 "--workers", str(max(1, (os.cpu_count() or 1) - 1)),
                 *(["--flaw-rates", args.flaw_rates] if args.flaw_rates else [])])
        train = [*exe, "train", "--profile", args.profile, "--stage", "1", "--data", str(data),
                 "--out", str(work / "run"), "--no-progress"]
        run([*train, *(["--steps", str(args.steps)] if args.steps else []),
             *(["--time-limit", str(args.budget_s)] if args.budget_s else [])])
        print(f"trained in {time.perf_counter() - t0:.0f} s")
        print(bundle(work / "run", args.out, where, args.note, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
