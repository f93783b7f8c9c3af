"""Tests of the record types and the file readers/writers (rewardedit_lib.formats).

What must hold: every writer round-trips through its reader; real-data variants (jpg files, ``edit`` lists,
several seeds per folder, prefixed reward keys) are read the way the paper's data needs; every bad input
raises a DataError that names the file or record and the field; ``on_error="skip"`` keeps the good records
and reports the bad ones. Every fixture is built in tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rewardedit_lib import formats
from rewardedit_lib.formats import (
    EDIT_TYPES,
    PERFECT_FEEDBACK,
    REAL_EDIT_JSON,
    BenchItem,
    DataError,
    Loaded,
    Problem,
    Reward,
    Rewards,
    Triplet,
    find_rewards_file,
    parse_real_edit_line,
    read_instructpix2pix,
    read_real_edit,
    read_rewards,
    read_seeds,
    write_instructpix2pix,
    write_real_edit,
    write_rewards,
)


# --------------------------------------------------------------------------------------------------
# Helpers: build datasets by hand, the way real data looks on disk
# --------------------------------------------------------------------------------------------------
def solid(rgb, size=8) -> Image.Image:
    return Image.new("RGB", (size, size), tuple(rgb))


def noise_img(seed: int, size=16) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


def arr(img) -> np.ndarray:
    return np.asarray(img.convert("RGB")).copy()


def seed_colour(seed: int, suffix: int) -> tuple[int, int, int]:
    """A distinct colour per (seed, source/edited) so a test can tell which file was read."""
    return ((seed * 37) % 256, (seed * 11 + 100 * suffix) % 256, 50 + 100 * suffix)


def make_folder(root: Path, folder: str, edit="turn the red square blue", seeds=(1,), ext="png",
                edit_type: str | None = "Local", extra: dict | None = None) -> Path:
    fdir = root / folder
    fdir.mkdir(parents=True, exist_ok=True)
    prompt = {"edit": edit, **(extra or {})}
    if edit_type is not None:
        prompt["edit_type"] = edit_type
    (fdir / "prompt.json").write_text(json.dumps(prompt))
    for sd in seeds:
        for suffix in (0, 1):
            solid(seed_colour(sd, suffix)).save(fdir / f"{sd}_{suffix}.{ext}")
    return fdir


def write_seeds(root: Path, entries) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "seeds.json").write_text(json.dumps([[f, list(s)] for f, s in entries]))


def rw(f: int, p: int, q: int, tag: str = "") -> Rewards:
    fb = lambda s, name: PERFECT_FEEDBACK if s == 5 else f"{name} problem {tag}".strip()  # noqa: E731
    return Rewards(Reward(f, fb(f, "following")), Reward(p, fb(p, "preserving")), Reward(q, fb(q, "quality")))


def raw_rewards(score=4, feedback="x") -> list[dict]:
    return [{"Score": score, "Negative Prompt": feedback} for _ in range(3)]


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def assert_data_error(excinfo, where_part: str, field: str | None, message_part: str = ""):
    err = excinfo.value
    assert isinstance(err, DataError)
    assert where_part in err.where, f"{where_part!r} not in where={err.where!r}"
    assert err.field == field, f"field {err.field!r}, want {field!r}"
    text = str(err)
    assert where_part in text
    if field is not None:
        assert f"field '{field}'" in text
    assert message_part.lower() in text.lower(), f"{message_part!r} not in {text!r}"


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------
def test_rewards_text_scores_feedbacks_and_json():
    r = Rewards(Reward(3, "the wrong colour"), Reward(5, PERFECT_FEEDBACK), Reward(1, "noisy"))
    assert r.text == f"the wrong colour; {PERFECT_FEEDBACK}; noisy"
    assert r.scores == (3, 5, 1)
    assert r.feedbacks == ("the wrong colour", PERFECT_FEEDBACK, "noisy")
    assert r.to_json() == [{"Score": 3, "Negative Prompt": "the wrong colour"},
                           {"Score": 5, "Negative Prompt": PERFECT_FEEDBACK},
                           {"Score": 1, "Negative Prompt": "noisy"}]


def test_rewards_perfect():
    p = Rewards.perfect()
    assert p.scores == (5, 5, 5)
    assert p.feedbacks == (PERFECT_FEEDBACK,) * 3
    assert PERFECT_FEEDBACK == "There are no noticeable negative aspects."
    assert p.text == "; ".join([PERFECT_FEEDBACK] * 3)
    assert "None" not in p.text


@pytest.mark.parametrize("score", [6, -1, 100])
def test_reward_rejects_out_of_range_scores(score):
    with pytest.raises(ValueError, match="outside 0-5"):
        Reward(score, "x")


@pytest.mark.parametrize("score", [4.5, "4", True, None, 4.0])
def test_reward_rejects_non_integer_scores(score):
    with pytest.raises(ValueError, match="integer"):
        Reward(score, "x")


def test_reward_accepts_bounds_and_rejects_non_string_feedback():
    assert Reward(0, "").score == 0 and Reward(5, "").score == 5
    with pytest.raises(ValueError, match="feedback"):
        Reward(3, None)


def test_data_error_and_problem_messages():
    e = DataError("some/file.json", "Score", "is bad")
    assert str(e) == "some/file.json: field 'Score': is bad"
    assert isinstance(e, ValueError)
    assert str(DataError(Path("f.json"), None, "broken")) == "f.json: broken"
    assert str(Problem("w", "f", "m")) == "w: field 'f': m"
    assert str(Problem("w", None, "m")) == "w: m"


def test_loaded_report():
    assert Loaded([1]).report() == "no bad records"
    rep = Loaded([], [Problem("a.json", "Score", "bad"), Problem("b", None, "gone")]).report()
    assert rep.splitlines()[0] == "2 bad record(s) skipped:"
    assert "a.json: field 'Score': bad" in rep and "b: gone" in rep


def test_bench_item_id_line_and_image():
    it = BenchItem(image="0003.png", index=4, edit_type="Texture", instruction="fill the red circle with stripes")
    assert it.id == "0003-4"
    assert it.line() == "Texture. 4: fill the red circle with stripes"
    assert parse_real_edit_line(it.line(), "x") == ("Texture", 4, "fill the red circle with stripes")
    with pytest.raises(ValueError, match="no image path"):
        it.load_image()


def test_on_error_must_be_raise_or_skip(tmp_path):
    write_json(tmp_path / "r.json", {})
    with pytest.raises(ValueError, match="on_error"):
        read_rewards(tmp_path / "r.json", on_error="ignore")


# --------------------------------------------------------------------------------------------------
# Writers are atomic (atomic_write_text itself: tests/test_plumbing.py)
# --------------------------------------------------------------------------------------------------
def test_writers_leave_no_temp_files(tmp_path):
    write_rewards(tmp_path / "r" / "RewardEdit_20K.json", {"a": rw(5, 5, 5)})
    write_instructpix2pix(tmp_path / "d", [Triplet("a", "x", solid((1, 2, 3)), solid((4, 5, 6)), seed=1)])
    write_real_edit(tmp_path / "b", [BenchItem("i.png", 1, "Style", "x")], {"i.png": solid((1, 2, 3))})
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------
def _triplets(n=4):
    return [Triplet(id=f"sample-{i}", instruction=f"make the background {c}", source=noise_img(2 * i),
                    edited=noise_img(2 * i + 1), edit_type=EDIT_TYPES[i % 7], seed=1000 + i,
                    meta={"input": f"caption {i}", "output": f"edited caption {i}", "n": i})
            for i, c in enumerate(["white", "gray", "black", "teal"][:n])]


def test_instructpix2pix_round_trip(tmp_path):
    src = _triplets()
    root = write_instructpix2pix(tmp_path / "ds", src)
    assert json.loads((root / "seeds.json").read_text()) == [[t.id, [t.seed]] for t in src]
    loaded = read_instructpix2pix(root, require_rewards=False)
    assert loaded.skipped == []
    got = loaded.items
    assert [t.id for t in got] == [t.id for t in src]
    for a, b in zip(src, got):
        assert b.instruction == a.instruction
        assert b.edit_type == a.edit_type
        assert b.seed == a.seed
        assert b.meta == a.meta
        assert b.rewards is None
        assert Path(b.source).name == f"{a.seed}_0.png" and Path(b.edited).name == f"{a.seed}_1.png"
        assert np.array_equal(arr(b.load_source()), arr(a.source))
        assert np.array_equal(arr(b.load_edited()), arr(a.edited))


def test_instructpix2pix_rewrite_from_paths_is_byte_identical(tmp_path):
    root = write_instructpix2pix(tmp_path / "a", _triplets())
    again = write_instructpix2pix(tmp_path / "b", read_instructpix2pix(root, require_rewards=False).items)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_instructpix2pix_round_trip_jpg(tmp_path):
    src = [Triplet("j", "remove the red square", solid((200, 40, 40), 16), solid((40, 40, 200), 16),
                   edit_type="Remove", seed=7)]
    root = write_instructpix2pix(tmp_path / "ds", src, image_format="jpg")
    assert sorted(p.name for p in (root / "j").iterdir()) == ["7_0.jpg", "7_1.jpg", "prompt.json"]
    (t,) = read_instructpix2pix(root, require_rewards=False).items
    assert Path(t.source).suffix == ".jpg" and Path(t.edited).suffix == ".jpg"
    # JPEG is lossy: close, not equal.
    assert np.abs(arr(t.load_source()).astype(int) - (200, 40, 40)).max() <= 8
    assert np.abs(arr(t.load_edited()).astype(int) - (40, 40, 200)).max() <= 8


def test_write_instructpix2pix_needs_a_seed(tmp_path):
    with pytest.raises(DataError) as ei:
        write_instructpix2pix(tmp_path / "ds", [Triplet("noseed", "x", solid((1, 1, 1)), solid((2, 2, 2)))])
    assert_data_error(ei, "noseed", "seed")


def test_rewards_round_trip(tmp_path):
    rewards = {"a": rw(5, 5, 5), "b": rw(1, 3, 0, "b"), "c": rw(4, 2, 5, "c")}
    path = write_rewards(tmp_path / "RewardEdit_20K.json", rewards)
    loaded = read_rewards(path)
    assert loaded.items == rewards and loaded.skipped == []
    raw = json.loads(path.read_text())
    assert raw["b"] == [{"Score": 1, "Negative Prompt": "following problem b"},
                        {"Score": 3, "Negative Prompt": "preserving problem b"},
                        {"Score": 0, "Negative Prompt": "quality problem b"}]
    prefixed = read_rewards(write_rewards(tmp_path / "p.json", rewards, key_prefix="pix2pix-clip-filtered/train/"))
    assert prefixed.items == {f"pix2pix-clip-filtered/train/{k}": v for k, v in rewards.items()}


def test_rewards_accept_integral_floats(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": raw_rewards(score=4.0)})
    assert read_rewards(path).items["a"].scores == (4, 4, 4)


def test_real_edit_round_trip(tmp_path):
    items = [BenchItem("0000.png", n, t, f"instruction {n} for 0") for n, t in enumerate(EDIT_TYPES, start=1)]
    items += [BenchItem("0001.jpg", 1, "Local", "turn the red square blue"),
              BenchItem("0001.jpg", 2, "Style", "make it an outline sketch")]
    images = {"0000.png": noise_img(1), "0001.jpg": solid((10, 200, 30), 16)}
    root = write_real_edit(tmp_path / "bench", items, images)
    data = json.loads((root / REAL_EDIT_JSON).read_text())
    assert data["0000.png"] == [f"{t}. {n}: instruction {n} for 0" for n, t in enumerate(EDIT_TYPES, start=1)]
    loaded = read_real_edit(root)
    assert loaded.skipped == []
    assert loaded.items == [dataclasses.replace(it, image_path=root / "images" / it.image) for it in items]
    assert np.array_equal(arr(loaded.items[0].load_image()), arr(images["0000.png"]))
    assert np.abs(arr(loaded.items[-1].load_image()).astype(int) - (10, 200, 30)).max() <= 8


def test_real_edit_lines_are_tolerant_of_spacing_and_case():
    assert parse_real_edit_line("  local .  3 :  turn the red square blue  ", "w") == (
        "Local", 3, "turn the red square blue")
    assert parse_real_edit_line("BACKGROUND. 12: make the background teal", "w") == (
        "Background", 12, "make the background teal")


def test_toy_dataset_read_back_with_rewards(tmp_path):
    from rewardedit_lib.toyworld import iter_triplets, read_truth, write_toy_dataset

    root = write_toy_dataset(tmp_path / "toy", n=14, seed=6)
    truth = read_truth(root)
    expected = {}
    for folder, d in truth.items():
        expected[folder] = Rewards(*[
            Reward(5, PERFECT_FEEDBACK) if d[f"{p}_ok"] else Reward(1, f"{p}: {d[f'{p}_flaw']}")
            for p in ("following", "preserving", "quality")])
    rfile = write_rewards(root / "RewardEdit_20K.json", expected, key_prefix="pix2pix-clip-filtered/train/")
    for rewards_arg in (rfile, str(rfile), read_rewards(rfile).items):
        loaded = read_instructpix2pix(root, rewards=rewards_arg)
        assert loaded.skipped == []
        assert [t.id for t in loaded.items] == sorted(truth)
        for t in loaded.items:
            assert t.rewards == expected[t.id]
            assert t.edit_type == truth[t.id]["edit_type"]
            assert t.instruction == truth[t.id]["instruction"]
            assert set(t.meta) == {"input", "output"}
    items = {t.id: t for t in read_instructpix2pix(root, rewards=rfile).items}
    for g in iter_triplets(14, seed=6):
        t = items[g.folder]
        assert t.seed == g.seed
        assert np.array_equal(arr(t.load_source()), g.source)
        assert np.array_equal(arr(t.load_edited()), g.edited)


# --------------------------------------------------------------------------------------------------
# Real-data variants
# --------------------------------------------------------------------------------------------------
def test_reads_jpg_files(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, "f1", seeds=(3,), ext="jpg")
    make_folder(root, "f2", seeds=(4,), ext="jpeg")
    write_seeds(root, [("f1", [3]), ("f2", [4])])
    t1, t2 = read_instructpix2pix(root, require_rewards=False).items
    assert Path(t1.source).name == "3_0.jpg" and Path(t1.edited).name == "3_1.jpg"
    assert Path(t2.source).name == "4_0.jpeg"
    assert np.abs(arr(t1.load_edited()).astype(int) - seed_colour(3, 1)).max() <= 8


def test_png_preferred_over_jpg_for_the_same_seed(tmp_path):
    root = tmp_path / "ds"
    fdir = make_folder(root, "f", seeds=(3,), ext="jpg")
    for suffix in (0, 1):
        solid((1, 2, 3)).save(fdir / f"3_{suffix}.png")
    write_seeds(root, [("f", [3])])
    (t,) = read_instructpix2pix(root, require_rewards=False).items
    assert Path(t.source).suffix == ".png" and Path(t.edited).suffix == ".png"


def test_edit_as_list_uses_first_non_empty_and_keeps_the_rest(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, "f1", edit=["", "   ", "  make the background white ", "second one", " ", "third"],
                extra={"input": "a cat", "output": "a dog"})
    make_folder(root, "f2", edit=["only one"])
    write_seeds(root, [("f1", [1]), ("f2", [1])])
    t1, t2 = read_instructpix2pix(root, require_rewards=False).items
    assert t1.instruction == "make the background white"
    assert t1.meta == {"input": "a cat", "output": "a dog", "edit_alternatives": ["second one", "third"]}
    assert t2.instruction == "only one"
    assert "edit_alternatives" not in t2.meta


def _multi_seed_dataset(root: Path) -> Path:
    # Files are created in ascending seed order; seeds.json lists them in another order.
    make_folder(root, "multi", seeds=(3, 5, 7))
    make_folder(root, "single", seeds=(9,))
    write_seeds(root, [("multi", [5, 7, 3]), ("single", [9])])
    return root


def _summary(loaded):
    return [(t.id, t.seed, Path(t.source).name, Path(t.edited).name,
             tuple(arr(t.load_source())[0, 0]), tuple(arr(t.load_edited())[0, 0])) for t in loaded.items]


def test_seeds_first_and_all_follow_seeds_json_not_the_directory(tmp_path, monkeypatch):
    root = _multi_seed_dataset(tmp_path / "ds")
    first = read_instructpix2pix(root, require_rewards=False, seeds="first")
    assert _summary(first) == [
        ("multi", 5, "5_0.png", "5_1.png", seed_colour(5, 0), seed_colour(5, 1)),
        ("single", 9, "9_0.png", "9_1.png", seed_colour(9, 0), seed_colour(9, 1)),
    ]
    every = read_instructpix2pix(root, require_rewards=False, seeds="all")
    assert [(i, s) for i, s, *_ in _summary(every)] == [("multi#5", 5), ("multi#7", 7), ("multi#3", 3),
                                                       ("single", 9)]
    for _, sd, s_name, e_name, s_px, e_px in _summary(every):
        assert (s_name, e_name) == (f"{sd}_0.png", f"{sd}_1.png")
        assert (s_px, e_px) == (seed_colour(sd, 0), seed_colour(sd, 1))

    # Directory listings in the opposite order change nothing.
    orig_iterdir, orig_glob, orig_listdir = Path.iterdir, Path.glob, os.listdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(orig_iterdir(self), reverse=True)))
    monkeypatch.setattr(Path, "glob", lambda self, pat: iter(sorted(orig_glob(self, pat), reverse=True)))
    monkeypatch.setattr(os, "listdir", lambda p=".": sorted(orig_listdir(p), reverse=True))
    assert _summary(read_instructpix2pix(root, require_rewards=False, seeds="first")) == _summary(first)
    assert _summary(read_instructpix2pix(root, require_rewards=False, seeds="all")) == _summary(every)


def test_seeds_all_keeps_shared_prompt_and_rewards(tmp_path):
    root = _multi_seed_dataset(tmp_path / "ds")
    rewards = {"multi": rw(2, 3, 4), "single": rw(5, 5, 5)}
    items = read_instructpix2pix(root, rewards=rewards, seeds="all").items
    assert [t.rewards for t in items] == [rewards["multi"]] * 3 + [rewards["single"]]
    assert {t.instruction for t in items} == {"turn the red square blue"}


def test_reward_keys_with_a_prefix_match_the_folder(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, "0012345")
    make_folder(root, "0067890")
    write_seeds(root, [("0012345", [1]), ("0067890", [1])])
    a, b = rw(1, 2, 3, "a"), rw(4, 5, 0, "b")
    rewards = {"pix2pix-clip-filtered/train/0012345": a, "/other/prefix/0067890/": b}
    items = read_instructpix2pix(root, rewards=rewards).items
    assert [t.rewards for t in items] == [a, b]
    # An exact key wins over a longer key that ends with the folder.
    exact = rw(0, 0, 0, "exact")
    items = read_instructpix2pix(root, rewards={**rewards, "0012345": exact}).items
    assert items[0].rewards == exact


def test_reward_key_matching_needs_whole_path_parts(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, "345")
    write_seeds(root, [("345", [1])])
    # "train/012345" ends with the characters "345" but not with the folder "345".
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards={"train/012345": rw(1, 1, 1)})
    assert_data_error(ei, "345", "rewards", "no entry")


def test_ambiguous_reward_keys_are_an_error(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, "f")
    write_seeds(root, [("f", [1])])
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards={"a/f": rw(1, 1, 1), "b/f": rw(2, 2, 2)})
    assert_data_error(ei, "f", "rewards", "ambiguous")


def test_missing_rewards_entry(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, "has")
    make_folder(root, "lacks-rewards")
    write_seeds(root, [("has", [1]), ("lacks-rewards", [1])])
    rfile = write_rewards(tmp_path / "RewardEdit_20K.json", {"has": rw(5, 5, 5)})
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards=rfile)
    assert_data_error(ei, "lacks-rewards", "rewards", "no entry")
    # Not required: the folder is read with no rewards.
    items = read_instructpix2pix(root, rewards=rfile, require_rewards=False).items
    assert [(t.id, t.rewards) for t in items] == [("has", rw(5, 5, 5)), ("lacks-rewards", None)]


def test_find_rewards_file(tmp_path):
    with pytest.raises(DataError) as ei:
        find_rewards_file(tmp_path)
    assert_data_error(ei, str(tmp_path), None, "RewardEdit_20K.json")
    p = write_rewards(tmp_path / "snap" / "sub" / "RewardEdit_20K.json", {"a": rw(5, 5, 5)})
    assert find_rewards_file(tmp_path) == p


# --------------------------------------------------------------------------------------------------
# Bad input: each raises a DataError naming the file/record and the field
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def good_ds(tmp_path):
    root = tmp_path / "ds"
    make_folder(root, "f0", seeds=(11,))
    write_seeds(root, [("f0", [11])])
    return root


@pytest.mark.parametrize("which,field", [(0, "source"), (1, "edited")])
def test_missing_image(good_ds, which, field):
    (good_ds / "f0" / f"11_{which}.png").unlink()
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(good_ds, require_rewards=False)
    assert_data_error(ei, os.path.join("f0", f"11_{which}.png"), field, "missing")


@pytest.mark.parametrize("content", [b"this is not a png at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "truncate"])
def test_corrupt_image(good_ds, content):
    p = good_ds / "f0" / "11_1.png"
    if content == "truncate":
        noise_img(3, 64).save(p)
        content = p.read_bytes()[: len(p.read_bytes()) // 2]
    p.write_bytes(content)
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(good_ds, require_rewards=False)
    assert_data_error(ei, os.path.join("f0", "11_1.png"), "edited", "corrupt")
    # check_images=False defers opening: the record is returned, and only loading it fails.
    (t,) = read_instructpix2pix(good_ds, require_rewards=False, check_images=False).items
    with pytest.raises((OSError, SyntaxError)):
        t.load_edited()


@pytest.mark.parametrize("name", ["seeds.json", "f0/prompt.json"])
def test_malformed_dataset_json(good_ds, name):
    (good_ds / name).write_text('{"edit": "unterminated')
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(good_ds, require_rewards=False)
    assert_data_error(ei, name.replace("/", os.sep), None, "malformed JSON")


def test_missing_seeds_and_prompt_files(good_ds):
    (good_ds / "f0" / "prompt.json").unlink()
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(good_ds, require_rewards=False)
    assert_data_error(ei, os.path.join("f0", "prompt.json"), None, "missing")
    # without seeds.json the folder is read in the reference's layout; no folder there holds a pair + JSON
    (good_ds / "seeds.json").unlink()
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(good_ds, require_rewards=False)
    assert_data_error(ei, "seeds.json", None, "missing")
    # a rewards file names the folder: its missing JSON is named
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(good_ds, rewards={"f0": rw(5, 5, 5)})
    assert_data_error(ei, os.path.join("f0", "prompt.json"), None, "no JSON with 'edit'")


@pytest.mark.parametrize("seeds_data,field", [
    ({"f0": [11]}, None),
    ([["f0"]], "[0]"),
    ([["f0", []]], "[0]"),
    ([["f0", [11]], [12, [1]]], "[1]"),
    ([["f0", ["eleven"]]], "[0]"),
    ([["f0", [None]]], "[0]"),
])
def test_bad_seeds_json_structure(good_ds, seeds_data, field):
    write_json(good_ds / "seeds.json", seeds_data)
    with pytest.raises(DataError) as ei:
        read_seeds(good_ds)
    assert_data_error(ei, "seeds.json", field)


@pytest.mark.parametrize("prompt,field,msg", [
    ({"edit": "", "edit_type": "Local"}, "edit", "empty instruction"),
    ({"edit": "   ", "edit_type": "Local"}, "edit", "empty instruction"),
    ({"edit": ["", "  "]}, "edit", "empty instruction"),
    ({"edit": []}, "edit", "empty instruction"),
    ({"input": "a cat"}, "edit", "missing"),
    ({"edit": 5}, "edit", "string"),
    ({"edit": ["ok", 3]}, "edit", "strings"),
    ({"edit": "zoom in", "edit_type": "Zoom"}, "edit_type", "'Zoom'"),
    ({"edit": "x", "edit_type": "local"}, "edit_type", "unknown edit type"),
    (["edit", "x"], None, "JSON object"),
])
def test_bad_prompt_json(good_ds, prompt, field, msg):
    write_json(good_ds / "f0" / "prompt.json", prompt)
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(good_ds, require_rewards=False)
    assert_data_error(ei, os.path.join("f0", "prompt.json"), field, msg)


def _rewards_error(tmp_path, value, key="0012345"):
    path = write_json(tmp_path / "RewardEdit_20K.json", {"fine": raw_rewards(), key: value})
    with pytest.raises(DataError) as ei:
        read_rewards(path)
    assert "RewardEdit_20K.json" in ei.value.where and key in ei.value.where
    return ei


@pytest.mark.parametrize("score", [6, -1, 10])
def test_rewards_score_out_of_range(tmp_path, score):
    value = raw_rewards()
    value[1] = {"Score": score, "Negative Prompt": "x"}
    ei = _rewards_error(tmp_path, value)
    assert_data_error(ei, "[preserving]", "Score", "outside 0-5")


@pytest.mark.parametrize("score", ["4", 4.5, True, None, [4]])
def test_rewards_score_not_an_integer(tmp_path, score):
    value = raw_rewards()
    value[2] = {"Score": score, "Negative Prompt": "x"}
    ei = _rewards_error(tmp_path, value)
    assert_data_error(ei, "[quality]", "Score", "integer")


def test_rewards_missing_perspective(tmp_path):
    ei = _rewards_error(tmp_path, raw_rewards()[:2])
    assert_data_error(ei, "0012345", None, "missing: quality")
    ei = _rewards_error(tmp_path, raw_rewards()[:1])
    assert_data_error(ei, "0012345", None, "missing: preserving, quality")
    ei = _rewards_error(tmp_path, raw_rewards() + raw_rewards()[:1])
    assert_data_error(ei, "0012345", None, "got 4")


@pytest.mark.parametrize("key", ["Score", "Negative Prompt"])
def test_rewards_missing_key(tmp_path, key):
    value = raw_rewards()
    del value[0][key]
    ei = _rewards_error(tmp_path, value)
    assert_data_error(ei, "[following]", key, "missing")


@pytest.mark.parametrize("value,field,msg", [
    ({"Score": 3}, None, "list of 3"),
    ("5; 5; 5", None, "list of 3"),
    ([5, 5, 5], None, "Score and Negative Prompt"),
    ([{"Score": 3, "Negative Prompt": None}] * 3, "Negative Prompt", "string"),
])
def test_rewards_bad_shapes(tmp_path, value, field, msg):
    ei = _rewards_error(tmp_path, value)
    assert_data_error(ei, "0012345", field, msg)


def test_rewards_malformed_or_wrong_top_level(tmp_path):
    p = tmp_path / "RewardEdit_20K.json"
    p.write_text('{"a": [{"Score": 5,}]}')
    with pytest.raises(DataError) as ei:
        read_rewards(p)
    assert_data_error(ei, "RewardEdit_20K.json", None, "malformed JSON at line 1")
    write_json(p, [raw_rewards()])
    with pytest.raises(DataError) as ei:
        read_rewards(p)
    assert_data_error(ei, "RewardEdit_20K.json", None, "JSON object")
    with pytest.raises(DataError) as ei:
        read_rewards(tmp_path / "nope.json")
    assert_data_error(ei, "nope.json", None, "missing")
    # Through the dataset reader too.
    root = tmp_path / "ds"
    make_folder(root, "f")
    write_seeds(root, [("f", [1])])
    p.write_text("not json")
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards=p)
    assert_data_error(ei, "RewardEdit_20K.json", None, "malformed JSON")


def _bench(tmp_path, data, images=("a.png",)):
    root = tmp_path / "bench"
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in images:
        solid((5, 6, 7)).save(root / "images" / name)
    write_json(root / REAL_EDIT_JSON, data)
    return root


@pytest.mark.parametrize("line,field,msg", [
    ("Zoom. 1: zoom in on the cat", "edit type", "'Zoom'"),
    ("Local. 1:", "instruction", "empty instruction"),
    ("Local. 1:    ", "instruction", "empty instruction"),
    ("Local 1: no dot", None, "<Type>. <n>: <instruction>"),
    ("Local. one: no number", None, "<Type>. <n>: <instruction>"),
    ("just an instruction", None, "<Type>. <n>: <instruction>"),
    (7, None, "expected a string"),
])
def test_real_edit_bad_lines(tmp_path, line, field, msg):
    root = _bench(tmp_path, {"a.png": ["Local. 1: turn the red square blue", line]})
    with pytest.raises(DataError) as ei:
        read_real_edit(root)
    assert_data_error(ei, f"{REAL_EDIT_JSON}['a.png'][1]", field, msg)


def test_real_edit_bad_files(tmp_path):
    root = _bench(tmp_path, {"a.png": ["Style. 1: make it an outline sketch"]})
    (root / REAL_EDIT_JSON).write_text('{"a.png": ["Style. 1: x"')
    with pytest.raises(DataError) as ei:
        read_real_edit(root)
    assert_data_error(ei, REAL_EDIT_JSON, None, "malformed JSON")
    write_json(root / REAL_EDIT_JSON, ["Style. 1: x"])
    with pytest.raises(DataError) as ei:
        read_real_edit(root)
    assert_data_error(ei, REAL_EDIT_JSON, None, "JSON object")
    (root / REAL_EDIT_JSON).unlink()
    with pytest.raises(DataError) as ei:
        read_real_edit(root)
    assert_data_error(ei, REAL_EDIT_JSON, None, "missing")


@pytest.mark.parametrize("lines", [[], "Style. 1: x", None])
def test_real_edit_entry_not_a_list(tmp_path, lines):
    root = _bench(tmp_path, {"a.png": lines})
    with pytest.raises(DataError) as ei:
        read_real_edit(root)
    assert_data_error(ei, "'a.png'", None, "non-empty list")


@pytest.mark.parametrize("check", [True, False])
def test_real_edit_missing_and_corrupt_image(tmp_path, check):
    root = _bench(tmp_path, {"gone.png": ["Style. 1: make it an outline sketch"]}, images=())
    with pytest.raises(DataError) as ei:
        read_real_edit(root, check_images=check)
    assert_data_error(ei, os.path.join("images", "gone.png"), "image", "missing")
    if check:
        (root / "images" / "gone.png").write_bytes(b"garbage")
        with pytest.raises(DataError) as ei:
            read_real_edit(root)
        assert_data_error(ei, os.path.join("images", "gone.png"), "image", "corrupt")


# --------------------------------------------------------------------------------------------------
# Skip and report
# --------------------------------------------------------------------------------------------------
def _mixed_dataset(tmp_path):
    """Four good folders and six bad ones, each bad in a different way."""
    root = tmp_path / "ds"
    good = ["g0", "g1", "g2", "g3"]
    for i, f in enumerate(good):
        make_folder(root, f, edit=f"instruction {i}", seeds=(i + 1,))
    make_folder(root, "bad-missing-image", seeds=(1,))
    (root / "bad-missing-image" / "1_0.png").unlink()
    make_folder(root, "bad-corrupt-image", seeds=(1,))
    (root / "bad-corrupt-image" / "1_1.png").write_bytes(b"\x00garbage\xff" * 10)
    make_folder(root, "bad-empty-edit", edit="  ")
    make_folder(root, "bad-edit-type", edit_type="Zoom")
    make_folder(root, "bad-prompt-json")
    (root / "bad-prompt-json" / "prompt.json").write_text("{not json")
    make_folder(root, "bad-no-rewards")
    order = ["g0", "bad-missing-image", "g1", "bad-corrupt-image", "bad-empty-edit", "g2", "bad-edit-type",
             "bad-prompt-json", "g3", "bad-no-rewards"]
    seeds = {f: [good.index(f) + 1] if f in good else [1] for f in order}
    write_seeds(root, [(f, seeds[f]) for f in order])
    rewards = {f"pix2pix-clip-filtered/train/{f}": rw(i % 6, 5, 3, f) for i, f in enumerate(order)
               if f != "bad-no-rewards"}
    expected_problems = {
        "bad-missing-image": "source", "bad-corrupt-image": "edited", "bad-empty-edit": "edit",
        "bad-edit-type": "edit_type", "bad-prompt-json": None, "bad-no-rewards": "rewards",
    }
    return root, good, rewards, expected_problems


def test_skip_returns_good_records_and_reports_each_bad_one(tmp_path):
    root, good, rewards, expected = _mixed_dataset(tmp_path)
    loaded = read_instructpix2pix(root, rewards=rewards, on_error="skip")
    assert [t.id for t in loaded.items] == good
    assert len(loaded.skipped) == len(expected) == 6
    for folder, field in expected.items():
        hits = [p for p in loaded.skipped if folder in p.where]
        assert len(hits) == 1, (folder, loaded.skipped)
        assert hits[0].field == field, (folder, hits[0])
    report = loaded.report()
    assert report.splitlines()[0] == "6 bad record(s) skipped:"
    for folder in expected:
        assert folder in report
    # The good records are intact.
    for i, t in enumerate(loaded.items):
        assert t.instruction == f"instruction {i}"
        assert t.seed == i + 1
        assert t.rewards == rewards[f"pix2pix-clip-filtered/train/{t.id}"]
        assert tuple(arr(t.load_source())[0, 0]) == seed_colour(i + 1, 0)
        assert tuple(arr(t.load_edited())[0, 0]) == seed_colour(i + 1, 1)
    # The default raises at the first bad record.
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards=rewards)
    assert_data_error(ei, "bad-missing-image", "source", "missing")


def test_skip_with_a_rewards_file_that_has_bad_entries(tmp_path):
    root = tmp_path / "ds"
    for f in ("a", "b", "c"):
        make_folder(root, f)
    write_seeds(root, [(f, [1]) for f in ("a", "b", "c")])
    bad_b = raw_rewards()
    bad_b[1]["Score"] = 9
    rfile = write_json(tmp_path / "RewardEdit_20K.json", {"a": raw_rewards(5), "b": bad_b, "c": raw_rewards(2)})
    loaded = read_instructpix2pix(root, rewards=rfile, on_error="skip")
    assert [(t.id, t.rewards.scores) for t in loaded.items] == [("a", (5, 5, 5)), ("c", (2, 2, 2))]
    # The bad entry is reported once, naming the entry and field; its folder is left out, not reported
    # a second time as "missing rewards".
    assert len(loaded.skipped) == 1
    (p,) = loaded.skipped
    assert "RewardEdit_20K.json" in p.where and "'b'" in p.where and "[preserving]" in p.where
    assert p.field == "Score" and "9" in p.message
    assert loaded.report().startswith("1 bad record(s) skipped:")
    # A folder with no entry at all is still reported, next to the bad entry.
    make_folder(root, "d")
    write_seeds(root, [(f, [1]) for f in ("a", "b", "c", "d")])
    loaded = read_instructpix2pix(root, rewards=rfile, on_error="skip")
    assert [t.id for t in loaded.items] == ["a", "c"]
    assert [(p.where, p.field) for p in loaded.skipped][1:] == [("d", "rewards")]
    assert loaded.report().startswith("2 bad record(s) skipped:")


def test_read_rewards_skip(tmp_path):
    value_missing = raw_rewards()[:2]
    value_str = raw_rewards()
    value_str[0]["Score"] = "4"
    path = write_json(tmp_path / "r.json", {"ok1": raw_rewards(3), "short": value_missing, "ok2": raw_rewards(0),
                                            "str": value_str})
    loaded = read_rewards(path, on_error="skip")
    assert loaded.items == {"ok1": Rewards(*[Reward(3, "x")] * 3), "ok2": Rewards(*[Reward(0, "x")] * 3)}
    assert len(loaded.skipped) == 2
    assert "'short'" in loaded.skipped[0].where and "quality" in loaded.skipped[0].message
    assert "'str'" in loaded.skipped[1].where and loaded.skipped[1].field == "Score"
    assert "2 bad record(s)" in loaded.report()


def test_read_real_edit_skip(tmp_path):
    data = {
        "a.png": ["Local. 1: turn the red square blue", "Style. 2: make it an outline sketch"],
        "b.png": ["Local. 1: turn the red square blue", "Zoom. 2: zoom in"],
        "c.png": ["Remove. 1:"],
        "missing.png": ["Style. 1: make it an outline sketch"],
        "d.png": ["Global. 1: make the image darker"],
    }
    root = _bench(tmp_path, data, images=("a.png", "b.png", "c.png", "d.png"))
    loaded = read_real_edit(root, on_error="skip")
    assert [(it.image, it.index, it.edit_type) for it in loaded.items] == [
        ("a.png", 1, "Local"), ("a.png", 2, "Style"), ("d.png", 1, "Global")]
    assert all(it.image_path == root / "images" / it.image for it in loaded.items)
    got = {(next(n for n in ("b.png", "c.png", "missing.png") if n in p.where), p.field) for p in loaded.skipped}
    assert got == {("b.png", "edit type"), ("c.png", "instruction"), ("missing.png", "image")}
    assert loaded.report().startswith("3 bad record(s) skipped:")
    with pytest.raises(DataError):
        read_real_edit(root)


@pytest.mark.parametrize("seeds", [[1.5], [True], ["12a"]])
def test_seeds_that_would_name_another_file_are_rejected(tmp_path, seeds):
    (tmp_path / "seeds.json").write_text(json.dumps([["f", seeds]]))
    with pytest.raises(formats.DataError, match=r"seeds.json: field '\[0\]': seeds must be integers"):
        formats.read_seeds(tmp_path)


def test_seed_policy_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="seeds must be 'first' or 'all'"):
        formats.read_instructpix2pix(tmp_path, seeds="last")


# --------------------------------------------------------------------------------------------------
# The reference's layouts: its training folders (no seeds.json) and Real-Edit under gpt_eval/
# --------------------------------------------------------------------------------------------------
def _reference_train(root: Path) -> Path:
    """pix2pix-clip-filtered-hf/train/<key>/: one pair <seed>_0.jpg / <seed>_1.jpg and prompt.json per folder,
    no seeds.json; a folder nobody annotated sits among them."""
    make_folder(root, "0012345", seeds=(4,), ext="jpg", edit_type=None)
    make_folder(root, "0067890", edit="add a hat", seeds=(8,), ext="jpg", edit_type=None)
    make_folder(root, "0099999", seeds=(2,), ext="jpg", edit_type=None)
    return root


def test_the_reference_training_layout_reads_the_folders_its_rewards_file_names(tmp_path):
    root = _reference_train(tmp_path / "pix2pix-clip-filtered-hf" / "train")
    a, b = rw(1, 2, 3, "a"), rw(5, 4, 5, "b")
    rfile = write_rewards(tmp_path / "RewardEdit_20K.json", {"0067890": b, "0012345": a},
                          key_prefix="pix2pix-clip-filtered/train/")
    loaded = read_instructpix2pix(root, rewards=rfile)
    assert loaded.skipped == [] and loaded.notes == []
    assert [(t.id, t.seed, t.instruction, t.rewards) for t in loaded.items] == [
        ("0067890", 8, "add a hat", b), ("0012345", 4, "turn the red square blue", a)]  # the rewards file's order
    assert [(Path(t.source).name, Path(t.edited).name) for t in loaded.items] == [("8_0.jpg", "8_1.jpg"),
                                                                                  ("4_0.jpg", "4_1.jpg")]
    assert np.abs(arr(loaded.items[0].load_edited()).astype(int)[0, 0] - seed_colour(8, 1)).max() <= 8
    # without a rewards file: every folder holding a pair and a JSON, sorted
    every = read_instructpix2pix(root, require_rewards=False)
    assert [t.id for t in every.items] == ["0012345", "0067890", "0099999"]


def test_reference_layout_names_original_and_edited_files_and_refuses_what_no_name_tells_apart(tmp_path):
    root = tmp_path / "train"
    (root / "k1").mkdir(parents=True)
    solid((200, 0, 0)).save(root / "k1" / "original_image.png")
    solid((0, 200, 0)).save(root / "k1" / "edited_image.png")
    write_json(root / "k1" / "meta.json", {"edit": "make it green"})  # the only JSON, whatever its name
    [t] = read_instructpix2pix(root, rewards={"k1": rw(5, 5, 5)}).items
    assert (Path(t.source).name, Path(t.edited).name, t.seed, t.instruction) == (
        "original_image.png", "edited_image.png", None, "make it green")
    # two images no name tells apart: the reference took glob() order; the kit names the files instead
    (root / "k2").mkdir()
    solid((1, 1, 1)).save(root / "k2" / "a.png")
    solid((2, 2, 2)).save(root / "k2" / "b.png")
    write_json(root / "k2" / "prompt.json", {"edit": "x"})
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards={"k2": rw(5, 5, 5)})
    assert_data_error(ei, "k2", "images", "['a.png', 'b.png']")
    write_json(root / "k1" / "other.json", {"edit": "y"})
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards={"k1": rw(5, 5, 5)})
    assert_data_error(ei, "k1", "edit", "several JSON files")


def test_a_rewards_key_without_its_folder_is_named(tmp_path):
    root = _reference_train(tmp_path / "train")
    rewards = {"pix2pix-clip-filtered/train/0012345": rw(5, 5, 5), "pix2pix-clip-filtered/train/0055555": rw(1, 1, 1)}
    with pytest.raises(DataError) as ei:
        read_instructpix2pix(root, rewards=rewards)
    assert_data_error(ei, "0055555", "folder", "no folder for it")
    loaded = read_instructpix2pix(root, rewards=rewards, on_error="skip")
    assert [t.id for t in loaded.items] == ["0012345"] and [p.record for p in loaded.skipped] == [
        "pix2pix-clip-filtered/train/0055555"]


def test_several_pairs_take_the_one_the_rewards_file_names_else_say_which(tmp_path):
    root = _multi_seed_dataset(tmp_path / "ds")
    named = {"pix2pix/multi#7": rw(1, 2, 3), "single": rw(5, 5, 5)}
    loaded = read_instructpix2pix(root, rewards=named)
    assert [(t.id, t.seed, t.rewards) for t in loaded.items] == [("multi", 7, rw(1, 2, 3)), ("single", 9, rw(5, 5, 5))]
    assert loaded.notes == []
    with pytest.warns(UserWarning, match=r"took the first listed in seeds.json: multi \(seed 5 of \[5, 7, 3\]\)"):
        loaded = read_instructpix2pix(root, rewards={"multi": rw(2, 2, 2), "single": rw(5, 5, 5)})
    assert [(t.id, t.seed) for t in loaded.items] == [("multi", 5), ("single", 9)]
    assert "1 folder(s) hold several image pairs" in loaded.notes[0] and "note: 1 folder(s)" in loaded.report()
    # seeds="all": each pair keeps the rewards its own key gives, the others the folder's
    every = read_instructpix2pix(root, rewards={**named, "multi": rw(0, 0, 0)}, seeds="all").items
    assert [(t.id, t.rewards) for t in every][:3] == [("multi#5", rw(0, 0, 0)), ("multi#7", rw(1, 2, 3)),
                                                     ("multi#3", rw(0, 0, 0))]


def test_real_edit_reads_the_same_items_in_the_kit_and_the_reference_layouts(tmp_path):
    import shutil

    items = [BenchItem("0000.png", n, t, f"instruction {n}") for n, t in enumerate(EDIT_TYPES, start=1)]
    items += [BenchItem("0001.jpg", 1, "Remove", "remove the cat")]
    kit = write_real_edit(tmp_path / "kit", items, {"0000.png": noise_img(1), "0001.jpg": noise_img(2)})
    repo = tmp_path / "Multi-Reward-Editing"  # the reference repo: gpt_eval/real_edit_instruct.json + gpt_eval/Real-Edit/
    shutil.copytree(kit / "images", repo / "gpt_eval" / "Real-Edit")
    shutil.copy(kit / REAL_EDIT_JSON, repo / "gpt_eval" / REAL_EDIT_JSON)
    strip = lambda loaded: [dataclasses.replace(it, image_path=None) for it in loaded.items]  # noqa: E731
    want = strip(read_real_edit(kit))
    assert want == items
    for root in (repo, repo / "gpt_eval"):
        loaded = read_real_edit(root)
        assert strip(loaded) == want
        assert all(it.image_path == repo / "gpt_eval" / "Real-Edit" / it.image for it in loaded.items)
    assert formats.locate_real_edit(repo) == (repo / "gpt_eval" / REAL_EDIT_JSON, repo / "gpt_eval" / "Real-Edit")
    # both image folders: ambiguous, unless images_dir says which; neither: named
    shutil.copytree(kit / "images", repo / "gpt_eval" / "images")
    with pytest.raises(DataError) as ei:
        read_real_edit(repo)
    assert_data_error(ei, "gpt_eval", "images", "both images and Real-Edit exist")
    assert strip(read_real_edit(repo, images_dir="Real-Edit")) == want
    shutil.rmtree(kit / "images")
    with pytest.raises(DataError) as ei:
        read_real_edit(kit)
    assert_data_error(ei, "images", "images", "images/ or Real-Edit/")
    with pytest.raises(DataError) as ei:
        read_real_edit(tmp_path / "nothing")
    assert_data_error(ei, REAL_EDIT_JSON, None, "gpt_eval/real_edit_instruct.json")
