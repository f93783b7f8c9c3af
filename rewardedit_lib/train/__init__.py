"""The trainer: stage 1 (InstructPix2Pix) and stage 2 (multi-reward), one code path on accelerate.

What one optimizer step does (the InstructPix2Pix objective, Brooks et al. Sec. 3.2; the paper's stage 2
only adds the rewards):

1. take the next ``batch_size`` examples of a fixed, seeded order;
2. noise the *edited* image's latent to a random timestep (the schedule the model folder carries);
3. condition on the instruction (frozen CLIP hidden states), the *source* image's latent (concatenated to
   the noisy latent) and -- stage 2 -- the three scores and the pooled feedback text;
4. classifier-free-guidance dropout exactly as diffusers' InstructPix2Pix trainer: with probability ``p``
   drop the text only, ``p`` both, ``p`` the image only (each condition is dropped with 2p); beyond the
   paper, ``reward_dropout`` marks an example's rewards unknown, so one model also edits without them;
5. regress the model's prediction on its target (the noise, ``v`` or the clean latent, as the scheduler's
   ``prediction_type`` says) with a mean-squared error; clip, step AdamW, update the EMA.

Why the step is a pure function of ``(seed, step)``: the data order, timesteps, noise, dropout masks and
the torch RNG of every step are drawn from generators seeded by the step number, for the *global* batch,
and each process takes its slice. So a run resumed from a checkpoint (``resume="latest"``), even after a
``kill -9``, ends with the same weights as an uninterrupted one, and 2 processes train on exactly the
batches 1 process would (the gradients are averaged across processes: the same mean).

What is never computed: the frozen parts run once, before training, when ``cache=True`` (VAE latents and
text embeddings; the toy world has no VAE) -- and nothing whose output is unused (the reference runs a
CLIP ViT-H image encoder every step and never reads it).

Outputs in ``out_dir``: ``model/`` (a full :class:`~rewardedit_lib.pipeline.RewardEditPipeline` folder,
EMA weights when EMA is on), ``checkpoints/checkpoint-NNNNNN/`` (the last ``keep_checkpoints``),
``metrics.jsonl`` (one line per ``log_every`` steps), ``samples/step-NNNNNN.png`` (the validation grid:
source | training target | the model's edit at the best reward), ``train_config.json``, ``summary.json``.

The modules, one idea each (this package re-exports their public names: ``from rewardedit_lib import train``,
then ``train.preset``, ``train.train``, ``train.ensure_trained``, ...):

* :mod:`~rewardedit_lib.train.errors`       :class:`TrainingError`, :class:`TimeLimitReached`
* :mod:`~rewardedit_lib.train.config`       :class:`TrainConfig`, every setting of a run, validated
* :mod:`~rewardedit_lib.train.presets`      the named presets, read from ``profiles/train_presets.yaml``
* :mod:`~rewardedit_lib.train.components`   the model a run starts from and the frozen parts around it
* :mod:`~rewardedit_lib.train.data`         the triplets as tensors, the frozen parts' outputs cached
* :mod:`~rewardedit_lib.train.step_plan`    every random choice of a step, a pure function of (seed, step)
* :mod:`~rewardedit_lib.train.checkpoints`  checkpoint names, atomic writes, listing, resume checks
* :mod:`~rewardedit_lib.train.metrics`      ``metrics.jsonl``, ``summary.json``, the live loss lines
* :mod:`~rewardedit_lib.train.trainer`      :class:`Trainer` (setup, the step, the loop) and :func:`train`
* :mod:`~rewardedit_lib.train.runs`         :func:`ensure_trained`: train, reuse or resume a run folder;
  :func:`ensure_trained_all`: several, side by side on a CPU's cores
"""

from .checkpoints import CHECKPOINT_PREFIX, MODEL_SUBDIR, find_checkpoint, list_checkpoints
from .components import Components, load_components
from .config import COMPILE_MODES, LR_SCHEDULES, PRECISIONS, STAGES, TrainConfig
from .data import TrainingData, image_tensor, load_triplets
from .errors import TimeLimitReached, TrainingError
from .metrics import loss_lines, read_metrics
from .presets import PRESETS, PRESETS_FILE, TOY_STAGE1, load_presets, preset
from .runs import _run_record  # noqa: F401 -- not public: tests write run.json as ensure_trained does
from .runs import RunSpec, ensure_trained, ensure_trained_all
from .step_plan import StepPlan, example_order, plan_step
from .trainer import Trainer, TrainResult, train, training_target

__all__ = [
    # errors and configuration
    "TrainingError", "TimeLimitReached", "TrainConfig", "STAGES", "PRECISIONS", "LR_SCHEDULES", "COMPILE_MODES",
    # presets
    "PRESETS", "PRESETS_FILE", "TOY_STAGE1", "load_presets", "preset",
    # the model and the data
    "Components", "load_components", "TrainingData", "image_tensor", "load_triplets",
    # the per-step plan
    "StepPlan", "example_order", "plan_step",
    # checkpoints and the log
    "CHECKPOINT_PREFIX", "MODEL_SUBDIR", "find_checkpoint", "list_checkpoints", "loss_lines", "read_metrics",
    # training
    "Trainer", "TrainResult", "train", "training_target", "ensure_trained", "RunSpec", "ensure_trained_all",
]
