"""``rewardedit prepare``: published InstructPix2Pix images (parquet shards in the hub dataset's column layout,
or the original folder release) -> the annotated folders only, atomically and resumably, with a coverage
report that refuses a key scheme that places too few reward entries."""

from __future__ import annotations

import json
import sys
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from rewardedit_lib import cli, formats, hub, prepare
from rewardedit_lib.formats import Reward, Rewards

PREFIX = "pix2pix-clip-filtered/train/"


def _jpeg(i: int, half: int) -> bytes:
    buf = BytesIO()
    Image.new("RGB", (8, 8), (20 * i % 256, 100 * half, 7)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _rewards(n: int) -> Rewards:
    return Rewards(Reward(n % 6, f"feedback {n}"), Reward(5, formats.PERFECT_FEEDBACK), Reward(4, "blur"))


def _write_shard(path: Path, rows: range, *, drop: str | None = None, corrupt: dict[int, str] | None = None) -> None:
    """A shard in the hub dataset's layout: image columns are {"bytes", "path"} structs; two rows per group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    corrupt = corrupt or {}

    def img(i: int, half: int, col: str):
        return {"bytes": b"not a jpeg" if corrupt.get(i) == col else _jpeg(i, half), "path": None}

    cols = {
        "original_prompt": pa.array([f"a photo {i}" for i in rows]),
        "original_image": pa.array([img(i, 0, "original_image") for i in rows], type=image),
        "edit_prompt": pa.array([f"edit number {i}" for i in rows]),
        "edited_prompt": pa.array([f"an edited photo {i}" for i in rows]),
        "edited_image": pa.array([img(i, 1, "edited_image") for i in rows], type=image),
    }
    if drop:
        del cols[drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=2)


@pytest.fixture
def shards(tmp_path):
    pytest.importorskip("pyarrow")
    root = tmp_path / "hub" / "data"
    _write_shard(root / "train-00000-of-00002-0a1b.parquet", range(0, 5))
    _write_shard(root / "train-00001-of-00002-2c3d.parquet", range(5, 9))
    return tmp_path / "hub"


def _rewards_file(tmp_path: Path, keys: list[str]) -> Path:
    return formats.write_rewards(tmp_path / "RewardEdit_20K.json",
                                 {k: _rewards(i) for i, k in enumerate(keys)})


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_parquet_writes_exactly_the_annotated_rows(shards, tmp_path):
    rows = [1, 4, 5, 8]  # across row groups and both shards
    rw = _rewards_file(tmp_path, [f"{PREFIX}{r:07d}" for r in rows])
    out = tmp_path / "out"
    logged: list[str] = []
    report = prepare.prepare(shards, rw, out, log=logged.append)
    assert len(report.written) == 4 and report.existing == []
    written = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("prompt.json"))
    assert written == sorted(f"{PREFIX}{r:07d}" for r in rows)
    loaded = formats.read_instructpix2pix(out, rewards=rw)
    assert not loaded.skipped
    by_id = {t.id: t for t in loaded.items}
    for i, r in enumerate(rows):
        t = by_id[f"{PREFIX}{r:07d}"]
        assert t.instruction == f"edit number {r}"
        assert t.meta == {"input": f"a photo {r}", "output": f"an edited photo {r}"}
        assert t.rewards == _rewards(i)
        assert Path(t.source).read_bytes() == _jpeg(r, 0) and Path(t.edited).read_bytes() == _jpeg(r, 1)
    manifest = json.loads((out / prepare.MANIFEST).read_text())
    assert manifest["scheme"] == "row"
    assert manifest["folders"][f"{PREFIX}0000005"] == {"shard": "train-00001-of-00002-2c3d.parquet", "row": 0}
    text = logged[0]
    assert "4 of 4 reward entries (100.0%)" in text and "key scheme 'row'" in text
    assert f"'{PREFIX}0000001'" in text and "first source ids:   '0', '1', '2'" in text
    assert "'edit number 1' | 'feedback 0'" in text  # the instruction beside the following feedback


def test_coverage_report_and_threshold_refusal(shards, tmp_path):
    keys = [f"{PREFIX}3", f"{PREFIX}99", "not-a-row"]
    rw = _rewards_file(tmp_path, keys)
    cov, _ = prepare.coverage(shards, rw)
    assert [loc.key for loc in cov.found] == [f"{PREFIX}3"]
    assert dict(cov.missing) == {f"{PREFIX}99": "row 99 is outside the 9 rows of the shards",
                                 "not-a-row": "the key does not end in a row number"}
    assert "1 of 3 reward entries (33.3%)" in cov.text()
    out = tmp_path / "out"
    with pytest.raises(prepare.PrepareError) as e:
        prepare.prepare(shards, rw, out, min_coverage=0.5)
    msg = str(e.value)
    assert "only 1 of 3" in msg and f"{PREFIX}3" in msg and "first source ids ['0', '1', '2']" in msg
    assert "--key-scheme" in msg and not out.exists()
    report = prepare.prepare(shards, rw, out, min_coverage=0.3)
    assert report.written == [f"{PREFIX}3"]
    assert [t.id for t in formats.read_instructpix2pix(out, rewards=rw, require_rewards=False).items] == [f"{PREFIX}3"]


def test_other_key_schemes(shards, tmp_path):
    rw = _rewards_file(tmp_path, ["x/1/2", "y/0_4", "z/9"])
    cov, s = prepare.coverage(shards, rw, scheme="shard-row")
    assert [(s[loc.shard].index, loc.row) for loc in cov.found] == [(1, 2), (0, 4)]
    key_map = tmp_path / "map.json"
    key_map.write_text(json.dumps({"x/1/2": 6, "y/0_4": ["train-00000-of-00002-0a1b.parquet", 1], "z/9": [1, 7]}))
    cov, s = prepare.coverage(shards, rw, key_map=key_map)
    assert cov.scheme == "map" and [loc.row for loc in cov.found] == [1, 1] and len(cov.missing) == 1
    # 'row' numbers rows through every shard: one missing shard would shift them, so it is an error
    (shards / "data" / "train-00000-of-00002-0a1b.parquet").unlink()
    with pytest.raises(prepare.PrepareError, match=r"shards \[0\] are missing"):
        prepare.coverage(shards, rw)


def test_release_order_rows_follow_the_hub_datasets_shuffle(shards, tmp_path):
    import random

    release = [[f"shard-0{k // 5}/{k:07d}", [k, k + 100] if k == 4 else [k]] for k in range(9)]
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "seeds.json").write_text(json.dumps(release))
    state = random.getstate()
    try:  # what make_dataset.py did: random.seed(0) at import, then shuffle(seeds)
        random.seed(0)
        shuffled = [folder for folder, _ in release]
        random.shuffle(shuffled)
    finally:
        random.setstate(state)
    keys = [f"{PREFIX}{k:07d}" for k in (4, 7)] + [f"{PREFIX}0000042"]
    rw = _rewards_file(tmp_path, keys)
    out = tmp_path / "out"
    logged: list[str] = []
    report = prepare.prepare(shards, rw, out, release_seeds=tmp_path / "release" / "seeds.json", min_coverage=0.6,
                             log=logged.append)
    assert report.coverage.scheme == "release-order" and len(report.written) == 2
    assert f"row 0 = {shuffled[0]}" in logged[0] and "1 matched folder(s) have several seeds" in logged[0]
    assert dict(report.coverage.missing) == {f"{PREFIX}0000042": "no folder of the release's seeds.json ends with it"}
    by_id = {t.id: t for t in formats.read_instructpix2pix(out, rewards=rw, require_rewards=False).items}
    for k in (4, 7):
        assert by_id[f"{PREFIX}{k:07d}"].instruction == f"edit number {shuffled.index(release[k][0])}"
    manifest = json.loads((out / prepare.MANIFEST).read_text())["folders"]
    assert manifest[f"{PREFIX}0000007"]["folder"] == "shard-01/0000007"
    (tmp_path / "release" / "seeds.json").write_text(json.dumps(release[:8]))
    with pytest.raises(prepare.PrepareError, match="lists 8 folders but the shards hold 9 rows"):
        prepare.coverage(shards, rw, release_seeds=tmp_path / "release")


def test_resumed_run_rewrites_nothing(shards, tmp_path):
    rw = _rewards_file(tmp_path, [f"{PREFIX}{r}" for r in (0, 2, 7)])
    out = tmp_path / "out"
    prepare.prepare(shards, rw, out)
    before = _tree(out)
    report = prepare.prepare(shards, rw, out)
    assert report.written == [] and len(report.existing) == 3
    assert _tree(out) == before
    with pytest.raises(prepare.PrepareError, match="prepared with key scheme 'row'"):
        prepare.prepare(shards, rw, out, scheme="shard-row", min_coverage=0)


def test_missing_column_names_shard_and_column_and_keeps_what_was_written(shards, tmp_path):
    rw = _rewards_file(tmp_path, [f"{PREFIX}{r}" for r in (1, 6)])
    out = tmp_path / "out"
    prepare.prepare(shards, rw, out)
    before = _tree(out)
    bad = shards / "data" / "train-00001-of-00002-2c3d.parquet"
    _write_shard(bad, range(5, 9), drop="edited_image")
    with pytest.raises(prepare.PrepareError) as e:
        prepare.prepare(shards, rw, tmp_path / "out")
    assert "train-00001-of-00002-2c3d.parquet" in str(e.value) and "'edited_image' is missing" in str(e.value)
    assert _tree(out) == before


def test_corrupt_image_names_shard_row_column_and_the_rerun_finishes(shards, tmp_path):
    rw = _rewards_file(tmp_path, [f"{PREFIX}{r}" for r in (1, 3, 6, 7)])
    bad = shards / "data" / "train-00001-of-00002-2c3d.parquet"
    _write_shard(bad, range(5, 9), corrupt={7: "edited_image"})  # global row 7 = row 2 of shard 1
    out = tmp_path / "out"
    with pytest.raises(prepare.PrepareError) as e:
        prepare.prepare(shards, rw, out)
    msg = str(e.value)
    assert "train-00001-of-00002-2c3d.parquet row 2" in msg and "column 'edited_image'" in msg
    done = [t.id for t in formats.read_instructpix2pix(out, rewards=rw, require_rewards=False).items]
    assert done == [f"{PREFIX}{r}" for r in (1, 3, 6)]  # listed in seeds.json, each complete
    assert not [p for p in out.rglob("*") if prepare._TMP_TAG in p.name]  # no half-written folder
    before = _tree(out)
    _write_shard(bad, range(5, 9))
    report = prepare.prepare(shards, rw, out)
    assert report.written == [f"{PREFIX}7"] and len(report.existing) == 3
    after = _tree(out)
    kept = {k: v for k, v in before.items() if "/" in k}  # the folders' files (not seeds.json / prepare.json)
    assert {k: after[k] for k in kept} == kept
    assert len(formats.read_instructpix2pix(out, rewards=rw).items) == 4


def _release(root: Path) -> None:
    """The original folder release: seeds.json, <folder>/prompt.json, <folder>/<seed>_0.jpg / _1.jpg."""
    seeds = [["shard-00/0000000", [11, 12]], ["shard-00/0000001", [13]], ["shard-01/0000002", [21, 22]],
             ["shard-01/0000003", [31]]]
    for n, (folder, folder_seeds) in enumerate(seeds):
        fdir = root / folder
        fdir.mkdir(parents=True)
        (fdir / "prompt.json").write_text(json.dumps({"input": f"in {n}", "edit": f"release edit {n}",
                                                      "output": f"out {n}"}))
        for sd in folder_seeds:
            (fdir / f"{sd}_0.jpg").write_bytes(_jpeg(sd, 0))
            (fdir / f"{sd}_1.jpg").write_bytes(_jpeg(sd, 1))
    (root / "seeds.json").write_text(json.dumps(seeds))


def test_folder_release(tmp_path):
    src = tmp_path / "clip-filtered-dataset"
    _release(src)
    rw = _rewards_file(tmp_path, [f"{PREFIX}0000000", f"{PREFIX}0000002#22", f"{PREFIX}0000009"])
    out = tmp_path / "out"
    logged: list[str] = []
    report = prepare.prepare(src, rw, out, min_coverage=0.6, log=logged.append)
    assert report.coverage.scheme == "folder" and len(report.written) == 2
    assert "2 of 3" in logged[0] and "'shard-00/0000000'" in logged[0] and "1 folder(s) hold several pairs" in logged[0]
    loaded = formats.read_instructpix2pix(out, rewards=rw, require_rewards=False)
    by_id = {t.id: t for t in loaded.items}
    assert sorted(by_id) == [f"{PREFIX}0000000", f"{PREFIX}0000002"]
    t0, t2 = by_id[f"{PREFIX}0000000"], by_id[f"{PREFIX}0000002"]
    assert (t0.seed, t0.instruction, t0.rewards) == (11, "release edit 0", _rewards(0))
    assert (t2.seed, t2.instruction, t2.rewards) == (22, "release edit 2", _rewards(1))
    assert Path(t2.edited).read_bytes() == _jpeg(22, 1)
    before = _tree(out)
    assert prepare.prepare(src, rw, out, min_coverage=0.6).written == [] and _tree(out) == before
    with pytest.raises(prepare.PrepareError, match="does not fit"):
        prepare.coverage(src, rw, scheme="row")


def test_folder_release_corrupt_image(tmp_path):
    src = tmp_path / "rel"
    _release(src)
    (src / "shard-01" / "0000003" / "31_0.jpg").write_bytes(b"\xff\xd8 truncated")
    rw = _rewards_file(tmp_path, [f"{PREFIX}0000001", f"{PREFIX}0000003"])
    with pytest.raises(prepare.PrepareError, match=r"0000003/31_0\.jpg: column 'source': image bytes do not decode"):
        prepare.prepare(src, rw, tmp_path / "out")
    assert [t.id for t in formats.read_instructpix2pix(tmp_path / "out", rewards=rw, require_rewards=False).items] \
        == [f"{PREFIX}0000001"]


def test_missing_pyarrow_gives_an_install_hint(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    rw = _rewards_file(tmp_path, [f"{PREFIX}0"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(prepare.PrepareError, match=r"pip install 'rewardedit-kit\[real\]'"):
        prepare.prepare(tmp_path, rw, tmp_path / "out")


def test_download_shards_asks_only_for_the_parquet_files(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake(repo_id, *, repo_type=None, local_dir=None, allow_patterns=None, revision=None, **kw):
        calls.append((repo_id, repo_type, allow_patterns))
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert prepare.download_shards(tmp_path) == tmp_path
    prepare.download_shards(tmp_path, shards=[3, 0, 3])
    assert calls == [(hub.INSTRUCTPIX2PIX_IMAGES, "dataset", ["data/train-*.parquet"]),
                     (hub.INSTRUCTPIX2PIX_IMAGES, "dataset",
                      ["data/train-00000-of-*.parquet", "data/train-00003-of-*.parquet"])]


def test_cli_prepare(shards, tmp_path, capsys):
    rw = _rewards_file(tmp_path, [f"{PREFIX}2", f"{PREFIX}50"])
    out = tmp_path / "out"
    assert cli.main(["prepare", "--source", str(shards), "--rewards", str(rw), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "1 of 2 reward entries" in captured.out and "only 1 of 2" in captured.err and not out.exists()
    args = ["prepare", "--source", str(shards), "--rewards", str(rw), "--out", str(out), "--min-coverage", "0.5"]
    assert cli.main(args + ["--check"]) == 0
    assert "nothing written" in capsys.readouterr().out and not out.exists()
    assert cli.main(["prepare", "--source", str(shards), "--rewards", str(rw), "--out", str(out),
                     "--min-coverage", "0.5"]) == 0
    assert "wrote 1 folder(s)" in capsys.readouterr().out
    assert (out / PREFIX / "2" / "0_1.jpg").exists()
