"""Plumbing: the file and image chores every layer shares, each done one way, here.

* **Atomic writes** (:func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_write_jsonl`): the
  file holds either its old content or the new, never a part, whenever the process dies. The text goes to a
  temporary file in the same folder (``.<name>.<random>.tmp``), is flushed and ``fsync``-ed, and replaces the
  target in one ``os.replace`` (atomic within a file system); a failed write removes its temporary file. The
  file gets the permissions a plain ``open()`` would give it (0666 less the umask), not ``mkstemp``'s 0600.
* **JSON** (:func:`read_json`): a file's value, read as UTF-8; a caller that can do without it names what a
  missing or an unreadable file stands for.
* **JSON lines**: one parser (:func:`parse_jsonl`) for the two kinds of file. A file written whole and
  atomically (an evaluation's ``results.jsonl``, a toy world's truth) holds no torn line, so a bad line is an
  error (:func:`read_jsonl`). An append-only file (a journal, an old answer cache) can end in a line torn by
  a kill; :func:`read_jsonl_tolerant` skips such lines and counts them. :func:`append_jsonl` adds one line.
* **Images**: :func:`load_rgb` (a path or a PIL image -> an RGB PIL image), :func:`to_rgb_array` (anything
  image-like -> an ``(H, W, 3)`` uint8 array), :func:`to_uint8` (float pixels -> uint8, rounded and clipped)
  and :func:`save_image` (fixed encoder settings, so the same pixels always give the same bytes). The
  model's own images <-> tensors in [-1, 1] (training, the pipeline) are diffusers' ``VaeImageProcessor``
  (:data:`rewardedit_lib.train.data.IMAGE_PROCESSOR`); these stay for the toy world's and the judges' pixel
  arrays: 0-255 floats, clipped (``numpy_to_pil`` takes 0-1 and does not clip), bytes, grey and
  alpha, with no diffusers import.

Imports only the standard library at module level (numpy and PIL when an image function is called), so the
command line and the data readers stay quick to import.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

#: The process's umask, read once at import (reading it means setting it, which is not thread-safe).
UMASK = os.umask(0)
os.umask(UMASK)

_RAISE: Any = object()  # read_json: no default given, raise


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------
def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a crash leaves either the old or the new content, never half
    of it: a temporary file in the same folder, fsync-ed, then ``os.replace``. Creates missing folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any, *, trailing_newline: bool = True, **dumps: Any) -> str:
    """:func:`atomic_write_text` of ``json.dumps(obj, **dumps)`` (plus a newline unless ``trailing_newline`` is
    False: some files were always written without one, and keep their bytes). Returns the text written."""
    text = json.dumps(obj, **dumps) + ("\n" if trailing_newline else "")
    atomic_write_text(path, text)
    return text


def atomic_write_jsonl(path: str | Path, records: Iterable[Any], **dumps: Any) -> None:
    """:func:`atomic_write_text` of one ``json.dumps(record, **dumps)`` line per record, each ending in a newline."""
    atomic_write_text(path, "".join(json.dumps(r, **dumps) + "\n" for r in records))


# --------------------------------------------------------------------------------------------------
# Reading JSON and JSON lines
# --------------------------------------------------------------------------------------------------
def read_json(path: str | Path, *, missing: Any = _RAISE, invalid: Any = _RAISE) -> Any:
    """The JSON value in a file, read as UTF-8.

    ``missing``: returned when the file does not exist (not given: ``FileNotFoundError``). ``invalid``:
    returned when it exists but cannot be read, is not UTF-8 or not JSON (not given: the ``OSError`` or
    ``ValueError`` -- ``json.JSONDecodeError``, ``UnicodeDecodeError`` -- is raised).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing is _RAISE:
            raise
        return missing
    except (OSError, ValueError):
        if invalid is _RAISE:
            raise
        return invalid
    try:
        return json.loads(text)
    except ValueError:
        if invalid is _RAISE:
            raise
        return invalid


def parse_jsonl(raw: bytes, *, skip_bad: bool = False) -> tuple[list[Any], int]:
    """The records of JSON-lines bytes, and how many lines were skipped.

    Lines are split at ``\\n`` only (a JSON string may hold U+2028 or U+0085, which ``str.splitlines`` would
    also split at); blank lines are ignored. ``skip_bad=False``: every line must hold one JSON value, else
    ``json.JSONDecodeError`` / ``UnicodeDecodeError`` (the count is then always 0). ``skip_bad=True``: a line
    that is not one complete JSON object -- torn by a kill during an append, undecodable, or another JSON
    value -- is skipped and counted.
    """
    records: list[Any] = []
    bad = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if not skip_bad:
                raise
            bad += 1
            continue
        if skip_bad and not isinstance(obj, dict):
            bad += 1
            continue
        records.append(obj)
    return records, bad


def read_jsonl(path: str | Path, *, missing_ok: bool = False) -> list[Any]:
    """The records of a JSON-lines file written whole (atomically): any bad line is an error, as in
    :func:`parse_jsonl` without ``skip_bad``. A missing file is ``FileNotFoundError``, or no records with
    ``missing_ok``."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    return parse_jsonl(raw)[0]


def read_jsonl_tolerant(path: str | Path) -> tuple[list[dict], int]:
    """The records of an append-only JSON-lines file (a journal), and how many lines were skipped: a line torn
    by a kill during an append, or any line that is not one JSON object, is skipped and counted
    (:func:`parse_jsonl` with ``skip_bad``). A missing file has no records."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return [], 0
    return parse_jsonl(raw, skip_bad=True)


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append ``json.dumps(record)`` and a newline to ``path`` (created if missing; its folder must exist).

    One line in one buffered write; not ``fsync``-ed, so a crash can lose the last lines, and an append that
    a kill interrupts can leave a torn last line (:func:`read_jsonl_tolerant` reads past it). For appends
    that must be durable when they return, see :class:`rewardedit_lib.judge.journal.JsonlLog`.
    """
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
def load_rgb(image: Any):
    """An RGB PIL image (always a new one) from a PIL image or an image file's path; the file is closed."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as im:
        return im.convert("RGB")


def to_uint8(x: Any):
    """Pixel values on the 0-255 scale as a uint8 array: rounded to the nearest integer (halves to even, as
    ``np.rint``), then clipped to 0-255. The shape is kept."""
    import numpy as np

    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def to_rgb_array(image: Any):
    """An ``(H, W, 3)`` uint8 array from an array, a PIL image or encoded image bytes (PNG: lossless).

    A grey ``(H, W)`` array is repeated into three channels, an alpha channel dropped, a non-uint8 array
    converted with :func:`to_uint8`. Raises ``ValueError`` for anything that is not a decodable image of at
    least 4 x 4 pixels (the toy judge's server turns that into a 400).
    """
    import numpy as np

    if isinstance(image, (bytes, bytearray, memoryview)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(bytes(image))) as im:
                im.load()
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"not a readable image ({e})") from None
    if isinstance(image, np.ndarray):
        a = image
    else:
        try:  # a PIL image
            a = np.asarray(image.convert("RGB"))
        except AttributeError:
            raise ValueError("expected an image array, a PIL image or image bytes, "
                             f"got {type(image).__name__}") from None
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 4 or a.shape[1] < 4:
        raise ValueError(f"expected an (H, W, 3) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = to_uint8(a.astype(np.float64))
    return np.ascontiguousarray(a[:, :, :3])


def save_image(image: Any, path: str | Path) -> None:
    """Save a PIL image with fixed encoder settings, so the same pixels always give the same bytes: a ``.png``
    path (any case) losslessly at zlib level 6, unoptimised; any other format at quality 95. The format is
    the path's suffix; the image is saved as it is (convert it first if it must be RGB)."""
    if Path(path).suffix.lower() == ".png":
        image.save(path, optimize=False, compress_level=6)
    else:
        image.save(path, quality=95)
