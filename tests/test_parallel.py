"""Jobs side by side on a CPU's cores (notebook 04's two models): the split, the lines, the failures."""

from __future__ import annotations

import pytest
import torch

from rewardedit_lib import parallel
from rewardedit_lib import train as T
from test_train import tiny, weights
from toy_data import annotated_toy_data


def test_the_split_puts_cpu_jobs_side_by_side_and_gpu_jobs_one_after_the_other():
    assert parallel.plan_split(2, "cpu", cores=2) == parallel.Split(2, 1)
    assert parallel.plan_split(2, "cpu", cores=16) == parallel.Split(2, 8)
    assert parallel.plan_split(3, "cpu", cores=2) == parallel.Split(2, 1)
    assert parallel.plan_split(2, "cpu", cores=1) == parallel.Split(1, None)
    assert parallel.plan_split(2, "cuda", cores=16) == parallel.Split(1, None)
    assert parallel.plan_split(2, "cpu", workers=1, cores=16) == parallel.Split(1, None)
    assert parallel.plan_split(1, "cpu", workers=4, cores=16) == parallel.Split(1, None)
    assert parallel.plan_split(2, "cuda", workers=2, cores=4).side_by_side  # forced
    for bad in (0, -1, "two", True, 1.5):
        with pytest.raises(ValueError, match="workers must be 'auto' or a positive number"):
            parallel.plan_split(2, "cpu", workers=bad)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return annotated_toy_data(tmp_path_factory.mktemp("parallel-data"), n=16, seed=5)


def test_two_runs_side_by_side_train_what_each_would_alone(data, tmp_path):
    """Each worker trains its own run to the end, its loss lines reach the caller, the results come back in
    the runs' order, and the weights are those of the same run trained alone (up to float rounding: the
    worker has one thread)."""
    d, rewards = data
    cfg = tiny(stage=2, max_steps=3, init=str(T.TOY_STAGE1), seed=1)
    specs = {"baseline": T.RunSpec(T.TrainConfig.from_json({**cfg.to_json(), "rewards": "none"}), d, tmp_path / "b"),
             "multi-reward": T.RunSpec(cfg, d, tmp_path / "m", rewards)}
    lines: list[str] = []
    runs = T.ensure_trained_all(specs, workers=2, write=lines.append)
    assert list(runs) == ["baseline", "multi-reward"]
    assert all(r.steps == 3 and r.model_dir.is_dir() for r in runs.values())
    assert lines[0] == "training 2 job(s) side by side: 2 processes x 1 thread(s)"
    for name in specs:
        assert [ln.split("  loss")[0] for ln in lines if ln.startswith(name + ":")] == \
            [f"{name}: step 3/3"]  # a line every max(10, steps // 6) steps, and at the last
    alone = T.train(cfg, d, tmp_path / "alone", rewards, progress=False)
    a, b = weights(alone.model_dir), weights(runs["multi-reward"].model_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    # the same call again reuses both runs: no worker, no line but the split's
    again: list[str] = []
    reused = T.ensure_trained_all(specs, workers=2, write=again.append)
    assert all(reused[n].metrics == runs[n].metrics and reused[n].final_loss == runs[n].final_loss for n in specs)
    assert again == ["training 2 job(s) side by side: 2 processes x 1 thread(s)"]


def test_a_failing_run_does_not_stop_the_other(data, tmp_path):
    """The first failure is raised, with its own message, after the other run finished and saved its model."""
    d, rewards = data
    cfg = tiny(stage=2, max_steps=2, init=str(T.TOY_STAGE1))
    specs = {"broken": T.RunSpec(cfg, d, tmp_path / "broken", tmp_path / "no-such-rewards.json"),
             "fine": T.RunSpec(cfg, d, tmp_path / "fine", rewards)}
    with pytest.raises(Exception, match="no-such-rewards.json"):
        T.ensure_trained_all(specs, workers=2, write=lambda line: None)
    assert (tmp_path / "fine" / "model" / "model_index.json").exists()


def test_one_after_the_other_shares_the_time_limit(data, tmp_path):
    """workers=1 (a GPU's way): the runs train in this process, in order, under one time limit."""
    d, _ = data
    cfg = tiny(stage=1, max_steps=2)
    specs = {name: T.RunSpec(cfg, d, tmp_path / name) for name in ("a", "b")}
    threads = torch.get_num_threads()
    with pytest.raises(T.TimeLimitReached, match="step 1 of 2"):
        T.ensure_trained_all(specs, workers=1, time_limit_s=0.001, write=lambda line: None)
    assert not (tmp_path / "b").exists()  # the first run stopped on the clock: the second never started
    runs = T.ensure_trained_all(specs, workers=1, write=lambda line: None)
    assert runs["a"].resumed_from == 1 and runs["b"].steps == 2
    assert torch.get_num_threads() == threads  # in this process, on its own threads: no worker's share was taken


# --------------------------------------------------------------------------------------------------
# No worker outlives the wait for it
# --------------------------------------------------------------------------------------------------
def sleeping_job(seconds: float, write) -> None:
    """A job for the tests below (a worker imports it from this module): says its pid, then sleeps."""
    import os
    import time

    write(f"pid {os.getpid()}")
    time.sleep(seconds)


def _path_with_tests() -> str:
    import os
    from pathlib import Path

    here = Path(__file__).resolve().parent
    return os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])


def _gone(pids: list[int], within_s: float) -> bool:
    """Every pid has ended (a zombie left for init to reap counts as ended) within ``within_s``."""
    import time
    from pathlib import Path

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_stop_when_their_caller_is_killed():
    import os
    import signal
    import subprocess
    import sys

    caller = ("from rewardedit_lib import parallel; import test_parallel as t\n"
              "parallel.run_jobs(t.sleeping_job, [{'seconds': 300}, {'seconds': 300}], parallel.Split(2, 1))\n")
    proc = subprocess.Popen([sys.executable, "-c", caller], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": _path_with_tests()})
    try:
        pids = sorted(int(proc.stdout.readline().split()[1]) for _ in range(2))
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no finally, no atexit in the caller: only its pipes close
        proc.wait()
    assert _gone(pids, 15), f"workers {pids} still run 15 s after their caller was killed"


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/stat").exists(), reason="reads /proc")
def test_an_interrupt_in_the_caller_stops_its_workers(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _path_with_tests())
    pids: list[int] = []

    def write(line: str) -> None:
        pids.append(int(line.split()[1]))
        if len(pids) == 2:
            raise KeyboardInterrupt  # what a notebook's "interrupt kernel" raises in the waiting caller

    with pytest.raises(KeyboardInterrupt):
        parallel.run_jobs(sleeping_job, [{"seconds": 300}, {"seconds": 300}], parallel.Split(2, 1), write=write)
    assert _gone(pids, 5), f"workers {pids} still run after the caller was interrupted"
