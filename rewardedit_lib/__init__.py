"""RewardEdit Kit: a course and reproduction kit for "Multi-Reward as Condition for Instruction-based
Image Editing" (Gu et al., ICLR 2025).

Modules, lowest first (nothing imports anything above it):

* :mod:`~rewardedit_lib.plumbing` atomic writes, JSON / JSONL reading, image conversion
* :mod:`~rewardedit_lib.formats`  the triplet record; InstructPix2Pix folders, RewardEdit json, Real-Edit
* :mod:`~rewardedit_lib.toyworld` the toy editing world with a correct and a flawed editor
* :mod:`~rewardedit_lib.judge`    prompts, the openai client, the answer cache, annotation, the toy judge and its server
* :mod:`~rewardedit_lib.reward`   the reward encoder, composed onto a stock diffusers UNet
* :mod:`~rewardedit_lib.models`   toy and sd15 configs, stage 1 / stage 2 construction, the converter
* :mod:`~rewardedit_lib.guidance` the guidance branches and formula (text, image, reward guidance)
* :mod:`~rewardedit_lib.pipeline` inference with reward conditions
* :mod:`~rewardedit_lib.train`    the accelerate trainer (stage 1 and 2), presets, exact resume
* :mod:`~rewardedit_lib.evaluate` Real-Edit evaluation: edits, verdicts, tables with CIs, comparisons
* :mod:`~rewardedit_lib.knob`     the reward knob: does a model obey the rewards it is asked for?
* :mod:`~rewardedit_lib.ablation` the ablation grid (trained switches, inference-time reward sweeps) and its table
* :mod:`~rewardedit_lib.runtime`  device detection and the environment check
* :mod:`~rewardedit_lib.viz`      figures and tables, one module per notebook it serves
* :mod:`~rewardedit_lib.report`   the course report (one HTML page from the recorded results and figures)
* :mod:`~rewardedit_lib.kernels`  a notebook's kernel started and warmed while the notebook before it runs
* :mod:`~rewardedit_lib.course`   profiles and the papermill course runner
* :mod:`~rewardedit_lib.cli`      the ``rewardedit`` command
"""

__version__ = "0.1.0"
