"""Real-Edit evaluation: edits are deterministic and resumable, verdicts tabulate correctly, the real layout works."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rewardedit_lib import evaluate as E
from rewardedit_lib import toyworld
from rewardedit_lib.formats import read_real_edit
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
    report = E.evaluate(model_dir, bench, tmp_path / "out", settings=settings, progress=False)
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
    from rewardedit_lib.judge.server import ToyJudgeServer

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


def test_the_cli_evaluates_a_model_folder(model_dir, bench, tmp_path, capsys):
    from rewardedit_lib import cli

    code = cli.main(["evaluate", "--model", str(model_dir), "--bench", str(bench), "--out", str(tmp_path / "e"),
                     "--steps", "2", "--limit", "3", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "evaluated 3 edits" in out and "following yes %" in out
    assert len(E.read_results(tmp_path / "e")) == 3
    # the toy default samples ancestrally; --eta 0 asks for deterministic DDIM steps
    assert json.loads((tmp_path / "e" / "edits" / "settings.json").read_text())["eta"] == 1.0
    assert cli.main(["evaluate", "--model", str(model_dir), "--bench", str(bench), "--out", str(tmp_path / "e0"),
                     "--steps", "2", "--limit", "1", "--eta", "0", "--no-progress"]) == 0
    assert json.loads((tmp_path / "e0" / "edits" / "settings.json").read_text())["eta"] == 0.0
