"""Writing the toy world in the real file formats: a training set (InstructPix2Pix layout, with the ground
truth in ``_truth/``) and a Real-Edit-style benchmark, each written once and reused while its settings hold.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..formats import EDIT_TYPES, BenchItem, write_instructpix2pix_folder, write_real_edit
from ..plumbing import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json, read_jsonl, save_image
from .editors import FlawRates, apply_edit, iter_triplets
from .world import GENERATOR_VERSION, EditSpec, Scene, is_benchmark_scene, phrase, random_edit, random_scene, render

# Writing the real formats
# --------------------------------------------------------------------------------------------------
def _write_share(args: tuple[str, int, int, int, FlawRates, int, bool, bool]) -> list[tuple[list, str]]:
    """Write triplets ``start .. start+n-1`` (folders and ideal edits); return their (seeds.json entry, truth
    line) in order: one worker's share of :func:`write_toy_dataset`."""
    from PIL import Image

    out, start, n, seed, rates, size, leak, confuse = args
    rows = []
    for tt in iter_triplets(n, seed, rates=rates, size=size, start=start, leak=leak, confuse=confuse):
        entry = write_instructpix2pix_folder(out, tt.to_record())
        save_image(Image.fromarray(tt.ideal), Path(out) / "_truth" / "ideal" / f"{tt.folder}.png")
        rows.append((entry, json.dumps(tt.truth(), sort_keys=True)))
    return rows


def _world_switches(leak: bool, confuse: bool) -> dict[str, bool]:
    """The systematic-flaw switches under their manifest keys (``toy-data --colour-leak``, ...). A manifest records
    a switch only when it is on, so that every folder written before the switches existed still matches."""
    return {"colour_leak": leak, "attribute_confusion": confuse}


def write_toy_dataset(out: str | Path, n: int = 700, seed: int = 0, *, rates: FlawRates = FlawRates(),
                      size: int = 32, workers: int = 1, leak: bool = False, confuse: bool = False) -> Path:
    """Write ``n`` triplets in the InstructPix2Pix folder layout plus ``_truth/`` beside them.

    Layout: ``<folder>/prompt.json``, ``<folder>/<seed>_0.png`` (source), ``<folder>/<seed>_1.png``
    (edited), top-level ``seeds.json``; ``_truth/flaws.jsonl`` (one line per folder),
    ``_truth/ideal/<folder>.png`` (the correct edit) and ``_truth/generator.json`` (how to regenerate).

    ``workers`` > 1 draws and writes the triplets in that many processes (20,000 take ~100 s on one core):
    every triplet is a function of ``(seed, index)`` alone, so the folder is the same byte for byte.
    ``leak``, ``confuse``: the experimental colour-leak and attribute-confusion worlds (:func:`~.editors.make_triplet`),
    recorded in the manifest.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    truth_dir = out / "_truth"
    (truth_dir / "ideal").mkdir(parents=True, exist_ok=True)
    step = max(1, -(-n // (4 * workers)))  # a few shares per worker, so one slow share does not hold the rest
    shares = [(str(out), a, min(step, n - a), seed, rates, size, leak, confuse) for a in range(0, n, step)]
    if workers == 1 or len(shares) == 1:
        parts = [_write_share(s) for s in shares]
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(shares))) as pool:
            parts = pool.map(_write_share, shares)  # results in share order
    rows = [r for part in parts for r in part]
    atomic_write_json(out / "seeds.json", [e for e, _ in rows])
    atomic_write_text(truth_dir / "flaws.jsonl", "\n".join(t for _, t in rows) + "\n")  # the workers' JSON lines
    switched_on = [k for k, on in _world_switches(leak, confuse).items() if on]
    manifest = {"generator": GENERATOR_VERSION, "kind": "train", "n": n, "seed": seed, "size": size,
                "flaw_rates": asdict(rates), **{k: True for k in switched_on},
                "command": f"rewardedit toy-data --out {out.name} --n {n} --seed {seed} --size {size} "
                           f"--flaw-rates {rates.following},{rates.preserving},{rates.quality}"
                           + "".join(f" --{k.replace('_', '-')}" for k in switched_on)}
    atomic_write_json(truth_dir / "generator.json", manifest, indent=2, sort_keys=True)
    return out


def bench_scenes(n_images: int, seed: int = 0, size: int = 32) -> list[Scene]:
    """Held-out source scenes (from the benchmark part of the scene space; see :func:`is_benchmark_scene`).

    Every scene has at least one free cell (for Add) and unique (colour, shape) pairs, so all seven edit
    types are valid on it.
    """
    rng = np.random.default_rng([seed, 7919])
    scenes: list[Scene] = []
    seen: set[str] = set()
    while len(scenes) < n_images:
        s = random_scene(rng, size)
        h = s.canonical_hash()
        if is_benchmark_scene(s) and h not in seen:
            scenes.append(s)
            seen.add(h)
    return scenes


def make_bench(n_images: int = 20, seed: int = 0, size: int = 32) -> list[tuple[Scene, list[EditSpec], list[str]]]:
    """Benchmark scenes, each with one instruction per edit type (in Real-Edit's order)."""
    out = []
    for k, scene in enumerate(bench_scenes(n_images, seed, size)):
        rng = np.random.default_rng([seed, 104729, k])
        specs = [random_edit(scene, t, rng) for t in EDIT_TYPES]
        out.append((scene, specs, [phrase(sp, rng) for sp in specs]))
    return out


def write_toy_bench(out: str | Path, n_images: int = 20, seed: int = 0, size: int = 32) -> Path:
    """Write the toy Real-Edit benchmark: ``images/`` + ``real_edit_instruct.json`` (+ ``_truth/``)."""
    from PIL import Image

    out = Path(out)
    items: list[BenchItem] = []
    images: dict[str, Image.Image] = {}
    truth = []
    for k, (scene, specs, texts) in enumerate(make_bench(n_images, seed, size)):
        name = f"{k:04d}.png"
        images[name] = Image.fromarray(render(scene))
        for n, (spec, text) in enumerate(zip(specs, texts), start=1):
            items.append(BenchItem(image=name, index=n, edit_type=spec.edit_type, instruction=text))
            truth.append({"image": name, "index": n, "edit_type": spec.edit_type, "instruction": text,
                          "source_scene": scene.to_dict(), "ideal_scene": apply_edit(scene, spec).to_dict()})
    write_real_edit(out, items, images)
    (out / "_truth").mkdir(exist_ok=True)
    atomic_write_jsonl(out / "_truth" / "ideal.jsonl", truth, sort_keys=True)
    manifest = {"generator": GENERATOR_VERSION, "kind": "bench", "images": n_images, "seed": seed, "size": size,
                "command": f"rewardedit toy-bench --out {out.name} --images {n_images} --seed {seed} --size {size}"}
    atomic_write_json(out / "_truth" / "generator.json", manifest, indent=2, sort_keys=True)
    return out


def read_truth(data_dir: str | Path) -> dict[str, dict]:
    """The ground-truth flaws of a toy dataset, keyed by folder (for measuring judges and models only)."""
    path = Path(data_dir) / "_truth" / "flaws.jsonl"
    return {d["folder"]: d for d in read_jsonl(path)}


def ensure_toy_dataset(out: str | Path, n: int = 700, seed: int = 0, *, rates: FlawRates = FlawRates(),
                       size: int = 32, leak: bool = False, confuse: bool = False) -> Path:
    """Write the toy training set unless ``out`` already holds exactly this one (same generator settings).

    Notebooks call this so that re-running a notebook, or running the course twice, costs nothing.
    """
    out = Path(out)
    manifest = out / "_truth" / "generator.json"
    want = {"generator": GENERATOR_VERSION, "n": n, "seed": seed, "size": size, "flaw_rates": asdict(rates)}
    if manifest.exists() and (out / "seeds.json").exists():
        have = read_json(manifest)
        same = all(have.get(k) == v for k, v in want.items())
        if same and all(bool(have.get(k)) == on for k, on in _world_switches(leak, confuse).items()):
            return out
    return write_toy_dataset(out, n, seed, rates=rates, size=size, leak=leak, confuse=confuse)


def ensure_toy_bench(out: str | Path, n_images: int = 20, seed: int = 0, size: int = 32) -> Path:
    """Like :func:`ensure_toy_dataset`, for the toy Real-Edit benchmark."""
    out = Path(out)
    manifest = out / "_truth" / "generator.json"
    if manifest.exists() and (out / "real_edit_instruct.json").exists():
        have = read_json(manifest)
        if (have.get("generator"), have.get("images"), have.get("seed"), have.get("size")) == (
                GENERATOR_VERSION, n_images, seed, size):
            return out
    return write_toy_bench(out, n_images, seed, size)


__all__ = [
    "write_toy_dataset", "bench_scenes", "make_bench", "write_toy_bench", "read_truth", "ensure_toy_dataset",
    "ensure_toy_bench"
]
