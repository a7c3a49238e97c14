"""``python -m trainer queue {run,add,list,stop}``: the training queue from a terminal.

``queue run --home H`` is the queue runner itself (``trainer.jobs.queue_runner``), which the
studio starts detached; ``add`` queues a config file, ``list`` shows the queue, ``stop`` asks the
runner to exit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from trainer.config.io import ConfigError, load_config
from trainer.jobs.queue import QueueError, enqueue, entries
from trainer.jobs.queue_runner import (
    IDLE_EXIT_S,
    POLL_S,
    ensure_runner,
    request_stop,
    run_queue,
    runner_alive,
)
from trainer.settings import StudioSettings, load_settings


def add_cli(commands: argparse._SubParsersAction) -> None:
    queue = commands.add_parser("queue", help="the training queue: run, add, list, stop")
    actions = queue.add_subparsers(dest="queue_command", required=True)
    run = actions.add_parser("run", help="the queue runner: train queued runs one at a time")
    run.add_argument(
        "--idle-exit",
        type=float,
        default=IDLE_EXIT_S,
        metavar="SECONDS",
        help=f"exit once nothing was queued for this long (default {IDLE_EXIT_S:g})",
    )
    run.add_argument("--poll", type=float, default=POLL_S, help=argparse.SUPPRESS)
    add = actions.add_parser("add", help="queue a config file and start the runner")
    add.add_argument("config", help="path to a training config (.yaml)")
    add.add_argument("--name", default="", help="the MLflow run name (default: the config's)")
    add.add_argument("--group", help="a group name, put on the run as the studio.group tag")
    add.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE", help="a run tag"
    )
    listing = actions.add_parser("list", help="the queue's entries, in order")
    stop = actions.add_parser("stop", help="ask the runner to exit (a run in progress goes on)")
    for sub in (run, add, listing, stop):
        sub.add_argument("--home", help="studio home (default: STUDIO_HOME or ./studio_home)")


def _settings(args: argparse.Namespace) -> StudioSettings:
    return load_settings(home=Path(args.home)) if args.home else load_settings()


def cmd_queue(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.queue_command == "run":
        return run_queue(settings, idle_exit_s=args.idle_exit, poll_s=args.poll)
    if args.queue_command == "add":
        return _add(settings, args)
    if args.queue_command == "stop":
        if not runner_alive(settings):
            print("No queue runner is running.")
            return 0
        request_stop(settings)
        print("Asked the queue runner to exit.")
        return 0
    for position, entry in enumerate(entries(settings), start=1):
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.added_at))
        run = f" run {entry.run_id}" if entry.run_id else ""
        group = f" [{entry.group}]" if entry.group else ""
        print(f"{position:3d}. {entry.state:<9} {entry.name}{group} (added {added}){run}")
    return 0


def _add(settings: StudioSettings, args: argparse.Namespace) -> int:
    tags = {}
    for item in args.tags:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--tag {item!r}: write KEY=VALUE", file=sys.stderr)
            return 2
        tags[key.strip()] = value
    try:
        cfg = load_config(args.config)
        entry = enqueue(settings, cfg, args.name, group=args.group, tags=tags)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    except QueueError as err:
        print(err, file=sys.stderr)
        return 2
    started = ensure_runner(settings)
    print(f"Queued {entry.name} as {entry.id}" + ("; started the runner." if started else "."))
    return 0
