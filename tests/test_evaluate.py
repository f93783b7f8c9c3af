"""Real-Edit evaluation: edits are deterministic and resumable, verdicts tabulate correctly, the real layout works."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rewardedit_lib import evaluate as E
from rewardedit_lib import knob as K
from rewardedit_lib import toyworld
from rewardedit_lib.formats import read_real_edit
from rewardedit_lib.toy.server import ToyJudgeServer
from rewardedit_lib.pipeline import toy_pipeline

FAST = E.EditSettings(num_inference_steps=2, guidance_scale=3.0, image_guidance_scale=1.5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "toy"
    toy_pipeline(seed=0).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return toyworld.write_toy_bench(tmp_path_factory.mktemp("bench") / "b", n_images=2, seed=0)


def real_edit_folder(root: Path) -> Path:
    """A tiny folder in the real Real-Edit layout: photos of odd sizes (JPEG) and real_edit_instruct.json."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    sizes = {"0001.jpg": (50, 38), "0002.jpg": (41, 60)}
    for name, (w, h) in sizes.items():
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 128)], -1) + rng.normal(0, 8, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / name, quality=90)
    (root / "real_edit_instruct.json").write_text(json.dumps({
        "0001.jpg": ["Add. 1: add a red balloon in the sky", "Local. 2: make the wall blue"],
        "0002.jpg": ["Remove. 1: remove the dog"],
    }))
    return root


def test_the_real_edit_path_runs_end_to_end_on_a_folder_the_test_makes(model_dir, tmp_path):
    bench = real_edit_folder(tmp_path / "Real-Edit")
    settings = E.EditSettings(num_inference_steps=2, guidance_scale=3.0, resolution=32)
    # photos are judged at an endpoint (here the toy judge's server: without base_url they would be refused)
    with ToyJudgeServer() as srv:
        report = E.evaluate(model_dir, bench, tmp_path / "out", settings=settings, base_url=srv.base_url,
                            judge_model="toy-judge", progress=False)
    rows = E.read_results(tmp_path / "out")
    assert [r["id"] for r in rows] == ["0001-1", "0001-2", "0002-1"]  # BenchItem.id
    assert [r["edit_type"] for r in rows] == ["Add", "Local", "Remove"]
    for r in rows:
        assert Path(r["edit"]).exists()
        for p in ("following", "preserving", "quality"):
            assert set(r[p]) == {"yes", "score", "reason"} and 0 <= r[p]["score"] <= 5
    # the edit keeps the photo's aspect ratio at the requested resolution (InstructPix2Pix's rule)
    assert Image.open(rows[2]["edit"]).size[1] > Image.open(rows[2]["edit"]).size[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n"] == 3 and set(summary["by_type"]) == {"Add", "Local", "Remove"}
    assert summary["judge"]["model"] == "toy-judge" and report.summary["overall"]["quality"]["n"] == 3


@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ancestral"])
def test_edits_are_deterministic_per_item_and_a_rerun_redoes_nothing(model_dir, bench, tmp_path, eta):
    items = read_real_edit(bench).items[:5]
    pipe = E.load_model(model_dir)
    FAST = E.EditSettings(num_inference_steps=2, guidance_scale=3.0, image_guidance_scale=1.5, eta=eta)
    a = E.edit_benchmark(pipe, items, tmp_path / "a", FAST, batch_size=5, progress=False)
    b = E.edit_benchmark(pipe, items[::-1], tmp_path / "b", FAST, batch_size=2, progress=False)
    again = E.edit_benchmark(pipe, items, tmp_path / "a2", FAST, batch_size=5, progress=False)
    for k in a:  # same item, same seed -> the same noise, whatever the batch and the order
        pa, pb = np.asarray(Image.open(a[k])).astype(int), np.asarray(Image.open(b[k])).astype(int)
        assert np.array_equal(pa, np.asarray(Image.open(again[k])))  # same batching: bit for bit
        assert np.abs(pa - pb).max() <= 2  # other batching: float rounding only (convolutions sum per batch)
    stamp = {k: p.stat().st_mtime_ns for k, p in a.items()}
    E.edit_benchmark(pipe, items, tmp_path / "a", FAST, batch_size=5, progress=False)
    assert {k: p.stat().st_mtime_ns for k, p in a.items()} == stamp
    other = E.edit_benchmark(pipe, items[:1], tmp_path / "c", E.EditSettings(num_inference_steps=2, seed=1,
                                                                          guidance_scale=3.0, eta=eta), progress=False)
    k = next(iter(other))
    assert not np.array_equal(np.asarray(Image.open(a[k])), np.asarray(Image.open(other[k])))


def test_other_settings_in_the_same_folder_are_refused_by_name(model_dir, bench, tmp_path):
    items = read_real_edit(bench).items[:1]
    pipe = E.load_model(model_dir)
    E.edit_benchmark(pipe, items, tmp_path / "o", FAST, progress=False)
    with pytest.raises(ValueError, match="guidance_scale"):
        E.edit_benchmark(pipe, items, tmp_path / "o", E.EditSettings(num_inference_steps=2, guidance_scale=5.0),
                         progress=False)


def test_ancestral_steps_change_the_edit_and_folders_from_before_eta_count_as_deterministic(model_dir, bench,
                                                                                            tmp_path):
    items = read_real_edit(bench).items[:2]
    pipe = E.load_model(model_dir)
    ddim = E.edit_benchmark(pipe, items, tmp_path / "d", FAST, progress=False)
    anc = E.edit_benchmark(pipe, items, tmp_path / "a", replace(FAST, eta=1.0), progress=False)
    assert json.loads((tmp_path / "a" / "edits" / "settings.json").read_text())["eta"] == 1.0
    for k in ddim:  # the same seed, but each ancestral step draws fresh noise
        assert not np.array_equal(np.asarray(Image.open(ddim[k])), np.asarray(Image.open(anc[k])))
    # a folder recorded before settings had an eta was made with deterministic DDIM steps
    record = tmp_path / "d" / "edits" / "settings.json"
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "eta"}))
    stamp = {k: p.stat().st_mtime_ns for k, p in ddim.items()}
    E.edit_benchmark(pipe, items, tmp_path / "d", FAST, progress=False)
    assert {k: p.stat().st_mtime_ns for k, p in ddim.items()} == stamp  # accepted as is, nothing redone
    with pytest.raises(ValueError, match=r"eta: \[0\.0\] vs \[1\.0\]"):
        E.edit_benchmark(pipe, items, tmp_path / "d", replace(FAST, eta=1.0), progress=False)


def test_judging_twice_asks_the_judge_once(model_dir, bench, tmp_path):
    from rewardedit_lib.toy.server import ToyJudgeServer

    items = read_real_edit(bench).items[:4]
    edits = E.edit_benchmark(E.load_model(model_dir), items, tmp_path / "o", FAST, progress=False)
    with ToyJudgeServer() as srv:
        first = E.judge_edits(items, edits, tmp_path / "o" / "judge", base_url=srv.base_url, judge_model="toy-judge",
                              progress=False)
        sent = srv.stats()["chat_requests"]
        second = E.judge_edits(items, edits, tmp_path / "o" / "judge", base_url=srv.base_url,
                               judge_model="toy-judge", progress=False)
        assert srv.stats()["chat_requests"] == sent == 12
    assert first == second


def test_edits_are_judged_while_the_next_are_made_and_the_rows_are_those_of_judging_afterwards(model_dir, bench,
                                                                                              tmp_path, monkeypatch):
    from rewardedit_lib.pipeline import RewardEditPipeline
    from rewardedit_lib.toy.server import ToyJudgeServer

    items = read_real_edit(bench).items[:4]
    real_call = RewardEditPipeline.__call__
    answered_before_last_batch = []
    with ToyJudgeServer() as srv:
        calls = []

        def call(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == len(items):  # the last batch: the first ones' verdicts arrive meanwhile
                deadline = time.monotonic() + 20
                while srv.stats()["chat_requests"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                answered_before_last_batch.append(srv.stats()["chat_requests"])
            return real_call(self, *args, **kwargs)

        monkeypatch.setattr(RewardEditPipeline, "__call__", call)
        report = E.evaluate(model_dir, bench, tmp_path / "o", settings=FAST, base_url=srv.base_url,
                            judge_model="toy-judge", batch_size=1, limit=len(items), progress=False)
        monkeypatch.setattr(RewardEditPipeline, "__call__", real_call)
        assert answered_before_last_batch[0] > 0  # judging did not wait for the editing to end
        assert srv.stats()["chat_requests"] == 3 * len(items)
        edits = {it.id: tmp_path / "o" / "edits" / f"{it.id}.png" for it in items}
        afterwards = E.judge_edits(items, edits, tmp_path / "fresh", base_url=srv.base_url, judge_model="toy-judge",
                                   progress=False)
    assert report.rows == afterwards == E.read_results(tmp_path / "o")


def test_a_failed_editing_stops_its_judge_and_keeps_its_answers(model_dir, bench, tmp_path, monkeypatch):
    import threading

    from rewardedit_lib.judge.cache import AnswerCache
    from rewardedit_lib.pipeline import RewardEditPipeline
    from rewardedit_lib.toy.server import ToyJudgeServer

    items = read_real_edit(bench).items[:3]
    real_call = RewardEditPipeline.__call__
    calls = []

    def call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            time.sleep(1.0)  # the first two edits' verdicts arrive
            raise KeyboardInterrupt
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(RewardEditPipeline, "__call__", call)
    with ToyJudgeServer() as srv, pytest.raises(KeyboardInterrupt):  # an endpoint: judged while editing
        E.evaluate(model_dir, bench, tmp_path / "o", settings=FAST, base_url=srv.base_url, judge_model="toy-judge",
                   batch_size=1, limit=len(items), progress=False)
    assert not [t for t in threading.enumerate() if t.name == "edit-judge"]
    cache = AnswerCache(tmp_path / "o" / "judge")
    try:
        assert len(cache) == 6  # the two saved edits, three perspectives each
    finally:
        cache.close()
    assert sorted(p.name for p in (tmp_path / "o" / "edits").glob("*.png")) == sorted(f"{it.id}.png" for it in items[:2])


def rows_of(scores: dict[str, list[float]], types: list[str]) -> list[dict]:
    n = len(types)
    return [{"id": f"i{i}", "edit_type": types[i], **{p: {"yes": scores[p][i] >= 4, "score": scores[p][i],
                                                         "reason": ""} for p in scores}} for i in range(n)]


def test_summary_yes_rates_scores_and_intervals():
    rows = rows_of({"following": [5, 4, 1, 0], "preserving": [5, 5, 5, 5], "quality": [3, 3, 4, 4]},
                   ["Add", "Add", "Remove", "Remove"])
    s = E.summarize(rows, n_boot=500)
    f = s["overall"]["following"]
    assert f["yes_rate"] == 50.0 and f["score"] == 2.5 and f["n"] == 4
    assert f["yes_rate_ci"][0] <= 50.0 <= f["yes_rate_ci"][1] and f["score_ci"][0] < 2.5 < f["score_ci"][1]
    assert s["overall"]["preserving"]["score_ci"] == [5.0, 5.0]  # no spread, no interval
    assert s["by_type"]["Add"]["following"]["yes_rate"] == 100.0
    assert s["by_type"]["Remove"]["following"]["yes_rate"] == 0.0
    rows[0]["quality"] = None  # a failed judgement is counted as missing, not as a zero
    assert E.summarize(rows)["overall"]["quality"]["missing"] == 1


def test_paired_comparison_counts_wins_ties_losses():
    a = rows_of({"following": [5, 3, 2], "preserving": [4, 4, 4], "quality": [1, 5, 5]}, ["Add"] * 3)
    b = rows_of({"following": [4, 3, 5], "preserving": [4, 4, 4], "quality": [2, 2, 2]}, ["Add"] * 3)
    c = E.compare(a, b)
    assert c["following"] == {"win": 1, "tie": 1, "loss": 1}
    assert c["preserving"] == {"win": 0, "tie": 3, "loss": 0}
    assert c["quality"] == {"win": 2, "tie": 0, "loss": 1}
    table = E.table_markdown({"A": E.summarize(a), "B": E.summarize(b)}, ci=False)
    assert "| A | 33.3 | 3.33 |" in table


def test_a_benchmark_sized_by_the_spread_gives_the_interval_it_was_sized_for():
    """edits_needed(paired_spread, h) edits give a paired-bootstrap interval of about +-h points."""
    rng = np.random.default_rng(0)
    for p_a, p_b in ((0.6, 0.5), (0.5, 0.45)):
        n = E.edits_needed(100 * ((p_a * (1 - p_a) + p_b * (1 - p_b)) ** 0.5), 5.0)  # independent yes/no verdicts
        sa, sb = (rng.random(n) < p_a) * 5.0, (rng.random(n) < p_b) * 5.0
        a = rows_of({"following": list(sa)}, ["Add"] * n)
        b = rows_of({"following": list(sb)}, ["Add"] * n)
        sd = E.paired_spread(a, b, "following")
        lo, hi = E.paired_difference(a, b, "following", n_boot=2000)["yes_diff_ci"]
        assert (hi - lo) / 2 == pytest.approx(1.96 * sd / n ** 0.5, rel=0.1)
        assert (hi - lo) / 2 == pytest.approx(5.0, rel=0.15)
    assert E.edits_needed(54.4, 5.0) == 455  # the course benchmark: 65 images x 7 edit types
    assert E.edits_needed(0.0, 5.0) == 1 and E.edits_needed(54.4, 10.0) == 114
    assert math.isnan(E.paired_spread(a[:1], b[:1], "following"))  # one common item: no spread to measure
    text = E.precision_text(a, b)
    assert f"spread {sd:5.1f} points: +-{1.96 * sd / n ** 0.5:4.1f} on {n} edits; +-5 needs {E.edits_needed(sd, 5)} edits" in text
    assert "too few to measure a spread" in E.precision_text(a[:1], b[:1])
    for bad in ({"sd": float("nan"), "half_width": 5.0}, {"sd": 10.0, "half_width": 0.0}, {"sd": -1.0, "half_width": 5.0}):
        with pytest.raises(ValueError, match="sd|half_width"):
            E.edits_needed(**bad)


def test_the_cli_evaluates_a_model_folder(model_dir, bench, tmp_path, capsys):
    from rewardedit_lib import cli

    code = cli.main(["evaluate", "--model", str(model_dir), "--bench", str(bench), "--out", str(tmp_path / "e"),
                     "--steps", "2", "--limit", "3", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "evaluated 3 edits" in out and "following yes %" in out
    assert len(E.read_results(tmp_path / "e")) == 3
    # the toy default: deterministic DDIM steps without guidance; --eta 1 asks for ancestral steps
    recorded = json.loads((tmp_path / "e" / "edits" / "settings.json").read_text())
    assert (recorded["eta"], recorded["guidance_scale"], recorded["image_guidance_scale"]) == (0.0, 1.0, 1.0)
    assert cli.main(["evaluate", "--model", str(model_dir), "--bench", str(bench), "--out", str(tmp_path / "e1"),
                     "--steps", "2", "--limit", "1", "--eta", "1", "--no-progress"]) == 0
    assert json.loads((tmp_path / "e1" / "edits" / "settings.json").read_text())["eta"] == 1.0


# --------------------------------------------------------------------------------------------------
# Side by side on a CPU's cores
# --------------------------------------------------------------------------------------------------
def _without_paths(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "edit"} for r in rows]  # a row names its edit's folder


@pytest.fixture
def spawned(monkeypatch) -> list:
    """Every share-out to worker processes: (job function, jobs, processes)."""
    from rewardedit_lib import parallel

    calls, run_jobs = [], parallel.run_jobs

    def spy(fn, jobs, split, **kw):
        calls.append((fn.__name__, len(jobs), split.workers))
        return run_jobs(fn, jobs, split, **kw)

    monkeypatch.setattr(parallel, "run_jobs", spy)
    return calls


def _one_thread(fn):
    """``fn()`` with one torch thread, as each worker runs: the same batches must then give the same bytes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _same_folders(one: Path, two: Path, items) -> None:
    assert _without_paths(E.read_results(two)) == _without_paths(E.read_results(one))
    for it in items:
        assert (two / "edits" / f"{it.id}.png").read_bytes() == (one / "edits" / f"{it.id}.png").read_bytes()
    import sqlite3

    with sqlite3.connect(two / "judge" / "answers.sqlite") as con:  # each edit asked once per perspective
        assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 3 * len(items)


def test_workers_make_the_batches_this_process_would_and_their_verdicts_give_the_same_rows(model_dir, bench,
                                                                                          tmp_path, spawned):
    items = read_real_edit(bench).items  # 2 images x 7 edit types

    def runs(root: Path) -> dict:
        return {root / "high": {"seed": 0}, root / "low": {"seed": 0, "reward_scores": (0.0, 5.0, 5.0)}}

    alone = _one_thread(lambda: E.evaluate_many(model_dir, bench, runs(tmp_path / "one"), settings=FAST,
                                                batch_size=4, progress=False, workers=1))
    assert spawned == []
    side = E.evaluate_many(model_dir, bench, runs(tmp_path / "two"), settings=FAST, batch_size=4, progress=False,
                           workers=2)
    assert spawned == [("_evaluate_share", 2, 2)]  # 28 edits in 7 batches of 4: every other batch each
    for name in ("high", "low"):
        _same_folders(tmp_path / "one" / name, tmp_path / "two" / name, items)
        assert _without_paths(side[tmp_path / "two" / name].rows) == _without_paths(alone[tmp_path / "one" / name].rows)
    assert side[tmp_path / "two" / "low"].edit_s > 0 and side[tmp_path / "two" / "low"].judge_s > 0
    # a rerun finds every edit made: nothing is shared out again
    E.evaluate_many(model_dir, bench, runs(tmp_path / "two"), settings=FAST, batch_size=4, progress=False, workers=2)
    assert len(spawned) == 1


def test_several_models_are_shared_out_at_once_and_each_folder_is_what_evaluate_writes(model_dir, bench, tmp_path,
                                                                                     spawned):
    items = read_real_edit(bench).items
    baseline = tmp_path / "baseline-model"
    toy_pipeline(seed=1, rewards="none").save_pretrained(baseline)
    changes = {"num_inference_steps": 2, "seed": 3}
    models = {"multi": model_dir, "base": baseline}
    alone = {name: _one_thread(lambda m=m, name=name: E.evaluate(m, bench, tmp_path / "one" / name, changes=changes,
                                                                 batch_size=4, progress=False, workers=1))
             for name, m in models.items()}
    both = E.evaluate_models({tmp_path / "two" / name: m for name, m in models.items()}, bench, changes=changes,
                             batch_size=4, progress=False, workers=2)
    assert spawned == [("_evaluate_share", 2, 2)]  # one share-out for both models
    for name in models:
        _same_folders(tmp_path / "one" / name, tmp_path / "two" / name, items)
        report = both[tmp_path / "two" / name]
        assert _without_paths(report.rows) == _without_paths(alone[name].rows)
        assert report.summary["overall"] == alone[name].summary["overall"] and report.settings == alone[name].settings
        assert report.edit_s > 0 and report.judge_s > 0  # the workers' times, shared out by edits
    # in one process (a number of workers of 1, or too few edits for "auto"), the same call evaluates one by one
    again = _one_thread(lambda: E.evaluate_models({tmp_path / "three" / "base": baseline}, bench, changes=changes,
                                                  batch_size=4, progress=False))
    assert len(spawned) == 1 and _without_paths(again[tmp_path / "three" / "base"].rows) == _without_paths(alone["base"].rows)


def test_evaluation_goes_side_by_side_only_where_it_pays_and_a_split_that_cannot_work_is_refused(monkeypatch):
    from rewardedit_lib import cli

    split = E.edit_split
    monkeypatch.setattr("rewardedit_lib.parallel.cpu_cores", lambda: 2)
    enough = 2 * E.EDITS_PER_WORKER
    assert (split(True, True, True, enough).workers, split(True, True, True, enough).threads) == (2, 1)
    assert split(True, True, True, enough - 1).workers == 1  # too few edits to repay two interpreters
    assert split(True, True, False, 10 * enough).workers == 1  # a loaded pipeline cannot travel
    assert split(True, False, True, 10 * enough).workers == 1  # GPT-4o: latency, not the cores
    assert split(False, True, True, 10 * enough).workers == 1  # a GPU is not shared between processes
    monkeypatch.setattr("rewardedit_lib.parallel.cpu_cores", lambda: 1)
    assert split(True, True, True, 10 * enough).workers == 1
    assert split(True, True, True, 10, workers=2).workers == 2  # asked for: done
    with pytest.raises(ValueError, match="workers=2: .*not the local toy judge"):
        split(True, False, True, 10, workers=2)
    with pytest.raises(ValueError, match="workers=2: .*loaded pipeline"):
        split(True, True, False, 10, workers=2)
    with pytest.raises(ValueError, match="workers must be 'auto' or a positive number"):
        split(True, True, True, 10, workers=0)
    parse = cli.build_parser().parse_args
    assert parse(["knob", "--model", "m", "--bench", "b", "--out", "o", "--workers", "2"]).workers == 2
    with pytest.raises(SystemExit):
        parse(["evaluate", "--model", "m", "--bench", "b", "--out", "o", "--workers", "0"])


# --------------------------------------------------------------------------------------------------
# Paired difference
# --------------------------------------------------------------------------------------------------
def test_paired_difference_is_the_mean_per_edit_difference_with_a_paired_interval():
    a = rows_of({"following": [5, 4, 1, 0, 3, 5], "preserving": [5] * 6, "quality": [3] * 6}, ["Add"] * 6)
    b = rows_of({"following": [5, 0, 1, 0, 0, 4], "preserving": [5] * 6, "quality": [4] * 6}, ["Add"] * 6)
    d = E.paired_difference(a, b, "following", n_boot=2000)
    assert set(d) == {"n", "yes_diff", "yes_diff_ci", "score_diff", "score_diff_ci"}
    # yes (score >= 4): A 1,1,0,0,0,1 vs B 1,0,0,0,0,1 -> +100 on one of six edits; scores +0 +4 +0 +0 +3 +1
    assert d["n"] == 6 and d["yes_diff"] == pytest.approx(100 / 6) and d["score_diff"] == pytest.approx(8 / 6)
    assert 0.0 <= d["yes_diff_ci"][0] <= d["yes_diff"] <= d["yes_diff_ci"][1] <= 100.0
    assert 0.0 <= d["score_diff_ci"][0] < d["score_diff"] < d["score_diff_ci"][1] <= 4.0
    assert E.paired_difference(a, b, "following", n_boot=2000) == d  # deterministic given the seed
    q = E.paired_difference(a, b, "quality")  # every edit 3 vs 4 (a no vs a yes): one difference, no spread
    assert (q["yes_diff"], q["yes_diff_ci"], q["score_diff"], q["score_diff_ci"]) == (-100.0, [-100.0, -100.0],
                                                                                      -1.0, [-1.0, -1.0])
    # the same rows: 0, and an interval of zero width
    same = E.paired_difference(a, a, "following")
    assert same["yes_diff"] == 0.0 and same["yes_diff_ci"] == [0.0, 0.0]
    assert same["score_diff"] == 0.0 and same["score_diff_ci"] == [0.0, 0.0]
    # items judged by one side only (another id, a failed verdict) are left out, not counted as zeros
    extra = rows_of({"following": [0], "preserving": [0], "quality": [0]}, ["Add"])
    extra[0]["id"] = "only-in-a"
    b_missing = [dict(r) for r in b]
    b_missing[4]["following"] = None
    d2 = E.paired_difference(a + extra, b_missing, "following", n_boot=2000)
    assert d2["n"] == 5 and d2["score_diff"] == pytest.approx(5 / 5) and d2["yes_diff"] == pytest.approx(100 / 5)
    assert E.paired_difference(extra, b, "following")["n"] == 0
    text = E.difference_text({"following": d}, "A - B")
    assert "following   yes-rate  +16.7 points" in text and "score +1.33" in text


# --------------------------------------------------------------------------------------------------
# The reward knob
# --------------------------------------------------------------------------------------------------
KNOB_CHANGES = {"num_inference_steps": 2, "seed": 0}


@pytest.fixture(scope="module")
def knob(model_dir, bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("knob") / "k"
    return out, K.reward_knob(model_dir, bench, out, changes=KNOB_CHANGES, n_boot=200, progress=False)


def _settings_of(folder: Path) -> dict:
    return json.loads((folder / "edits" / "settings.json").read_text())


def test_the_knob_edits_each_setting_into_a_folder_that_spells_it_out(knob, model_dir, bench):
    from rewardedit_lib.formats import PERFECT_FEEDBACK
    from rewardedit_lib.pipeline import DEFAULT_REWARD_TEXT

    out, rep = knob
    assert sorted(p.name for p in out.iterdir()) == ["F0-P5-Q5", "F5-P0-Q5", "F5-P5-Q0", "F5-P5-Q5", "knob.json"]
    assert rep.n == 14 and rep.low == 0.0 and rep.model == str(model_dir)
    failures = {"following": "The instruction was not followed.", "preserving": "The unrelated details were changed.",
                "quality": "The image has obvious artifacts, noise and blur."}
    for k, (p, failure) in enumerate(failures.items()):
        folder = rep.settings[p]["folder"]
        saved = _settings_of(folder)
        assert folder == out / ["F0-P5-Q5", "F5-P0-Q5", "F5-P5-Q0"][k]
        assert saved["reward_scores"] == [0.0 if j == k else 5.0 for j in range(3)]
        assert saved["reward_text"].split("; ") == [failure if j == k else PERFECT_FEEDBACK for j in range(3)]
        assert saved["num_inference_steps"] == 2 and saved["seed"] == 0 and saved["model"] == str(model_dir)
        assert len(E.read_results(folder)) == 14
    high = _settings_of(out / "F5-P5-Q5")
    assert high["reward_scores"] == [5.0] * 3 and high["reward_text"] == DEFAULT_REWARD_TEXT
    # the (5, 5, 5) folder is an ordinary evaluation: evaluate() with the same changes takes it as its own
    stamps = {q: q.stat().st_mtime_ns for q in (out / "F5-P5-Q5" / "edits").glob("*.png")}
    plain = E.evaluate(model_dir, bench, out / "F5-P5-Q5", changes=KNOB_CHANGES, n_boot=200, progress=False)
    assert plain.edit_s == 0 and {q: q.stat().st_mtime_ns for q in stamps} == stamps
    assert plain.summary["overall"]["following"]["yes_rate"] == rep.perspectives["following"]["yes_rate_high"]
    # only the rewards differ between two settings: same item, same noise, another edit
    row_hi, row_lo = E.read_results(out / "F5-P5-Q5")[0], E.read_results(out / "F0-P5-Q5")[0]
    assert row_hi["id"] == row_lo["id"]
    assert np.abs(np.asarray(Image.open(row_hi["edit"])).astype(int)
                  - np.asarray(Image.open(row_lo["edit"])).astype(int)).max() > 2


def test_the_knob_is_the_paired_yes_rate_difference_of_its_folders(knob):
    out, rep = knob
    high = E.read_results(out / "F5-P5-Q5")
    for k, p in enumerate(("following", "preserving", "quality")):
        low = E.read_results(rep.settings[p]["folder"])
        c = rep.perspectives[p]
        want_hi = 100 * np.mean([r[p]["yes"] for r in high])
        want_lo = 100 * np.mean([r[p]["yes"] for r in low])
        assert c["n"] == 14 and c["yes_rate_high"] == pytest.approx(want_hi)
        assert c["yes_rate_low"] == pytest.approx(want_lo)
        assert c["knob"] == pytest.approx(want_hi - want_lo)
        assert c["score_high"] == pytest.approx(np.mean([r[p]["score"] for r in high]))
        assert c["knob_ci"] == E.paired_difference(high, low, p, n_boot=200)["yes_diff_ci"]
        assert c["knob_ci"][0] <= c["knob"] <= c["knob_ci"][1]
        assert c["verdict"] == ("obeys" if c["knob_ci"][0] > 0 else "reversed" if c["knob_ci"][1] < 0
                                else "not shown")
    saved = json.loads((out / "knob.json").read_text())
    assert saved["perspectives"] == json.loads(json.dumps(rep.perspectives))
    assert K.read_knob(out).to_json() == saved  # round trip
    table = rep.table_markdown()
    assert table.splitlines()[0] == ("| perspective | edits | yes % at 5 | yes % at 0 | knob (points) [95% CI] | "
                                     "score at 5 | score at 0 | obeys? |")
    c = rep.perspectives["following"]
    assert table.splitlines()[2].startswith(f"| following | 14 | {c['yes_rate_high']:.1f} | {c['yes_rate_low']:.1f} "
                                            f"| {c['knob']:+.1f} [")
    assert str(rep).count("\n| ") == 4 and rep.verdict() in str(rep)


def test_a_second_knob_redoes_no_edit(knob, model_dir, bench):
    out, rep = knob
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/edits/*.png")}
    assert len(stamps) == 4 * 14
    again = K.reward_knob(model_dir, bench, out, changes=KNOB_CHANGES, n_boot=200, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/edits/*.png")} == stamps
    assert again.edit_s == 0 and again.perspectives == rep.perspectives


def test_the_knob_reuses_a_high_dir_and_its_settings_file_still_protects_it(model_dir, bench, tmp_path):
    ev = E.evaluate(model_dir, bench, tmp_path / "eval", changes=KNOB_CHANGES, limit=7, n_boot=50, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "eval" / "edits").glob("*.png")}
    rep = K.reward_knob(model_dir, bench, tmp_path / "k", high_dir=tmp_path / "eval", changes=KNOB_CHANGES,
                        limit=7, n_boot=50, progress=False)
    assert not (tmp_path / "k" / "F5-P5-Q5").exists() and rep.settings["high"]["folder"] == tmp_path / "eval"
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "eval" / "edits").glob("*.png")} == stamps  # reused
    assert rep.perspectives["quality"]["yes_rate_high"] == pytest.approx(ev.summary["overall"]["quality"]["yes_rate"])
    with pytest.raises(ValueError, match="num_inference_steps"):  # other steps than the folder was made with
        K.reward_knob(model_dir, bench, tmp_path / "k3", high_dir=tmp_path / "eval",
                      changes={**KNOB_CHANGES, "num_inference_steps": 3}, limit=7, progress=False)
    with pytest.raises(ValueError, match="evaluation of 7 items, the knob asks for 3"):
        K.reward_knob(model_dir, bench, tmp_path / "k", high_dir=tmp_path / "eval", changes=KNOB_CHANGES, limit=3,
                      progress=False)


def test_the_knob_asks_for_low_rewards_in_the_models_own_failure_words(bench, tmp_path):
    """A model that records its training data's failure sentences (``failure_reward_text``) is asked for a low
    score with them: the knob's low folders carry those sentences, and it survives save / load."""
    from rewardedit_lib import dataset
    from rewardedit_lib.formats import PERFECT_FEEDBACK, Reward, Rewards

    def rewards_of(*pairs):
        return Rewards(*(Reward(s, f) for s, f in pairs))

    rewards = [rewards_of((1, "The square vanished."), (2, "The background colour changed."), (5, PERFECT_FEEDBACK)),
               rewards_of((0, "Nothing was done."), (2, "The background colour changed."), (5, PERFECT_FEEDBACK)),
               rewards_of((0, "Nothing was done."), (3, "The red circle turned blue."), (5, PERFECT_FEEDBACK))]
    words = dataset.common_failure_text(rewards)
    assert words.split("; ") == ["Nothing was done.", "The background colour changed.",
                                 "The image has obvious artifacts, noise and blur."]  # no quality failure: generic
    pipe = toy_pipeline(seed=0)
    pipe.register_to_config(failure_reward_text=words)
    pipe.save_pretrained(tmp_path / "m")
    rep = K.reward_knob(tmp_path / "m", bench, tmp_path / "k", changes=KNOB_CHANGES, limit=2, n_boot=20, progress=False)
    for k, p in enumerate(("following", "preserving", "quality")):
        assert _settings_of(rep.settings[p]["folder"])["reward_text"].split("; ")[k] == words.split("; ")[k]
    with pytest.raises(ValueError, match="3 sentences"):
        K.knob_settings(0, "only one sentence")


def test_the_knob_refuses_a_model_without_rewards_by_name(bench, tmp_path):
    plain = tmp_path / "baseline-model"
    toy_pipeline(seed=0, rewards="none").save_pretrained(plain)
    with pytest.raises(ValueError, match=f"multi-reward model.*{plain}.*reads no rewards"):
        K.reward_knob(plain, bench, tmp_path / "k", changes=KNOB_CHANGES, limit=1, progress=False)
    assert not (tmp_path / "k").exists()  # refused before anything was edited
    with pytest.raises(ValueError, match="low=5"):
        K.knob_settings(5)
    with pytest.raises(ValueError, match="reward_scores"):
        K.reward_knob(plain, bench, tmp_path / "k", changes={"reward_scores": (1, 1, 1)}, progress=False)


def test_the_cli_knob_prints_the_table_and_refuses_a_baseline(model_dir, bench, tmp_path, capsys):
    from rewardedit_lib import cli

    code = cli.main(["knob", "--model", str(model_dir), "--bench", str(bench), "--out", str(tmp_path / "k"),
                     "--steps", "2", "--seed", "1", "--limit", "3", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "reward knob of" in out and "| perspective | edits | yes % at 5 | yes % at 0 |" in out
    assert all(f"| {p} | 3 |" in out for p in ("following", "preserving", "quality"))
    saved = json.loads((tmp_path / "k" / "knob.json").read_text())
    assert saved["n"] == 3 and saved["edit_settings"]["seed"] == 1 and saved["edit_settings"]["num_inference_steps"] == 2
    assert _settings_of(tmp_path / "k" / "F0-P5-Q5")["reward_scores"] == [0.0, 5.0, 5.0]
    assert cli.main(["knob", "--model", str(model_dir), "--bench", str(bench), "--out", str(tmp_path / "k2"),
                     "--low", "2", "--steps", "2", "--limit", "1", "--no-progress"]) == 0
    assert _settings_of(tmp_path / "k2" / "F5-P2-Q5")["reward_scores"] == [5.0, 2.0, 5.0]
    capsys.readouterr()
    plain = tmp_path / "plain"
    toy_pipeline(seed=0, rewards="none").save_pretrained(plain)
    assert cli.main(["knob", "--model", str(plain), "--bench", str(bench), "--out", str(tmp_path / "k3"),
                     "--limit", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "rewardedit knob: error:" in err and str(plain) in err
