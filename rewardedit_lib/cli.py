"""The ``rewardedit`` command: a thin layer over the library, one sub-command per step of the method.

Every sub-command parses its arguments, calls one library function and prints what happened. Errors the
user can fix (bad data, bad profile, bad parameter) print one clear line and exit with status 2; bad
records found by ``validate`` exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__

#: Sub-commands whose implementation arrives with a later issue: their interface is fixed now.
_LATER = {
    "judge-server": "the toy judge server arrives with the annotation issue (#3)",
    "annotate": "annotation with the three-perspective judge arrives with the annotation issue (#3)",
    "train": "the stage-1 / stage-2 trainer arrives with the training issue (#5)",
    "evaluate": "Real-Edit evaluation arrives with the evaluation issue (#6)",
}


def _cmd_toy_data(args: argparse.Namespace) -> int:
    from .toyworld import FlawRates, write_toy_dataset

    rates = FlawRates.parse(args.flaw_rates) if args.flaw_rates else FlawRates()
    out = write_toy_dataset(args.out, n=args.n, seed=args.seed, rates=rates, size=args.size)
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
    from .dataset import summary_text
    from .formats import read_instructpix2pix, read_real_edit, read_rewards

    if not (args.data or args.rewards or args.bench):
        print("rewardedit validate: give at least one of --data, --rewards, --bench", file=sys.stderr)
        return 2
    bad = []
    if args.data:
        loaded = read_instructpix2pix(args.data, rewards=args.rewards, require_rewards=bool(args.rewards),
                                      check_images=not args.no_image_check, on_error="skip")
        print(f"== dataset {args.data}")
        print(summary_text(loaded.items))
        bad += loaded.skipped
    elif args.rewards:
        loaded_r = read_rewards(args.rewards, on_error="skip")
        print(f"== rewards {args.rewards}: {len(loaded_r.items)} entries")
        bad += loaded_r.skipped
    if args.bench:
        loaded_b = read_real_edit(args.bench, check_images=not args.no_image_check, on_error="skip")
        images = {it.image for it in loaded_b.items}
        print(f"== benchmark {args.bench}: {len(images)} images, {len(loaded_b.items)} edits")
        from collections import Counter

        for etype, n in Counter(it.edit_type for it in loaded_b.items).items():
            print(f"  {etype:<11} {n}")
        bad += loaded_b.skipped
    if bad:
        print(f"\n{len(bad)} bad record(s):")
        for p in bad:
            print(f"  - {p}")
        return 1
    print("\nno bad records")
    return 0


def _cmd_course(args: argparse.Namespace) -> int:
    from .course import parse_overrides, run_course

    run_course(args.profile, args.out, only=args.only, overrides=parse_overrides(args.set or []),
               notebooks_dir=args.notebooks, kernel_name=args.kernel)
    return 0


def _later(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"rewardedit {name}: not available in this version of the kit: {_LATER[name]}.", file=sys.stderr)
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewardedit",
        description="RewardEdit Kit: multi-reward conditioned instruction-based image editing, "
                    "from a toy world on a laptop to Stable Diffusion 1.5 on a GPU.",
    )
    p.add_argument("--version", action="version", version=f"rewardedit-kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("toy-data", help="generate toy training triplets (InstructPix2Pix layout + _truth/)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--n", type=int, default=700, help="number of triplets (default 700)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--size", type=int, default=32, help="image size in pixels (default 32)")
    s.add_argument("--flaw-rates", default=None, metavar="F,P,Q",
                   help="failure rates following,preserving,quality, e.g. 0.2,0.2,0.2 (the default) "
                        "or following=0.3,quality=0.1")
    s.set_defaults(func=_cmd_toy_data)

    s = sub.add_parser("toy-bench", help="generate the toy Real-Edit benchmark (images/ + real_edit_instruct.json)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--images", type=int, default=20, help="number of held-out source images (default 20)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--size", type=int, default=32, help="image size in pixels (default 32)")
    s.set_defaults(func=_cmd_toy_bench)

    s = sub.add_parser("validate", help="read a dataset / rewards file / benchmark, print counts, list bad records")
    s.add_argument("--data", type=Path, help="InstructPix2Pix-layout folder (toy or real)")
    s.add_argument("--rewards", type=Path, help="RewardEdit_20K.json-format rewards file")
    s.add_argument("--bench", type=Path, help="Real-Edit-layout benchmark folder")
    s.add_argument("--no-image-check", action="store_true", help="don't open every image (faster on 20K)")
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("judge-server", help="serve the toy judge as an OpenAI-compatible HTTP API [issue #3]")
    s.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.set_defaults(func=_later("judge-server"))

    s = sub.add_parser("annotate", help="score every triplet from three perspectives with a judge [issue #3]")
    s.add_argument("--data", required=True, type=Path, help="InstructPix2Pix-layout folder")
    s.add_argument("--out", required=True, type=Path, help="RewardEdit_20K.json-format output")
    s.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: the local toy judge)")
    s.add_argument("--model", default=None, help="judge model name")
    s.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    s.set_defaults(func=_later("annotate"))

    s = sub.add_parser("train", help="train stage 1 (InstructPix2Pix) or stage 2 (multi-reward) [issue #5]")
    s.add_argument("--data", required=True, type=Path, help="InstructPix2Pix-layout folder")
    s.add_argument("--rewards", type=Path, help="RewardEdit_20K.json-format rewards (stage 2)")
    s.add_argument("--profile", default="toy-cpu", help="training profile")
    s.add_argument("--stage", type=int, choices=(1, 2), default=2, help="1 = InstructPix2Pix, 2 = multi-reward")
    s.add_argument("--rewards-mode", choices=("none", "scores", "text", "both"), default="both")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    s.set_defaults(func=_later("train"))

    s = sub.add_parser("evaluate", help="edit and judge a Real-Edit-layout benchmark [issue #6]")
    s.add_argument("--model", required=True, type=Path, help="model folder")
    s.add_argument("--bench", required=True, type=Path, help="Real-Edit-layout benchmark folder")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: the local toy judge)")
    s.add_argument("--judge-model", default=None, help="judge model name")
    s.set_defaults(func=_later("evaluate"))

    s = sub.add_parser("course", help="run the notebooks in order with papermill on a named profile")
    s.add_argument("--profile", default="toy-cpu", help="toy-cpu (default), toy-gpu, sd15")
    s.add_argument("--out", required=True, type=Path, help="folder for executed notebooks and summary.json")
    s.add_argument("--only", nargs="+", default=None, metavar="NB",
                   help="run only these notebooks (e.g. 00 02 or 02_dataset)")
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override a parameter, e.g. --set n_train=2000 (repeatable)")
    s.add_argument("--notebooks", type=Path, default=None, help="notebooks folder (default ./notebooks)")
    s.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebooks' own)")
    s.set_defaults(func=_cmd_course)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .course import CourseError
    from .formats import DataError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DataError, CourseError, ValueError) as e:
        print(f"rewardedit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
