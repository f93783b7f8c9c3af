"""benchmarks/edit_latency.py: a CPU smoke test (timings on a CPU are noise; the numbers that matter come
from the GPU and are written into benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "edit_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("edit_latency", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_pipelines_share_the_unet_weights_but_only_the_kit_has_rewards(bench):
    import torch

    kit, plain = bench.build(tiny=True, device=torch.device("cpu"), dtype=torch.float32)
    assert kit.reward_encoder is not None and not hasattr(plain, "reward_encoder")
    a, b = kit.unet.state_dict(), plain.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not plain.unet.conv_in._forward_hooks  # the plain UNet is a hook-free copy


def test_the_benchmark_times_both_and_prints_the_overhead(bench, capsys):
    out = bench.main(["--tiny", "--steps", "2", "--reps", "1", "--resolution", "64"])
    text = capsys.readouterr().out
    assert re.search(r"kit \(rewards\) \d+\.\d{3} s per edit; plain InstructPix2Pix \d+\.\d{3} s per edit; "
                     r"reward overhead [+-]\d+\.\d%", text), text
    assert out["overhead"] == pytest.approx(out["kit_s"] / out["plain_s"] - 1)
    assert len(out["times"]["kit"]) == len(out["times"]["plain"]) == 1
