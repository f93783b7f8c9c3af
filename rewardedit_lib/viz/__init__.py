"""Figures and widgets: triplet grids, score and flaw plots, the correlation heatmap, the dataset browser,
the ablation sweeps and the reward knob.

Why only drawing here: every number shown comes from :mod:`rewardedit_lib.dataset`, so a figure and the
``rewardedit validate`` text can never disagree, and the numbers are tested without a plotting backend.

Every function returns its figure instead of showing it. Figures are created with pyplot (so Jupyter's
inline backend knows how to render them) and closed before they are returned: a notebook cell that ends
with the figure shows it exactly once, and a script or test that makes hundreds of them leaks nothing.

One module per notebook it serves (this package re-exports their public names, so notebooks write
``from rewardedit_lib import viz``, then ``viz.triplet_grid``, ``viz.browser``, ...):

* :mod:`~rewardedit_lib.viz.common`          shared by several notebooks: colours, text and HTML tables,
  image rows, the triplet grid (00-02), the widgets check
* :mod:`~rewardedit_lib.viz.annotation`      01: the judge's agreement with the ground truth
* :mod:`~rewardedit_lib.viz.dataset`         02: score histograms, flaw rates, correlations, the browser
* :mod:`~rewardedit_lib.viz.reward_encoder`  03: the signal diagram, score embedding, reward attention, tables
* :mod:`~rewardedit_lib.viz.training`        04: loss curves, the trainer's validation grids
* :mod:`~rewardedit_lib.viz.evaluation`      05 (and 06): edits side by side, yes-rates with CIs
* :mod:`~rewardedit_lib.viz.ablations`       06: the reward sweeps, the measured and the live reward knob

matplotlib is imported with the package (as before the split); ipywidgets and IPython only inside the
functions that build a widget or a table, so a script without them still draws every figure.
"""

from .ablations import RewardKnob, knob_bars, reward_knob, sweep_edit_grid, sweep_panels, sweep_plot
from .annotation import agreement_figure
from .common import (PERSPECTIVE_COLORS, image_row, phrase_table, text_table, triplet_grid,
                     widgets_unavailable_reason)
from .dataset import browser, correlation_heatmap, flaw_rate_bars, score_histograms
from .evaluation import edit_comparison, perspective_bars
from .reward_encoder import (ablation_table, branch_table, parameter_table, reward_attention_figure,
                             score_embedding_figure, signal_diagram, source_code)
from .training import image_files, loss_curves

__all__ = [
    # shared by several notebooks
    "PERSPECTIVE_COLORS", "image_row", "phrase_table", "text_table", "triplet_grid", "widgets_unavailable_reason",
    # 01 annotation
    "agreement_figure",
    # 02 dataset
    "browser", "correlation_heatmap", "flaw_rate_bars", "score_histograms",
    # 03 reward encoder
    "ablation_table", "branch_table", "parameter_table", "reward_attention_figure", "score_embedding_figure",
    "signal_diagram", "source_code",
    # 04 training
    "image_files", "loss_curves",
    # 05 evaluation
    "edit_comparison", "perspective_bars",
    # 06 ablations
    "RewardKnob", "knob_bars", "reward_knob", "sweep_edit_grid", "sweep_panels", "sweep_plot",
]
