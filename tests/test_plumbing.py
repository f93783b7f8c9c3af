"""The shared plumbing (rewardedit_lib.plumbing): atomic writes, JSON and JSON lines, image conversions.

What must hold: an atomic write leaves the old or the new content and no temporary file, with a plain file's
permissions; a JSON file missing or broken raises unless the caller named a stand-in for that case; a file
written whole refuses a bad line, a journal skips (and counts) a torn one; lines split at newlines only;
pixels round half to even and clip; an image saved twice gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from rewardedit_lib import plumbing
from rewardedit_lib.plumbing import (
    append_jsonl,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    load_rgb,
    parse_jsonl,
    read_json,
    read_jsonl,
    read_jsonl_tolerant,
    save_image,
    to_rgb_array,
    to_uint8,
)


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------
def test_atomic_write_text_creates_overwrites_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "deep" / "er" / "out.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second ✓")
    assert target.read_text(encoding="utf-8") == "second ✓"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_atomic_write_text_failure_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(plumbing.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_an_atomic_write_gets_a_plain_files_permissions_not_mkstemps(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~plumbing.UMASK


def test_atomic_write_json_writes_json_dumps_bytes_with_or_without_the_newline(tmp_path):
    obj = {"b": [1, 2.5], "a": "é"}
    text = atomic_write_json(tmp_path / "a.json", obj, indent=1, ensure_ascii=False)
    assert text == (tmp_path / "a.json").read_text(encoding="utf-8") == json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
    atomic_write_json(tmp_path / "b.json", obj, indent=1, trailing_newline=False)
    assert (tmp_path / "b.json").read_bytes() == json.dumps(obj, indent=1).encode()


def test_atomic_write_jsonl_is_one_line_per_record(tmp_path):
    rows = [{"a": 1}, {"b": "ü"}]
    atomic_write_jsonl(tmp_path / "r.jsonl", rows, ensure_ascii=False)
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8") == '{"a": 1}\n{"b": "ü"}\n'
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    atomic_write_jsonl(tmp_path / "empty.jsonl", [])
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------
def test_read_json_raises_unless_the_caller_names_a_stand_in(tmp_path):
    good, bad, folder = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "dir.json"
    good.write_text('{"a": 1}')
    bad.write_text('{"a": ')
    folder.mkdir()
    assert read_json(good) == {"a": 1}
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "none.json")
    with pytest.raises(json.JSONDecodeError):
        read_json(bad)
    with pytest.raises(OSError):
        read_json(folder)
    assert read_json(tmp_path / "none.json", missing={}) == {}
    with pytest.raises(json.JSONDecodeError):  # a stand-in for "missing" does not hide a broken file
        read_json(bad, missing={})
    for path in (tmp_path / "none.json", bad, folder):
        assert read_json(path, missing=None, invalid=None) is None
    (tmp_path / "latin1.json").write_bytes(b'"\xe9"')
    with pytest.raises(UnicodeDecodeError):
        read_json(tmp_path / "latin1.json")
    assert read_json(tmp_path / "latin1.json", invalid="x") == "x"


# --------------------------------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------------------------------
def test_a_file_written_whole_refuses_a_bad_line_and_a_journal_skips_and_counts_it(tmp_path):
    raw = b'{"a": 1}\n\n[1, 2]\n{"b": 2}\n{"c": 3, "d'  # a torn last line, as a kill during an append leaves
    with pytest.raises(json.JSONDecodeError):
        parse_jsonl(raw)
    assert parse_jsonl(raw, skip_bad=True) == ([{"a": 1}, {"b": 2}], 2)  # the list and the torn line
    assert parse_jsonl(raw.rsplit(b"\n", 1)[0]) == ([{"a": 1}, [1, 2], {"b": 2}], 0)  # strict keeps any value
    (tmp_path / "j.jsonl").write_bytes(raw)
    assert read_jsonl_tolerant(tmp_path / "j.jsonl") == ([{"a": 1}, {"b": 2}], 2)
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(tmp_path / "j.jsonl")


def test_undecodable_bytes_are_an_error_or_a_skipped_line(tmp_path):
    raw = b'{"a": 1}\n{"b": "\xff"}\n'
    with pytest.raises(UnicodeDecodeError):
        parse_jsonl(raw)
    assert parse_jsonl(raw, skip_bad=True) == ([{"a": 1}], 1)


def test_lines_split_at_newlines_only(tmp_path):
    rows = [{"text": "line\u2028separator\x85next\u2029para"}, {"text": "b"}]
    atomic_write_jsonl(tmp_path / "r.jsonl", rows, ensure_ascii=False)
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    (tmp_path / "crlf.jsonl").write_bytes(b'{"a": 1}\r\n{"a": 2}\r\n')
    assert read_jsonl(tmp_path / "crlf.jsonl") == [{"a": 1}, {"a": 2}]


def test_a_missing_jsonl_file_is_an_error_unless_allowed(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "none.jsonl")
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    assert read_jsonl_tolerant(tmp_path / "none.jsonl") == ([], 0)


def test_append_jsonl_adds_one_line_per_call(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2, "loss": 0.5})
    assert path.read_text() == '{"step": 1}\n{"step": 2, "loss": 0.5}\n'
    assert read_jsonl(path) == [{"step": 1}, {"step": 2, "loss": 0.5}]
    with pytest.raises(FileNotFoundError):  # the folder must exist: appends create no folders
        append_jsonl(tmp_path / "no" / "m.jsonl", {"step": 1})


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
def test_to_uint8_rounds_half_to_even_and_clips():
    x = np.array([-3.0, 0.4, 0.5, 1.5, 2.5, 254.5, 255.49, 300.0], dtype=np.float32)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 0, 2, 2, 254, 255, 255]
    assert to_uint8(np.zeros((2, 3, 3))).shape == (2, 3, 3)


def test_to_rgb_array_takes_arrays_pil_images_and_bytes():
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert np.array_equal(to_rgb_array(rgb), rgb)
    assert np.array_equal(to_rgb_array(Image.fromarray(rgb)), rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    assert np.array_equal(to_rgb_array(buf.getvalue()), rgb)
    grey = to_rgb_array(np.full((4, 4), 7, np.uint8))
    assert grey.shape == (4, 4, 3) and (grey == 7).all()
    rgba = np.dstack([rgb, np.full((4, 5), 9, np.uint8)])
    assert np.array_equal(to_rgb_array(rgba), rgb)
    assert to_rgb_array(np.full((4, 4, 3), 2.5)).tolist() == np.full((4, 4, 3), 2, np.uint8).tolist()
    for bad, msg in ((b"not an image", "not a readable image"), (np.zeros((2, 2, 3)), "shape"), (3, "expected")):
        with pytest.raises(ValueError, match=msg):
            to_rgb_array(bad)


def test_load_rgb_converts_and_closes(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (1, 2, 3, 4))
    im = load_rgb(rgba)
    assert im.mode == "RGB" and im is not rgba and im.getpixel((0, 0)) == (1, 2, 3)
    rgba.save(tmp_path / "a.png")
    im = load_rgb(tmp_path / "a.png")
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (1, 2, 3)
    os.remove(tmp_path / "a.png")  # nothing holds the file open


def test_save_image_gives_the_same_bytes_every_time(tmp_path):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    save_image(im, tmp_path / "a.png")
    save_image(im, tmp_path / "b.PNG")
    im.save(tmp_path / "ref.png", optimize=False, compress_level=6)  # the settings the writers always used
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.PNG").read_bytes() == (tmp_path / "ref.png").read_bytes()
    save_image(im, tmp_path / "c.jpg")
    im.save(tmp_path / "ref.jpg", quality=95)
    assert (tmp_path / "c.jpg").read_bytes() == (tmp_path / "ref.jpg").read_bytes()
