"""The ``rewardedit`` command: a thin layer over the library, one sub-command per step of the method.

Every sub-command parses its arguments, calls one library function and prints what happened. Errors the
user can fix (bad data, bad profile, bad parameter) print one clear line and exit with status 2; bad
records found by ``validate`` exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .reward_modes import INJECTIONS, REWARD_MODES

#: How many bad records ``validate`` lists one by one (the rest are counted by kind); ``--max-problems``.
MAX_PROBLEMS = 20


def _whole_number(minimum: int, bound: str):
    """An argparse type for a count of at least ``minimum`` (``bound`` says so in its error): ``--n 0`` is a
    mistake, not an empty dataset; ``--max-problems 0`` lists every problem."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1, "at least 1")
_count = _whole_number(0, "0 or more")


def _workers(text: str) -> int | str:
    """``--workers``: "auto" or a number of processes (at least 1)."""
    return text if text == "auto" else _positive_int(text)


def _cmd_toy_data(args: argparse.Namespace) -> int:
    from .toyworld import FlawRates, write_toy_dataset

    rates = FlawRates.parse(args.flaw_rates) if args.flaw_rates else FlawRates()
    out = write_toy_dataset(args.out, n=args.n, seed=args.seed, rates=rates, size=args.size, workers=args.workers,
                            leak=args.colour_leak, confuse=args.attribute_confusion)
    print(f"wrote {args.n} toy triplets to {out} (seed {args.seed}, {args.size} px, flaw rates "
          f"following={rates.following} preserving={rates.preserving} quality={rates.quality}); "
          f"ground truth in {out / '_truth'}")
    return 0


def _cmd_toy_bench(args: argparse.Namespace) -> int:
    from .toyworld import write_toy_bench

    out = write_toy_bench(args.out, n_images=args.images, seed=args.seed, size=args.size)
    print(f"wrote a toy Real-Edit benchmark of {args.images} images x 7 edit types to {out}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from collections import Counter

    from .dataset import summary_text
    from .formats import read_instructpix2pix, read_real_edit, read_rewards

    if not (args.data or args.rewards or args.bench):
        print("rewardedit validate: give at least one of --data, --rewards, --bench", file=sys.stderr)
        return 2
    bad = []
    checked: list[tuple[str, int, int]] = []  # (what, ok, bad) per input
    if args.data:
        loaded = read_instructpix2pix(args.data, rewards=args.rewards, require_rewards=bool(args.rewards),
                                      check_images=not args.no_image_check, on_error="skip")
        print(f"== dataset {args.data}")
        print(summary_text(loaded.items))
        for note in loaded.notes:  # choices the data left open (which of several image pairs was taken)
            print(f"note: {note}")
        bad += loaded.skipped
        checked.append(("dataset folder(s)" + (" (with their reward entries)" if args.rewards else ""),
                        len(loaded.items), len(loaded.skipped)))
    elif args.rewards:
        loaded_r = read_rewards(args.rewards, on_error="skip")
        print(f"== rewards {args.rewards}: {len(loaded_r.items)} entries")
        bad += loaded_r.skipped
        checked.append(("reward entries", len(loaded_r.items), len(loaded_r.skipped)))
    if args.bench:
        loaded_b = read_real_edit(args.bench, check_images=not args.no_image_check, on_error="skip")
        images = {it.image for it in loaded_b.items}
        print(f"== benchmark {args.bench}: {len(images)} images, {len(loaded_b.items)} edits")
        for etype, n in Counter(it.edit_type for it in loaded_b.items).items():
            print(f"  {etype:<11} {n}")
        bad += loaded_b.skipped
        checked.append(("benchmark edits", len(loaded_b.items), len(loaded_b.skipped)))
    print()
    for what, ok, n_bad in checked:
        print(f"checked {ok + n_bad} {what}: {ok} ok, {n_bad} bad")
    if not bad:
        print("no bad records")
        return 0
    print(f"{len(bad)} bad record(s), by kind of problem:")
    for kind, n in Counter(_problem_kind(p) for p in bad).most_common():
        print(f"  {n:>6}  {kind}")
    shown = bad if args.max_problems == 0 else bad[:args.max_problems]
    print(f"{'all' if len(shown) == len(bad) else f'the first {len(shown)} of'} {len(bad)} bad record(s)"
          f"{'' if len(shown) == len(bad) else ' (--max-problems 0 lists all)'}:")
    for p in shown:
        print(f"  - {p}")
    return 1


def _problem_kind(problem: object) -> str:
    """A bad record's kind of problem, for validate's counts: its field and its message without the record's
    own details (numbers, quoted names, what follows a colon), e.g. "field 'Score': N is outside 0-5"."""
    import re

    field = getattr(problem, "field", None)
    message = str(getattr(problem, "message", problem))
    message = re.split(r"[(:;]|, got ", message, maxsplit=1)[0]
    message = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]", "...", message)
    message = re.sub(r"(?<![\d.-])\d+(?:\.\d+)?(?![\d-])", "N", message).strip() or "(no message)"
    return f"field '{field}': {message}" if field else message


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    report = prepare(args.source, args.rewards, args.out, scheme=args.key_scheme, key_map=args.key_map,
                     release_seeds=args.release_seeds, min_coverage=args.min_coverage, check_only=args.check,
                     log=print)
    print("coverage checked; nothing written (--check)" if args.check else
          f"wrote {len(report.written)} folder(s) to {report.out}; {len(report.existing)} were already there")
    return 0


def _parse_faults(text: str | None) -> dict[str, float]:
    """``"429=0.1,500=0.05,timeout=0.05,malformed=0.05"`` -> a mapping for the toy judge server."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--faults expects KIND=RATE pairs (429, 500, timeout, malformed), got {part!r}")
        out[key.strip()] = float(value)
    return out


def _cmd_judge_server(args: argparse.Namespace) -> int:
    from .judge.client import TOY_JUDGE_MODEL
    from .toy.server import main_serve

    model = TOY_JUDGE_MODEL if args.model is None else args.model
    return main_serve(args.host, args.port, model=model, latency=args.latency,
                      fault_rates=_parse_faults(args.faults), seed=args.seed, quiet=args.quiet,
                      stop_on_stdin_eof=args.stop_on_stdin_eof)


def _cmd_annotate(args: argparse.Namespace) -> int:
    from .toy.endpoint import annotate  # the local toy judge when no --base-url is given

    judge = _judge_kwargs(args)
    report = annotate(args.data, args.out, base_url=judge["base_url"], model=judge["judge_model"],
                      api_key_env=judge["api_key_env"], **judge["client_options"], cache_dir=args.cache_dir,
                      limit=judge["limit"], key_prefix=args.key_prefix, progress=judge["progress"],
                      workers=judge["workers"])
    return 0 if report.failed == 0 else 1


def _cmd_course(args: argparse.Namespace) -> int:
    from .course import check_kernel, describe_plan, parse_overrides, plan_course, profile_summaries, run_course

    if args.list_profiles:
        rows = profile_summaries()
        width = max(len(name) for name, _ in rows)
        for name, line in rows:
            print(f"{name:<{width}}  {line}")
        return 0
    if args.out is None:
        raise ValueError("--out is required (the folder for the executed notebooks), except with --list-profiles")
    overrides = parse_overrides(args.set or [], raw=True)
    if args.dry_run:
        plan = plan_course(args.profile, args.out, only=args.only, overrides=overrides, notebooks_dir=args.notebooks)
        check_kernel(args.kernel)
        print(describe_plan(plan, args.kernel))
        print("dry run: every parameter checked, nothing run or written (drop --dry-run to run)")
        return 0
    run_course(args.profile, args.out, only=args.only, overrides=overrides,
               notebooks_dir=args.notebooks, kernel_name=args.kernel)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .course import default_notebooks_dir, list_notebooks
    from .report import build_report

    if not args.out.is_dir():
        raise ValueError(f"no such folder: {args.out} (give the --out of a course run)")
    try:
        names = [nb.stem for nb in list_notebooks(args.notebooks or default_notebooks_dir())]
    except Exception:  # noqa: BLE001 -- without the notebooks folder, list what the run folder holds
        names = []
    print(f"wrote {build_report(args.out, names)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainingError, preset, train

    changes = dict(stage=args.stage, rewards=args.rewards_mode, injection=args.injection, init=args.init,
                   max_steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                   lr_schedule=args.lr_schedule, reward_lr_scale=args.reward_lr_scale,
                   reward_warmup_steps=args.reward_warmup_steps,
                   center_rewards=args.center_rewards,
                   unknown_rewards_without_instruction=args.unknown_rewards_without_instruction,
                   seed=args.seed, mixed_precision=args.mixed_precision, reward_dropout=args.reward_dropout,
                   checkpoint_every=args.checkpoint_every, ema_decay=args.ema_decay, ema_power=args.ema_power,
                   missing_rewards="skip" if args.skip_missing_rewards else None)
    if args.gradient_checkpointing:
        changes["gradient_checkpointing"] = True
    if args.use_8bit_adam:
        changes["use_8bit_adam"] = True
    if args.compile:
        changes["compile"] = True
    if args.compile_mode:
        changes.update(compile=True, compile_mode=args.compile_mode)
    try:
        config = preset(args.profile, **changes)
        if args.no_ema:
            config.ema_decay = None
        result = train(config, args.data, args.out, rewards_path=args.rewards, resume=args.resume,
                       progress=not args.no_progress, time_limit_s=args.time_limit)
    except TrainingError as e:
        print(f"rewardedit train: error: {e}", file=sys.stderr)
        return 1
    if result.model_dir is not None:
        print(f"trained {result.steps} steps ({result.wall_s:.0f} s, {result.images_per_s:.1f} img/s, final loss "
              f"{result.final_loss:.4f}); model in {result.model_dir}; metrics in {args.out / 'metrics.jsonl'}")
    return 0


def _edit_changes(args: argparse.Namespace) -> dict:
    """The edit settings an evaluating command was given (steps, guidance, eta, seed), those not given left out."""
    names = (("num_inference_steps", "steps"), ("guidance_scale", "guidance_scale"),
             ("image_guidance_scale", "image_guidance_scale"), ("eta", "eta"), ("seed", "seed"))
    return {k: getattr(args, a) for k, a in names if getattr(args, a, None) is not None}


#: The judge client's options (:func:`_add_judge_options`) that travel as ``client_options``; one not given
#: is left out, so the library's default applies (for evaluation the protocol's: the paper's 100 s timeout).
_CLIENT_OPTIONS = ("concurrency", "max_retries", "timeout", "azure_api_version")


def _judge_kwargs(args: argparse.Namespace) -> dict:
    """The judge and run options a judging command was given (declared by :func:`_add_judge_options`), the one
    reader for ``annotate``, ``evaluate`` and ``knob``: ``base_url``, ``judge_model``, ``api_key_env``,
    ``limit``, ``progress``, ``workers`` and ``client_options`` (those given only); ``protocol`` and ``device``
    where the command has them (the evaluating ones)."""
    out = dict(base_url=args.base_url, judge_model=args.judge_model, api_key_env=args.api_key_env,
               limit=args.limit, progress=not args.no_progress, workers=args.workers,
               client_options={k: getattr(args, k) for k in _CLIENT_OPTIONS if getattr(args, k, None) is not None})
    for name in ("protocol", "device"):
        if hasattr(args, name):
            out[name] = getattr(args, name)
    return out


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    changes = _edit_changes(args)
    if args.scores is not None:
        scores = None if args.scores == "unknown" else tuple(float(x) for x in args.scores.split(","))
        if scores is not None and len(scores) != 3:
            raise ValueError(f"--scores wants 3 numbers (following,preserving,quality), got {args.scores!r}")
        changes["reward_scores"] = scores
    report = evaluate(args.model, args.bench, args.out, changes=changes, **_judge_kwargs(args))
    print(report)
    return 0


def _cmd_knob(args: argparse.Namespace) -> int:
    from .knob import reward_knob

    knob = reward_knob(args.model, args.bench, args.out, low=args.low, high_dir=args.high_dir,
                       changes=_edit_changes(args), **_judge_kwargs(args))
    print(knob)
    print(f"saved {args.out / 'knob.json'}")
    return 0


def _add_edit_args(s: argparse.ArgumentParser, sampler: bool) -> None:
    """How to edit (read back by :func:`_edit_changes`): steps and seed; with ``sampler`` the guidance and eta too."""
    s.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: 30 sd15, 10 toy; models.CONFIG_SETTINGS)")
    if sampler:
        s.add_argument("--guidance-scale", type=float, default=None, help="text guidance")
        s.add_argument("--image-guidance-scale", type=float, default=None, help="image guidance")
        s.add_argument("--eta", type=float, default=None,
                       help="fresh noise per DDIM step, 0 deterministic .. 1 ancestral (default: 1 toy; sd15's "
                            "Euler-ancestral takes none)")
    s.add_argument("--seed", type=int, default=None, help="noise seed (edits are deterministic per item and seed)")


def _add_judge_options(s: argparse.ArgumentParser, *, evaluating: bool) -> None:
    """The options of a command that reaches a judge, declared once for ``annotate``, ``evaluate`` and ``knob``
    (read back by :func:`_judge_kwargs`): where the judge is and who it is, its client's options, and how much to
    run. ``evaluating``: the evaluating commands' extras (``--protocol``, ``--device``) and wording; ``annotate``
    names the judge model ``--model`` (its original flag; ``--judge-model`` as the others name it works too).
    A client option's default of None means the library's (the protocol's, for evaluation)."""
    s.add_argument("--base-url", default=None,
                   help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (without it: the local toy judge"
                        + (", toy benchmarks only)" if evaluating else ")"))
    if evaluating:
        s.add_argument("--judge-model", default=None,
                       help="judge model name (default gpt-4o-2024-05-13 with --protocol paper; required for kit "
                            "with --base-url)")
    else:  # --model is annotate's own name for it (it has no model of its own to load)
        s.add_argument("--model", "--judge-model", dest="judge_model", metavar="MODEL", default=None,
                       help="judge model, e.g. gpt-4o (required with --base-url)")
    s.add_argument("--api-key-env", default=None,
                   help="name of the environment variable holding the judge's key, e.g. for a self-hosted server "
                        "(never the key; default: OPENAI_API_KEY at api.openai.com, AZURE_OPENAI_API_KEY with "
                        "--azure-api-version, none elsewhere)")
    if evaluating:
        s.add_argument("--protocol", choices=("kit", "paper"), default=None,
                       help="paper: the reference's released GPT-4o prompts, images and parsing (comparable with "
                            "Table 1); kit: the kit's structured prompts. Default: paper for sd15 models at "
                            "--base-url, kit for the toy world")
    s.add_argument("--concurrency", type=int, default=None, help="requests in flight (default 16)")
    s.add_argument("--max-retries", type=int, default=None,
                   help="retries per request on 429/5xx/timeouts/unreadable answers (default 5)")
    s.add_argument("--timeout", type=float, default=None,
                   help="seconds per request (default 60" + ("; 100 with --protocol paper, as the reference)"
                                                             if evaluating else ")"))
    s.add_argument("--azure-api-version", default=None,
                   help="Azure OpenAI: --base-url is the endpoint, the judge model the deployment (key from "
                        "AZURE_OPENAI_API_KEY)")
    if evaluating:
        s.add_argument("--device", default=None, help="cpu, cuda, ... (default: where the model loads)")
    s.add_argument("--workers", type=_workers, default="auto",
                   help="processes that share the work out, one core each, with the local toy judge"
                        + (" on a CPU" if evaluating else "") + " (default auto: side by side where the run is "
                        "large enough to repay them; 1: this process)")
    s.add_argument("--limit", type=int, default=None,
                   help="only the first N items" if evaluating else "only the first N folders (try a paid judge first)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewardedit",
        description="RewardEdit Kit: multi-reward conditioned instruction-based image editing, "
                    "from a toy world on a laptop to Stable Diffusion 1.5 on a GPU.",
    )
    p.add_argument("--version", action="version", version=f"rewardedit-kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("toy-data", help="generate toy training triplets (InstructPix2Pix layout + _truth/)",
                       description="Draws --n triplets (source image, instruction, edited image) of the toy editing "
                                   "world into an InstructPix2Pix-layout folder, with each triplet's true flaws in "
                                   "_truth/. The same arguments write the same folder.")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--n", type=_positive_int, default=700, help="number of triplets, at least 1 (default 700)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--size", type=_positive_int, default=32, help="image size in pixels (default 32)")
    s.add_argument("--flaw-rates", default=None, metavar="F,P,Q",
                   help="failure rates following,preserving,quality, e.g. 0.2,0.2,0.2 (the default) "
                        "or following=0.3,quality=0.1")
    s.add_argument("--workers", type=_positive_int, default=1,
                   help="processes drawing the triplets (the same folder for any number; default 1)")
    s.add_argument("--colour-leak", action="store_true",
                   help="experimental world: a preserving flaw of an instruction that names an object's colour "
                        "is that colour leaking into the background (RESULTS.md, sixth session)")
    s.add_argument("--attribute-confusion", action="store_true",
                   help="a following flaw of an instruction with an attribute (colour, pattern, background, tone) is "
                        "that attribute confused with another, always the same one (RESULTS.md, seventh session)")
    s.set_defaults(func=_cmd_toy_data)

    s = sub.add_parser("toy-bench", help="generate the toy Real-Edit benchmark (images/ + real_edit_instruct.json)",
                       description="Writes held-out toy source images and seven instructions each (one per edit "
                                   "type) in the Real-Edit layout, for `evaluate` and `knob`.")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--images", type=_positive_int, default=20, help="number of held-out source images (default 20)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--size", type=_positive_int, default=32, help="image size in pixels (default 32)")
    s.set_defaults(func=_cmd_toy_bench)

    s = sub.add_parser("validate", help="read a dataset / rewards file / benchmark, print counts, list bad records",
                       description="Reads every record as training and evaluation would, and summarises: counts per "
                                   "edit type and score, records checked, ok and bad, the bad ones counted by kind "
                                   "of problem, and the first --max-problems of them. Exit status 0: no bad "
                                   "records; 1: bad records (skipped by the readers); 2: unreadable input.")
    s.add_argument("--data", type=Path, help="InstructPix2Pix-layout folder (toy or real)")
    s.add_argument("--rewards", type=Path, help="RewardEdit_20K.json-format rewards file")
    s.add_argument("--bench", type=Path, help="Real-Edit-layout benchmark folder")
    s.add_argument("--no-image-check", action="store_true", help="don't open every image (faster on 20K)")
    s.add_argument("--max-problems", type=_count, default=MAX_PROBLEMS, metavar="N",
                   help=f"list the first N bad records (default {MAX_PROBLEMS}; 0: all)")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("prepare", help="published InstructPix2Pix images (parquet shards or folder release) -> "
                                       "the folders RewardEdit_20K.json annotates; resumable",
                       description="Places the images of every RewardEdit_20K.json entry in <out>/<key>/ (the "
                                   "InstructPix2Pix layout training reads), from the published parquet shards or "
                                   "folder release; refuses below --min-coverage. Re-running skips folders already "
                                   "written.")
    s.add_argument("--source", required=True, type=Path,
                   help="folder of timbrooks/instructpix2pix-clip-filtered's parquet shards, or the folder release")
    s.add_argument("--rewards", required=True, type=Path, help="RewardEdit_20K.json")
    s.add_argument("--out", required=True, type=Path, help="output folder (<out>/<key>/ per annotated triplet)")
    s.add_argument("--key-scheme", default="auto",
                   choices=["auto", "folder", "release-order", "row", "shard-row", "map"],
                   help="how a rewards key names its images (default: folder for the release; for shards "
                        "release-order with --release-seeds, else row; see rewardedit_lib/prepare.py)")
    s.add_argument("--release-seeds", type=Path, default=None,
                   help="the folder release's seeds.json: rows are its folders in the hub dataset's shuffled order")
    s.add_argument("--key-map", type=Path, default=None, help="JSON {key: row or [shard, row]} (scheme map)")
    s.add_argument("--min-coverage", type=float, default=0.95,
                   help="refuse below this fraction of reward entries placed (default 0.95)")
    s.add_argument("--check", action="store_true", help="report coverage only, write nothing")
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("judge-server", help="serve the toy judge as an OpenAI-compatible HTTP API",
                       description="Serves the toy judge at http://HOST:PORT/v1 (chat completions and models), so "
                                   "the kit's OpenAI client, retries and fault handling can be tried without a key; "
                                   "--faults injects rate limits, server errors, timeouts and unreadable answers. "
                                   "Stops on Ctrl-C or SIGTERM.")
    s.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--model", default=None,
                   help="model name it answers to (default: the toy judge's own, printed when it starts)")
    s.add_argument("--latency", type=float, default=0.0, help="seconds added to every request (default 0)")
    s.add_argument("--faults", default=None, metavar="KIND=RATE,...",
                   help="inject faults for demos and tests, e.g. 429=0.1,500=0.05,timeout=0.05,malformed=0.05")
    s.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    s.add_argument("--quiet", action="store_true", help="don't log request lines to stderr")
    s.add_argument("--stop-on-stdin-eof", action="store_true",
                   help="also stop when standard input closes (for a parent process that starts it on a pipe)")
    s.set_defaults(func=_cmd_judge_server)

    s = sub.add_parser("annotate", help="score every triplet from three perspectives with a judge; resumable",
                       description="Writes RewardEdit_20K.json (every folder of seeds.json, three rewards each) "
                                   "with a failures file, the answer cache and the journal beside it. Re-running "
                                   "the same command resumes: nothing already answered is sent again. Keys are "
                                   "read from the environment only (OPENAI_API_KEY, AZURE_OPENAI_API_KEY).")
    s.add_argument("--data", required=True, type=Path, help="InstructPix2Pix-layout folder")
    s.add_argument("--out", required=True, type=Path, help="RewardEdit_20K.json-format output")
    _add_judge_options(s, evaluating=False)
    s.add_argument("--cache-dir", type=Path, default=None, help="answer cache (default: beside --out)")
    s.add_argument("--key-prefix", default="", help='prefix of every output key, e.g. "pix2pix-clip-filtered/train/"')
    s.set_defaults(func=_cmd_annotate)

    s = sub.add_parser("train", help="train stage 1 (InstructPix2Pix) or stage 2 (multi-reward)",
                       description="Runs on a CPU, one GPU, or several through `accelerate launch` / `torchrun` "
                                   "(the batch is global: the same run on any number of processes). Writes "
                                   "model/, checkpoints/, metrics.jsonl and samples/ under --out.")
    s.add_argument("--data", required=True, type=Path, help="InstructPix2Pix-layout folder")
    s.add_argument("--rewards", type=Path, help="RewardEdit_20K.json-format rewards (stage 2 with rewards)")
    s.add_argument("--profile", default="toy-cpu", help="training preset: toy-cpu, toy-gpu, sd15, sd15-t4")
    s.add_argument("--stage", type=int, choices=(1, 2), default=2, help="1 = InstructPix2Pix, 2 = multi-reward")
    s.add_argument("--rewards-mode", choices=REWARD_MODES, default="both",
                   help="stage 2: which rewards condition the model (none = the no-reward baseline)")
    s.add_argument("--injection", choices=INJECTIONS, default=None, help="where rewards enter")
    s.add_argument("--init", default=None,
                   help="model folder or hub id to start from (stage 2: a stage-1 model; toy default: the "
                        "kit's bundled toy stage-1 model)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    s.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="stop at the first step after S seconds (setup included), saving a checkpoint and the "
                        "model; --resume latest continues (for a GPU session that ends on the clock)")
    s.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the profile's)")
    s.add_argument("--batch-size", type=int, default=None, help="global batch per optimizer step")
    s.add_argument("--grad-accum", type=int, default=None, help="gradient-accumulation micro-batches")
    s.add_argument("--lr", type=float, default=None, help="learning rate")
    s.add_argument("--lr-schedule", default=None,
                   help="learning-rate schedule after the warm-up: constant, constant_with_warmup, cosine or "
                        "linear (default: the profile's)")
    s.add_argument("--reward-lr-scale", type=float, default=None,
                   help="stage 2: the new reward modules learn at lr x this (toy-cpu: 10)")
    s.add_argument("--center-rewards", action="store_true", default=None,
                   help="stage 2: measure the reward's time-embedding vector from a perfect edit's rewards, so "
                        "(5, 5, 5) leaves the UNet's time embedding as stage 1 had it")
    s.add_argument("--unknown-rewards-without-instruction", action="store_true", default=None,
                   help="stage 2: rewards unknown wherever the instruction is dropped, and so in the guidance "
                        "branches without it (recorded with the model)")
    s.add_argument("--reward-warmup-steps", type=int, default=None,
                   help="stage 2: the first N steps train only the reward modules (the UNet waits; the "
                        "no-reward baseline idles them)")
    s.add_argument("--seed", type=int, default=None, help="seed of data order, noise and new modules")
    s.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None,
                   help="training precision: no (fp32), bf16 or fp16 (default: the profile's)")
    s.add_argument("--reward-dropout", type=float, default=None,
                   help="probability that an example's rewards are hidden (one model, rewards optional)")
    s.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    s.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    s.add_argument("--use-8bit-adam", action="store_true", help="bitsandbytes 8-bit AdamW (small GPUs)")
    s.add_argument("--compile", action="store_true", help="torch.compile the model (GPU; a minute or two of warm-up)")
    s.add_argument("--compile-mode", default=None,
                   help="torch.compile mode (implies --compile): default, reduce-overhead (CUDA graphs), "
                        "max-autotune, max-autotune-no-cudagraphs")
    s.add_argument("--no-ema", action="store_true", help="no EMA copy of the weights")
    s.add_argument("--ema-decay", type=float, default=None,
                   help="the EMA's largest decay (default: the profile's); its warm-up ramps the decay up to it")
    s.add_argument("--ema-power", type=float, default=None,
                   help="the EMA warm-up's power: the decay at step s is 1 - (1 + s)^-power, an average over about "
                        "(1 + s)^power steps (default 2/3: 93 steps at step 900)")
    s.add_argument("--skip-missing-rewards", action="store_true",
                   help="skip (and report) training folders without a rewards entry instead of failing")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("evaluate", help="edit and judge a Real-Edit-layout benchmark; resumable",
                       description="Writes edits/, results.jsonl (one line per item, three verdicts) and "
                                   "summary.json (yes-rate and mean score per perspective, overall and per edit "
                                   "type, bootstrap 95% CIs) under --out. Keys come from the environment only.")
    s.add_argument("--model", required=True, type=Path, help="model folder (a trainer's model/ or InstructPix2Pix)")
    s.add_argument("--bench", required=True, type=Path, help="Real-Edit-layout benchmark folder")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--scores", default=None,
                   help="reward scores to edit with, e.g. 5,5,5 (the default), or 'unknown'")
    _add_edit_args(s, sampler=True)
    _add_judge_options(s, evaluating=True)
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("knob", help="the reward knob: does a multi-reward model obey its rewards? resumable",
                       description="Edits the benchmark asking for a low score (--low) in one perspective, the "
                                   "other two at 5, for each perspective, and at (5, 5, 5); judges every edit as "
                                   "`evaluate` does and prints, per perspective, the yes-rate at 5 and at --low "
                                   "and their difference (the knob, in points) with a paired-bootstrap 95% CI. "
                                   "A knob near 0 means the model does not hear that reward. One evaluation "
                                   "folder per setting under --out (F0-P5-Q5, ..., F5-P5-Q5) and knob.json.")
    s.add_argument("--model", required=True, type=Path, help="multi-reward model folder (a trainer's model/)")
    s.add_argument("--bench", required=True, type=Path, help="Real-Edit-layout benchmark folder")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--low", type=float, default=0.0, help="the low requested score (default 0; the others stay 5)")
    s.add_argument("--high-dir", type=Path, default=None,
                   help="an existing (5,5,5) `evaluate --out` folder of this model to reuse (refused if its "
                        "settings differ)")
    _add_edit_args(s, sampler=True)
    _add_judge_options(s, evaluating=True)
    s.set_defaults(func=_cmd_knob)

    s = sub.add_parser("course", help="run the notebooks in order with papermill on a named profile",
                       description="Runs the numbered notebooks in order on a profile (a named parameter set, "
                                   "rewardedit_lib/profiles/profiles.yaml), with --set overrides typed against "
                                   "each notebook's parameters cell. Every parameter and input is checked before "
                                   "anything runs; a failing notebook stops the run. Writes the executed "
                                   "notebooks, summary.json and report.html to --out. Try --dry-run first.")
    s.add_argument("--profile", default="toy-cpu",
                   help="toy-cpu (default), toy-gpu, sd15, sd15-t4 (a 16 GB T4); --list-profiles describes them")
    s.add_argument("--out", type=Path, default=None,
                   help="folder for executed notebooks, summary.json and report.html (required to run or plan)")
    s.add_argument("--only", nargs="+", default=None, metavar="NB",
                   help="run only these notebooks (e.g. 00 02 or 02_dataset)")
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override a parameter, e.g. --set n_train=2000 (repeatable); the value must fit the "
                        "notebook's default: a number, true/false, null, a list as 1,2 or [1, 2], else text")
    s.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default ./notebooks)")
    s.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebooks' own)")
    s.add_argument("--dry-run", action="store_true",
                   help="print the plan (notebooks in order, their parameters, where outputs go) after checking "
                        "every parameter; run and write nothing")
    s.add_argument("--list-profiles", action="store_true", help="list the profiles, one line each, and exit")
    s.set_defaults(func=_cmd_course)

    s = sub.add_parser("report", help="(re)write <out>/report.html from a course run's results and notebooks",
                       description="Rebuilds the course report (one page: every notebook's status, time and "
                                   "recorded results) from a course run's summary.json, results/ and executed "
                                   "notebooks, e.g. after a run was stopped or resumed by hand.")
    s.add_argument("--out", required=True, type=Path, help="the course run's folder (rewardedit course --out)")
    s.add_argument("--notebooks", type=Path, default=None,
                   help="notebooks folder, so notebooks that never ran are listed (default ./notebooks)")
    s.set_defaults(func=_cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from . import runtime
    from .course import CourseError
    from .formats import DataError

    runtime.quiet_known_warnings()  # before any command imports transformers
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DataError, CourseError, ValueError) as e:
        print(f"rewardedit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
