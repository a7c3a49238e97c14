"""Command line of ``python -m trainer {validate,run,schema,demo,import,lora,model,queue} ...`` (the studio uses the same)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from trainer.config.introspection import unresolved_autos
from trainer.config.io import ConfigError, dump_yaml, load_config
from trainer.config.schema import TrainingConfig
from trainer.jobs.queue_cli import add_cli as add_queue_cli
from trainer.jobs.queue_cli import cmd_queue
from trainer.lora.cli import add_cli as add_lora_cli
from trainer.lora.cli import cmd_lora
from trainer.models.cli import add_cli as add_model_cli
from trainer.models.cli import cmd_model
from trainer.redaction import install_log_redaction
from trainer.settings import load_settings, use_hub_offline_mode
from trainer.startup_gc import release as release_collector
from trainer.startup_gc import thaw as thaw_collector

EXIT_OK, EXIT_INVALID = 0, 2


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="path to a training config (.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.lr=1e-4 --set datasets.0.num_repeats=5",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _config_args(commands.add_parser("validate", help="check a config; exit 2 if it is invalid"))
    run = commands.add_parser("run", help="train a LoRA from a config")
    _config_args(run)
    run.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue from a job folder or one of its checkpoints/step_* folders (default: the "
        "newest checkpoint of this run's name); checked before anything is written, exit 2 when "
        "it holds no usable checkpoint",
    )
    run.add_argument("--job-dir", help="folder for checkpoints, LoRA files, log and progress")
    schema = commands.add_parser("schema", help="print the config's JSON schema with metadata")
    schema.add_argument("--indent", type=int, default=2)
    demo = commands.add_parser("demo", help="build the tiny demo models and dataset")
    demo.add_argument("--home", help="studio home (default: STUDIO_HOME or ./studio_home)")
    imports = commands.add_parser(
        "import", help="turn an ai-toolkit YAML or kohya TOML/JSON config into a studio config"
    )
    imports.add_argument("file", help="ai-toolkit job .yaml, sd-scripts .toml or kohya_ss .json")
    imports.add_argument("-o", "--output", help="write the studio config YAML here")
    add_lora_cli(commands)
    add_model_cli(commands)
    add_queue_cli(commands)
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        for problem in err.problems:
            print(problem)
        print(f"{len(err.problems)} problem(s) in {args.config}", file=sys.stderr)
        return EXIT_INVALID
    autos = unresolved_autos(cfg)
    note = f"; still 'auto' (the advisor decides): {', '.join(autos)}" if autos else ""
    print(f"OK: {args.config} is a valid {cfg.model.arch} config{note}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from trainer.lazy_imports import defer

    defer()  # before diffusers: modules it imports for rare uses load when used
    from trainer.engine.run import run_job  # torch and the whole trainer: seconds; only for `run`

    try:
        result = run_job(
            args.config,
            args.overrides,
            resume=args.resume,
            job_dir=Path(args.job_dir).resolve() if args.job_dir else None,
            tracking_process=True,  # MLflow in a child: its memory and GIL are not the trainer's
        )
    except ConfigError as err:
        for problem in err.problems:
            print(problem)
        return EXIT_INVALID
    finally:
        thaw_collector()  # a run that ended before its first step (trainer.startup_gc)
    return result.exit_code


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(TrainingConfig.model_json_schema(), indent=args.indent))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from trainer.demo.tiny import build_all  # why: 0.1 s (PIL and the demo builders); `demo` only

    home = Path(args.home).resolve() if args.home else load_settings().home
    for name, path in build_all(home).items():
        print(f"{name}: {path}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from trainer.config.importers import import_file  # why: 0.05 s; only `import` parses these

    try:
        imported = import_file(args.file)
    except (OSError, ValueError, ConfigError) as err:
        print(f"Cannot import {args.file}: {err}", file=sys.stderr)
        return 2
    text = dump_yaml(imported.config)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text)
    print(imported.report(), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # only a run's start-up is long enough to gain (trainer.startup_gc)
        release_collector()
    install_log_redaction()  # no password of a tracking URI in any log line or traceback
    use_hub_offline_mode()  # STUDIO_OFFLINE run by hand, not by the studio: still no Hub access
    handler = {
        "validate": cmd_validate,
        "run": cmd_run,
        "schema": cmd_schema,
        "demo": cmd_demo,
        "lora": cmd_lora,
        "import": cmd_import,
        "model": cmd_model,
        "queue": cmd_queue,
    }[args.command]
    return handler(args)
