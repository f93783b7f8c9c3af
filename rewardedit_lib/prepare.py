"""``rewardedit prepare``: the published InstructPix2Pix images -> the folders ``RewardEdit_20K.json`` names.

RewardEdit20K annotates 20K of InstructPix2Pix's 313,010 CLIP-filtered triplets but ships no images. The
images are published twice: as the hub dataset ``timbrooks/instructpix2pix-clip-filtered`` (262 parquet
shards, ``data/train-NNNNN-of-00262-<hash>.parquet``, columns ``original_prompt``, ``original_image``,
``edit_prompt``, ``edited_prompt``, ``edited_image``; images as ``{"bytes", "path"}`` structs), and as the
original folder release (``seeds.json`` + ``<folder>/prompt.json`` + ``<folder>/<seed>_0.jpg`` /
``<seed>_1.jpg``). This module writes, for every rewards key it can place, one InstructPix2Pix-layout folder
``<out>/<key>/`` (``prompt.json`` with ``edit``/``input``/``output``, ``<seed>_0.<ext>``, ``<seed>_1.<ext>``,
the image bytes copied unchanged) and ``<out>/seeds.json`` listing them, so
``formats.read_instructpix2pix(out, rewards=...)`` reads exactly the annotated triplets -- and so does the
reference, which opens ``<its root>/<key>/``.

**The key scheme is a guess that cannot be checked offline, so it is explicit.** What is known:

* the reference (``dataset.py``) reads ``./pix2pix-clip-filtered-hf/train/``: its stage-1 loader reads
  ``seeds.json`` and ``<seed>_0.jpg`` there -- the *folder release's* layout -- and its stage-2 loader opens
  that root + key and globs three files (two images, one JSON). So the keys are most likely folder names of
  the release (a one-seed folder holds exactly those three files);
* a parquet row carries no id at all: the hub dataset was built (sayakpaul/instruct-pix2pix-dataset,
  ``make_dataset.py``, pushed 2023-02-24) from the release's ``seeds.json`` after ``random.seed(0)`` +
  ``random.shuffle``, taking one *unseeded* random seed per folder. So a row's folder can be recomputed from
  the release's ``seeds.json`` (a small file), but not which seed its pair had.

The schemes (``--key-scheme``):

  ``folder`` (the folder release's)
      the longest trailing part of the key that ends a folder ``seeds.json`` lists; the pair is the key's
      ``#<seed>`` tail, else the first seed listed (a note says how many folders that was).
  ``release-order`` (parquet, with ``--release-seeds``: the best-founded one)
      the same folder match, then the folder's position in the release's ``seeds.json`` after the shuffle
      above is its row (counting shards in ``NNNNN`` order). A folder with several seeds may hold another
      pair than the annotated one: a note counts them.
  ``row`` (parquet default without ``--release-seeds``)
      the key's last path part (``.../0001234`` -> 1234) is the row's index in the whole dataset -- the index
      ``datasets.load_dataset(...)["train"][i]`` gives, for keys made by an export that numbered rows.
  ``shard-row``
      the key ends in ``<shard>/<row>`` or ``<shard>_<row>``: shard number, row within that shard.
  ``map``
      ``--key-map FILE``: a JSON object ``{key: row}`` or ``{key: [shard, row]}`` (shard: number or file
      name), for whoever learns the real mapping.

``row`` and ``release-order`` need every shard: shard row counts number the rows.

A wrong scheme usually still "finds" rows (any number below 313,010 does), so coverage alone proves little:
:class:`Coverage` also prints the first keys of both sides and, for the first matched keys, the instruction
found next to the rewards' following feedback, for a human to compare ("The glasses frame did not turn green"
beside "make the glasses green" is a match). Below ``min_coverage`` nothing is written.

**Why pyarrow alone, not ``datasets``.** ``load_dataset`` first converts all 63 GB of shards into its Arrow
cache (the card's dataset_size: 131 GB more disk) before row 0. Its streaming mode avoids the copy but reads
every row of every shard in order, decodes every image to PIL unless told not to, and gives up access by
index, which is how the keys address rows. pyarrow reads each shard's footer (schema, row counts, row
groups), so a missing column and the coverage are known before one image byte is read; then it reads only
the row groups holding annotated rows and only the needed columns (20K rows spread over 313K touch most row
groups, so the saving is in what is not done: no cache copy, no decoding of the 293K pairs not kept) and hands
back the image bytes as they are, to be copied unchanged (a JPEG is not recompressed). It is one wheel
(``datasets`` depends on it anyway, plus pandas, fsspec, multiprocess ...):
``pip install 'rewardedit-kit[real]'``.

Writing is atomic and resumable: each folder is written into a hidden temporary folder beside it and renamed
into place, so a folder that exists is complete; a second run skips those and rewrites nothing (``seeds.json``
and ``prepare.json``, the record of where each folder came from, are rewritten only when their text changes).
Bad input (a missing column, an image that does not decode) is a :class:`PrepareError` naming the shard, row
and column; everything written before it stays, and ``seeds.json`` lists it.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import formats, hub
from .formats import Rewards
from .plumbing import UMASK, atomic_write_text

#: Refuse to write below this fraction of reward entries placed (``--min-coverage``).
DEFAULT_MIN_COVERAGE = 0.95
SCHEMES: tuple[str, ...] = ("folder", "release-order", "row", "shard-row", "map")
#: Parquet columns a triplet needs; the captions are kept in ``prompt.json`` when a shard has them.
REQUIRED_COLUMNS: tuple[str, ...] = ("edit_prompt", "original_image", "edited_image")
CAPTION_COLUMNS: dict[str, str] = {"original_prompt": "input", "edited_prompt": "output"}
#: What each written folder came from, and with which scheme (a resumed run must use the same one).
MANIFEST = "prepare.json"
#: The hub dataset's shard files (``allow_patterns`` for :func:`download_shards`).
SHARD_PATTERN = "data/train-*.parquet"
_SHARD_NAME = re.compile(r"^(?P<split>\w+?)-(?P<index>\d+)-of-(?P<count>\d+)(?:-[0-9a-f]+)?\.parquet$")
_TMP_TAG = ".prepare-tmp-"
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


class PrepareError(ValueError):
    """Input ``prepare`` cannot use, or a coverage below the threshold; the message says where and what."""


# --------------------------------------------------------------------------------------------------
# Keys and where they point
# --------------------------------------------------------------------------------------------------
def split_key(key: str) -> tuple[str, int | None]:
    """``"a/b/123#7"`` -> ``("a/b/123", 7)``: the folder a key names (its output path) and the pair's seed.

    Raises :class:`PrepareError` for a key that is not a safe relative path (``..``, absolute, empty)."""
    path, _, tail = key.partition("#")
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(p in ("", ".", "..") or "\\" in p for p in parts) or path.startswith("/"):
        raise PrepareError(f"rewards key {key!r}: not a relative folder path")
    if tail and not tail.isdigit():
        raise PrepareError(f"rewards key {key!r}: the part after '#' must be a seed number")
    return "/".join(parts), int(tail) if tail else None


@dataclass(frozen=True)
class Location:
    """Where one rewards key's triplet is: a parquet shard and row, or a release folder and seed."""

    key: str
    folder: str  # output folder under ``out`` (the key without its ``#seed`` tail)
    seed: int  # the pair's file-name seed in the output (``<seed>_0``); 0 for parquet rows without one
    shard: int | None = None  # index into the shard list
    row: int | None = None  # row within the shard
    source_folder: str | None = None  # folder of the release, relative to its root

    def describe(self, shards: list["Shard"] | None = None) -> str:
        if self.shard is not None and shards is not None:
            return f"{shards[self.shard].name} row {self.row}" + (f" (release folder {self.source_folder})"
                                                                  if self.source_folder else "")
        return f"{self.source_folder} seed {self.seed}"


@dataclass
class Coverage:
    """How many reward entries found their images, with what the user needs to judge the key scheme."""

    scheme: str
    source: str
    n_rewards: int
    found: list[Location]
    missing: list[tuple[str, str]]  # (key, why)
    first_reward_keys: list[str]
    first_source_ids: list[str]
    samples: list[str] = field(default_factory=list)  # "key -> where: instruction | following feedback"
    notes: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return len(self.found) / self.n_rewards if self.n_rewards else 0.0

    def text(self) -> str:
        lines = [f"{len(self.found)} of {self.n_rewards} reward entries ({100 * self.fraction:.1f}%) found their "
                 f"images in {self.source} (key scheme '{self.scheme}')",
                 f"  first rewards keys: {', '.join(map(repr, self.first_reward_keys)) or '(none)'}",
                 f"  first source ids:   {', '.join(map(repr, self.first_source_ids)) or '(none)'}"]
        if self.samples:
            lines.append("  compare the instruction with the following feedback (the same edit?):")
            lines += [f"    {s}" for s in self.samples]
        if self.missing:
            lines.append(f"  not found ({len(self.missing)}), e.g.:")
            lines += [f"    {k!r}: {why}" for k, why in self.missing[:5]]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


@dataclass
class PrepareReport:
    coverage: Coverage
    out: Path
    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    def text(self) -> str:
        return (f"{self.coverage.text()}\nwrote {len(self.written)} folder(s) to {self.out}; "
                f"{len(self.existing)} were already there (kept as they are)")


# --------------------------------------------------------------------------------------------------
# Parquet shards
# --------------------------------------------------------------------------------------------------
def _pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise PrepareError("reading the parquet shards needs pyarrow: pip install 'rewardedit-kit[real]' "
                           "(or pip install pyarrow)") from None
    return pq


@dataclass
class Shard:
    """One parquet file: its name, shard number (from ``NNNNN-of-MMMMM``), rows and row-group sizes."""

    path: Path
    name: str
    index: int | None
    count: int | None
    num_rows: int
    row_groups: list[int]
    columns: list[str]


def find_shards(root: str | Path) -> list[Shard]:
    """The parquet files under ``root`` (or ``root`` itself), in shard order, footers read, columns checked.

    A shard without a required column fails here, before anything is written, naming it and the column."""
    pq = _pyarrow()
    root = Path(root)
    # Hidden folders are skipped: huggingface_hub keeps partial downloads in <local_dir>/.cache/.
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*.parquet")
                                                  if not any(q.startswith(".") for q in p.relative_to(root).parts))
    shards: list[Shard] = []
    for p in paths:
        m = _SHARD_NAME.match(p.name)
        try:
            f = pq.ParquetFile(p)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a truncated or foreign file
            raise PrepareError(f"{p}: not a readable parquet file ({e})") from None
        meta = f.metadata
        shards.append(Shard(p, p.name, int(m["index"]) if m else None, int(m["count"]) if m else None,
                            meta.num_rows, [meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
                            list(f.schema_arrow.names)))
    if not shards:
        raise PrepareError(f"{root}: no parquet shards here (expected {SHARD_PATTERN})")
    for s in shards:
        for col in REQUIRED_COLUMNS:
            if col not in s.columns:
                raise PrepareError(f"{s.path}: column '{col}' is missing (the shard has {', '.join(s.columns)})")
    if all(s.index is not None for s in shards):
        shards.sort(key=lambda s: (s.index, s.name))
    return shards


def _check_complete(shards: list[Shard]) -> None:
    """The ``row`` scheme numbers rows through every shard: a missing shard would shift every later row."""
    counts = {s.count for s in shards}
    if None in counts or len(counts) != 1:
        raise PrepareError(f"key scheme 'row' needs shards named <split>-NNNNN-of-MMMMM.parquet, all of one "
                           f"set; found {', '.join(s.name for s in shards[:5])}")
    total = counts.pop()
    have = [s.index for s in shards]
    absent = sorted(set(range(total)) - set(have))
    if absent or len(have) != len(set(have)):
        raise PrepareError(f"key scheme 'row' counts rows through all {total} shards: "
                           + (f"shards {absent[:10]} are missing" if absent else "a shard number appears twice")
                           + " (download them all, or use --key-scheme shard-row / map)")


def release_rows(release_seeds: list[tuple[str, list[int]]]) -> dict[str, int]:
    """Folder of the release -> its row in the hub dataset: the order ``make_dataset.py`` wrote them in
    (``random.seed(0)`` then ``random.shuffle`` of ``seeds.json``; ``Random(0)`` is the same generator)."""
    order = [folder for folder, _ in release_seeds]
    random.Random(0).shuffle(order)
    return {folder: i for i, folder in enumerate(order)}


def _release_folder(folder: str, index: Mapping[str, str | None]) -> str:
    """The release folder a key's path ends with (``.../train/0000123`` -> ``shard-00/0000123``), or why not."""
    parts = folder.split("/")
    hits = ["/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in index]
    if not hits:
        raise PrepareError("no folder of the release's seeds.json ends with it")
    if index[hits[0]] is None:
        raise PrepareError(f"ambiguous: several folders of seeds.json end with {hits[0]!r}")
    return str(index[hits[0]])


def _parquet_locations(keys: list[str], shards: list[Shard], scheme: str, key_map: Mapping[str, Any] | None,
                       release_seeds: list[tuple[str, list[int]]] | None = None
                       ) -> tuple[list[Location], list[tuple[str, str]]]:
    if scheme in ("row", "release-order"):
        _check_complete(shards)
    rows = release_rows(release_seeds) if scheme == "release-order" and release_seeds is not None else {}
    index = formats._suffix_index(dict.fromkeys(rows)) if rows else {}  # type: ignore[arg-type]
    starts, total = [], 0
    for s in shards:
        starts.append(total)
        total += s.num_rows
    by_index = {s.index: i for i, s in enumerate(shards) if s.index is not None}
    by_name = {s.name: i for i, s in enumerate(shards)}

    def from_global(row: int) -> tuple[int, int] | str:
        if not 0 <= row < total:
            return f"row {row} is outside the {total} rows of the shards"
        i = bisect.bisect_right(starts, row) - 1  # the last shard starting at or before it (never an empty one)
        return i, row - starts[i]

    def from_shard(shard: int | str, row: int) -> tuple[int, int] | str:
        i = by_name.get(shard) if isinstance(shard, str) else by_index.get(shard)
        if i is None:
            return f"shard {shard!r} is not among the shards here"
        return (i, row) if 0 <= row < shards[i].num_rows else f"row {row} is outside shard {shards[i].name}"

    found, missing = [], []
    for key in keys:
        try:
            folder, seed = split_key(key)
        except PrepareError as e:
            missing.append((key, str(e)))
            continue
        parts = folder.split("/")
        where: tuple[int, int] | str
        src = None
        if scheme == "release-order":
            try:
                src = _release_folder(folder, index)
                where = from_global(rows[src])
            except PrepareError as e:
                where = str(e)
        elif scheme == "row":
            where = from_global(int(parts[-1])) if parts[-1].isdigit() else "the key does not end in a row number"
        elif scheme == "shard-row":
            m = re.match(r"^(\d+)[_/-](\d+)$", "/".join(parts[-2:])) or re.match(r"^(\d+)[_-](\d+)$", parts[-1])
            where = from_shard(int(m[1]), int(m[2])) if m else "the key does not end in <shard>/<row> or <shard>_<row>"
        else:
            v = (key_map or {}).get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                where = from_global(v)
            elif (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (int, str)) and isinstance(v[1], int)):
                where = from_shard(v[0], v[1])
            else:
                where = "not in the key map" if v is None else f"key map value {v!r}: expected row or [shard, row]"
        if isinstance(where, str):
            missing.append((key, where))
        else:
            found.append(Location(key, folder, seed or 0, shard=where[0], row=where[1], source_folder=src))
    return found, missing


def _read_rows(shard: Shard, rows: list[int], columns: list[str]) -> Iterable[tuple[int, dict[str, Any]]]:
    """``(row, {column: value})`` for the given rows of one shard, reading only the row groups that hold them."""
    import pyarrow as pa

    pq = _pyarrow()
    f = pq.ParquetFile(shard.path)
    wanted = sorted(set(rows))
    start = 0
    for g, n in enumerate(shard.row_groups):
        here = [r for r in wanted if start <= r < start + n]
        if here:
            table = f.read_row_group(g, columns=columns)
            for r, rec in zip(here, table.take(pa.array([r - start for r in here])).to_pylist()):
                yield r, rec
        start += n


def _image_bytes(value: Any, where: str, column: str) -> tuple[bytes, str]:
    """An image cell (``{"bytes", "path"}`` struct or plain binary) -> (bytes to write, extension)."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise PrepareError(f"{where}: column '{column}': no image bytes (got {type(data).__name__})")
    try:
        with Image.open(BytesIO(data)) as im:
            im.load()
            fmt = im.format
            if fmt not in _FORMAT_EXT:  # rare formats: re-encode losslessly so the readers can open them
                buf = BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                return buf.getvalue(), ".png"
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError ... on corrupt data
        raise PrepareError(f"{where}: column '{column}': image bytes do not decode ({e})") from None
    return bytes(data), _FORMAT_EXT[fmt]


def _text(value: Any, where: str, column: str, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise PrepareError(f"{where}: column '{column}': expected a non-empty string, got {value!r}")
    return value.strip()


def _parquet_files(shard: Shard, row: int, rec: dict[str, Any], seed: int) -> dict[str, bytes]:
    where = f"{shard.path} row {row}"
    prompt: dict[str, str] = {"edit": _text(rec.get("edit_prompt"), where, "edit_prompt", True) or ""}
    for col, name in CAPTION_COLUMNS.items():
        if col in rec and (text := _text(rec[col], where, col, False)) is not None:
            prompt[name] = text
    files = {"prompt.json": (json.dumps(prompt, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()}
    for col, half in (("original_image", "0"), ("edited_image", "1")):
        data, ext = _image_bytes(rec.get(col), where, col)
        files[f"{seed}_{half}{ext}"] = data
    return files


# --------------------------------------------------------------------------------------------------
# The folder release
# --------------------------------------------------------------------------------------------------
def _folder_locations(keys: list[str], root: Path, seeds: dict[str, list[int]] | None
                      ) -> tuple[list[Location], list[tuple[str, str]], list[str]]:
    """Keys -> release folders: the longest trailing part of the key that ends a folder ``seeds.json`` lists
    (``.../train/0000123`` finds ``shard-00/0000123``), or, without ``seeds.json``, a folder on disk."""
    found, missing, first_seed = [], [], []
    index = formats._suffix_index(dict.fromkeys(seeds)) if seeds is not None else {}  # type: ignore[arg-type]
    for key in keys:
        try:
            folder, seed = split_key(key)
        except PrepareError as e:
            missing.append((key, str(e)))
            continue
        if seeds is None:
            src = formats._folder_for_key(root, folder)
        else:
            try:
                src = _release_folder(folder, index)
            except PrepareError as e:
                missing.append((key, str(e)))
                continue
            if not (root / src).is_dir():
                missing.append((key, f"seeds.json lists {src!r} but the folder is missing (shard not unpacked?)"))
                continue
        if src is None:
            missing.append((key, f"no folder for it under {root}"))
            continue
        listed = seeds.get(src) if seeds is not None else None
        if listed is None:
            try:
                pairs = formats._folder_pairs(root / src)
            except formats.DataError as e:
                missing.append((key, e.message))
                continue
            listed = [s if s is not None else 0 for s in pairs]
        if seed is not None and seed not in listed:
            missing.append((key, f"seed {seed} is not among the folder's seeds {listed}"))
            continue
        if seed is None and len(listed) > 1:
            first_seed.append(src)
        found.append(Location(key, folder, seed if seed is not None else listed[0], source_folder=src))
    return found, missing, first_seed


def _release_files(root: Path, loc: Location) -> dict[str, bytes]:
    fdir = root / str(loc.source_folder)
    prompt_path = fdir / "prompt.json" if (fdir / "prompt.json").exists() else formats._prompt_file(fdir)
    prompt = formats._read_json(prompt_path)
    if not isinstance(prompt, dict) or not isinstance(prompt.get("edit"), (str, list)) or not prompt["edit"]:
        raise PrepareError(f"{prompt_path}: field 'edit': expected a non-empty string or list of strings")
    files = {"prompt.json": (json.dumps(prompt, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()}
    pair = (formats._find_image(fdir, f"{loc.seed}_0"), formats._find_image(fdir, f"{loc.seed}_1"))
    if None in pair:
        pairs = formats._folder_pairs(fdir)
        pair = pairs.get(loc.seed) or pairs.get(None) or (None, None)  # type: ignore[assignment]
    for path, half, col in ((pair[0], "0", "source"), (pair[1], "1", "edited")):
        if path is None:
            raise PrepareError(f"{fdir}: the {col} image of seed {loc.seed} is missing")
        data, ext = _image_bytes(path.read_bytes(), str(path), col)
        files[f"{loc.seed}_{half}{ext}"] = data
    return files


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _write_folder(target: Path, files: Mapping[str, bytes]) -> None:
    """Write a folder whole or not at all: into a hidden sibling, then one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{_TMP_TAG}"))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it 0700
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _finish(out: Path, found: list[Location], shards: list[Shard] | None, source: Path, scheme: str) -> None:
    """``seeds.json`` and the manifest for every folder present (this run's and earlier runs')."""
    present = [loc for loc in found if (out / loc.folder).is_dir()]
    seen: set[str] = set()
    entries = []
    for loc in present:
        if loc.folder not in seen:
            seen.add(loc.folder)
            entries.append([loc.folder, [loc.seed]])
    if not entries and not (out / "seeds.json").exists():
        return
    _write_if_changed(out / "seeds.json", json.dumps(entries) + "\n")
    origin: dict[str, dict[str, Any]] = {}
    for loc in present:
        if shards is None or loc.shard is None:
            origin[loc.key] = {"folder": loc.source_folder, "seed": loc.seed}
        else:  # with release-order, also the release folder the row stands for
            origin[loc.key] = {"shard": shards[loc.shard].name, "row": loc.row,
                               **({"folder": loc.source_folder} if loc.source_folder else {})}
    manifest = {"source": str(source), "scheme": scheme, "folders": origin}
    _write_if_changed(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
def _load_rewards(rewards: Mapping[str, Rewards] | str | Path) -> dict[str, Rewards]:
    if isinstance(rewards, (str, Path)):
        return formats.read_rewards(rewards).items
    return dict(rewards)


def _load_key_map(key_map: Mapping[str, Any] | str | Path | None) -> Mapping[str, Any] | None:
    if key_map is None or isinstance(key_map, Mapping):
        return key_map
    data = formats._read_json(Path(key_map))
    if not isinstance(data, dict):
        raise PrepareError(f"{key_map}: expected a JSON object {{key: row or [shard, row]}}")
    return data


def coverage(source: str | Path, rewards: Mapping[str, Rewards] | str | Path, *, scheme: str = "auto",
             key_map: Mapping[str, Any] | str | Path | None = None, release_seeds: str | Path | None = None,
             n_show: int = 3) -> tuple[Coverage, list[Shard] | None]:
    """Place every rewards key in ``source`` (parquet shards or the folder release) without writing anything.

    ``scheme="auto"``: ``folder`` for a folder release; for shards ``map`` when ``key_map`` is given,
    ``release-order`` when ``release_seeds`` (the release's ``seeds.json``) is, else ``row``."""
    source = Path(source)
    rw = _load_rewards(rewards)
    keys = list(rw)
    if not source.exists():
        raise PrepareError(f"{source}: no such file or folder")
    is_parquet = source.is_file() or (not (source / "seeds.json").exists() and any(source.rglob("*.parquet")))
    if scheme == "auto":
        scheme = ("map" if key_map is not None else "release-order" if release_seeds is not None else "row") \
            if is_parquet else "folder"
    if scheme not in SCHEMES:
        raise PrepareError(f"key scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    if (scheme == "folder") == is_parquet:
        raise PrepareError(f"key scheme {scheme!r} does not fit {source}: "
                           + ("it holds parquet shards (release-order, row, shard-row or map)" if is_parquet
                              else "it is a folder release (scheme folder)"))
    if scheme == "map" and key_map is None:
        raise PrepareError("key scheme 'map' needs --key-map FILE")
    if scheme == "release-order" and release_seeds is None:
        raise PrepareError("key scheme 'release-order' needs --release-seeds (the folder release's seeds.json)")
    notes: list[str] = []
    samples: list[str] = []
    if is_parquet:
        shards: list[Shard] | None = find_shards(source)
        assert shards is not None
        total = sum(s.num_rows for s in shards)
        release = None
        if scheme == "release-order":
            seeds_path = Path(str(release_seeds))
            if not (seeds_path.is_dir() or seeds_path.name == "seeds.json"):
                raise PrepareError(f"--release-seeds {seeds_path}: expected the release's seeds.json or its folder")
            release = formats.read_seeds(seeds_path if seeds_path.is_dir() else seeds_path.parent)
            if len(release) != total:
                raise PrepareError(f"{release_seeds} lists {len(release)} folders but the shards hold {total} rows: "
                                   f"not the list the hub dataset was made from (or shards are missing)")
        found, missing = _parquet_locations(keys, shards, scheme, _load_key_map(key_map), release)
        if release is not None:
            n_seeds = dict(release)
            order = sorted(release_rows(release).items(), key=lambda kv: kv[1])
            ids = [f"row {r} = {f}" for f, r in order[:n_show]]
            several = sum(len(n_seeds[str(loc.source_folder)]) > 1 for loc in found)
            if several:
                notes.append(f"{several} matched folder(s) have several seeds; the hub row holds one pair drawn at "
                             f"random (unseeded), maybe not the annotated one")
        elif scheme == "shard-row":
            ids = [f"{s.index if s.index is not None else s.name}/{r}" for s in shards[:1] for r in range(n_show)]
        elif scheme == "map":
            ids = [f"{k} -> {v}" for k, v in list((_load_key_map(key_map) or {}).items())[:n_show]]
        else:
            ids = [str(i) for i in range(min(n_show, total))]
        notes.append(f"{len(shards)} shard(s), {total} rows")
        for loc in found[:n_show]:
            assert loc.shard is not None and loc.row is not None
            rec = next(iter(_read_rows(shards[loc.shard], [loc.row], ["edit_prompt"])))[1]
            samples.append(f"{loc.key!r} -> {loc.describe(shards)}: {rec['edit_prompt']!r} | "
                           f"{rw[loc.key].following.feedback!r}")
    else:
        shards = None
        seeds = dict(formats.read_seeds(source)) if (source / "seeds.json").exists() else None
        found, missing, first_seed = _folder_locations(keys, source, seeds)
        ids = list(seeds)[:n_show] if seeds is not None else sorted(
            p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))[:n_show]
        if first_seed:
            notes.append(f"{len(first_seed)} folder(s) hold several pairs and their key names none ('#<seed>'); "
                         f"took the first listed: {', '.join(first_seed[:3])}{' ...' if len(first_seed) > 3 else ''}")
        for loc in found[:n_show]:
            try:
                edit = formats._read_json(source / str(loc.source_folder) / "prompt.json").get("edit")
            except (formats.DataError, AttributeError):
                edit = None
            samples.append(f"{loc.key!r} -> {loc.describe()}: {edit!r} | {rw[loc.key].following.feedback!r}")
    taken: dict[str, str] = {}
    for loc in list(found):  # "a#1" and "a#2" would need two pairs in one folder: the first key keeps it
        if loc.folder in taken:
            found.remove(loc)
            missing.append((loc.key, f"key {taken[loc.folder]!r} already names folder {loc.folder!r}"))
        taken.setdefault(loc.folder, loc.key)
    cov = Coverage(scheme, str(source), len(keys), found, missing, keys[:n_show], ids, samples, notes)
    return cov, shards


def prepare(source: str | Path, rewards: Mapping[str, Rewards] | str | Path, out: str | Path, *,
            scheme: str = "auto", key_map: Mapping[str, Any] | str | Path | None = None,
            release_seeds: str | Path | None = None, min_coverage: float = DEFAULT_MIN_COVERAGE,
            check_only: bool = False,
            log: Callable[[str], None] | None = None) -> PrepareReport:
    """Write ``<out>/<key>/`` for every rewards key ``source`` holds, then ``seeds.json`` and ``prepare.json``.

    Refuses (:class:`PrepareError`, nothing written) when fewer than ``min_coverage`` of the reward entries
    are placed: the message names the first keys of both sides. ``check_only``: report coverage, write
    nothing. ``log`` receives the coverage report before the (long) writing starts."""
    if not 0.0 <= min_coverage <= 1.0:
        raise PrepareError(f"min_coverage={min_coverage}: expected a fraction between 0 and 1")
    source, out = Path(source), Path(out)
    cov, shards = coverage(source, rewards, scheme=scheme, key_map=key_map, release_seeds=release_seeds)
    if log is not None:
        log(cov.text())
    if cov.fraction < min_coverage:
        raise PrepareError(
            f"only {len(cov.found)} of {cov.n_rewards} reward entries ({100 * cov.fraction:.1f}%) found their images "
            f"in {source} with key scheme '{cov.scheme}' (--min-coverage {min_coverage:g}); first rewards keys "
            f"{cov.first_reward_keys}, first source ids {cov.first_source_ids}. The rewards file's key scheme "
            f"cannot be checked offline: try another --key-scheme ({', '.join(SCHEMES)}) or give --key-map")
    report = PrepareReport(cov, out)
    if check_only:
        return report
    previous = out / MANIFEST
    if previous.exists():
        old = formats._read_json(previous)
        if isinstance(old, dict) and old.get("scheme") != cov.scheme:
            raise PrepareError(f"{out} was prepared with key scheme {old.get('scheme')!r}, not '{cov.scheme}': "
                               f"use another --out, or the same scheme to resume")
    if out.is_dir():  # what a killed run left half-written: never complete, never listed
        for tmp in [p for p in out.rglob(f".*{_TMP_TAG}*") if p.is_dir()]:
            shutil.rmtree(tmp, ignore_errors=True)
    todo = []
    for loc in cov.found:
        (report.existing if (out / loc.folder).is_dir() else todo).append(loc)
    try:
        if shards is not None:
            by_shard: dict[int, list[Location]] = {}
            for loc in todo:
                by_shard.setdefault(int(loc.shard or 0), []).append(loc)
            for i in sorted(by_shard):
                shard, locs = shards[i], by_shard[i]
                cols = list(REQUIRED_COLUMNS) + [c for c in CAPTION_COLUMNS if c in shard.columns]
                at: dict[int, list[Location]] = {}
                for loc in locs:
                    at.setdefault(int(loc.row or 0), []).append(loc)
                for row, rec in _read_rows(shard, list(at), cols):
                    for loc in at[row]:
                        _write_folder(out / loc.folder, _parquet_files(shard, row, rec, loc.seed))
                        report.written.append(loc.key)
        else:
            for loc in todo:
                _write_folder(out / loc.folder, _release_files(source, loc))
                report.written.append(loc.key)
    finally:  # also after an error: what was written is listed, and a rerun resumes from it
        _finish(out, cov.found, shards, source, cov.scheme)
    return report


def download_shards(local_dir: str | Path = "data/instructpix2pix-clip-filtered", *,
                    shards: Iterable[int] | None = None, revision: str | None = None) -> Path:
    """Download the hub dataset's parquet shards (only ``data/train-*.parquet``; the card and scripts are not
    needed). All 262 (63 GB) by default: the ``row`` scheme numbers rows through every shard, and 20K keys
    spread over 313K rows touch nearly every shard anyway. ``shards``: only these shard numbers (a trial run,
    or the ``shard-row`` / ``map`` schemes). Returns the folder to pass as ``--source``."""
    patterns = ([SHARD_PATTERN] if shards is None
                else [f"data/train-{i:05d}-of-*.parquet" for i in sorted(set(int(s) for s in shards))])
    return hub.download_dataset(hub.INSTRUCTPIX2PIX_IMAGES, local_dir, allow_patterns=patterns, revision=revision)
