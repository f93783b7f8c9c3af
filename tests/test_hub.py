"""Loading RewardEdit20K from the hub: the download itself needs the network and access, so the test stands a
local folder in for the hub's snapshot and checks everything after it (the call, then the real readers)."""

from __future__ import annotations

import shutil

import huggingface_hub

from rewardedit_lib import formats, toyworld


def test_fetch_from_hub_then_read(tmp_path, monkeypatch):
    # What the hub holds: a dataset folder and its rewards file in a subfolder, keys with a prefix.
    hub = tmp_path / "hub"
    toyworld.write_toy_dataset(hub / "images", n=7, seed=0)
    folders = [f for f, _ in formats.read_seeds(hub / "images")]
    formats.write_rewards(hub / "annotations" / "RewardEdit_20K.json",
                          {f: formats.Rewards.perfect() for f in folders}, key_prefix="pix2pix-clip-filtered/train/")
    calls = []

    def fake_snapshot_download(repo_id, *, repo_type=None, local_dir=None, allow_patterns=None, revision=None, **kw):
        calls.append(dict(repo_id=repo_id, repo_type=repo_type, allow_patterns=allow_patterns, revision=revision))
        shutil.copytree(hub, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    local = formats.fetch_from_hub(local_dir=tmp_path / "RewardEdit20K")
    assert calls == [dict(repo_id="Gstar666/RewardEdit", repo_type="dataset", allow_patterns=None, revision=None)]
    rewards_file = formats.find_rewards_file(local)
    assert rewards_file == local / "annotations" / "RewardEdit_20K.json"
    loaded = formats.read_instructpix2pix(local / "images", rewards=rewards_file)
    assert [t.id for t in loaded.items] == folders
    assert all(t.rewards == formats.Rewards.perfect() for t in loaded.items)


def test_find_rewards_file_names_the_folder_when_absent(tmp_path):
    import pytest

    with pytest.raises(formats.DataError, match="no RewardEdit_20K.json found"):
        formats.find_rewards_file(tmp_path)
