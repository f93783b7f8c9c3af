"""Judge-vs-truth agreement statistics, the cost scaling and the endpoint helper notebook 01 uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewardedit_lib import dataset, formats, toyworld, viz
from rewardedit_lib.judge.annotate import annotation_requests
from rewardedit_lib.judge.client import estimate_cost
from rewardedit_lib.toy.endpoint import judge_endpoint


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 200)
    ok = rng.random(200) < 0.6
    pos, neg = scores[ok], scores[~ok]
    want = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert dataset.roc_auc(scores, ok) == pytest.approx(want)
    assert dataset.roc_auc([5, 5, 1], [True, True, False]) == 1.0
    assert dataset.roc_auc([1, 1, 5], [True, True, False]) == 0.0
    assert dataset.roc_auc([3, 3], [True, False]) == 0.5
    assert math.isnan(dataset.roc_auc([1, 2], [True, True]))


def _with_rewards(tmp_path, scores_of):
    toyworld.write_toy_dataset(tmp_path / "d", n=21, seed=2)
    truth = toyworld.read_truth(tmp_path / "d")
    rewards = {}
    for f, line in truth.items():
        rs = [formats.Reward(scores_of(line, p), "x" if not line[f"{p}_ok"] else formats.PERFECT_FEEDBACK)
              for p in formats.PERSPECTIVES]
        rewards[f] = formats.Rewards(*rs)
    formats.write_rewards(tmp_path / "r.json", rewards)
    return truth, formats.read_instructpix2pix(tmp_path / "d", rewards=tmp_path / "r.json").items


def test_agreement_of_a_perfect_and_of_an_inverted_judge(tmp_path):
    truth, ts = _with_rewards(tmp_path, lambda line, p: 5 if line[f"{p}_ok"] else 2)
    a = dataset.agreement(truth, ts)
    for p in formats.PERSPECTIVES:
        n_ok = sum(line[f"{p}_ok"] for line in truth.values())
        assert a[p]["n"] == 21
        assert a[p]["confusion"] == {"ok_yes": n_ok, "ok_no": 0, "flawed_yes": 0, "flawed_no": 21 - n_ok}
        assert a[p]["scores_ok"][5] == n_ok and a[p]["scores_flawed"][2] == 21 - n_ok
        if 0 < n_ok < 21:
            assert a[p]["auc"] == 1.0 and a[p]["accuracy"] == 1.0
    truth, ts = _with_rewards(tmp_path / "inv", lambda line, p: 1 if line[f"{p}_ok"] else 5)
    inv = dataset.agreement(truth, ts)
    assert all(inv[p]["accuracy"] == 0.0 for p in formats.PERSPECTIVES)
    fig = viz.agreement_figure(inv)
    assert len(fig.axes) == 6
    assert "ROC AUC 0.000" in fig.axes[0].get_title()


def test_feedback_rows_show_flawed_examples_of_different_kinds(tmp_path):
    truth, ts = _with_rewards(tmp_path, lambda line, p: 5 if line[f"{p}_ok"] else 1)
    rows = dataset.feedback_rows(ts, truth, "following", k=3)
    assert 1 <= len(rows) <= 3
    assert len({r[1] for r in rows}) == len(rows)  # one row per failure kind
    assert all(r[2] == 1 and r[3] == "x" for r in rows)


def test_cost_estimate_scales_per_request(tmp_path):
    toyworld.write_toy_dataset(tmp_path / "d", n=7, seed=0)
    ts = formats.read_instructpix2pix(tmp_path / "d").items
    reqs = annotation_requests(ts)
    assert len(reqs) == 21 and {r.perspective for r in reqs} == set(formats.PERSPECTIVES)
    est = estimate_cost(reqs, "gpt-4o")
    big = est.scaled(60_000)
    assert big.requests == 60_000
    assert big.cost_usd == pytest.approx(est.cost_usd * 60_000 / 21)
    assert estimate_cost(reqs, "no-such-model").scaled(10).cost_usd is None


def test_judge_endpoint_starts_a_local_server_only_when_no_url_is_given():
    import urllib.request

    with judge_endpoint(None) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/models", timeout=10) as r:
            assert b"toy-judge" in r.read()
    with judge_endpoint("https://example.invalid/v1") as url:
        assert url == "https://example.invalid/v1"


def test_judge_endpoint_in_its_own_process_answers_alike_and_stops_with_the_block(tmp_path):
    import json
    import urllib.request

    from rewardedit_lib.judge.annotate import annotate
    from rewardedit_lib.judge.request import TOY_JUDGE_MODEL
    from rewardedit_lib.toy.endpoint import client_options

    toyworld.write_toy_dataset(tmp_path / "d", n=7, seed=3, rates=toyworld.FlawRates(0.5, 0.5, 0.5))
    rewards = {}
    for own in (True, False):
        out = tmp_path / f"own-{own}" / "rewards.json"
        with judge_endpoint(None, own_process=own) as url:
            result = annotate(tmp_path / "d", out, base_url=url, model=TOY_JUDGE_MODEL, progress=False, log=None,
                              **client_options(TOY_JUDGE_MODEL))
        assert result.failed == 0
        rewards[own] = json.loads(out.read_text())
    assert rewards[True] == rewards[False] and len(rewards[True]) == 7
    assert {e["Score"] for v in rewards[True].values() for e in v} != {5}  # flawed triplets were judged as such
    with pytest.raises(OSError):  # the server process stopped with the block: refused
        urllib.request.urlopen(url + "/models", timeout=5)


def test_judge_endpoint_refuses_server_options_in_its_own_process_and_says_why_a_server_did_not_start(monkeypatch):
    import sys
    import urllib.request

    with pytest.raises(ValueError, match=r"\['latency'\] need the in-process server"):
        with judge_endpoint(None, own_process=True, latency=0.1):
            pass
    monkeypatch.setattr(sys, "executable", "/bin/false")  # a "python" that exits at once, saying nothing
    with pytest.raises(RuntimeError, match=r"did not start .*exit code 1.*it said: nothing"):
        with judge_endpoint(None, own_process=True):
            pass
    # by default (not asked for) a server process that does not start falls back to the in-process server
    monkeypatch.setattr("rewardedit_lib.parallel.cpu_cores", lambda: 2)
    with pytest.warns(RuntimeWarning, match="did not start .* judging in this process instead"):
        with judge_endpoint(None) as url:
            with urllib.request.urlopen(url + "/models", timeout=10) as r:
                assert b"toy-judge" in r.read()


def test_a_judge_server_process_does_not_outlive_a_caller_killed_with_sigkill():
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    script = ("import sys, time; from rewardedit_lib.toy.endpoint import judge_endpoint\n"
              "with judge_endpoint(None, own_process=True) as url:\n"
              "    print(url, flush=True); time.sleep(600)\n")
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        url = caller.stdout.readline().strip()
        with urllib.request.urlopen(url + "/models", timeout=10) as r:
            assert b"toy-judge" in r.read()
    finally:
        os.kill(caller.pid, signal.SIGKILL)  # no `finally`, no atexit: only the OS closes its pipes
        caller.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
        except OSError:  # refused (URLError), or reset by a server on its way out
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the judge server at {url} still answers 15 s after its caller was killed")
