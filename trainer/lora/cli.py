"""CLI for ``python -m trainer lora inspect|resize|convert|merge`` (see ``trainer.lora.tools``).

Kept apart from ``lora_tools`` so building the parser does not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def cmd_lora(args: Any) -> int:
    from trainer.lora.tools import LoraToolError  # torch: not while building the parser

    try:
        return _run_cli(args)
    except (LoraToolError, FileNotFoundError, OSError) as err:
        print(f"error: {err}")
        return 2


def _run_cli(args: Any) -> int:
    from trainer.lora.tools import (  # torch: not while building the parser
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
        resized, stats = resize(load(args.file), args.method, args.param, args.max_rank)
        path = save(resized, args.out, {"resized": f"{args.method}={args.param}"})
        print(
            f"{path}: mean rank {stats['mean_rank']:.2f}, mean error {stats['mean_error']:.4f}, "
            f"max error {stats['max_error']:.4f} (relative Frobenius)"
        )
        return 0
    if command == "convert":
        lora = load(args.file)
        if args.to == "webui":
            converted = to_kohya(lora, args.arch)
        else:
            arch, base = _base_for(args, lora)
            converted = to_peft(lora, load_base_pipeline(arch, base, _home(args)), arch)
        print(save(converted, args.out))
        return 0
    if args.into_base:
        if len(args.files) != 1:
            raise LoraToolError("--into-base takes one LoRA file")
        arch, base = _base_for(args, load(args.files[0]))
        pipe = load_base_pipeline(arch, base, _home(args))
        print(merge_into_base(args.files[0], pipe, args.out, args.scale))
        return 0
    weights = args.weights or [1.0] * len(args.files)
    merged = merge([load(f) for f in args.files], weights)
    print(save(merged, args.out))
    return 0
