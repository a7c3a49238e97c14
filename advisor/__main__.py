"""Command line: ``python -m advisor report CONFIG.yaml [--profile PROFILE.json] [--json]``.

Prints the findings, predictions and recommended changes for a config, for people who train
without the UI. Without ``--profile`` the machine is detected (NVML / sysfs / sysctl, never
CUDA). Dataset folders that exist are scanned for exact, bucket-aware step arithmetic.
Exit status: 0 without errors, 1 when the report has errors, 2 when the config is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from advisor.dataset import scan_folders
from advisor.profile import detect_profile, profile_from_dict
from advisor.report import build_report
from trainer.config.io import ConfigError, load_config
from trainer.settings import load_settings

if TYPE_CHECKING:
    from advisor.profile import SystemProfile

EXIT_OK, EXIT_FINDINGS, EXIT_INVALID = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m advisor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="findings, predictions and recommendations")
    report.add_argument("config", help="path to a training config (.yaml)")
    report.add_argument("--profile", help="a machine profile as JSON (default: detect this one)")
    report.add_argument("--json", action="store_true", help="print JSON instead of text")
    report.add_argument(
        "--priority",
        choices=("quality", "speed", "memory"),
        default="quality",
        help="for the comparison",
    )
    report.add_argument("--no-scan", action="store_true", help="do not scan the dataset folders")
    profile = commands.add_parser("profile", help="print this machine's profile as JSON")
    profile.add_argument("--home", help="studio home (for the disk check; default STUDIO_HOME)")
    return parser


def load_profile(path: str | None, home: str = ".") -> SystemProfile:
    if path:
        return profile_from_dict(json.loads(Path(path).read_text()))
    return detect_profile(home)


def _studio_home() -> str:
    return str(load_settings().home)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    try:
        profile = load_profile(args.profile, _studio_home())
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"{args.profile}: not a usable profile ({err})", file=sys.stderr)
        return EXIT_INVALID
    info = None if args.no_scan else scan_folders(cfg)
    report = build_report(cfg, profile, info, priority=args.priority)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.text())
    return EXIT_FINDINGS if any(f.severity == "error" for f in report.findings) else EXIT_OK


def cmd_profile(args: argparse.Namespace) -> int:
    print(json.dumps(load_profile(None, args.home or _studio_home()).to_dict(), indent=2))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"report": cmd_report, "profile": cmd_profile}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
