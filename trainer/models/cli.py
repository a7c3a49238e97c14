"""``python -m trainer model {info,download} REF``: what a base model costs, and getting it.

``download --progress-file F`` is also how the studio runs a download in the background (see
``trainer.models.commands``).
"""

from __future__ import annotations

import argparse


def add_cli(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser("model", help="inspect or download a base model from the Hub")
    actions = model.add_subparsers(dest="model_command", required=True)
    for name, words in (
        ("info", "what the model is and what a run on it downloads"),
        ("download", "download what a run needs into the Hugging Face cache"),
    ):
        sub = actions.add_parser(name, help=words)
        sub.add_argument(
            "ref", help="Hugging Face id, e.g. stabilityai/stable-diffusion-xl-base-1.0"
        )
        sub.add_argument("--arch", choices=("sd15", "sdxl", "flux"), help="default: detected")
        if name == "download":
            sub.add_argument("--progress-file", help="write progress JSON here (for the studio)")
            sub.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_model(args: argparse.Namespace) -> int:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: only after main() applied STUDIO_OFFLINE
    from trainer.models.commands import run_model_command

    return run_model_command(args)
