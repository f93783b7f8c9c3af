"""A Jupyter kernel started, and its heavy imports done, before the notebook it is for runs.

Why: the course runner executes each notebook in a fresh kernel (papermill), and every kernel first pays for
starting and for importing torch, diffusers, transformers and the kit: about 6.5 s of one core per notebook on
the course's 2-core machine (``python -X importtime``, RESULTS.md, fourteenth session). Starting notebook N+1's
kernel while notebook N runs moves that work onto time when a core is often idle (notebook 04 trains its two
models on one core each, and the first of them finishes some 100 s before the other).

What it changes: nothing a notebook computes. The kernel is the one papermill would start (same kernel name,
working folder and environment); the imports are done silently (no output, no execution count) and are the
ones the notebook's first cells repeat, which then cost nothing. A kernel that fails to start or to import is
shut down, and the notebook gets a fresh kernel from papermill as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: What a warm kernel imports: the libraries every notebook of the course imports, heaviest first.
WARM_IMPORTS = ("import torch, diffusers, transformers\n"
                "import rewardedit_lib.models, rewardedit_lib.pipeline, rewardedit_lib.evaluate, rewardedit_lib.course")

#: Seconds a warm kernel may take to start, or to finish its imports once its notebook is due.
WARM_TIMEOUT_S = 120.0


def notebook_kernel_name(path: str | Path, kernel_name: str | None = None) -> str:
    """The kernel papermill would start for a notebook: ``kernel_name``, else the notebook's kernelspec."""
    if kernel_name:
        return kernel_name
    import nbformat

    spec = nbformat.read(str(path), as_version=4).metadata.get("kernelspec") or {}
    return spec.get("name") or "python3"


class WarmKernel:
    """A kernel for one notebook, started now with ``WARM_IMPORTS`` running in it.

    ``WarmKernel(kernel_name, cwd)``; :meth:`take` returns its kernel manager for papermill
    (``papermill.execute_notebook(..., km=...)``) once the imports are done, or None if anything went wrong
    (the caller then lets papermill start a kernel); :meth:`shutdown` stops the kernel (papermill leaves a
    kernel it did not start running) and is safe to call at any time, more than once.
    """

    def __init__(self, kernel_name: str, cwd: str | Path) -> None:
        from jupyter_client.manager import KernelManager

        self.error: str | None = None
        self.km: Any = KernelManager(kernel_name=kernel_name)
        self._kc: Any = None
        self._msg_id: str | None = None
        try:  # nothing here waits for the kernel: the request is queued until it listens
            self.km.start_kernel(cwd=str(cwd))
            self._kc = self.km.client()
            self._kc.start_channels()
            self._msg_id = self._kc.execute(WARM_IMPORTS, silent=True, store_history=False)
        except Exception as e:  # noqa: BLE001 -- a kernel that cannot warm up is replaced, not fatal
            self.error = f"{type(e).__name__}: {e}"
            self.shutdown(now=True)

    def take(self) -> Any:
        """The kernel manager, its imports done (waits for them); None if the kernel failed (see ``error``)."""
        if self.error is not None or self._kc is None:
            return None
        try:
            while True:  # replies to our one request; anything else on the shell channel is not ours
                reply = self._kc.get_shell_msg(timeout=WARM_TIMEOUT_S)
                if reply["parent_header"].get("msg_id") == self._msg_id:
                    break
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}")
        except Exception as e:  # noqa: BLE001
            self.error = f"the warm-up imports failed: {type(e).__name__}: {e}"
            self.shutdown(now=True)
            return None
        self._kc.stop_channels()
        self._kc = None
        return self.km

    def shutdown(self, now: bool = False) -> None:
        """Stop the kernel (if it runs; ``now``: kill it rather than ask it to stop, as papermill's default
        graceful shutdown does) and close this object's channels."""
        if self._kc is not None:
            try:
                self._kc.stop_channels()
            except Exception:  # noqa: BLE001
                pass
            self._kc = None
        try:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=now)
        except Exception:  # noqa: BLE001 -- a kernel already gone
            pass
