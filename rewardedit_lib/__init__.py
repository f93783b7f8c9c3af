"""RewardEdit Kit: a course and reproduction kit for "Multi-Reward as Condition for Instruction-based
Image Editing" (Gu et al., ICLR 2025).

Modules, lowest first (nothing imports anything above it):

* :mod:`~rewardedit_lib.formats`  the triplet record; InstructPix2Pix folders, RewardEdit json, Real-Edit
* :mod:`~rewardedit_lib.toyworld` the toy editing world with a correct and a flawed editor
* :mod:`~rewardedit_lib.runtime`  device detection and the environment check
* :mod:`~rewardedit_lib.viz`      grids, plots, the dataset browser
* :mod:`~rewardedit_lib.course`   profiles and the papermill course runner
* :mod:`~rewardedit_lib.cli`      the ``rewardedit`` command
"""

__version__ = "0.1.0"
