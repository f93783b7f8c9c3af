"""Tests of the toy editing world (rewardedit_lib.toyworld).

What must hold: the generator is deterministic (same seed, same bytes; triplet i does not depend on n),
flaws occur at the requested rates, independently, and every flaw is visible in the pixels; the benchmark
is held out from training; instructions round-trip through the grammar; the correct editor does exactly
what an instruction says; the ground-truth file describes every triplet. Every fixture is built in tmp_path.
"""

from __future__ import annotations

import json
from dataclasses import replace
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rewardedit_lib import formats
from rewardedit_lib.formats import EDIT_TYPES
from rewardedit_lib.toyworld import (
    BACKGROUNDS,
    FOLLOWING_FLAWS,
    OBJECT_COLORS,
    PATTERN_LIGHT,
    PLANTED_QUALITY_FLAWS,
    PRESERVING_FLAWS,
    QUALITY_FLAWS,
    REGIONS,
    SHAPES,
    SIZES,
    TONES,
    EditSpec,
    FlawRates,
    Obj,
    Scene,
    apply_edit,
    apply_tone,
    bench_scenes,
    GENERATOR_VERSION,
    ensure_toy_bench,
    ensure_toy_dataset,
    is_benchmark_scene,
    iter_triplets,
    make_bench,
    make_triplet,
    object_mask,
    parse_instruction,
    phrase,
    random_edit,
    random_scene,
    read_truth,
    render,
    write_toy_bench,
    write_toy_dataset,
)

N_RATE = 2000
PERSP = ("following", "preserving", "quality")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def binomial_tol(p: float, n: int, k: float = 4.0) -> float:
    return k * math.sqrt(p * (1 - p) / n)


def most_common_colour(img: np.ndarray) -> tuple[int, ...]:
    flat = [tuple(int(v) for v in px) for px in img.reshape(-1, 3)]
    return Counter(flat).most_common(1)[0][0]


def two_object_scene(background: str = "gray") -> Scene:
    return Scene(size=32, background=background, objects=(
        Obj(shape="square", color="red", size="large", cell=0),
        Obj(shape="circle", color="blue", size="small", cell=4, dx=1, dy=-1),
    ))


# Generated once per module: the 2,000-triplet sets (about 5 s each on 2 cores).
@pytest.fixture(scope="module")
def default_set():
    return list(iter_triplets(N_RATE, seed=0))


@pytest.fixture(scope="module")
def custom_rates():
    return FlawRates(0.5, 0.1, 0.3)


@pytest.fixture(scope="module")
def custom_set(custom_rates):
    return list(iter_triplets(N_RATE, seed=1, rates=custom_rates))


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_trees(tmp_path):
    # Same folder name in two different parents: generator.json records the output folder's name in its
    # "command" (how to regenerate), so two differently named folders differ in that one line by design.
    a = write_toy_dataset(tmp_path / "a" / "toy", n=30, seed=3)
    b = write_toy_dataset(tmp_path / "b" / "toy", n=30, seed=3)
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert sorted(ta) == sorted(tb)
    # 30 folders x (prompt + 2 images) + 30 ideal images + seeds.json, flaws.jsonl, generator.json
    assert len(ta) == 30 * 3 + 30 + 3
    for rel in ta:
        assert ta[rel] == tb[rel], f"{rel} differs between two runs with the same seed"


def test_parallel_workers_write_the_same_tree(tmp_path):
    a = tree_bytes(write_toy_dataset(tmp_path / "a" / "toy", n=23, seed=3))
    b = tree_bytes(write_toy_dataset(tmp_path / "b" / "toy", n=23, seed=3, workers=3))  # uneven shares
    assert sorted(a) == sorted(b) and len(a) == 23 * 4 + 3
    assert [r for r in a if a[r] != b[r]] == []
    with pytest.raises(ValueError, match="workers"):
        write_toy_dataset(tmp_path / "c", n=2, workers=0)


def test_different_seed_gives_different_data(tmp_path):
    a = tree_bytes(write_toy_dataset(tmp_path / "a" / "toy", n=30, seed=3))
    b = tree_bytes(write_toy_dataset(tmp_path / "b" / "toy", n=30, seed=4))
    assert a["seeds.json"] != b["seeds.json"]
    common = set(a) & set(b)
    images = [r for r in common if r.endswith("_0.png") or r.startswith("_truth/ideal/")]
    differing = [r for r in images if a[r] != b[r]]
    # Not just one file: almost every image differs.
    assert len(differing) >= 0.8 * len(images)


def test_triplet_i_does_not_depend_on_n(tmp_path):
    small = write_toy_dataset(tmp_path / "s" / "toy", n=10, seed=5)
    big = write_toy_dataset(tmp_path / "b" / "toy", n=50, seed=5)
    ts, tb = tree_bytes(small), tree_bytes(big)
    per_triplet = [r for r in ts if r.startswith("toy-") or r.startswith("_truth/ideal/")]
    assert len(per_triplet) == 10 * 4
    for rel in per_triplet:
        assert tb[rel] == ts[rel], f"{rel} differs between n=10 and n=50"
    # seeds.json and flaws.jsonl of n=10 are prefixes of n=50's.
    assert json.loads(tb["seeds.json"])[:10] == json.loads(ts["seeds.json"])
    assert tb["_truth/flaws.jsonl"].decode().splitlines()[:10] == ts["_truth/flaws.jsonl"].decode().splitlines()

    # In memory too, also when starting part-way.
    whole = list(iter_triplets(12, seed=5))
    tail = list(iter_triplets(4, seed=5, start=8))
    for x, y in zip(whole[8:], tail):
        assert x.folder == y.folder and x.seed == y.seed and x.instruction == y.instruction
        assert x.flaws == y.flaws
        for arr in ("source", "ideal", "edited"):
            assert np.array_equal(getattr(x, arr), getattr(y, arr))


def test_ensure_toy_dataset_reuses_matching_data_and_regenerates_otherwise(tmp_path):
    out = ensure_toy_dataset(tmp_path / "toy", n=5, seed=2)
    marker = out / "toy-000000" / "prompt.json"
    marker.write_text(marker.read_text() + " ")  # a change that a rewrite would undo
    ensure_toy_dataset(out, n=5, seed=2)
    assert marker.read_text().endswith(" "), "same settings must not regenerate"
    ensure_toy_dataset(out, n=6, seed=2)
    assert not marker.read_text().endswith(" "), "different settings must regenerate"
    assert len(json.loads((out / "seeds.json").read_text())) == 6
    # Data from another generator version is regenerated too.
    manifest = out / "_truth" / "generator.json"
    man = json.loads(manifest.read_text())
    assert man["generator"] == GENERATOR_VERSION
    manifest.write_text(json.dumps({**man, "generator": "toyworld-0"}))
    marker.write_text(marker.read_text() + " ")
    ensure_toy_dataset(out, n=6, seed=2)
    assert not marker.read_text().endswith(" ")
    assert json.loads(manifest.read_text())["generator"] == GENERATOR_VERSION


def test_ensure_toy_bench_reuses_matching_bench(tmp_path):
    out = ensure_toy_bench(tmp_path / "bench", n_images=3, seed=1)
    js = out / formats.REAL_EDIT_JSON
    js.write_text(js.read_text() + " ")
    ensure_toy_bench(out, n_images=3, seed=1)
    assert js.read_text().endswith(" ")
    ensure_toy_bench(out, n_images=4, seed=1)
    assert len(json.loads(js.read_text())) == 4


# --------------------------------------------------------------------------------------------------
# Flaw rates and coverage
# --------------------------------------------------------------------------------------------------
def _rates(triplets) -> dict[str, float]:
    n = len(triplets)
    return {p: sum(t.flaws[p] is not None for t in triplets) / n for p in PERSP}


def _check_rates(triplets, rates: FlawRates):
    n = len(triplets)
    measured = _rates(triplets)
    for p in PERSP:
        want = getattr(rates, p)
        assert abs(measured[p] - want) <= binomial_tol(want, n), f"{p}: measured {measured[p]:.3f}, want {want}"
    # Independence: each pair's joint rate is the product of the two rates.
    for i, p in enumerate(PERSP):
        for q in PERSP[i + 1:]:
            joint = sum(t.flaws[p] is not None and t.flaws[q] is not None for t in triplets) / n
            want = getattr(rates, p) * getattr(rates, q)
            assert abs(joint - want) <= binomial_tol(want, n), f"{p}&{q}: joint {joint:.3f}, want {want:.3f}"
    # All three at once, and none at all.
    perfect = sum(all(t.flaws[p] is None for p in PERSP) for t in triplets) / n
    want = (1 - rates.following) * (1 - rates.preserving) * (1 - rates.quality)
    assert abs(perfect - want) <= binomial_tol(want, n)


def test_default_flaw_rates_within_tolerance(default_set):
    assert len(default_set) == N_RATE
    _check_rates(default_set, FlawRates())


def test_default_rates_leave_about_half_imperfect(default_set):
    imperfect = sum(any(t.flaws[p] is not None for p in PERSP) for t in default_set) / len(default_set)
    assert 0.4 <= imperfect <= 0.6


def test_non_default_flaw_rates_within_tolerance(custom_set, custom_rates):
    _check_rates(custom_set, custom_rates)


def test_zero_and_one_rates_are_exact():
    none = [make_triplet(9, i, rates=FlawRates(0, 0, 0)) for i in range(40)]
    assert all(t.flaws == {"following": None, "preserving": None, "quality": None} for t in none)
    assert all(np.array_equal(t.edited, t.ideal) for t in none)
    every = [make_triplet(9, i, rates=FlawRates(1, 1, 1)) for i in range(40)]
    assert all(all(t.flaws[p] is not None for p in PERSP) for t in every)


def test_every_edit_type_and_flaw_kind_occurs(default_set):
    types = Counter(t.edit_type for t in default_set)
    assert set(types) == set(EDIT_TYPES)
    # iter_triplets cycles the edit types: each occurs equally often (2000 = 7 * 285 + 5).
    assert min(types.values()) >= N_RATE // 7 and max(types.values()) <= N_RATE // 7 + 1
    # Quality: the planted flaws, and noise where they cannot show (a flat picture); never blocks (version 4).
    planted_quality = (*PLANTED_QUALITY_FLAWS, "noise")
    for p, kinds in (("following", FOLLOWING_FLAWS), ("preserving", PRESERVING_FLAWS), ("quality", planted_quality)):
        seen = Counter(t.flaws[p] for t in default_set if t.flaws[p] is not None)
        assert set(seen) == set(kinds), f"{p}: saw {dict(seen)}"


def test_flaw_kinds_fit_the_edit_type(default_set, custom_set):
    allowed = {
        "Local": set(FOLLOWING_FLAWS), "Add": set(FOLLOWING_FLAWS), "Texture": set(FOLLOWING_FLAWS),
        "Remove": {"wrong_object", "no_change", "partial"},
        "Background": {"wrong_attribute", "no_change", "partial"},
        "Global": {"wrong_attribute", "no_change", "partial"},
        "Style": {"no_change", "partial"},
    }
    seen = {t: set() for t in EDIT_TYPES}
    for t in default_set + custom_set:
        f = t.flaws["following"]
        assert f is None or f in allowed[t.edit_type], (t.edit_type, f)
        if f is not None:
            seen[t.edit_type].add(f)
        # The background is what a Background edit changes, so shifting it is not a preserving failure.
        assert not (t.edit_type == "Background" and t.flaws["preserving"] == "background_shift")
    assert seen == allowed


def test_flaws_are_visible_and_perfect_triplets_are_ideal(default_set, custom_set):
    """A triplet labelled flawed must differ from the ideal edit; one labelled perfect must equal it."""
    for t in default_set + custom_set:
        flawed = any(t.flaws[p] is not None for p in PERSP)
        same = np.array_equal(t.edited, t.ideal)
        assert same != flawed, f"{t.folder} ({t.edit_type}, {t.flaws}): edited == ideal is {same}"


def test_quality_flaw_alone_always_changes_pixels():
    # Removing the only object leaves a flat image, on which blur alone changes nothing: the
    # generator must still make the labelled quality flaw visible.
    for i in range(300):
        t = make_triplet(11, i, rates=FlawRates(0, 0, 1), edit_type="Remove")
        assert t.flaws["quality"] in QUALITY_FLAWS
        assert not np.array_equal(t.edited, t.ideal), f"{i}: {t.flaws['quality']} on {t.source_scene}"


def test_preserving_flaw_alone_always_changes_pixels_after_tone():
    # A background shift that the Global tone clips away (e.g. a black background pushed to 0 in red,
    # then made cooler) would be a labelled but invisible flaw.
    for i in range(300):
        t = make_triplet(12, i, rates=FlawRates(0, 1, 0), edit_type="Global")
        assert t.flaws["preserving"] in PRESERVING_FLAWS
        assert not np.array_equal(t.edited, t.ideal), f"{i}: {t.flaws} on {t.source_scene} -> {t.spec}"


# --------------------------------------------------------------------------------------------------
# The held-out benchmark
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_and_train(tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout")
    bench = write_toy_bench(root / "bench", n_images=20, seed=0)
    train_same = write_toy_dataset(root / "train0", n=300, seed=0)
    train_other = write_toy_dataset(root / "train7", n=300, seed=7)
    return bench, [train_same, train_other]


def test_benchmark_images_never_in_training_set(bench_and_train):
    bench, trains = bench_and_train
    bench_imgs = {pixels(p).tobytes(): p.name for p in sorted((bench / "images").glob("*.png"))}
    assert len(bench_imgs) == 20, "bench images must be 20 distinct pictures"
    n_checked = 0
    for train in trains:
        files = [p for p in train.rglob("*.png")]
        assert len(files) == 300 * 3
        for p in files:
            arr = pixels(p)
            assert arr.tobytes() not in bench_imgs, f"{p} equals benchmark image {bench_imgs.get(arr.tobytes())}"
            n_checked += 1
    assert n_checked == 2 * 900


def test_benchmark_split_of_scenes(bench_and_train):
    bench, trains = bench_and_train
    for train in trains:
        truth = read_truth(train)
        assert len(truth) == 300
        for d in truth.values():
            assert not is_benchmark_scene(Scene.from_dict(d["source_scene"])), d["folder"]
            assert not is_benchmark_scene(Scene.from_dict(d["ideal_scene"])), d["folder"]
    lines = [json.loads(x) for x in (bench / "_truth" / "ideal.jsonl").read_text().splitlines()]
    assert len(lines) == 20 * 7
    for d in lines:
        scene = Scene.from_dict(d["source_scene"])
        assert is_benchmark_scene(scene)
        # The bench image on disk is the rendering of that scene.
        assert np.array_equal(pixels(bench / "images" / d["image"]), render(scene))


def test_benchmark_split_does_not_depend_on_object_order():
    """Two scenes that differ only in the order their objects are listed render the same picture, so they
    must fall on the same side of the split -- otherwise a training scene can be pixel-identical to a
    benchmark image."""
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 100:
        s = random_scene(rng, 32, n_objects=int(rng.integers(2, 4)))
        for perm in ([1, 0, 2], [2, 1, 0], [1, 2, 0]):
            objs = tuple(s.objects[i] for i in perm if i < len(s.objects))
            t = Scene(size=s.size, background=s.background, objects=objs)
            assert np.array_equal(render(s), render(t))
            assert is_benchmark_scene(s) == is_benchmark_scene(t), (s, t)
        checked += 1


def test_bench_scenes_are_held_out_and_distinct():
    scenes = bench_scenes(30, seed=4)
    assert len(scenes) == 30
    assert all(is_benchmark_scene(s) for s in scenes)
    assert len({render(s).tobytes() for s in scenes}) == 30


# --------------------------------------------------------------------------------------------------
# The benchmark file
# --------------------------------------------------------------------------------------------------
def test_bench_json_has_seven_instructions_per_image_in_order(tmp_path):
    bench = write_toy_bench(tmp_path / "bench", n_images=20, seed=0)
    data = json.loads((bench / formats.REAL_EDIT_JSON).read_text())
    assert sorted(data) == [f"{k:04d}.png" for k in range(20)]
    line = re.compile(r"^([A-Za-z]+)\. (\d+): (.+)$")
    for name, lines in data.items():
        assert (bench / "images" / name).is_file()
        assert isinstance(lines, list) and len(lines) == 7
        for n, (text, etype) in enumerate(zip(lines, EDIT_TYPES), start=1):
            assert isinstance(text, str)
            m = line.match(text)
            assert m, text
            assert m.group(1) == etype and int(m.group(2)) == n
            spec = parse_instruction(m.group(3))
            assert spec is not None and spec.edit_type == etype, text
    # The reader agrees.
    items = formats.read_real_edit(bench).items
    assert len(items) == 140
    assert [it.edit_type for it in items[:7]] == list(EDIT_TYPES)


def test_bench_instructions_are_valid_for_their_scene():
    for scene, specs, texts in make_bench(10, seed=3):
        assert [s.edit_type for s in specs] == list(EDIT_TYPES)
        for spec, text in zip(specs, texts):
            assert parse_instruction(text) == spec
            ideal = apply_edit(scene, spec)  # raises if the instruction refers to a missing object
            assert not np.array_equal(render(ideal), render(scene)), f"{text} changes nothing"


def test_bench_is_deterministic(tmp_path):
    a = tree_bytes(write_toy_bench(tmp_path / "a" / "bench", n_images=5, seed=2))
    b = tree_bytes(write_toy_bench(tmp_path / "b" / "bench", n_images=5, seed=2))
    assert a == b


# --------------------------------------------------------------------------------------------------
# The instruction grammar
# --------------------------------------------------------------------------------------------------
def test_parse_inverts_phrase_for_many_random_specs():
    rng = np.random.default_rng(123)
    templates_seen: dict[str, set[str]] = {t: set() for t in EDIT_TYPES}
    for k in range(700):
        scene = random_scene(rng, 32)
        etype = EDIT_TYPES[k % 7]
        spec = random_edit(scene, etype, rng)
        text = phrase(spec, rng)
        assert parse_instruction(text) == spec, text
        # Tolerant of case, extra spaces and a final full stop.
        assert parse_instruction("  " + text.upper().replace(" ", "  ") + ". ") == spec
        # Record which template was used (the text with the words of the spec blanked out).
        templates_seen[etype].add(re.sub(r"\b(" + "|".join(list(OBJECT_COLORS) + list(SHAPES) + list(SIZES)
                                                         + list(BACKGROUNDS) + list(REGIONS)) + r")\b", "_", text))
    # Every template of every type was exercised.
    assert len(templates_seen["Local"]) == 4 and len(templates_seen["Remove"]) == 4
    assert len(templates_seen["Global"]) == 8 and len(templates_seen["Style"]) == 3


def test_parse_inverts_phrase_for_every_add_and_global_value():
    rng = np.random.default_rng(5)
    for color in OBJECT_COLORS:
        for shape in SHAPES:
            for size in SIZES:
                for region in REGIONS:
                    spec = EditSpec("Add", value=color, shape=shape, size=size, region=region)
                    assert parse_instruction(phrase(spec, rng)) == spec
    for tone in TONES:
        for _ in range(6):
            spec = EditSpec("Global", value=tone)
            assert parse_instruction(phrase(spec, rng)) == spec
    for pattern in ("stripes", "checks"):
        for _ in range(6):
            spec = EditSpec("Texture", target=("red", "circle"), value=pattern)
            assert parse_instruction(phrase(spec, rng)) == spec


@pytest.mark.parametrize("text", [
    "", "   ", "make it pop", "remove the pink square", "remove the red hexagon",
    "add a huge red square at the top", "add a small red square at the middle",
    "make the background purple", "turn the red square", "please remove the red square now",
    "Local. 1: turn the red square blue",
])
def test_parse_rejects_text_outside_the_grammar(text):
    assert parse_instruction(text) is None


# --------------------------------------------------------------------------------------------------
# The correct editor
# --------------------------------------------------------------------------------------------------
def test_local_edit_recolours_exactly_the_target_pixels():
    scene = two_object_scene()
    before = render(scene)
    after = render(apply_edit(scene, EditSpec("Local", target=("red", "square"), value="green")))
    mask = object_mask(scene.objects[0], 32)
    assert mask.sum() > 20
    changed = np.any(before != after, axis=-1)
    assert np.array_equal(changed, mask)
    assert (after[mask] == OBJECT_COLORS["green"]).all()


def test_remove_makes_the_object_background():
    scene = two_object_scene("teal")
    before = render(scene)
    after = render(apply_edit(scene, EditSpec("Remove", target=("blue", "circle"))))
    mask = object_mask(scene.objects[1], 32)
    assert (after[mask] == BACKGROUNDS["teal"]).all()
    assert np.array_equal(after[~mask], before[~mask])


def test_add_texture_background_global_style_edits():
    scene = two_object_scene("white")
    before = render(scene)
    # Add: a new object's pixels in its colour at the named region; nothing else changes.
    added = apply_edit(scene, EditSpec("Add", value="yellow", shape="triangle", size="large", region="bottom right"))
    new = added.objects[-1]
    assert new.cell == REGIONS.index("bottom right") == 8
    m = object_mask(new, 32)
    img = render(added)
    assert (img[m] == OBJECT_COLORS["yellow"]).all() and np.array_equal(img[~m], before[~m])
    # Texture: stripes inside the object, in the object colour and the light colour; nothing else changes.
    img = render(apply_edit(scene, EditSpec("Texture", target=("red", "square"), value="stripes")))
    m = object_mask(scene.objects[0], 32)
    inside = {tuple(int(v) for v in px) for px in img[m]}
    assert inside == {OBJECT_COLORS["red"], PATTERN_LIGHT}
    assert np.array_equal(img[~m], before[~m])
    # Background: exactly the non-object pixels take the new colour.
    img = render(apply_edit(scene, EditSpec("Background", value="black")))
    objs = object_mask(scene.objects[0], 32) | object_mask(scene.objects[1], 32)
    assert (img[~objs] == BACKGROUNDS["black"]).all() and np.array_equal(img[objs], before[objs])
    # Global: the tone transform of the whole picture.
    for tone in TONES:
        img = render(apply_edit(scene, EditSpec("Global", value=tone)))
        assert np.array_equal(img, apply_tone(before, tone))
        assert not np.array_equal(img, before)
    darker = render(apply_edit(scene, EditSpec("Global", value="darker")))
    assert darker.astype(int).sum() < before.astype(int).sum()
    # Style: outlines only -- object interiors become background, borders keep the object colour.
    img = render(apply_edit(scene, EditSpec("Style")))
    m = object_mask(scene.objects[0], 32)
    cols = {tuple(int(v) for v in px) for px in img[m]}
    assert cols == {OBJECT_COLORS["red"], BACKGROUNDS["white"]}
    assert np.array_equal(img[~objs], before[~objs])


def test_edit_of_missing_object_raises():
    with pytest.raises(ValueError, match="no green square"):
        apply_edit(two_object_scene(), EditSpec("Local", target=("green", "square"), value="red"))


def _only(t, p):
    return t.flaws[p] is not None and all(t.flaws[q] is None for q in PERSP if q != p)


def test_triplet_pixels_follow_their_flaws(default_set, custom_set):
    everything = default_set + custom_set
    counts = Counter()
    for k, t in enumerate(everything):
        if k % 8 == 0:  # (a sample: rendering all 4,000 twice costs seconds and adds little)
            assert np.array_equal(t.source, render(t.source_scene))
            assert np.array_equal(t.ideal, render(t.ideal_scene))
        assert t.ideal_scene == apply_edit(t.source_scene, t.spec)
        assert parse_instruction(t.instruction) == t.spec
        if all(t.flaws[p] is None for p in PERSP):
            assert np.array_equal(t.edited, t.ideal)
            counts["perfect"] += 1
        if _only(t, "following") and t.flaws["following"] == "no_change":
            assert np.array_equal(t.edited, t.source)
            counts["no_change"] += 1
        if _only(t, "quality"):
            assert not np.array_equal(t.edited, t.ideal)
            counts["quality"] += 1
        if _only(t, "following") and t.flaws["following"] == "wrong_attribute" and t.edit_type == "Local":
            obj = t.ideal_scene.find(t.spec.value, t.spec.target[1])
            got = t.edited[object_mask(obj, 32)]
            assert not (got == OBJECT_COLORS[t.spec.value]).all()  # wrong new colour
            assert not (got == OBJECT_COLORS[t.spec.target[0]]).all()  # but not unchanged either
            counts["wrong_attribute"] += 1
        if _only(t, "following") and t.flaws["following"] == "wrong_object" and t.edit_type == "Local":
            target = t.source_scene.find(*t.spec.target)
            m = object_mask(target, 32)
            assert np.array_equal(t.edited[m], t.source[m])  # the target is untouched
            assert not np.array_equal(t.edited[~m], t.source[~m])  # something else changed
            counts["wrong_object"] += 1
        if _only(t, "preserving"):
            counts["preserving"] += 1
            if t.edit_type == "Local":
                # The instruction's own target is edited correctly despite the damage elsewhere.
                obj = t.ideal_scene.find(t.spec.value, t.spec.target[1])
                assert (t.edited[object_mask(obj, 32)] == OBJECT_COLORS[t.spec.value]).all()
                counts["preserving-local"] += 1
            elif t.edit_type == "Remove":
                gone = t.source_scene.find(*t.spec.target)
                region = t.edited[object_mask(gone, 32)]
                assert (region == most_common_colour(t.edited)).all()
                counts["preserving-remove"] += 1
            elif t.edit_type == "Add":
                new = t.ideal_scene.objects[-1]
                assert (t.edited[object_mask(new, 32)] == OBJECT_COLORS[new.color]).all()
                counts["preserving-add"] += 1
    # Each case above was actually exercised, several times.
    for key in ("perfect", "no_change", "quality", "wrong_attribute", "wrong_object", "preserving",
                "preserving-local", "preserving-remove", "preserving-add"):
        assert counts[key] >= 3, (key, counts)


# --------------------------------------------------------------------------------------------------
# The ground-truth file
# --------------------------------------------------------------------------------------------------
def test_truth_file_has_one_consistent_line_per_folder(tmp_path):
    out = write_toy_dataset(tmp_path / "toy", n=40, seed=8, rates=FlawRates(0.5, 0.5, 0.5))
    seeds = formats.read_seeds(out)
    lines = (out / "_truth" / "flaws.jsonl").read_text().splitlines()
    assert len(lines) == len(seeds) == 40
    recs = [json.loads(x) for x in lines]
    assert [r["folder"] for r in recs] == [f for f, _ in seeds]
    for r in recs:
        for key in ("folder", "edit_type", "following_ok", "preserving_ok", "quality_ok"):
            assert key in r
        prompt = json.loads((out / r["folder"] / "prompt.json").read_text())
        assert r["edit_type"] == prompt["edit_type"] in EDIT_TYPES
        assert r["instruction"] == prompt["edit"]
        for p, kinds in (("following", FOLLOWING_FLAWS), ("preserving", PRESERVING_FLAWS),
                         ("quality", QUALITY_FLAWS)):
            assert type(r[f"{p}_ok"]) is bool
            assert r[f"{p}_ok"] == (r[f"{p}_flaw"] is None)
            assert r[f"{p}_flaw"] is None or r[f"{p}_flaw"] in kinds
        # The ideal image on disk is the rendering of the ideal scene; flawless edited equals it.
        ideal = pixels(out / "_truth" / "ideal" / f"{r['folder']}.png")
        assert np.array_equal(ideal, render(Scene.from_dict(r["ideal_scene"])))
        (sd,) = dict(seeds)[r["folder"]]
        edited = pixels(out / r["folder"] / f"{sd}_1.png")
        source = pixels(out / r["folder"] / f"{sd}_0.png")
        assert np.array_equal(source, render(Scene.from_dict(r["source_scene"])))
        perfect = r["following_ok"] and r["preserving_ok"] and r["quality_ok"]
        assert np.array_equal(edited, ideal) == perfect
    # With rates of 0.5, both values of every flag occur.
    for p in PERSP:
        assert {r[f"{p}_ok"] for r in recs} == {True, False}
    # read_truth agrees with the file.
    assert read_truth(out) == {r["folder"]: r for r in recs}
    # The manifest describes how to regenerate.
    man = json.loads((out / "_truth" / "generator.json").read_text())
    assert (man["n"], man["seed"], man["size"]) == (40, 8, 32)
    assert man["flaw_rates"] == {"following": 0.5, "preserving": 0.5, "quality": 0.5}


def test_toy_dataset_flags_match_generator(tmp_path):
    out = write_toy_dataset(tmp_path / "toy", n=21, seed=4)
    truth = read_truth(out)
    for t in iter_triplets(21, seed=4):
        r = truth[t.folder]
        assert r["edit_type"] == t.edit_type
        for p in PERSP:
            assert r[f"{p}_ok"] == (t.flaws[p] is None)
            assert r[f"{p}_flaw"] == t.flaws[p]


# --------------------------------------------------------------------------------------------------
# FlawRates
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("following", 1.5), ("preserving", -0.1), ("quality", 2),
                                         ("following", float("nan"))])
def test_flaw_rates_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FlawRates(**{field: value})


def test_flaw_rates_bounds_are_inclusive():
    assert FlawRates(0, 1, 0.5) == FlawRates(0.0, 1.0, 0.5)


def test_flaw_rates_parse():
    assert FlawRates.parse("0.1,0.2,0.3") == FlawRates(0.1, 0.2, 0.3)
    assert FlawRates.parse(" 0.1, 0.2 ,0.3 ") == FlawRates(0.1, 0.2, 0.3)
    assert FlawRates.parse("following=0.5") == FlawRates(0.5, 0.2, 0.2)
    assert FlawRates.parse("quality=0,preserving=1") == FlawRates(0.2, 1.0, 0.0)


@pytest.mark.parametrize("text,match", [
    ("0.1,0.2", "3 numbers"),
    ("0.1,0.2,0.3,0.4", "3 numbers"),
    ("colour=0.5", "colour"),
    ("following=2", "following"),
    ("0.1,0.2,1.3", "quality"),
    ("a,b,c", "wants numbers"),
    ("following=", "following=.. is not a number"),
])
def test_flaw_rates_parse_rejects_bad_input(text, match):
    with pytest.raises(ValueError, match=match):
        FlawRates.parse(text)


def test_the_colour_leak_world_tints_the_background_towards_the_instructions_colour(tmp_path):
    """The experimental world (``leak=True``): every preserving flaw of a Local / Add colour edit is the
    instruction's colour leaking into the background, which the toy judge fails as a background change; every
    other triplet, and the whole default world, is as before."""
    from rewardedit_lib.toy import judge as toy_judge

    rates = FlawRates(following=0.0, preserving=1.0, quality=0.0)
    leaks = others = 0
    for i in range(42):
        plain = make_triplet(3, i, rates=rates, edit_type=EDIT_TYPES[i % 7])
        leaked = make_triplet(3, i, rates=rates, edit_type=EDIT_TYPES[i % 7], leak=True)
        spec = leaked.spec
        if spec.edit_type not in ("Local", "Add"):
            assert np.array_equal(plain.edited, leaked.edited) and plain.flaws == leaked.flaws
            others += 1
            continue
        leaks += 1
        assert leaked.flaws["preserving"] == "background_shift"
        changed = np.any(leaked.ideal != leaked.edited, axis=2)  # the pixels the leak changed: background
        assert changed.any() and (leaked.ideal[changed] == leaked.ideal[changed][0]).all()
        before = leaked.ideal[changed].astype(int)
        after = leaked.edited[changed].astype(int)
        colour = np.array(OBJECT_COLORS[spec.value])
        # towards the named colour: nearer to it after the leak, by up to 80 levels in a channel
        assert (np.abs(after - colour).sum(axis=1) < np.abs(before - colour).sum(axis=1)).all()
        assert np.abs(after - before).max() <= 80
        verdict = toy_judge.judge(leaked.instruction, leaked.source, leaked.edited, "preserving", mode="evaluate")
        assert not verdict["yes"] and "background" in verdict["reason"]
    assert leaks >= 6 and others >= 24
    out = write_toy_dataset(tmp_path / "leak", n=7, seed=3, leak=True)
    manifest = json.loads((out / "_truth" / "generator.json").read_text())
    assert manifest["colour_leak"] is True and manifest["command"].endswith("--colour-leak")
    marker = out / "toy-000000" / "prompt.json"
    marker.write_text(marker.read_text() + " ")
    ensure_toy_dataset(out, n=7, seed=3, leak=True)
    assert marker.read_text().endswith(" "), "the same world must be reused"
    ensure_toy_dataset(out, n=7, seed=3)
    assert not marker.read_text().endswith(" "), "the default world must not reuse a leak world's folder"
    assert "colour_leak" not in json.loads((out / "_truth" / "generator.json").read_text())


def test_the_attribute_confusion_world_always_gives_the_same_wrong_attribute(tmp_path):
    """``confuse=True``: every following flaw of an instruction with an attribute is that attribute confused
    with another (:data:`CONFUSED_WITH`), the same one for the same instruction, which the toy judge fails as
    not followed; Remove and Style draw their flaws as before, and a folder of one world is not reused for
    another."""
    from rewardedit_lib.toy import judge as toy_judge
    from rewardedit_lib.toy.editors import CONFUSED_WITH, attribute_confusion

    assert sorted(CONFUSED_WITH["Local"]) == sorted(OBJECT_COLORS) == sorted(CONFUSED_WITH["Local"].values())
    assert set(CONFUSED_WITH["Background"]) == set(BACKGROUNDS) and set(CONFUSED_WITH["Global"]) == set(TONES)
    rates = FlawRates(following=1.0, preserving=0.0, quality=0.0)
    confused, others = Counter(), 0
    for i in range(70):
        plain = make_triplet(5, i, rates=rates, edit_type=EDIT_TYPES[i % 7])
        tt = make_triplet(5, i, rates=rates, edit_type=EDIT_TYPES[i % 7], confuse=True)
        spec = tt.spec
        if spec.edit_type in ("Remove", "Style"):
            assert np.array_equal(plain.edited, tt.edited) and plain.flaws == tt.flaws
            others += 1
            continue
        wrong = attribute_confusion(tt.source_scene, spec)
        if wrong is None:  # the confusion would duplicate an object or change nothing: a random flaw instead
            continue
        confused[spec.edit_type] += 1
        assert wrong == apply_edit(tt.source_scene, replace(spec, value=CONFUSED_WITH[spec.edit_type][spec.value]))
        assert tt.flaws["following"] == "wrong_attribute"
        assert np.array_equal(tt.edited, render(wrong)) and not np.array_equal(tt.edited, tt.ideal)
        verdict = toy_judge.judge(tt.instruction, tt.source, tt.edited, "following", mode="evaluate")
        assert not verdict["yes"], (tt.instruction, verdict)
    assert set(confused) == {"Local", "Add", "Texture", "Background", "Global"} and others == 20
    assert sum(confused.values()) >= 40
    out = write_toy_dataset(tmp_path / "confused", n=7, seed=3, leak=True, confuse=True)
    manifest = json.loads((out / "_truth" / "generator.json").read_text())
    assert manifest["attribute_confusion"] is True
    assert manifest["command"].endswith("--colour-leak --attribute-confusion")
    marker = out / "toy-000000" / "prompt.json"
    marker.write_text(marker.read_text() + " ")
    ensure_toy_dataset(out, n=7, seed=3, leak=True, confuse=True)
    assert marker.read_text().endswith(" "), "the same world must be reused"
    ensure_toy_dataset(out, n=7, seed=3, leak=True)
    assert not marker.read_text().endswith(" "), "a world without the confusion must not reuse its folder"
    assert "attribute_confusion" not in json.loads((out / "_truth" / "generator.json").read_text())
