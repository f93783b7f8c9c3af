"""One triplet record, and readers/writers for the file formats the paper's data uses.

Why one record type: the toy world, InstructPix2Pix folders, RewardEdit20K rewards and Real-Edit all end
up as "instruction + source + edited (+ three rewards)". Everything above this module (judge, trainer,
evaluator, notebooks) reads :class:`Triplet` / :class:`BenchItem` and never a file format directly, so
toy and real data run through exactly the same code.

Formats (the reference code's, see ``shared/PAPER.md``):

* InstructPix2Pix folder layout: ``seeds.json`` = ``[[folder, [seed, ...]], ...]``;
  ``<folder>/prompt.json`` with field ``edit`` (a string, or a list of strings);
  ``<folder>/<seed>_0.<ext>`` the source, ``<folder>/<seed>_1.<ext>`` the edited image. The reference's
  training layout (``pix2pix-clip-filtered-hf/train/<key>/``) has no ``seeds.json``: each folder holds one
  pair and a JSON with ``edit``, and the rewards file names the folders (see :func:`read_instructpix2pix`).
* ``RewardEdit_20K.json``: ``{folder_key: [{"Score": int, "Negative Prompt": str} x 3]}`` in the order
  following, preserving, quality. Keys may carry a prefix (``pix2pix-clip-filtered/train/<folder>``).
* Real-Edit: ``real_edit_instruct.json`` = ``{image_file: ["<Type>. <n>: <instruction>", ...]}`` plus an
  ``images/`` folder (the kit's layout) or a ``Real-Edit/`` folder beside it (the reference's, in its
  ``gpt_eval/``).

Bad input raises :class:`DataError` naming the file, record and field. With ``on_error="skip"`` the
reader keeps going and returns what it skipped, with reasons, in :attr:`Loaded.skipped`.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Iterable, Literal, Mapping, TypeVar

from .hub import REWARDEDIT_DATASET, download_dataset
from .plumbing import atomic_write_json, load_rgb, read_json, save_image
from .plumbing import atomic_write_text  # noqa: F401 -- re-exported: judge.annotate imports it from here

#: The seven Real-Edit edit types, in the benchmark's order.
EDIT_TYPES: tuple[str, ...] = ("Local", "Remove", "Add", "Texture", "Background", "Global", "Style")
#: The three perspectives, in RewardEdit_20K.json's order.
PERSPECTIVES: tuple[str, ...] = ("following", "preserving", "quality")
PERSPECTIVE_TITLES: dict[str, str] = {
    "following": "Instruction Following",
    "preserving": "Detail Preserving",
    "quality": "Generation Quality",
}
#: The feedback RewardEdit20K uses for a perfect score. Inference should feed this text, not the
#: reference code's "None", which never occurs in training (see PAPER.md, known defects).
PERFECT_FEEDBACK = "There are no noticeable negative aspects."
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")  # preference order, never glob order
MAX_SCORE = 5

OnError = Literal["raise", "skip"]
T = TypeVar("T")


class DataError(ValueError):
    """Bad input, with where it is: the file (or record) and the field."""

    def __init__(self, where: str | os.PathLike, field: str | None, message: str):
        self.where, self.field, self.message = str(where), field, message
        loc = f"{self.where}: field '{field}'" if field else self.where
        super().__init__(f"{loc}: {message}")


@dataclass(frozen=True)
class Problem:
    """One bad record that a reader skipped."""

    where: str
    field: str | None
    message: str
    record: str | None = None  # the record's key (a rewards key, a folder), when there is one

    def __str__(self) -> str:
        return f"{self.where}: field '{self.field}': {self.message}" if self.field else f"{self.where}: {self.message}"


@dataclass
class Loaded(Generic[T]):
    """What a reader returns: the good items, and what it skipped (empty unless ``on_error='skip'``)."""

    items: T
    skipped: list[Problem] = field(default_factory=list)
    #: Choices the reader made that the data left open (e.g. which of several image pairs it took).
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"{len(self.skipped)} bad record(s) skipped:"] + [f"  - {p}" for p in self.skipped] \
            if self.skipped else ["no bad records"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


class _Collector:
    """Raise or record, as the caller asked. Keeps every reader's error handling identical."""

    def __init__(self, on_error: OnError):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.problems: list[Problem] = []

    def bad(self, err: DataError, record: str | None = None) -> None:
        if self.on_error == "raise":
            raise err
        self.problems.append(Problem(err.where, err.field, err.message, record))


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reward:
    """One perspective's judgement: an integer score 0-5 and a text naming the failure (or none)."""

    score: int
    feedback: str

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, int):
            raise ValueError(f"score must be an integer 0-{MAX_SCORE}, got {self.score!r}")
        if not 0 <= self.score <= MAX_SCORE:
            raise ValueError(f"score {self.score} is outside 0-{MAX_SCORE}")
        if not isinstance(self.feedback, str):
            raise ValueError(f"feedback must be a string, got {type(self.feedback).__name__}")


@dataclass(frozen=True)
class Rewards:
    """The three rewards of one triplet, in the order following, preserving, quality."""

    following: Reward
    preserving: Reward
    quality: Reward

    @property
    def scores(self) -> tuple[int, int, int]:
        return (self.following.score, self.preserving.score, self.quality.score)

    @property
    def feedbacks(self) -> tuple[str, str, str]:
        return (self.following.feedback, self.preserving.feedback, self.quality.feedback)

    @property
    def text(self) -> str:
        """The three feedback texts joined by "; " -- the string the model's text encoder reads."""
        return "; ".join(self.feedbacks)

    @classmethod
    def perfect(cls) -> "Rewards":
        r = Reward(MAX_SCORE, PERFECT_FEEDBACK)
        return cls(r, r, r)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"Score": r.score, "Negative Prompt": r.feedback} for r in (self.following, self.preserving,
                                                                            self.quality)]


@dataclass
class Triplet:
    """One training example: an instruction, a source image and the (possibly flawed) edited image.

    ``source`` / ``edited`` are file paths (read lazily, so a 20K dataset costs no memory until used) or
    in-memory PIL images (what the toy generator hands the writer).
    """

    id: str
    instruction: str
    source: Any
    edited: Any
    edit_type: str | None = None
    rewards: Rewards | None = None
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load_source(self):
        return load_rgb(self.source)

    def load_edited(self):
        return load_rgb(self.edited)


@dataclass(frozen=True)
class BenchItem:
    """One Real-Edit benchmark edit: an image file, the n-th instruction for it, its edit type."""

    image: str
    index: int
    edit_type: str
    instruction: str
    image_path: Path | None = None

    @property
    def id(self) -> str:
        return f"{Path(self.image).stem}-{self.index}"

    def line(self) -> str:
        """The ``real_edit_instruct.json`` string for this item."""
        return f"{self.edit_type}. {self.index}: {self.instruction}"

    def load_image(self):
        if self.image_path is None:
            raise ValueError(f"benchmark item {self.id} has no image path")
        return load_rgb(self.image_path)


def _check_image(path: Path, field_name: str) -> None:
    """Fail with a DataError if ``path`` is missing or not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError:
        raise DataError(path, field_name, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(path, field_name, f"image is corrupt or unreadable ({e})") from None


def _read_json(path: Path) -> Any:
    """:func:`~rewardedit_lib.plumbing.read_json`, a missing or malformed file a :class:`DataError`."""
    try:
        return read_json(path)
    except FileNotFoundError:
        raise DataError(path, None, "file is missing") from None
    except json.JSONDecodeError as e:
        raise DataError(path, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


# --------------------------------------------------------------------------------------------------
# RewardEdit_20K.json
# --------------------------------------------------------------------------------------------------
def parse_rewards_entry(value: Any, where: str) -> Rewards:
    """Validate one RewardEdit_20K.json value (a list of three score/feedback dicts)."""
    if not isinstance(value, list):
        raise DataError(where, None, f"expected a list of 3 rewards, got {type(value).__name__}")
    if len(value) != 3:
        missing = ", ".join(PERSPECTIVES[len(value):]) if len(value) < 3 else ""
        msg = f"expected 3 rewards (following, preserving, quality), got {len(value)}"
        raise DataError(where, None, msg + (f"; missing: {missing}" if missing else ""))
    out = []
    for persp, entry in zip(PERSPECTIVES, value):
        loc = f"{where}[{persp}]"
        if not isinstance(entry, dict):
            raise DataError(loc, None, f"expected an object with Score and Negative Prompt, got {entry!r}")
        for key in ("Score", "Negative Prompt"):
            if key not in entry:
                raise DataError(loc, key, "is missing")
        score, feedback = entry["Score"], entry["Negative Prompt"]
        if isinstance(score, float) and score.is_integer():
            score = int(score)
        if isinstance(score, bool) or not isinstance(score, int):
            raise DataError(loc, "Score", f"must be an integer 0-{MAX_SCORE}, got {score!r}")
        if not 0 <= score <= MAX_SCORE:
            raise DataError(loc, "Score", f"{score} is outside 0-{MAX_SCORE}")
        if not isinstance(feedback, str):
            raise DataError(loc, "Negative Prompt", f"must be a string, got {type(feedback).__name__}")
        out.append(Reward(score, feedback))
    return Rewards(*out)


def read_rewards(path: str | Path, on_error: OnError = "raise") -> Loaded[dict[str, Rewards]]:
    """Read a ``RewardEdit_20K.json`` file: folder key -> :class:`Rewards`."""
    path = Path(path)
    col = _Collector(on_error)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, None, f"expected a JSON object keyed by sample folder, got {type(data).__name__}")
    out: dict[str, Rewards] = {}
    for key, value in data.items():
        try:
            out[key] = parse_rewards_entry(value, f"{path}[{key!r}]")
        except DataError as e:
            col.bad(e, record=key)
    return Loaded(out, col.problems)


def write_rewards(path: str | Path, rewards: Mapping[str, Rewards], key_prefix: str = "") -> Path:
    """Write ``RewardEdit_20K.json`` atomically (an interrupted write never leaves a broken file)."""
    data = {f"{key_prefix}{k}": r.to_json() for k, r in rewards.items()}
    atomic_write_json(path, data, indent=1, ensure_ascii=False)
    return Path(path)


def _suffix_index(rewards: Mapping[str, Rewards]) -> dict[str, str | None]:
    """Map every trailing path of every key to the key, so ``pix2pix-clip-filtered/train/<folder>`` matches
    ``<folder>``. A suffix shared by several keys maps to None (ambiguous)."""
    idx: dict[str, str | None] = {}
    for k in rewards:
        parts = k.strip("/").split("/")
        for i in range(len(parts)):
            suffix = "/".join(parts[i:])
            idx[suffix] = k if suffix not in idx else None
    return idx


# --------------------------------------------------------------------------------------------------
# InstructPix2Pix folder layout
# --------------------------------------------------------------------------------------------------
def _find_image(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def read_seeds(root: str | Path) -> list[tuple[str, list[int]]]:
    """Read ``seeds.json``: the list of sample folders and, for each, its seeds in the order to use."""
    path = Path(root) / "seeds.json"
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(path, None, "expected a list of [folder, [seed, ...]] pairs")
    out = []
    for i, entry in enumerate(data):
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str)
                or not isinstance(entry[1], list) or not entry[1]):
            raise DataError(path, f"[{i}]", f"expected [folder, [seed, ...]] with at least one seed, got {entry!r}")
        # Seeds name files (<seed>_0.jpg): integers, or strings of digits; 1.5 or true would silently
        # name another file, so they are errors.
        if not all((isinstance(s, int) and not isinstance(s, bool)) or (isinstance(s, str) and s.isdigit())
                   for s in entry[1]):
            raise DataError(path, f"[{i}]", f"seeds must be integers, got {entry[1]!r}")
        folder_seeds = [int(s) for s in entry[1]]
        out.append((entry[0], folder_seeds))
    return out


#: File stems a reference-layout folder may use for its pair when it does not use ``<seed>_0`` / ``<seed>_1``
#: (``original_image`` / ``edited_image`` are the columns of the published parquet shards).
SOURCE_STEMS: tuple[str, ...] = ("original", "original_image", "input", "input_image", "source", "source_image")
EDITED_STEMS: tuple[str, ...] = ("edited", "edited_image", "output", "output_image", "target", "target_image")
_SEED_STEM = re.compile(r"^(\d+)_([01])$")


def _folder_for_key(root: Path, key: str) -> str | None:
    """The folder under ``root`` a rewards key names (``pix2pix-clip-filtered/train/<f>`` -> ``<f>``): the
    longest trailing part of the key that is a folder here. A ``#<seed>`` tail names a pair, not a folder."""
    parts = [p for p in key.split("#", 1)[0].strip("/").split("/") if p]
    for i in range(len(parts)):
        if root.joinpath(*parts[i:]).is_dir():
            return "/".join(parts[i:])
    return None


def _reference_folders(root: Path, rewards: Mapping[str, Rewards] | None, col: "_Collector") -> list[str]:
    """The folders of a dataset without ``seeds.json`` (the reference's training layout). With a rewards
    file: the folders its keys name, in its order -- what the reference trains on, and all it needs of a
    313K-folder release. Without: every folder holding a JSON file and an image, sorted."""
    if not root.is_dir():
        raise DataError(root / "seeds.json", None, "file is missing: the dataset folder does not exist")
    if rewards is not None:
        out: dict[str, None] = {}
        for key in rewards:
            name = _folder_for_key(root, key)
            if name is None:
                col.bad(DataError(root / key.strip("/").split("/")[-1], "folder",
                                  f"rewards key {key!r}: no folder for it under {root}"), record=key)
            else:
                out.setdefault(name, None)
        return list(out)
    found = sorted({p.parent for p in root.rglob("*.json") if p.parent != root
                    and any(q.suffix.lower() in IMAGE_EXTENSIONS for q in p.parent.iterdir())})
    if not found:
        raise DataError(root / "seeds.json", None, "file is missing, and no folder here holds an image pair and a "
                        "JSON with 'edit' (the reference's layout)")
    return [f.relative_to(root).as_posix() for f in found]


def _folder_pairs(fdir: Path) -> dict[int | None, tuple[Path, Path]]:
    """A reference-layout folder's image pairs: ``{seed: (source, edited)}`` from ``<seed>_0`` / ``<seed>_1``
    names, else ``{None: pair}`` from original/edited names. Never directory order (the reference's
    ``glob()[0]`` / ``[1]``): two images that no name tells apart are an error naming them."""
    if not fdir.is_dir():
        raise DataError(fdir, None, "sample folder is missing")
    images = sorted(p for p in fdir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    halves: dict[int, set[str]] = {}
    for p in images:
        m = _SEED_STEM.match(p.stem)
        if m:
            halves.setdefault(int(m[1]), set()).add(m[2])
    pairs = {sd: (_find_image(fdir, f"{sd}_0"), _find_image(fdir, f"{sd}_1"))
             for sd in sorted(halves) if halves[sd] == {"0", "1"}}
    if pairs:
        return pairs  # type: ignore[return-value]
    src = [p for p in images if p.stem.lower() in SOURCE_STEMS]
    edt = [p for p in images if p.stem.lower() in EDITED_STEMS]
    if len(src) == 1 and len(edt) == 1:
        return {None: (src[0], edt[0])}
    names = [p.name for p in images]
    raise DataError(fdir, "images", f"cannot tell the original image from the edited one among {names}: expected "
                    f"<seed>_0 / <seed>_1 (InstructPix2Pix) or original / edited file names")


def _prompt_file(fdir: Path) -> Path:
    """A reference-layout folder's JSON: ``prompt.json``, else its only JSON file."""
    if (fdir / "prompt.json").exists():
        return fdir / "prompt.json"
    found = sorted(fdir.glob("*.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(fdir / "prompt.json", None, "file is missing (no JSON with 'edit' in this folder)")
    raise DataError(fdir, "edit", f"several JSON files and none named prompt.json: {[p.name for p in found]}")


def _seed_rewards(folder: str, folder_seeds: list, rewards: Mapping[str, Rewards],
                  suffixes: Mapping[str, str | None]) -> dict[int, Rewards]:
    """Rewards the file gives one pair of a folder: a key ``<folder>#<seed>`` (the kit's id for a pair) or
    ``<folder>/<seed>``. This is how a rewards file says which of several pairs was annotated."""
    out = {}
    for sd in folder_seeds:
        if sd is None:
            continue
        for cand in (f"{folder}#{sd}", f"{folder}/{sd}"):
            key = cand if cand in rewards else suffixes.get(cand)
            if key is not None:
                out[sd] = rewards[key]
                break
    return out


def read_instructpix2pix(
    root: str | Path,
    *,
    rewards: Mapping[str, Rewards] | str | Path | None = None,
    seeds: Literal["first", "all"] = "first",
    check_images: bool = True,
    require_rewards: bool = True,
    on_error: OnError = "raise",
) -> Loaded[list[Triplet]]:
    """Read an InstructPix2Pix-layout dataset (toy or real) into triplets.

    * Which image pair a folder uses is decided by ``seeds.json`` (its first listed seed, or every seed
      with ``seeds="all"``), never by directory-listing order: the reference code's ``glob()`` choice made
      runs irreproducible across file systems. A folder with several pairs takes the pair the rewards file
      names (a key ``<folder>#<seed>`` or ``<folder>/<seed>``); if it names none, the first listed, and
      :attr:`Loaded.notes` (and a warning) say which folders that was.
    * Without ``seeds.json``: the reference's training layout (``pix2pix-clip-filtered-hf/train/<key>/``,
      one pair and a JSON with ``edit`` per folder; the folders are the rewards file's keys when one is
      given). Pairs are told apart by name (:func:`_folder_pairs`), the JSON is ``prompt.json`` or the only one.
    * ``rewards``: a RewardEdit_20K mapping or file. A folder without an entry is a bad record when
      ``require_rewards`` (the training default); otherwise its ``rewards`` stay ``None``.
    * ``check_images``: open every image now, so a missing or corrupt file is reported up front rather than
      hours into training.
    """
    if seeds not in ("first", "all"):
        raise ValueError(f"seeds must be 'first' or 'all', got {seeds!r}")
    root = Path(root)
    col = _Collector(on_error)
    skipped_rewards: list[Problem] = []
    if isinstance(rewards, (str, Path)):
        loaded = read_rewards(rewards, on_error=on_error)
        rewards, skipped_rewards = loaded.items, loaded.skipped
    suffixes = _suffix_index(rewards) if rewards is not None else {}
    # A folder whose rewards entry was bad is reported once (for the entry), not again as "missing".
    bad_reward_suffixes = set(_suffix_index({p.record: None for p in skipped_rewards if p.record}))
    listed = (root / "seeds.json").exists()
    entries = read_seeds(root) if listed else [(f, None) for f in _reference_folders(root, rewards, col)]
    out: list[Triplet] = []
    unnamed: list[str] = []  # folders with several pairs whose annotated pair the rewards file does not name
    for folder, folder_seeds in entries:
        fdir = root / folder
        try:
            pairs = None if listed else _folder_pairs(fdir)
            folder_seeds = folder_seeds if listed else list(pairs)
            prompt_path = fdir / "prompt.json" if listed else _prompt_file(fdir)
            prompt = _read_json(prompt_path)
            if not isinstance(prompt, dict):
                raise DataError(prompt_path, None, "expected a JSON object")
            if "edit" not in prompt:
                raise DataError(prompt_path, "edit", "is missing")
            edit = prompt["edit"]
            alternatives: list[str] = []
            if isinstance(edit, list):
                if not all(isinstance(e, str) for e in edit):
                    raise DataError(prompt_path, "edit", "list entries must be strings")
                texts = [e.strip() for e in edit if e.strip()]
                edit, alternatives = (texts[0], texts[1:]) if texts else ("", [])
            if not isinstance(edit, str):
                raise DataError(prompt_path, "edit", f"must be a string or a list of strings, got {edit!r}")
            if not edit.strip():
                raise DataError(prompt_path, "edit", "empty instruction")
            edit_type = prompt.get("edit_type")
            if edit_type is not None and edit_type not in EDIT_TYPES:
                raise DataError(prompt_path, "edit_type", f"unknown edit type {edit_type!r}; expected one of "
                                f"{', '.join(EDIT_TYPES)}")
            rw, per_seed = None, {}
            if rewards is not None:
                per_seed = _seed_rewards(folder, folder_seeds, rewards, suffixes)
                key = folder if folder in rewards else suffixes.get(folder.strip("/"), "")
                if key is None:
                    raise DataError(folder, "rewards", "ambiguous: several keys of the rewards file end with it")
                rw = rewards.get(key)
                if rw is None and not per_seed and folder.strip("/") in bad_reward_suffixes:
                    continue
                if rw is None and not per_seed and require_rewards:
                    raise DataError(folder, "rewards", "no entry in the rewards file for this folder")
            if seeds == "all":
                use = folder_seeds
            else:
                named = [sd for sd in folder_seeds if sd in per_seed]
                use = named[:1] or folder_seeds[:1]
                if not named and len(folder_seeds) > 1:
                    unnamed.append(f"{folder} (seed {use[0]} of {folder_seeds})")
            for sd in use:
                paths = []
                for i, suffix in enumerate(("0", "1")):
                    p = pairs[sd][i] if pairs is not None else _find_image(fdir, f"{sd}_{suffix}")
                    name = "source" if suffix == "0" else "edited"
                    if p is None:
                        raise DataError(fdir / f"{sd}_{suffix}.png", name,
                                        f"image file is missing (looked for {', '.join(IMAGE_EXTENSIONS)})")
                    if check_images:
                        _check_image(p, name)
                    paths.append(p)
                meta = {k: v for k, v in prompt.items() if k not in ("edit", "edit_type")}
                if alternatives:
                    meta["edit_alternatives"] = alternatives
                tid = folder if seeds == "first" or len(folder_seeds) == 1 else f"{folder}#{sd}"
                out.append(Triplet(id=tid, instruction=edit.strip(), source=paths[0], edited=paths[1],
                                   edit_type=edit_type, rewards=per_seed.get(sd, rw), seed=sd, meta=meta))
        except DataError as e:
            col.bad(e, record=folder)
    notes = []
    if unnamed:
        how = "the first listed in seeds.json" if listed else "the lowest seed"
        notes.append(f"{len(unnamed)} folder(s) hold several image pairs and the rewards file does not name the "
                     f"annotated one (a key '<folder>#<seed>'); took {how}: {', '.join(unnamed[:5])}"
                     f"{' ...' if len(unnamed) > 5 else ''}")
        if rewards is not None:
            warnings.warn(notes[-1], stacklevel=2)
    return Loaded(out, skipped_rewards + col.problems, notes)


def write_instructpix2pix(root: str | Path, triplets: Iterable[Triplet], image_format: str = "png") -> Path:
    """Write triplets in the InstructPix2Pix layout (one seed per folder, as in RewardEdit20K).

    ``prompt.json`` holds ``edit`` plus the record's ``meta`` (e.g. ``input`` / ``output`` captions) and
    ``edit_type`` when known. Files are written with fixed settings so the same records give the same bytes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    seeds = [write_instructpix2pix_folder(root, t, image_format) for t in triplets]
    atomic_write_json(root / "seeds.json", seeds)
    return root


def write_instructpix2pix_folder(root: str | Path, t: Triplet, image_format: str = "png") -> list:
    """One triplet's folder of the InstructPix2Pix layout; returns its ``seeds.json`` entry ``[id, [seed]]``
    (the caller writes ``seeds.json`` once, in order: parallel writers each write their own folders)."""
    from PIL import Image

    if t.seed is None:
        raise DataError(t.id, "seed", "a record needs a seed to be written in the InstructPix2Pix layout")
    fdir = Path(root) / t.id
    fdir.mkdir(parents=True, exist_ok=True)
    prompt = dict(t.meta)
    prompt["edit"] = t.instruction
    if t.edit_type is not None:
        prompt["edit_type"] = t.edit_type
    (fdir / "prompt.json").write_text(json.dumps(prompt, indent=1, sort_keys=True) + "\n")
    for suffix, img in (("0", t.source), ("1", t.edited)):
        im = img if isinstance(img, Image.Image) else load_rgb(img)
        save_image(im, fdir / f"{t.seed}_{suffix}.{image_format}")
    return [t.id, [t.seed]]


# --------------------------------------------------------------------------------------------------
# Real-Edit
# --------------------------------------------------------------------------------------------------
REAL_EDIT_JSON = "real_edit_instruct.json"
_LINE = re.compile(r"^\s*([A-Za-z]+)\s*\.\s*(\d+)\s*:\s*(.*?)\s*$", re.DOTALL)


def parse_real_edit_line(text: Any, where: str) -> tuple[str, int, str]:
    """Parse ``"<Type>. <n>: <instruction>"`` into (edit type, n, instruction)."""
    if not isinstance(text, str):
        raise DataError(where, None, f"expected a string '<Type>. <n>: <instruction>', got {text!r}")
    m = _LINE.match(text)
    if not m:
        raise DataError(where, None, f"expected '<Type>. <n>: <instruction>', got {text!r}")
    etype = next((t for t in EDIT_TYPES if t.lower() == m.group(1).lower()), None)
    if etype is None:
        raise DataError(where, "edit type", f"unknown edit type {m.group(1)!r}; expected one of {', '.join(EDIT_TYPES)}")
    if not m.group(3):
        raise DataError(where, "instruction", "empty instruction")
    return etype, int(m.group(2)), m.group(3)


#: Where Real-Edit's images sit beside ``real_edit_instruct.json``: the kit's layout, the reference's.
REAL_EDIT_IMAGE_DIRS: tuple[str, ...] = ("images", "Real-Edit")


def locate_real_edit(root: str | Path, images_dir: str | None = None) -> tuple[Path, Path]:
    """``(real_edit_instruct.json, images folder)`` of a benchmark in either layout: the kit's
    (``real_edit_instruct.json`` + ``images/``) or the reference's (``gpt_eval/real_edit_instruct.json`` +
    ``gpt_eval/Real-Edit/``, or that folder itself). ``images_dir`` names the images folder explicitly."""
    root = Path(root)
    path = next((p for p in (root / REAL_EDIT_JSON, root / "gpt_eval" / REAL_EDIT_JSON) if p.exists()), None)
    if path is None:
        raise DataError(root / REAL_EDIT_JSON, None, f"file is missing (nor is there gpt_eval/{REAL_EDIT_JSON}, "
                        f"the reference's layout)")
    if images_dir is not None:
        return path, path.parent / images_dir
    found = [path.parent / d for d in REAL_EDIT_IMAGE_DIRS if (path.parent / d).is_dir()]
    if len(found) > 1:
        raise DataError(path.parent, "images", f"both {' and '.join(REAL_EDIT_IMAGE_DIRS)} exist: say which holds "
                        f"the benchmark's images (images_dir=)")
    if not found:
        raise DataError(path.parent / REAL_EDIT_IMAGE_DIRS[0], "images",
                        f"images folder is missing (expected {' or '.join(f'{d}/' for d in REAL_EDIT_IMAGE_DIRS)} "
                        f"beside {REAL_EDIT_JSON})")
    return path, found[0]


def read_real_edit(root: str | Path, *, images_dir: str | None = None, check_images: bool = True,
                   on_error: OnError = "raise") -> Loaded[list[BenchItem]]:
    """Read a Real-Edit benchmark in either layout (:func:`locate_real_edit`): the instructions and images."""
    col = _Collector(on_error)
    path, image_root = locate_real_edit(root, images_dir)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, None, "expected a JSON object: image file name -> list of instructions")
    out: list[BenchItem] = []
    for name, lines in data.items():
        where = f"{path}[{name!r}]"
        try:
            if not isinstance(lines, list) or not lines:
                raise DataError(where, None, "expected a non-empty list of '<Type>. <n>: <instruction>' strings")
            img = image_root / name
            if check_images:
                _check_image(img, "image")
            elif not img.exists():
                raise DataError(img, "image", "image file is missing")
            items = []
            for i, line in enumerate(lines):
                etype, n, text = parse_real_edit_line(line, f"{where}[{i}]")
                items.append(BenchItem(image=name, index=n, edit_type=etype, instruction=text, image_path=img))
            out.extend(items)
        except DataError as e:
            col.bad(e)
    return Loaded(out, col.problems)


def write_real_edit(root: str | Path, items: Iterable[BenchItem], images: Mapping[str, Any],
                    images_dir: str = "images") -> Path:
    """Write a Real-Edit-layout benchmark. ``images`` maps file names to PIL images or paths."""
    root = Path(root)
    (root / images_dir).mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        save_image(load_rgb(img), root / images_dir / name)
    data: dict[str, list[str]] = {}
    for it in items:
        data.setdefault(it.image, []).append(it.line())
    atomic_write_json(root / REAL_EDIT_JSON, data, indent=1, ensure_ascii=False)
    return root


# --------------------------------------------------------------------------------------------------
# The Hugging Face hub: ids and downloads live in :mod:`rewardedit_lib.hub`; the names stay here for callers
# --------------------------------------------------------------------------------------------------
REWARDEDIT_REPO = REWARDEDIT_DATASET
fetch_from_hub = download_dataset


def find_rewards_file(root: str | Path, name: str = "RewardEdit_20K.json") -> Path:
    """Find the rewards JSON inside a downloaded snapshot (it may sit in a subfolder)."""
    root = Path(root)
    hits = sorted(root.rglob(name))
    if not hits:
        raise DataError(root, None, f"no {name} found under this folder")
    return hits[0]
