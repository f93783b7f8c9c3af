"""Where the paper's released artifacts live on the Hugging Face hub, and how to fetch only what the kit reads.

Why one module: the hub ids were spelled in several places (the data reader, docstrings, notebooks), and
the released *weights* were named nowhere. Every id the kit knows is here; everything else imports it.

What the kit reads from a model repo is a diffusers InstructPix2Pix folder: ``model_index.json``,
``scheduler/``, ``tokenizer/``, ``text_encoder/``, ``vae/`` and ``unet/`` (config and one copy of the
weights: safetensors when the repo has them, else the ``.bin``). Safety checkers, feature extractors, EMA
copies and half-precision duplicates are never downloaded: for SD 1.5 they are gigabytes the kit does not
use. The reference's stage-2 UNet carries its reward modules inside ``unet/`` (keys ``add_embedding``,
``text_linear``, ``proj_deal``, ``ca`` ...); :meth:`~rewardedit_lib.pipeline.RewardEditPipeline.from_instruct_pix2pix`
converts them when it loads the folder.

The downloads need the network (and, for the gated dataset, an accepted licence and ``HF_TOKEN`` or
``huggingface-cli login``); the tests replace ``huggingface_hub``'s functions with local stand-ins.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

#: RewardEdit20K (``RewardEdit_20K.json``) and Real-Edit: gated, CC BY 4.0.
REWARDEDIT_DATASET = "Gstar666/RewardEdit"
#: The images RewardEdit20K annotates: InstructPix2Pix's CLIP-filtered release (parquet shards).
INSTRUCTPIX2PIX_IMAGES = "timbrooks/instructpix2pix-clip-filtered"
#: InstructPix2Pix's own weights (diffusers layout): the no-reward baseline a user can start from.
INSTRUCTPIX2PIX_MODEL = "timbrooks/instruct-pix2pix"
#: The authors' weights: one repo, one subfolder per training stage.
RELEASED_MODEL_REPO = "Gstar666/Reward-InsPix2Pix"
RELEASED_STAGES: dict[str, str] = {
    "stage1": "stage1_instruct_pix2pix",
    "stage2": "stage2_reward_instruct_pix2pix",
}
#: ``owner/name/subfolder`` ids of the two released models (what ``--model`` accepts).
RELEASED_STAGE1 = f"{RELEASED_MODEL_REPO}/{RELEASED_STAGES['stage1']}"
RELEASED_STAGE2 = f"{RELEASED_MODEL_REPO}/{RELEASED_STAGES['stage2']}"

#: How the reference samples with its weights (its ``eval.py``): the feedback text it feeds at inference --
#: not the training data's perfect-score sentence, but what the released stage-2 model was evaluated with,
#: so the default for a model loaded from the reference's folder layout -- and its sampler.
REFERENCE_REWARD_TEXT = "None; None; None"
REFERENCE_SAMPLER = "euler_ancestral"

#: The components the kit loads from a model folder; each needs its config and one copy of its weights.
WEIGHT_COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder")
CONFIG_COMPONENTS: tuple[str, ...] = ("scheduler", "tokenizer")
_WEIGHT_FILE = re.compile(r"^(?P<stem>[\w-]+?)(?P<variant>\.[\w-]+)?\.(?P<ext>safetensors|bin)$")


class HubError(ValueError):
    """A hub repo that lacks what the kit needs, or an id the kit cannot read (the message names it)."""


def split_model_id(model_id: str) -> tuple[str, str | None]:
    """``owner/name[/subfolder...]`` -> ``(repo_id, subfolder or None)``."""
    parts = [p for p in str(model_id).strip("/").split("/") if p]
    if len(parts) < 2:
        raise HubError(f"{model_id!r} is neither a local folder nor a hub id 'owner/name[/subfolder]'")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def _weights_of(files: list[str], component: str) -> list[str]:
    """One copy of a component's weights: safetensors (or their shards and index), else the ``.bin``.
    Variants (``.fp16``) are skipped: loading one needs ``variant=`` everywhere downstream."""
    here = [f for f in files if f.rsplit("/", 1)[0] == component]
    by_kind: dict[tuple[bool, str], list[str]] = {}
    for f in here:
        name = f.rsplit("/", 1)[1]
        m = _WEIGHT_FILE.match(name[: -len(".index.json")] if name.endswith(".index.json") else name)
        if m:  # shards (x-00001-of-00002.safetensors) and their index sort with their kind
            by_kind.setdefault((m["variant"] is not None, m["ext"]), []).append(f)
    for key in ((False, "safetensors"), (False, "bin")):
        if key in by_kind:
            return sorted(by_kind[key])
    return []


def needed_files(repo_files: Iterable[str], subfolder: str | None = None) -> list[str]:
    """The files of a diffusers InstructPix2Pix folder that the kit loads, out of a repo's file list.

    Raises :class:`HubError` naming the folder and the component when a component's config or weights
    are absent (rather than downloading a partial folder that fails later, somewhere else)."""
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    files = [f[len(prefix):] for f in repo_files if f.startswith(prefix)]
    if "model_index.json" not in files:
        raise HubError(f"no model_index.json in {prefix or 'the repo root'}: not a diffusers pipeline folder "
                       f"(found {sorted(files)[:10]})")
    out = ["model_index.json"]
    for comp in CONFIG_COMPONENTS:
        mine = sorted(f for f in files if f.startswith(f"{comp}/") and f.count("/") == 1)
        if not mine:
            raise HubError(f"{prefix}{comp}/ is missing or empty")
        out += mine
    for comp in WEIGHT_COMPONENTS:
        if f"{comp}/config.json" not in files:
            raise HubError(f"{prefix}{comp}/config.json is missing")
        weights = _weights_of(files, comp)
        if not weights:
            raise HubError(f"{prefix}{comp}/ has no weights (.safetensors or .bin; variants such as .fp16 "
                           f"are not read)")
        out += [f"{comp}/config.json", *weights]
    return [prefix + f for f in out]


def download_model(model_id: str, local_dir: str | Path | None = None, *, revision: str | None = None) -> Path:
    """Download only the files :func:`needed_files` names for ``owner/name[/subfolder]``; returns the folder
    to load (the subfolder inside the snapshot). ``local_dir=None`` uses the hub cache (a second call
    downloads nothing). E.g. ``download_model(RELEASED_STAGE2)``."""
    import huggingface_hub

    repo_id, subfolder = split_model_id(model_id)
    where = str(local_dir) if local_dir is not None else None
    try:
        files = huggingface_hub.list_repo_files(repo_id, revision=revision)
    except OSError as err:  # offline (HF_HUB_OFFLINE, no network): what an earlier download left is enough
        try:
            path = huggingface_hub.snapshot_download(repo_id=repo_id, revision=revision, local_dir=where,
                                                     local_files_only=True)
        except Exception:
            raise err from None
    else:
        path = huggingface_hub.snapshot_download(repo_id=repo_id, revision=revision,
                                                 allow_patterns=needed_files(files, subfolder), local_dir=where)
    return Path(path) / subfolder if subfolder else Path(path)


def download_released(stage: str = "stage2", local_dir: str | Path | None = None, *,
                      revision: str | None = None) -> Path:
    """The authors' released model of ``stage`` ("stage1" or "stage2"), downloaded; returns its folder."""
    if stage not in RELEASED_STAGES:
        raise HubError(f"stage={stage!r}: expected one of {', '.join(RELEASED_STAGES)}")
    return download_model(f"{RELEASED_MODEL_REPO}/{RELEASED_STAGES[stage]}", local_dir, revision=revision)


def download_dataset(repo_id: str = REWARDEDIT_DATASET, local_dir: str | Path = "data/RewardEdit", *,
                     repo_type: str = "dataset", allow_patterns: list[str] | None = None,
                     revision: str | None = None) -> Path:
    """Download a dataset snapshot (e.g. RewardEdit20K, gated: accept its licence on the hub first).

    The token is read by ``huggingface_hub`` from ``HF_TOKEN`` or ``huggingface-cli login``, never passed
    through notebooks. Returns the local folder; point :func:`~rewardedit_lib.formats.read_instructpix2pix`
    / :func:`~rewardedit_lib.formats.read_rewards` at it (``formats.find_rewards_file`` locates the JSON)."""
    import huggingface_hub

    return Path(huggingface_hub.snapshot_download(repo_id=repo_id, repo_type=repo_type, local_dir=str(local_dir),
                                                  allow_patterns=allow_patterns, revision=revision))


def resolve_model(model: str | Path, *, revision: str | None = None) -> Path:
    """A local model folder as it is; a hub id ``owner/name[/subfolder]`` downloaded (only the needed files).

    Why download first instead of handing the id to diffusers: the kit must see the UNet's weight keys
    before loading (to convert the reference's reward modules, and to refuse unknown keys), and diffusers
    would fetch every file of the repo, safety checker and half-precision copies included."""
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists():
        raise HubError(f"{path} is a file, not a model folder")
    if str(model).startswith((".", "/", "~")):
        raise HubError(f"{model}: no such folder")
    return download_model(str(model), revision=revision)
