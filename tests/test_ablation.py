"""Ablations (rewardedit_lib.ablation, the sweep/knob parts of viz, evaluate.evaluate_many).

What must hold: the grid names every switch once and trains, per grid, exactly what it says; every switch is
notebook 04's recipe with only its two switches changed (so 04's models are reused, and the baseline reads
no rewards); sweeps edit each setting into its own folder with exactly the images a single evaluation makes;
the table never shows a number for a row that was not measured; the plots draw the measured numbers; and
the reward knob re-edits with the same noise, so changing a score (and only that) changes the image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from rewardedit_lib import ablation as A  # noqa: E402
from rewardedit_lib import evaluate as E  # noqa: E402
from rewardedit_lib import knob as K  # noqa: E402
from rewardedit_lib import toyworld, train, viz  # noqa: E402
from rewardedit_lib.formats import PERSPECTIVES, read_real_edit  # noqa: E402
from rewardedit_lib.pipeline import toy_pipeline  # noqa: E402


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------
def test_the_grid_has_the_baseline_once_and_every_reward_switch():
    grid = A.switch_grid()
    assert len(grid) == 10 and len(set(grid)) == 10
    assert [s for s in grid if s.rewards == "none"] == [A.BASELINE]
    assert {(s.rewards, s.injection) for s in grid if s.rewards != "none"} == {
        (r, i) for r in ("scores", "text", "both") for i in ("latent", "time", "both")}
    names = [s.name for s in grid]
    assert len(set(names)) == 10
    # notebook 04's folders: the small grid must find its two models under these names
    assert A.BASELINE.name == "baseline" and A.MULTI_REWARD.name == "multi-reward"


def test_small_grid_trains_only_notebook_04s_models_and_full_trains_all():
    small, full = A.plan("small"), A.plan("full")
    assert small.trained == (A.BASELINE, A.MULTI_REWARD)
    assert full.trained == tuple(A.switch_grid())
    assert small.sweeps == full.sweeps
    rows, headers = small.rows()
    assert headers[-1] == "in this grid" and len(rows) == 10 + len(small.sweeps)
    status = {r[3]: r[4] for r in rows if r[0] == "trained"}
    assert status["scores-latent"].startswith("not run") and "reused" in status["multi-reward"]
    assert all(not v.startswith("not run") for v in {r[3]: r[4] for r in full.rows()[0] if r[0] == "trained"}.values())
    with pytest.raises(ValueError, match="grid='medium'"):
        A.plan("medium")


def test_sweeps_vary_one_perspective_with_the_others_at_5_and_list_each_setting_once():
    sweeps = A.sweep_grid([0, 2.5, 5], [0, 1.5])
    assert sweeps[:3] == [A.Sweep((0.0, 5.0, 5.0)), A.Sweep((2.5, 5.0, 5.0)), A.Sweep((5.0, 5.0, 5.0))]
    assert sweeps.count(A.Sweep((5.0, 5.0, 5.0))) == 1  # the paper's setting is in every sweep, run once
    assert len(sweeps) == 3 * 2 + 1 + 1  # two new values per perspective, the centre, one guidance scale
    assert sweeps[-1] == A.Sweep((5.0, 5.0, 5.0), 1.5)
    assert len(A.sweep_grid()) == 18
    assert A.Sweep((0.0, 5.0, 2.5), 1.0).slug == "F0-P5-Q2.5-g1"
    assert len({s.slug for s in A.sweep_grid()}) == 18


def test_sweep_size_follows_the_grid_unless_given():
    assert A.sweep_size("small", None, None, None) == (A.SMALL_SWEEP_IMAGES, A.SMALL_SWEEP_STEPS)
    assert A.sweep_size("full", None, None, 12) == (None, 12)
    assert A.sweep_size("small", 3, 7, 12) == (3, 7)


def test_items_of_first_images_counts_whole_images(tmp_path):
    items = read_real_edit(toyworld.write_toy_bench(tmp_path / "b", n_images=3, seed=0)).items
    assert A.items_of_first_images(items, 1) == 7
    assert A.items_of_first_images(items, 2) == 14
    assert A.items_of_first_images(items, 9) == A.items_of_first_images(items, None) == 21


# --------------------------------------------------------------------------------------------------
# Training and evaluating the switches (the trainer and the evaluator are stubbed: their own tests cover them)
# --------------------------------------------------------------------------------------------------
def test_every_switch_is_notebook_04s_recipe_with_only_its_switches_changed():
    base = A.train_config("toy-cpu", 3, train.TOY_STAGE1, train_steps=8, validate_every=4)
    # notebook 04: preset(profile, stage=2, seed=seed, init=str(stage1), max_steps=train_steps), validate_every
    want = train.preset("toy-cpu", stage=2, seed=3, init=str(train.TOY_STAGE1), max_steps=8)
    want.validate_every = 4
    assert base == want
    assert A.train_config("toy-cpu", 0, train.TOY_STAGE1).validate_every == train.preset("toy-cpu").max_steps // 3
    as_json = json.loads(json.dumps(base.to_json()))
    for s in A.switch_grid():
        cfg = A.switch_config(base, s)
        assert (cfg.rewards, cfg.injection) == (s.rewards, s.injection)
        assert {k: v for k, v in json.loads(json.dumps(cfg.to_json())).items() if k not in ("rewards", "injection")} \
            == {k: v for k, v in as_json.items() if k not in ("rewards", "injection")}
    for profile in ("sd15", "sd15-t4"):
        with pytest.raises(ValueError, match=f"the {profile} profile needs stage1_dir"):
            A.train_config(profile, 0, train.TOY_STAGE1)


def test_train_switches_share_one_time_limit(monkeypatch, tmp_path):
    """Notebook 06's time_limit covers all its trained models: each gets what the ones before it left."""
    limits = []

    def fake(cfg, data, out, rewards, progress=True, time_limit_s=None):
        limits.append(time_limit_s)
        time.sleep(0.2)
        return Path(out)

    monkeypatch.setattr(train, "ensure_trained", fake)
    base = A.train_config("toy-cpu", 0, train.TOY_STAGE1, 8, 4)
    A.train_switches(A.plan("small").trained, base, tmp_path / "d", tmp_path / "r.json", tmp_path / "m", time_limit_s=60)
    assert 59.5 < limits[0] <= 60 and limits[0] - 0.5 < limits[1] <= limits[0] - 0.2
    limits.clear()
    A.train_switches(A.plan("small").trained, base, tmp_path / "d", tmp_path / "r.json", tmp_path / "m")
    assert limits == [None, None]


def test_train_switches_reuses_04s_folders_and_gives_the_baseline_no_rewards(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(train, "ensure_trained", lambda cfg, data, out, rewards, progress=True, time_limit_s=None:
                        calls.append((cfg.rewards, cfg.injection, Path(out).name, rewards)) or Path(out))
    base = A.train_config("toy-cpu", 0, train.TOY_STAGE1, 8, 4)
    got = A.train_switches(A.plan("small").trained, base, tmp_path / "data", tmp_path / "r.json", tmp_path / "models")
    assert calls == [("none", "both", "baseline", None), ("both", "both", "multi-reward", tmp_path / "r.json")]
    assert set(got) == {A.BASELINE, A.MULTI_REWARD}


def test_a_finished_run_is_reused_not_refused_nor_retrained(tmp_path):
    """The course's budget for notebook 06 rests on this: 04's finished models are found, not trained again."""
    from dataclasses import replace

    data = toyworld.write_toy_dataset(tmp_path / "data", n=7, seed=0)
    base = replace(A.train_config("toy-cpu", 0, train.TOY_STAGE1, train_steps=1, validate_every=1), batch_size=4,
                   checkpoint_every=0, validation_examples=1, validation_steps=2)
    first = A.train_switches([A.BASELINE], base, data, None, tmp_path / "models")[A.BASELINE]
    stamp = (first.model_dir / "model_index.json").stat().st_mtime_ns
    again = A.train_switches([A.BASELINE], base, data, None, tmp_path / "models")[A.BASELINE]
    assert again.model_dir == first.model_dir and again.steps == 1
    assert (again.model_dir / "model_index.json").stat().st_mtime_ns == stamp


def test_switches_are_evaluated_with_notebook_05s_settings_into_05s_folders(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(E, "evaluate", lambda model, bench, out, **kw: calls.append((Path(out), kw)) or out)
    A.evaluate_switches({A.BASELINE: "m0", A.MULTI_REWARD: "m1"}, "bench", tmp_path / "eval", seed=2, steps=3,
                        limit=5, device="cpu")
    assert [c[0] for c in calls] == [tmp_path / "eval" / "baseline", tmp_path / "eval" / "multi-reward"]
    # notebook 05 passes changes={"seed": seed, "num_inference_steps": steps}: the same settings.json, reused
    assert calls[0][1]["changes"] == {"seed": 2, "num_inference_steps": 3} and calls[0][1]["limit"] == 5
    assert A.eval_changes(0, None) == {"seed": 0}


# --------------------------------------------------------------------------------------------------
# Sweeps: many settings edited together, each exactly as one evaluation would
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "toy"
    toy_pipeline(seed=0).save_pretrained(out)  # random reward modules (not zero-init): rewards change edits
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return toyworld.write_toy_bench(tmp_path_factory.mktemp("bench") / "b", n_images=1, seed=0)


SWEEPS = [A.Sweep((0.0, 5.0, 5.0)), A.Sweep((5.0, 5.0, 5.0)), A.Sweep((5.0, 5.0, 5.0), 1.0)]


@pytest.fixture(scope="module")
def sweep(model_dir, bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    return root, A.run_sweeps(model_dir, bench, root, SWEEPS, steps=2, limit=3, n_boot=50)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


def test_each_sweep_setting_gets_its_own_folder_and_settings(sweep):
    root, reports = sweep
    assert list(reports) == SWEEPS
    for sw, rep in reports.items():
        assert rep.out_dir == root / "steps-2-seed-0" / sw.slug
        saved = json.loads((rep.out_dir / "edits" / "settings.json").read_text())
        assert saved["reward_scores"] == list(sw.scores) and saved["reward_guidance_scale"] == sw.guidance
        assert saved["num_inference_steps"] == 2 and len(rep.rows) == 3
        assert json.loads((rep.out_dir / "summary.json").read_text())["n"] == 3


def test_a_sweep_setting_makes_the_images_one_evaluation_of_it_makes(sweep, model_dir, bench, tmp_path):
    _, reports = sweep
    for sw in (SWEEPS[0], SWEEPS[2]):
        alone = E.evaluate(model_dir, bench, tmp_path / sw.slug, limit=3, n_boot=50, progress=False,
                           changes={"reward_scores": sw.scores, "reward_guidance_scale": sw.guidance, "seed": 0,
                                    "num_inference_steps": 2})
        for a, b in zip(alone.rows, reports[sw].rows):
            assert a["id"] == b["id"]
            assert np.abs(_pixels(a["edit"]) - _pixels(b["edit"])).max() <= 2  # batching: float rounding only


def test_the_requested_rewards_change_the_edits(sweep):
    _, reports = sweep
    low, best = reports[SWEEPS[0]].rows[0]["edit"], reports[SWEEPS[1]].rows[0]["edit"]
    assert np.abs(_pixels(low) - _pixels(best)).max() > 2


def test_rerunning_a_sweep_edits_nothing_and_other_settings_in_a_folder_are_refused(sweep, model_dir, bench):
    root, reports = sweep
    stamps = {sw: [Path(r["edit"]).stat().st_mtime_ns for r in rep.rows] for sw, rep in reports.items()}
    again = A.run_sweeps(model_dir, bench, root, SWEEPS, steps=2, limit=3, n_boot=50)
    assert {sw: [Path(r["edit"]).stat().st_mtime_ns for r in rep.rows] for sw, rep in again.items()} == stamps
    assert all(rep.edit_s == 0 for rep in again.values())
    folder = reports[SWEEPS[0]].out_dir
    with pytest.raises(ValueError, match="reward_scores"):
        E.evaluate_many(model_dir, bench, {folder: {"reward_scores": (1.0, 5.0, 5.0), "num_inference_steps": 2}},
                        limit=1, progress=False)



def test_a_sweep_starts_the_local_judge_once_and_records_it_as_the_local_toy_judge(model_dir, bench, tmp_path,
                                                                                    monkeypatch):
    import contextlib

    from rewardedit_lib.toy import endpoint

    starts = []
    real = endpoint.judge_endpoint

    @contextlib.contextmanager
    def counting(base_url=None, *args, **kwargs):
        starts.append(base_url)
        with real(base_url, *args, **kwargs) as url:
            yield url

    monkeypatch.setattr(endpoint, "judge_endpoint", counting)
    reports = A.run_sweeps(model_dir, bench, tmp_path, SWEEPS, steps=2, limit=3, n_boot=50)
    assert starts.count(None) == 1  # one local server for the three settings
    for rep in reports.values():
        assert rep.summary["judge"] == {"base_url": "local toy judge", "protocol": "kit", "model": "toy-judge"}
        assert all(r[p] is not None for r in rep.rows for p in ("following", "preserving", "quality"))

# --------------------------------------------------------------------------------------------------
# Results: rows, table, series (on hand-made reports with known numbers)
# --------------------------------------------------------------------------------------------------
def _report(scores: dict[str, float], n: int = 4, steps: int = 5) -> E.EvalReport:
    rows = [{"id": f"i{i}", "edit_type": "Add", "edit": f"e{i}.png",
             **{p: {"yes": scores[p] >= 4, "score": scores[p], "reason": ""} for p in PERSPECTIVES}}
            for i in range(n)]
    return E.EvalReport(Path("x"), rows, E.summarize(rows, n_boot=20), E.EditSettings(num_inference_steps=steps),
                        0.0, 0.0)


def test_the_table_shows_numbers_only_for_rows_measured_in_this_run():
    the_plan = A.plan("small", [0, 5], [0, 2])
    switch_reports = {A.BASELINE: _report({"following": 1, "preserving": 2, "quality": 3}, n=14, steps=20),
                      A.MULTI_REWARD: _report({"following": 4, "preserving": 5, "quality": 3}, n=14, steps=20)}
    sweep_reports = {sw: _report({"following": sw.scores[0], "preserving": 4, "quality": 4}, n=7)
                     for sw in the_plan.sweeps if sw.guidance == 0}  # guidance 2 "failed": not measured
    rows = A.result_rows(the_plan, switch_reports, sweep_reports)
    assert len(rows) == 10 + len(the_plan.sweeps)
    measured = {r["name"] for r in rows if r["measured"]}
    assert measured == {"baseline", "multi-reward"} | {sw.slug for sw in sweep_reports}
    for r in rows:
        assert (r["metrics"] is None) == (not r["measured"])
    multi = next(r for r in rows if r["name"] == "multi-reward")
    assert multi["metrics"]["following_score"] == 4.0 and multi["metrics"]["following_yes_rate"] == 100.0
    assert multi["edits"] == 14 and multi["steps"] == 20

    table = A.results_table(rows)
    assert table["columns"][:3] == ["kind", "setting", "measured here"] and len(table["columns"]) == 11
    by_setting = {row[1]: row for row in table["rows"]}
    assert by_setting["rewards both, injection both"][2:] == ["yes", "14", "20", "100.0", "4.00", "100.0", "5.00",
                                                             "0.0", "3.00"]
    not_run = by_setting["rewards text, injection latent"]
    assert not_run[2].startswith("not run") and set(not_run[3:]) == {"-"}  # no number from anywhere else
    assert set(by_setting["asked F5 P5 Q5, reward guidance 2"][3:]) == {"-"}
    md = A.markdown_table(table)
    assert md.count("\n") == len(table["rows"]) + 1 and "| rewards none (baseline) | yes | 14 | 20 |" in md


def test_sweep_series_and_edits_are_the_measured_points_in_score_order():
    reports = {sw: _report({"following": sw.scores[0], "preserving": sw.scores[1], "quality": 3.0 + sw.guidance})
               for sw in A.sweep_grid([5, 0, 2], [0, 1])}
    series = A.sweep_series(reports, "score")
    assert list(series) == ["following", "preserving", "quality", "guidance"]
    xs, ys = series["following"]
    assert xs == [0.0, 2.0, 5.0] and ys["following"] == [0.0, 2.0, 5.0] and ys["preserving"] == [5.0] * 3
    assert series["preserving"][1]["preserving"] == [0.0, 2.0, 5.0]
    assert series["guidance"] == ([0.0, 1.0], {"following": [5.0, 5.0], "preserving": [5.0, 5.0],
                                              "quality": [3.0, 4.0]})
    strips = A.sweep_edits(reports, "i1")
    assert [s for s, _ in strips["quality"]] == [0.0, 2.0, 5.0] and strips["quality"][0][1] == Path("e1.png")

    fig = viz.sweep_panels(series)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    first = fig.axes[0].get_lines()  # one line per judged perspective, following first
    assert list(first[0].get_xdata()) == [0.0, 2.0, 5.0] and list(first[0].get_ydata()) == [0.0, 2.0, 5.0]
    assert list(first[1].get_ydata()) == [5.0, 5.0, 5.0]
    assert list(fig.axes[3].get_lines()[2].get_ydata()) == [3.0, 4.0]


def test_sweep_edit_grid_shows_source_and_one_edit_per_requested_score(sweep, bench):
    _, reports = sweep
    item = read_real_edit(bench).items[0]
    strips = A.sweep_edits(reports, item.id)
    assert [s for s, _ in strips["following"]] == [0.0, 5.0] and "quality" in strips
    fig = viz.sweep_edit_grid(item.load_image(), item.instruction, strips)
    assert len(fig.axes) == len(strips) * 3
    assert "F asked 0" in [ax.get_title() for ax in fig.axes]


# --------------------------------------------------------------------------------------------------
# The reward knob
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def knob_inputs(bench):
    item = read_real_edit(bench).items[0]
    return toy_pipeline(seed=0), item.load_image(), item.instruction


FAST = E.EditSettings(num_inference_steps=2, guidance_scale=3.0, image_guidance_scale=1.5)


def test_the_knob_edits_with_the_same_noise_so_only_the_rewards_change_the_image(knob_inputs):
    knob = viz.RewardKnob(*knob_inputs, settings=FAST)
    a, b = np.asarray(knob.edit((5, 5, 5))), np.asarray(knob.edit((5, 5, 5)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(knob.edit((0, 5, 5))))
    assert not np.array_equal(a, np.asarray(knob.edit((5, 5, 5), "The instruction was not followed.")))
    assert knob.update() is knob.last and np.array_equal(np.asarray(knob.last), a)  # no widget: current rewards


def test_the_knob_widget_re_edits_when_a_slider_or_the_text_changes(knob_inputs, monkeypatch):
    monkeypatch.setattr(viz, "widgets_unavailable_reason", lambda: None)
    box = viz.reward_knob(*knob_inputs, settings=FAST)
    sliders, text, pictures, status = box.children
    knob_image = pictures.children[1].children[1]
    first = knob_image.value
    assert first and [s.description for s in sliders.children] == list(PERSPECTIVES)
    sliders.children[0].value = 0.0  # the observer calls the knob's update
    after_score = knob_image.value
    assert after_score != first and "following 0" in status.value
    text.value = "The unrelated details were changed."
    assert knob_image.value != after_score
    sliders.children[0].value = 5.0
    text.value = E.DEFAULT_REWARD_TEXT
    assert knob_image.value == first  # back to the start: the same image, bit for bit


def test_the_knob_falls_back_to_fixed_rewards_without_widgets(knob_inputs, capsys):
    fig = viz.reward_knob(*knob_inputs, settings=FAST, force_static=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes][:2] == ["source", "asked 5, 5, 5"]
    assert "static view requested" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# The reward knob measured (knob.reward_knob through ablation.run_knob; its figure)
# --------------------------------------------------------------------------------------------------
def test_run_knob_uses_notebook_05s_settings_and_a_folder_per_steps_and_seed(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(K, "reward_knob", lambda model, bench, out, **kw: calls.append((Path(out), kw)) or out)
    A.run_knob("m1", "bench", tmp_path / "knob", seed=2, steps=3, limit=5, high_dir=tmp_path / "eval" / "multi-reward",
               device="cpu")
    A.run_knob("m1", "bench", tmp_path / "knob", seed=0)
    assert [c[0] for c in calls] == [tmp_path / "knob" / "steps-3-seed-2", tmp_path / "knob" / "steps-default-seed-0"]
    kw = calls[0][1]
    # the same changes notebook 05 evaluates with, so 05's (5, 5, 5) folder is accepted as the knob's own
    assert kw["changes"] == A.eval_changes(2, 3) == {"seed": 2, "num_inference_steps": 3}
    assert kw["limit"] == 5 and kw["high_dir"] == tmp_path / "eval" / "multi-reward" and kw["low"] == 0.0
    assert kw["device"] == "cpu" and kw["progress"] is False


def test_knob_bars_draw_the_yes_rates_and_the_knob_with_its_interval():
    per = {"following": dict(n=14, yes_rate_high=50.0, yes_rate_low=14.3, knob=35.7, knob_ci=[14.3, 57.1],
                             verdict="obeys"),
           "preserving": dict(n=14, yes_rate_high=7.1, yes_rate_low=7.1, knob=0.0, knob_ci=[-14.3, 14.3],
                              verdict="not shown"),
           "quality": dict(n=14, yes_rate_high=71.4, yes_rate_low=78.6, knob=-7.1, knob_ci=[-21.4, 7.1],
                           verdict="not shown")}
    fig = viz.knob_bars({"low": 0.0, "n": 14, "perspectives": per})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    rates, knobs = fig.axes
    heights = [round(b.get_height(), 1) for b in rates.patches]
    assert heights == [50.0, 7.1, 71.4, 14.3, 7.1, 78.6]  # asked 5, then asked 0, per perspective
    assert [t.get_text() for t in rates.get_legend().get_texts()] == ["asked 5", "asked 0"]
    assert [round(b.get_height(), 1) for b in knobs.patches] == [35.7, 0.0, -7.1]
    caps = knobs.containers[0].lines[2][0].get_segments()  # the error bars: one segment per perspective
    assert [tuple(np.round([s[0][1], s[1][1]], 1)) for s in caps] == [(14.3, 57.1), (-14.3, 14.3), (-21.4, 7.1)]
    labels = " ".join(t.get_text() for t in knobs.texts)
    assert "+36: obeys" in labels and "-7: not shown" in labels
    assert "at 0" in knobs.get_ylabel() and "14 edits" in fig._suptitle.get_text()
