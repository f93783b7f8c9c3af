"""Where the code runs: device detection, Colab detection and the environment check of notebook 00.

Why a module: every notebook prints the same one-line device summary and picks the device the same way,
so a notebook moved from a laptop to a Colab GPU changes one parameter (or none: ``device="auto"``).
On Colab the notebooks' setup cell (:func:`setup_notebook`) also maps Colab secrets into the environment,
mounts Drive when ``out_dir`` lies there, and refuses a Stable Diffusion profile without a GPU; the install
cell ends with :func:`restart_advice`, which says plainly whether the kernel must be restarted.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
import platform
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

#: The packages the kit is built on (import name, distribution name). Checked by notebook 00.
CORE_PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("accelerate", "accelerate"),
    ("openai", "openai"),
    ("papermill", "papermill"),
    ("ipywidgets", "ipywidgets"),
    ("matplotlib", "matplotlib"),
    ("numpy", "numpy"),
    ("PIL", "pillow"),
    ("safetensors", "safetensors"),
    ("yaml", "pyyaml"),
)


#: The credentials the kit reads, from the environment only (never a parameter, never written to a file).
SECRET_NAMES: tuple[str, ...] = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "HF_TOKEN")
#: Course / training profiles that train or sample Stable Diffusion 1.5: hours per step budget on a CPU.
CUDA_PROFILES: tuple[str, ...] = ("sd15", "sd15-t4")
#: Where Colab mounts Google Drive; an ``out_dir`` below it survives the runtime.
COLAB_DRIVE = "/content/drive"


def in_colab() -> bool:
    return "google.colab" in sys.modules


def detect_device(prefer: str = "auto"):
    """The torch device to use: ``prefer`` if given explicitly, else CUDA, then Apple MPS, then CPU."""
    import torch

    if prefer != "auto":
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={prefer!r} was asked for, but CUDA is not available here")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device={prefer!r} was asked for, but Apple MPS is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_summary(device=None) -> str:
    """One line: which device, what it is, and the torch build. Printed at the top of every notebook."""
    import torch

    device = detect_device() if device is None else torch.device(device)
    if device.type == "cuda":
        idx = device.index or 0
        props = torch.cuda.get_device_properties(idx)
        what = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    elif device.type == "mps":
        what = f"Apple GPU ({platform.machine()})"
    else:
        what = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    where = "Colab" if in_colab() else platform.system()
    return f"device: {device.type} ({what}) | torch {torch.__version__} | Python {platform.python_version()} | {where}"


class TimeBudget:
    """One time limit shared by the runs of a notebook cell (notebook 04 trains two models, 06 up to ten
    under one ``time_limit``): :meth:`left` is what the next run may still use, ``None`` without a limit."""

    def __init__(self, limit_s: float | None):
        self.limit_s = limit_s
        self.started = time.monotonic()

    def left(self) -> float | None:
        return None if self.limit_s is None else max(0.0, self.limit_s - (time.monotonic() - self.started))


@dataclass(frozen=True)
class PackageStatus:
    name: str
    version: str | None
    ok: bool
    error: str | None = None


def check_packages(packages: tuple[tuple[str, str], ...] = CORE_PACKAGES) -> list[PackageStatus]:
    """Import every core package and report its version: a broken install shows up here, not mid-course."""
    out = []
    for module, dist in packages:
        try:
            importlib.import_module(module)
            out.append(PackageStatus(dist, md.version(dist), True))
        except Exception as e:  # noqa: BLE001 - any import failure is worth reporting, not raising
            try:
                version = md.version(dist)
            except md.PackageNotFoundError:
                version = None
            out.append(PackageStatus(dist, version, False, f"{type(e).__name__}: {e}"))
    return out


def secret_status(names: tuple[str, ...] = SECRET_NAMES) -> dict[str, bool]:
    """Which credentials are set in the environment -- only whether, never their values."""
    return {n: bool(os.environ.get(n)) for n in names}


@dataclass(frozen=True)
class SmokeResult:
    device: str
    parameters: int
    output_shape: tuple[int, ...]
    seconds: float


def diffusers_smoke_test(device=None, image_size: int = 32, seed: int = 0) -> SmokeResult:
    """Build a tiny stock ``UNet2DConditionModel`` from a config and run one forward pass on ``device``.

    Why: it proves, in seconds and with no download, that torch + diffusers work together on this device --
    the same classes the kit composes its reward model onto.
    """
    import time

    import torch
    from diffusers import UNet2DConditionModel

    device = detect_device() if device is None else torch.device(device)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=image_size, in_channels=6, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64, attention_head_dim=8,
        norm_num_groups=8,
    ).to(device).eval()
    x = torch.randn(2, 6, image_size, image_size, device=device)
    ctx = torch.randn(2, 8, 64, device=device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = unet(x, torch.tensor([10, 500], device=device), encoder_hidden_states=ctx).sample
    if device.type == "cuda":
        torch.cuda.synchronize()
    return SmokeResult(str(device), sum(p.numel() for p in unet.parameters()), tuple(out.shape),
                       round(time.perf_counter() - t0, 4))


# --------------------------------------------------------------------------------------------------
# Known, harmless warnings that the kit's users cannot act on: filtered by message, nothing else
# --------------------------------------------------------------------------------------------------
#: transformers (>= 5) logs this once per image processor when torchvision is missing, and then uses the PIL
#: processor -- which is what the kit wants: torchvision is left out on purpose (pyproject.toml).
TORCHVISION_FALLBACK = re.compile(r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back to")
#: The logger that emits it (a logger's filters see only the records logged on that very logger).
TORCHVISION_LOGGER = "transformers.utils.import_utils"
#: What ipykernel writes to its stderr at every start when the kernel talks TCP on localhost (papermill's
#: default): the course runner's kernels are local and short-lived, so it is noise on the course's terminal.
KERNEL_TRANSPORT_NOISE: tuple[re.Pattern, ...] = (
    re.compile(r"Kernel is running over TCP without encryption"),
)


class _DropMessages(logging.Filter):
    """A logging filter that drops the records whose message matches one of ``patterns`` (and no other)."""

    def __init__(self, patterns: Iterable[re.Pattern]):
        super().__init__()
        self.patterns = tuple(patterns)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 -- a record that cannot format is not ours to judge
            return True
        return not any(p.search(message) for p in self.patterns)


def quiet_known_warnings() -> None:
    """Drop the torchvision-fallback message of transformers, by message, before transformers is imported.

    Why: every command that loads a pipeline printed two lines about a package the kit leaves out on purpose;
    users took them for an error. Idempotent; every other warning and log record still shows."""
    logger = logging.getLogger(TORCHVISION_LOGGER)
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages([TORCHVISION_FALLBACK]))


@contextmanager
def filtered_stderr(drop: Sequence[re.Pattern] = KERNEL_TRANSPORT_NOISE) -> Iterator[None]:
    """Pass everything written to file descriptor 2 through, except lines matching one of ``drop``.

    Why at the file-descriptor level: the Jupyter kernels papermill starts are child processes that inherit
    stderr, so no filter in this process sees what they write (ipykernel's TCP-transport warning, once per
    notebook). Lines are forwarded as they complete; without a usable descriptor 2 this does nothing."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as src:
            pending = b""
            while True:
                try:
                    chunk = src.read(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                _forward(saved, [line + b"\n" for line in lines], drop)
            if pending:
                _forward(saved, [pending], drop)

    thread = threading.Thread(target=pump, name="filtered-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes our write end: the pump ends once no child holds one either
        thread.join(timeout=5)
        if not thread.is_alive():
            os.close(saved)


def _forward(fd: int, lines: Sequence[bytes], drop: Sequence[re.Pattern]) -> None:
    """Write the ``lines`` that match none of ``drop`` to ``fd`` (see :func:`filtered_stderr`)."""
    keep = b"".join(line for line in lines
                    if not any(p.search(line.decode("utf-8", "replace")) for p in drop))
    while keep:
        try:
            keep = keep[os.write(fd, keep):]
        except OSError:
            return


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading pipeline components" / "Loading weights" bars while models load: in a notebook each load
    leaves two empty-looking progress widgets. Errors and warnings still show; the libraries' settings are
    restored after."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


# --------------------------------------------------------------------------------------------------
# Colab: secrets, Drive, the GPU check, the restart after installing
# --------------------------------------------------------------------------------------------------
def load_colab_secrets(names: tuple[str, ...] = SECRET_NAMES) -> dict[str, str]:
    """Copy Colab secrets (the key icon in Colab's side bar) into ``os.environ``; outside Colab do nothing.

    Why: the judge client and the hub read keys from the environment only (a parameter would be written into
    the executed notebook). A name already set in the environment is kept. Returns each name's status --
    ``"loaded"``, ``"already set"``, ``"not found"`` or ``"no access"`` (the notebook was not granted the
    secret) -- and never a value; nothing here prints or writes one.
    """
    if not in_colab():
        return {}
    from google.colab import userdata

    status = {}
    for name in names:
        if os.environ.get(name):
            status[name] = "already set"
            continue
        try:
            value = userdata.get(name)
        except Exception as err:  # noqa: BLE001 - SecretNotFoundError, NotebookAccessError, TimeoutException
            status[name] = "no access" if "Access" in type(err).__name__ else "not found"
            continue
        if value:
            os.environ[name] = value
            status[name] = "loaded"
        else:
            status[name] = "not found"
    return status


def mount_drive_for(out_dir: str | os.PathLike | None) -> bool:
    """On Colab, mount Google Drive when ``out_dir`` lies under ``/content/drive`` (e.g.
    ``/content/drive/MyDrive/rewardedit``): models, checkpoints and verdicts then outlive the runtime, and a
    later session resumes from them. Returns whether ``out_dir`` is on a mounted Drive."""
    if out_dir is None or not str(out_dir).startswith(COLAB_DRIVE + "/"):
        return False
    if os.path.ismount(COLAB_DRIVE):  # mounted already (also what a course's papermill kernel sees)
        return True
    if not in_colab():
        raise RuntimeError(f"out_dir={str(out_dir)!r} is on Google Drive, which only Colab mounts; "
                           f"choose a local folder here")
    from google.colab import drive

    drive.mount(COLAB_DRIVE)
    return True


def require_cuda(profile: str, device) -> None:
    """Fail loudly when ``profile`` trains or samples Stable Diffusion and ``device`` is not a CUDA GPU.

    Why: with ``device="auto"`` a Colab runtime without a GPU silently picks the CPU, and the sd15 notebooks
    would then run for days instead of stopping with the fix."""
    import torch

    if profile in CUDA_PROFILES and torch.device(device).type != "cuda":
        where = "On Colab: Runtime > Change runtime type > T4 GPU, then run the notebook again. " if in_colab() else ""
        raise RuntimeError(f"profile {profile!r} runs Stable Diffusion 1.5 and needs a CUDA GPU, but the device is "
                           f"{torch.device(device).type!r} (torch.cuda.is_available() = {torch.cuda.is_available()}). "
                           f"{where}The toy profiles (toy-cpu, toy-gpu) run without one.")


def setup_notebook(profile: str, device: str = "auto", out_dir: str | os.PathLike | None = None, *,
                   gpu: bool = False, log: Callable[[str], None] = print):
    """What every notebook's setup cell does: Colab secrets into the environment (names and status are
    logged, never values), Drive mounted when ``out_dir`` is on it, the device chosen, and -- ``gpu=True``,
    the notebooks that train or edit -- :func:`require_cuda`. Returns the torch device."""
    status = load_colab_secrets()
    if status:
        log("Colab secrets: " + ", ".join(f"{k} {v}" for k, v in status.items()))
    if mount_drive_for(out_dir):
        log(f"out_dir on Google Drive: {out_dir}")
    dev = detect_device(device)
    if gpu:
        require_cuda(profile, dev)
    return dev


def installed_versions() -> dict[str, str]:
    """Every installed distribution's version, by normalised name: what the install cell records before pip."""
    return {_normal(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}


def _normal(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def stale_modules(before: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(distribution, version before, version now)`` for every distribution that changed since ``before``
    (:func:`installed_versions` taken before a ``pip install``) and that this kernel has imported. Python
    keeps the imported version until the kernel restarts, so a non-empty list means: restart. Comparing
    the installed metadata, not ``__version__`` (which some packages spell differently), avoids false alarms."""
    now = installed_versions()
    before = {_normal(name): version for name, version in before.items() if isinstance(name, str)}
    changed = {name: (old, now.get(name, "removed")) for name, old in before.items() if now.get(name) != old}
    imported = {_normal(dist) for top, dists in md.packages_distributions().items()
                if top in sys.modules for dist in dists}
    return sorted((name, old, new) for name, (old, new) in changed.items() if name in imported)


def restart_advice(before: Mapping[str, str], log: Callable[[str], None] = print) -> bool:
    """Say plainly whether the runtime must restart after the install cell; returns whether it must."""
    stale = stale_modules(before)
    if stale:
        log("RESTART NEEDED: this kernel imported " + ", ".join(f"{d} {a} (now {b} on disk)" for d, a, b in stale)
            + ". Runtime > Restart session, then run the notebook from the top (the install is then a no-op).")
    else:
        log("Installed; no restart needed: no package this kernel had imported changed.")
    return bool(stale)
