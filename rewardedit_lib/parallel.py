"""Independent jobs side by side on one machine's CPU cores, each process with its share of the threads.

Why: the toy model is too small for two CPU cores to share one training step well. On the course's 2-core
machine one stage-2 run trains at about 92 images/s with 2 threads and 64 with 1, and two runs side by side,
one thread each, at about 130 together (RESULTS.md, eleventh session): notebook 04's two models, which are
independent (the same start, data and seed, each step a pure function of ``(seed, step)``), finish sooner
side by side than one after the other (``train_workers="auto"``, the course's default: notebook 04 652 s instead
of 758 s for the same steps). On a GPU the jobs run one after the other in this process.

What changes: a process with fewer threads sums some convolution gradients in another order, so a run made
side by side differs from one made alone by float rounding (about 1e-8 in the loss after 100 steps), as runs
made with two installs of the same libraries do; each run is still exactly reproducible under the same split.
The course's numbers are those of runs side by side (its default since the thirteenth session's rule R10; on
seed 1 of the earlier recipe the rounding alone had moved the quality knob from +32.1 to +28.1 points).

Each worker is a fresh interpreter (safe inside a Jupyter kernel, where forking a process that holds torch's
thread pool is not), so a job is a module-level function and picklable arguments. A line a job writes through
its ``write`` argument is printed here, in the caller's process (a notebook cell shows it live).
"""

from __future__ import annotations

import os
import queue as queue_mod
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

@dataclass(frozen=True)
class Split:
    """How :func:`run_jobs` runs its jobs: ``workers`` processes (1: one after the other, in this process)
    with ``threads`` torch threads each (``None``: torch's default)."""

    workers: int
    threads: int | None

    @property
    def side_by_side(self) -> bool:
        return self.workers > 1

    def describe(self, n_jobs: int) -> str:
        if not self.side_by_side:
            return f"{n_jobs} job(s) one after the other"
        return f"{n_jobs} job(s) side by side: {self.workers} processes x {self.threads} thread(s)"


def cpu_cores() -> int:
    """The CPU cores this process may use (its affinity where the OS says, a container's limit included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_workers(workers: int | str) -> None:
    """Refuse a ``workers`` argument that is neither "auto" nor a positive number of processes (the one check
    for every caller that takes one: training, evaluation, annotation)."""
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be 'auto' or a positive number of processes, got {workers!r}")


def plan_split(n_jobs: int, device: str, workers: int | str = "auto", cores: int | None = None) -> Split:
    """The split of ``n_jobs`` CPU jobs over ``cores`` (default: :func:`cpu_cores`).

    ``workers="auto"``: side by side when the jobs run on the CPU and there are at least two cores, one
    process per job up to one per core, the cores shared out evenly; one after the other on a GPU (one card
    is not shared between processes). A number forces that many processes (1: one after the other)."""
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, got {n_jobs}")
    check_workers(workers)
    cores = cores or cpu_cores()
    n = (min(n_jobs, cores) if device == "cpu" else 1) if workers == "auto" else min(int(workers), n_jobs)
    if n == 1:
        return Split(1, None)
    return Split(n, max(1, cores // n))


def _worker_main() -> None:
    """A worker process: read one pickled job from stdin, run it on its share of threads, write its lines to
    stdout (one per line) and its result, or the exception it raised, pickled to the file the job names."""
    import pickle

    job = pickle.load(sys.stdin.buffer)
    # The caller keeps the pipe open while it waits for this job; it closes when the caller stops waiting or
    # dies in any way (kill -9, a restarted notebook kernel): then this worker stops too, leaving what it saved.

    def stop() -> None:
        print("the caller is gone: stopping this worker", file=sys.stderr, flush=True)
        os._exit(75)

    when_stdin_closes(stop)
    import torch

    torch.set_num_threads(job["threads"])

    def write(line: str) -> None:
        print(line, flush=True)

    try:
        outcome: tuple[bool, Any] = (True, job["fn"](**job["kwargs"], write=write))
    except BaseException as err:  # noqa: BLE001 -- handed to the caller, who raises it
        import traceback

        err.add_note("in a worker process:\n" + "".join(traceback.format_exception(err)).rstrip())
        try:  # an exception whose __init__ takes other arguments than it passed on cannot be unpickled
            pickle.loads(pickle.dumps(err))
            outcome = (False, err)
        except Exception:  # noqa: BLE001
            outcome = (False, JobFailed(f"{type(err).__name__}: {err}", *getattr(err, "__notes__", [])))
    with open(job["result_path"], "wb") as f:
        pickle.dump(outcome, f)


class JobFailed(RuntimeError):
    """A job's exception that could not travel back from its worker as itself: its type name and message,
    then the worker's traceback."""

    def __init__(self, message: str, *notes: str):
        super().__init__(message)
        self._notes = notes
        for note in notes:
            self.add_note(note)

    def __reduce__(self):
        return (JobFailed, (str(self), *self._notes))


def run_jobs(fn: Callable[..., Any], jobs: Sequence[Mapping[str, Any]], split: Split,
             write: Callable[[str], None] = print) -> list[Any]:
    """``[fn(**job, write=...) for job in jobs]``, side by side as ``split`` says; results in the jobs' order.

    ``fn`` must be a module-level function (a worker imports it) that takes a ``write`` keyword: the lines it
    writes reach ``write`` here, live. A job that fails does not stop the others: every job runs to its end
    (what a finished job saved is kept), then the first failure, in the jobs' order, is raised.

    Workers are fresh interpreters started with ``python -c`` (not ``multiprocessing``, which re-imports the
    caller's script in every worker and so needs an ``if __name__ == "__main__"`` guard there): the same call
    works from a notebook, a script and the command line."""
    if not split.side_by_side:
        return [fn(**job, write=write) for job in jobs]
    import pickle
    import subprocess
    import tempfile
    import threading
    from pathlib import Path

    lines: queue_mod.Queue = queue_mod.Queue()
    env = {**os.environ, "OMP_NUM_THREADS": str(split.threads), "MKL_NUM_THREADS": str(split.threads)}
    results: list[Any] = [None] * len(jobs)
    failures: list[BaseException | None] = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="rewardedit-jobs-") as tmp:
        pending = list(enumerate(jobs))
        running: list[tuple[int, subprocess.Popen, threading.Thread, Path, Path]] = []
        try:
            while pending or running:
                while pending and len(running) < split.workers:
                    i, job = pending.pop(0)
                    result_path, log_path = Path(tmp) / f"job-{i}.pkl", Path(tmp) / f"job-{i}.stderr"
                    with open(log_path, "wb") as log:
                        proc = subprocess.Popen([sys.executable, "-c", "from rewardedit_lib.parallel import "
                                                 "_worker_main; _worker_main()"], stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=log, env=env, text=False)
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(pickle.dumps({"fn": fn, "kwargs": dict(job), "threads": split.threads,
                                                   "result_path": str(result_path)}))
                    proc.stdin.flush()  # and kept open: the worker stops when it closes (when_stdin_closes)
                    reader = threading.Thread(target=_forward, args=(proc.stdout, lines), daemon=True)
                    reader.start()
                    running.append((i, proc, reader, result_path, log_path))
                _drain(lines, write, timeout=0.5)
                for entry in [e for e in running if e[1].poll() is not None]:
                    i, proc, reader, result_path, log_path = entry
                    reader.join()
                    running.remove(entry)
                    stop_child(proc)
                    if result_path.exists():
                        with open(result_path, "rb") as f:
                            ok, value = pickle.load(f)
                        if ok:
                            results[i] = value
                        else:
                            failures[i] = value
                    else:
                        tail = log_path.read_text(errors="replace")[-3000:]
                        failures[i] = RuntimeError(
                            f"job {i} of {len(jobs)} ({getattr(fn, '__name__', fn)}) ended without a result "
                            f"(exit code {proc.returncode}); its stderr ends:\n{tail}")
        finally:  # an interrupt (or any error) in this loop stops the workers still running: none is left behind
            for _, proc, _, _, _ in running:
                stop_child(proc)
        _drain(lines, write)
    for err in failures:
        if err is not None:
            raise err
    return results


def when_stdin_closes(action: Callable[[], None]) -> None:
    """Run ``action`` in a daemon thread once this process's standard input reaches its end.

    Why: a child started on a pipe that its parent holds open for as long as it wants the child (a training
    worker here, the toy judge server) learns this way that the parent is done with it or gone -- the
    operating system closes the pipe when the parent dies in any way (``kill -9``, a restarted notebook
    kernel), so no child outlives its parent. The parent's side is :func:`stop_child`."""
    import threading

    def watch() -> None:
        sys.stdin.buffer.read()
        action()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def stop_child(proc: Any, grace_s: float = 10.0) -> None:
    """Close the pipe to a child that watches it (:func:`when_stdin_closes`), so a running child stops; kill
    it if it has not ended within ``grace_s``."""
    import subprocess

    try:
        proc.stdin.close()
    except OSError:  # the worker is gone and the pipe broken
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _forward(stream: Any, lines: queue_mod.Queue) -> None:
    """A reader thread: a worker's stdout, line by line, into the queue the caller drains."""
    for raw in stream:
        lines.put(raw.decode(errors="replace").rstrip("\n"))


def _drain(lines: queue_mod.Queue, write: Callable[[str], None], timeout: float = 0.0) -> None:
    """Write every queued line; wait up to ``timeout`` seconds for the first."""
    try:
        write(lines.get(timeout=timeout) if timeout else lines.get_nowait())
    except queue_mod.Empty:
        return
    while True:
        try:
            write(lines.get_nowait())
        except queue_mod.Empty:
            return
