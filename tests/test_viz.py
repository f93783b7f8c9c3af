"""Figures, the dataset browser and notebook 02 (rewardedit_lib.viz, and the selection helpers of dataset).

What must hold: every figure draws exactly the numbers :mod:`dataset` computes (bars, cells, captions),
the browser's filters select the right triplets with rewards and with the toy ground truth, the browser
falls back to a static grid where widgets cannot be shown, and notebook 02 runs end to end through
papermill on toy data without rewards and on RewardEdit-style data with rewards and no ground truth.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; affects this process only, not papermill's kernel

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rewardedit_lib import dataset, formats, toyworld, viz  # noqa: E402
from rewardedit_lib.formats import EDIT_TYPES, PERSPECTIVE_TITLES, PERSPECTIVES, Reward, Rewards  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "02_dataset.ipynb"
N = 28  # four triplets of each of the seven edit types
FAILURES = ("The red square was not removed.", "The blue circle moved to the top left.",
            "The image is covered in noise.", "The background turned gray.")


def _random_rewards(ids, seed: int = 0) -> dict[str, Rewards]:
    """Valid random rewards: scores 0-5, a failure text below 5, the RewardEdit20K text at 5."""
    rng = random.Random(seed)
    out = {}
    for i in ids:
        scores = [rng.randint(0, 5) for _ in PERSPECTIVES]
        out[i] = Rewards(*(Reward(s, formats.PERFECT_FEEDBACK if s == 5 else rng.choice(FAILURES)) for s in scores))
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return toyworld.write_toy_dataset(tmp_path_factory.mktemp("viz") / "toy-data", n=N, seed=0)


@pytest.fixture(scope="module")
def triplets(toy) -> list[formats.Triplet]:
    return formats.read_instructpix2pix(toy, require_rewards=False).items


@pytest.fixture(scope="module")
def truth(toy) -> dict[str, dict]:
    return toyworld.read_truth(toy)


@pytest.fixture(scope="module")
def rewarded(triplets) -> list[formats.Triplet]:
    rewards = _random_rewards([t.id for t in triplets])
    return [replace(t, rewards=rewards[t.id]) for t in triplets]


def _texts(fig) -> list:
    """Every text artist of a figure and of its (nested) subfigures."""
    out = list(fig.texts)
    for sub in getattr(fig, "subfigs", []):
        out += _texts(sub)
    return out


def _flat(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def test_triplet_grid_one_row_per_edit_type_with_instructions_and_truth_flags(triplets, truth):
    fig = viz.triplet_grid(triplets, per_type=3, truth=truth)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 7 * 3 * 2  # seven rows, three examples, source | edited each
    for ax in fig.axes:
        assert not ax.axison and len(ax.images) == 1
        assert ax.images[0].get_interpolation() == "nearest"  # 32 px images keep their pixels
        assert ax.images[0].get_array().shape[:2] == (32, 32)
    texts = [_flat(t.get_text()) for t in _texts(fig)]
    assert [t for t in texts if t in EDIT_TYPES] == list(EDIT_TYPES)  # row labels, in Real-Edit order
    shown = [t for group in dataset.examples_per_type(triplets, 3).values() for t in group]
    assert len(shown) == 21
    for t in shown:
        assert _flat(t.instruction) in texts
    captions = [c for c in _texts(fig) if c.get_text().startswith("truth:")]
    assert len(captions) == 21
    for t, cap in zip(shown, captions):  # captions follow the examples' order
        line = truth[t.id]
        flawed = [p for p in PERSPECTIVES if not line[f"{p}_ok"]]
        if flawed:
            assert all(line[f"{p}_flaw"].replace("_", " ") in cap.get_text() for p in flawed)
            assert cap.get_color() == viz.common._BAD_COLOR
        else:
            assert cap.get_text() == "truth: no flaw" and cap.get_color() == viz.common._OK_COLOR


def test_triplet_grid_real_data_without_types_shows_one_unknown_row_with_scores(rewarded):
    untyped = [replace(t, edit_type=None) for t in rewarded[:5]]
    fig = viz.triplet_grid(untyped, per_type=2)
    assert len(fig.axes) == 4
    texts = [_flat(t.get_text()) for t in _texts(fig)]
    assert "unknown" in texts and not set(EDIT_TYPES) & set(texts)
    for t in untyped[:2]:
        f, p, q = t.rewards.scores
        assert f"scores F{f} P{p} Q{q}" in texts


def test_triplet_grid_takes_in_memory_images(tmp_path):
    """Notebook 00 shows freshly generated triplets (PIL images, no files) with their truth."""
    examples = [toyworld.make_triplet(0, i, edit_type=t) for i, t in enumerate(EDIT_TYPES)]
    fig = viz.triplet_grid([e.to_record() for e in examples], per_type=1,
                           truth={e.folder: e.truth() for e in examples})
    assert len(fig.axes) == 14
    with pytest.raises(ValueError, match="no triplets"):
        viz.triplet_grid([])


def test_score_histograms_one_panel_per_perspective_with_the_counts(rewarded, triplets):
    fig = viz.score_histograms(rewarded)
    counts = dataset.score_counts(rewarded)
    assert len(fig.axes) == 3
    for ax, p in zip(fig.axes, PERSPECTIVES):
        assert ax.get_title() == PERSPECTIVE_TITLES[p]
        assert [round(b.get_height()) for b in ax.patches] == counts[p]
        assert len(ax.patches) == 6 and sum(counts[p]) == N
    with pytest.raises(ValueError, match="no triplet has rewards"):
        viz.score_histograms(triplets)


def test_flaw_rate_bars_are_the_ground_truth_per_perspective_and_edit_type(truth):
    fig = viz.flaw_rate_bars(truth)
    rates = dataset.flaw_rates(truth)
    (ax,) = fig.axes
    assert len(ax.patches) == 3 * (1 + 7)  # three perspectives x ("all" + seven edit types)
    heights = [b.get_height() for b in ax.patches]
    want = [rates[g][p] for p in PERSPECTIVES for g in rates]  # bar() draws one perspective at a time
    assert heights == pytest.approx(want)
    assert "GROUND TRUTH" in ax.get_title()
    assert [_flat(t.get_text()).split()[0] for t in ax.get_xticklabels()] == ["all", *EDIT_TYPES]


def test_correlation_heatmap_from_a_matrix_or_a_correlation(rewarded):
    m = dataset.score_matrix(rewarded)
    corr = dataset.correlation(m)
    a, b = viz.correlation_heatmap(m), viz.correlation_heatmap(corr, list(PERSPECTIVES))
    for fig in (a, b):
        cells = [t.get_text() for t in fig.axes[0].texts]
        assert len(cells) == 9
        assert cells == [f"{v:.2f}" for v in corr.ravel()]
        assert cells[0] == cells[4] == cells[8] == "1.00"
    constant = np.column_stack([m[:, 0], np.ones(len(m)), m[:, 2]])  # preserving never varies
    cells = [t.get_text() for t in viz.correlation_heatmap(constant).axes[0].texts]
    assert cells[1] == cells[3] == cells[4] == "n/a" and cells[0] == "1.00"


def test_phrase_table_lists_the_phrases_with_counts(rewarded, truth):
    html = viz.phrase_table(dataset.failure_phrases(rewarded)).data
    assert "the &lt;colour&gt; square was not removed" in html  # escaped, not swallowed as a tag
    assert "the image is covered in noise" in html
    assert all(PERSPECTIVE_TITLES[p] in html for p in PERSPECTIVES)
    kinds = dataset.truth_failure_kinds(truth)
    html = viz.phrase_table(kinds, title="Failure kinds (toy ground truth)").data
    assert "toy ground truth" in html
    for p in PERSPECTIVES:
        for kind, n in kinds[p]:
            assert f"<td style='text-align:left'>{kind}</td><td style='text-align:right'>{n}</td>" in html
    assert "no failures recorded" in viz.phrase_table({p: [] for p in PERSPECTIVES}).data


# --------------------------------------------------------------------------------------------------
# The browser: filters, static fallback, widget
# --------------------------------------------------------------------------------------------------
def test_filter_by_edit_type(triplets):
    assert dataset.filter_indices(triplets) == list(range(N))
    remove = dataset.filter_indices(triplets, edit_type="Remove")
    assert len(remove) == 4 and all(triplets[i].edit_type == "Remove" for i in remove)
    untyped = [replace(t, edit_type=None) for t in triplets[:3]]
    assert dataset.filter_indices(untyped, edit_type="unknown") == [0, 1, 2]


def test_filter_by_perspective_and_reward_score(rewarded):
    for k, p in enumerate(PERSPECTIVES):
        for s in range(6):
            got = dataset.filter_indices(rewarded, perspective=p, score=s)
            assert got == [i for i, t in enumerate(rewarded) if t.rewards.scores[k] == s]
        assert sum(len(dataset.filter_indices(rewarded, perspective=p, score=s)) for s in range(6)) == N
    both = dataset.filter_indices(rewarded, edit_type="Add", perspective="quality", score=5)
    assert both == [i for i, t in enumerate(rewarded) if t.edit_type == "Add" and t.rewards.quality.score == 5]
    assert dataset.score_filter_options(rewarded) == [0, 1, 2, 3, 4, 5]


def test_filter_by_perspective_and_truth_flag(triplets, truth):
    for p in PERSPECTIVES:
        flawed = dataset.filter_indices(triplets, truth, perspective=p, score="flawed")
        ok = dataset.filter_indices(triplets, truth, perspective=p, score="ok")
        assert flawed == [i for i, t in enumerate(triplets) if not truth[t.id][f"{p}_ok"]]
        assert sorted(flawed + ok) == list(range(N))
    assert dataset.filter_indices(triplets, truth, perspective="quality", score=5) == []  # no rewards here
    assert dataset.score_filter_options(triplets, truth) == ["ok", "flawed"]
    assert dataset.score_filter_options(triplets) == []
    with pytest.raises(ValueError, match="needs the ground truth"):
        dataset.filter_indices(triplets, None, score="ok")
    with pytest.raises(ValueError, match="unknown perspective"):
        dataset.filter_indices(triplets, truth, perspective="style", score="ok")


def test_browser_falls_back_to_the_static_grid(triplets, truth, capsys):
    fig = viz.browser(triplets, truth, force_static=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 7 * 3 * 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "static" in out[0]
    # pytest is no Jupyter kernel: the widget could not be seen, so the grid comes without being asked.
    assert viz.widgets_unavailable_reason() == "not running inside a Jupyter kernel"
    assert isinstance(viz.browser(triplets, truth), Figure)
    assert "not running inside a Jupyter kernel" in capsys.readouterr().out


def test_browser_widget_filters_and_shows_the_ideal_edit(triplets, truth, monkeypatch):
    monkeypatch.setattr(viz, "widgets_unavailable_reason", lambda: None)
    box = viz.browser(triplets, truth)
    (f_type, f_persp, f_score), slider, images, info = box.children[0].children, *box.children[1:]
    assert slider.max == N - 1 and "sample 1 of 28" in info.value
    assert [c.children[0].value for c in images.children] == ["source", "edited", "ideal (toy ground truth)"]
    f_type.value = "Remove"
    assert slider.max == 3 and "Remove" in info.value
    f_type.value, f_persp.value, f_score.value = None, "quality", "flawed"
    want = dataset.filter_indices(triplets, truth, perspective="quality", score="flawed")
    assert slider.max == len(want) - 1
    slider.value = 1
    assert _flat(triplets[want[1]].instruction) in _flat(info.value)
    assert truth[triplets[want[1]].id]["quality_flaw"] in info.value
    f_type.value = "Remove"  # no Remove triplet of this seed has a quality flaw
    assert dataset.filter_indices(triplets, truth, edit_type="Remove", perspective="quality", score="flawed") == []
    assert "no triplet matches" in info.value and images.children == () and slider.max == 0


def test_browser_widget_with_rewards_filters_on_scores(rewarded, monkeypatch):
    monkeypatch.setattr(viz, "widgets_unavailable_reason", lambda: None)
    box = viz.browser(rewarded)
    (_, f_persp, f_score), slider, _, info = box.children[0].children, *box.children[1:]
    assert f_score.description == "score" and [v for _, v in f_score.options] == [None, 0, 1, 2, 3, 4, 5]
    f_persp.value, f_score.value = "following", 5
    want = dataset.filter_indices(rewarded, perspective="following", score=5)
    assert slider.max == max(len(want) - 1, 0)
    if want:
        assert formats.PERFECT_FEEDBACK in info.value


# --------------------------------------------------------------------------------------------------
# Notebook 02 through papermill
# --------------------------------------------------------------------------------------------------
def _run_notebook(tmp_path: Path, **parameters) -> tuple[dict, nbformat.NotebookNode]:
    import papermill

    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    results = json.loads((Path(parameters["out_dir"]) / "results" / "02_dataset.json").read_text())
    return results, nbformat.read(str(out), as_version=4)


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.timeout(600)
def test_notebook_02_runs_on_toy_data_and_records_results(tmp_path):
    results, nb = _run_notebook(tmp_path, out_dir=str(tmp_path / "run"), n_train=N)
    assert results["n_triplets"] == N and results["n_skipped"] == 0
    assert results["per_edit_type"] == {t: 4 for t in EDIT_TYPES}
    assert results["has_truth"] and not results["has_rewards"] and results["score_counts"] is None
    assert results["correlation_of"] == "ground-truth ok-flags"
    assert 0 < results["truth_flaw_rates"]["any"] < 1
    assert (tmp_path / "run" / "toy-data" / "_truth" / "flaws.jsonl").exists()
    text = json.dumps(_outputs(nb))
    assert "no rewards loaded" in text and f"{N} triplets" in text
    assert sum("image/png" in o.get("data", {}) for o in _outputs(nb)) >= 3  # grid, flaw rates, heatmap


@pytest.mark.timeout(600)
def test_notebook_02_takes_the_rewards_branch_on_rewardedit_style_data(tmp_path):
    """RewardEdit20K-like input: prefixed keys in the rewards file, and no _truth/ folder."""
    data = toyworld.write_toy_dataset(tmp_path / "RewardEdit-like", n=N, seed=0)
    shutil.rmtree(data / "_truth")
    folders = [f for f, _ in formats.read_seeds(data)]
    rewards = _random_rewards(folders, seed=1)
    path = formats.write_rewards(tmp_path / "RewardEdit_20K.json", rewards,
                                 key_prefix="pix2pix-clip-filtered/train/")
    results, nb = _run_notebook(tmp_path, out_dir=str(tmp_path / "run"), data_dir=str(data),
                                rewards_path=str(path))
    assert results["has_rewards"] and not results["has_truth"] and results["truth_flaw_rates"] is None
    assert results["n_triplets"] == N
    assert {p: sum(c) for p, c in results["score_counts"].items()} == {p: N for p in PERSPECTIVES}
    expect = {p: [0] * 6 for p in PERSPECTIVES}
    for r in rewards.values():
        for p, s in zip(PERSPECTIVES, r.scores):
            expect[p][s] += 1
    assert results["score_counts"] == expect
    assert results["correlation_of"] == "reward scores"
    assert not (tmp_path / "run" / "toy-data").exists()  # nothing generated: the given data was used
    assert "no toy ground truth here" in json.dumps(_outputs(nb))


def test_source_code_shows_the_librarys_own_hooks():
    from rewardedit_lib import reward

    md = viz.source_code(reward.RewardUNet.__init__, reward.RewardUNet._inject_into_latent)
    text = md.data
    assert text.startswith("```python\n") and text.endswith("\n```")
    assert "# rewardedit_lib.reward.RewardUNet._inject_into_latent" in text
    assert "unet.conv_in.register_forward_hook(self._inject_into_latent)" in text
    assert "self.reward.latent(h, tokens)" in text
    assert "\n    def " not in text  # dedented: a method reads as a function


# --------------------------------------------------------------------------------------------------
# Layout: one module per notebook, one public name space
# --------------------------------------------------------------------------------------------------
def test_every_viz_function_the_notebooks_call_is_public_on_the_package():
    """``viz.<name>`` keeps working in every notebook although the functions live in per-notebook modules."""
    import re

    used = set()
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        used |= set(re.findall(r"\bviz\.([A-Za-z_]\w*)", nb.read_text()))
    assert used and used <= set(viz.__all__), sorted(used - set(viz.__all__))
    assert all(hasattr(viz, name) for name in viz.__all__)


def test_viz_modules_stay_small():
    for module in sorted((REPO / "rewardedit_lib" / "viz").glob("*.py")):
        assert len(module.read_text().splitlines()) <= 700, module.name


def test_the_cli_starts_without_matplotlib_or_widgets():
    import subprocess
    import sys

    code = ("import sys, rewardedit_lib.cli; "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'rewardedit_lib.viz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
