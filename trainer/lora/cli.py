"""CLI for ``python -m trainer lora inspect|resize|convert|merge`` (see ``trainer.lora.tools``).

Kept apart from ``lora_tools`` so building the parser does not import torch. ``-o`` may name any
place, but an output that exists is replaced only with ``--force`` (checked before any work).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.files import WouldReplace, WriteRefused, writable_target
from trainer.settings import load_settings

RESIZE_METHODS = ("rank", "sv_ratio", "sv_fro", "sv_cumulative")


def add_cli(commands: Any) -> None:
    """``python -m trainer lora inspect|resize|convert|merge``."""
    lora = commands.add_parser("lora", help="inspect, resize, convert or merge LoRA files")
    sub = lora.add_subparsers(dest="lora_command", required=True)
    inspect_p = sub.add_parser("inspect", help="keys, ranks, alphas and metadata")
    inspect_p.add_argument("file")
    resize_p = sub.add_parser("resize", help="lower the rank by SVD")
    resize_p.add_argument("file")
    resize_p.add_argument("-o", "--out", required=True)
    resize_p.add_argument("--method", choices=RESIZE_METHODS, default="rank")
    resize_p.add_argument(
        "--param", type=float, default=4, help="new rank, or the sv_* threshold (ratio/fraction)"
    )
    resize_p.add_argument("--max-rank", type=int, default=None)
    convert_p = sub.add_parser("convert", help="between diffusers/peft and kohya/webui layouts")
    convert_p.add_argument("file")
    convert_p.add_argument("--to", choices=("webui", "diffusers"), required=True)
    convert_p.add_argument("-o", "--out", required=True)
    merge_p = sub.add_parser("merge", help="merge LoRAs (weights) or a LoRA into its base model")
    merge_p.add_argument("files", nargs="+")
    merge_p.add_argument("--weights", nargs="+", type=float, default=None)
    merge_p.add_argument("--into-base", metavar="BASE", help="fuse into this base, save pipeline")
    merge_p.add_argument("--scale", type=float, default=1.0, help="LoRA strength for --into-base")
    merge_p.add_argument("-o", "--out", required=True)
    for p in (resize_p, convert_p, merge_p):
        p.add_argument(
            "--force", action="store_true", help="replace the output if it exists (else refused)"
        )
    for p in (convert_p, merge_p):
        p.add_argument("--base", help="base model (default: the file's base_model metadata)")
        p.add_argument("--arch", choices=("sd15", "sdxl", "flux"), default=None)
        p.add_argument("--home", help="studio home (default: STUDIO_HOME or ./studio_home)")


def _home(args: Any) -> Path:
    return Path(args.home).resolve() if args.home else load_settings().home


def _base_for(args: Any, lora: Any) -> tuple[str, str]:
    from trainer.lora.tools import LoraToolError, file_arch  # torch: not while building the parser

    arch = file_arch(lora, args.arch)
    base = getattr(args, "into_base", None) or args.base or lora.metadata.get("base_model")
    if not base:
        raise LoraToolError("the file does not name its base model: pass --base")
    return arch, base


def _output(args: Any, *, folder: bool) -> Path:
    """``-o`` checked before any work: the right extension, and an existing output replaced only
    with ``--force``. Any place is allowed: the command line writes where its user says."""
    try:
        return writable_target(
            args.out, suffix="" if folder else ".safetensors", roots=None, replace=args.force
        )
    except WouldReplace as err:
        raise WriteRefused(f"{err}; pass --force to replace it") from err


def _lora_output(args: Any, layout: str) -> Path:
    """A webui/kohya LoRA is one .safetensors file; a peft LoRA is one too, or a diffusers folder
    when ``-o`` names no .safetensors file."""
    from trainer.lora.tools import PEFT  # torch: not while building the parser

    as_folder = layout == PEFT and not str(args.out).lower().endswith(".safetensors")
    return _output(args, folder=as_folder)


def cmd_lora(args: Any) -> int:
    from trainer.lora.tools import LoraToolError  # torch: not while building the parser

    try:
        return _run_cli(args)
    except (LoraToolError, WriteRefused, FileNotFoundError, OSError, ValueError) as err:
        print(f"error: {err}")
        return 2


def _run_cli(args: Any) -> int:
    from trainer.lora.tools import (  # torch: not while building the parser
        KOHYA,
        PEFT,
        LoraToolError,
        inspect,
        load,
        load_base_pipeline,
        merge,
        merge_into_base,
        resize,
        save,
        to_kohya,
        to_peft,
    )

    command = args.lora_command
    if command == "inspect":
        print(json.dumps(inspect(args.file), indent=2, default=str))
        return 0
    if command == "resize":
        lora = load(args.file)
        out = _lora_output(args, lora.layout)
        resized, stats = resize(lora, args.method, args.param, args.max_rank)
        path = save(resized, out, {"resized": f"{args.method}={args.param}"})
        print(
            f"{path}: mean rank {stats['mean_rank']:.2f}, mean error {stats['mean_error']:.4f}, "
            f"max error {stats['max_error']:.4f} (relative Frobenius)"
        )
        return 0
    if command == "convert":
        lora = load(args.file)
        out = _lora_output(args, KOHYA if args.to == "webui" else PEFT)
        if args.to == "webui":
            converted = to_kohya(lora, args.arch)
        else:
            arch, base = _base_for(args, lora)
            converted = to_peft(lora, load_base_pipeline(arch, base, _home(args)), arch)
        print(save(converted, out))
        return 0
    if args.into_base:
        if len(args.files) != 1:
            raise LoraToolError("--into-base takes one LoRA file")
        out = _output(args, folder=True)  # a whole pipeline: a folder
        arch, base = _base_for(args, load(args.files[0]))
        pipe = load_base_pipeline(arch, base, _home(args))
        print(merge_into_base(args.files[0], pipe, out, args.scale))
        return 0
    weights = args.weights or [1.0] * len(args.files)
    loras = [load(f) for f in args.files]
    out = _lora_output(args, loras[0].layout)
    print(save(merge(loras, weights), out))
    return 0
