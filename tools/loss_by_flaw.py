"""Which planted flaws a multi-reward model hears, at the loss level: the loss probe's per-triplet losses
(`rewardedit_lib.probe.loss_by_noise`) grouped by the flaws the toy world planted in each triplet.

    python tools/loss_by_flaw.py MODEL DATA REWARDS [LIMIT]

DATA: a toy training folder (its _truth/flaws.jsonl names each triplet's flaws); REWARDS: its annotated
rewards. Per group (F / P: a following / preserving flaw, Q:kind: the quality flaw), the mean relative gain
(loss with the perfect rewards - loss with the annotated ones) / loss with the perfect rewards, overall and per
quarter of the noise range. Clean triplets are 0 by construction (their annotation is the perfect one). A gain
near 0 for a flaw: the model predicts that flawed target no better for being told about the flaw (RESULTS.md,
sixth session: blur and blocks are heard, noise is not).
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch

from rewardedit_lib.probe import loss_by_noise
from rewardedit_lib.toyworld import read_truth

BINS = 4


def group(truth: dict) -> str:
    key = ("F" if not truth["following_ok"] else "") + ("P" if not truth["preserving_ok"] else "")
    key += f"Q:{truth['quality_flaw']}" if truth["quality_flaw"] else ""
    return key or "clean"


def main(model: str, data: str, rewards: str, limit: str = "1500") -> None:
    truth = read_truth(data)
    probe = loss_by_noise(model, data, rewards, conditions=("as annotated", "perfect"), bins=BINS,
                          limit=int(limit))
    t = probe.timesteps
    groups: dict[str, list[int]] = defaultdict(list)
    for i, folder in enumerate(probe.ids):
        groups[group(truth[folder])].append(i)
    ann, perfect = probe.per_item["as annotated"], probe.per_item["perfect"]
    gain = (perfect - ann) / perfect
    print(f"{'flaws':12s} {'n':>5s}  relative gain: all t | " + " | ".join(probe.bins()))
    for k in sorted(groups, key=lambda k: -len(groups[k])):
        ix = torch.tensor(groups[k])
        cells = [gain[ix].mean()] + [gain[ix[(t[ix] >= a) & (t[ix] < b)]].mean()
                                     for a, b in zip(probe.edges[:-1], probe.edges[1:])]
        print(f"{k:12s} {len(ix):5d}  " + "  ".join(f"{float(c):+.3f}" for c in cells))


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
