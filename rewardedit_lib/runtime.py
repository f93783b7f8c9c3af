"""Where the code runs: device detection, Colab detection and the environment check of notebook 00.

Why a module: every notebook prints the same one-line device summary and picks the device the same way,
so a notebook moved from a laptop to a Colab GPU changes one parameter (or none: ``device="auto"``).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import platform
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

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


def secret_status(names: tuple[str, ...] = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "HF_TOKEN")) -> dict[str, bool]:
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
