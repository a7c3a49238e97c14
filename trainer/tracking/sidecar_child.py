"""The tracking process: ``python -m trainer.tracking.sidecar_child FD PARENT_PID`` runs the
``MlflowTracker`` calls that ``TrackerProcess`` (trainer.tracking.sidecar) sends over the socket
FD, one by one, in order, and answers those that want an answer.

It ignores SIGINT and SIGTERM: a stop reaches the trainer's whole process group, and the trainer
decides how the run ends (``end("KILLED")``). When the socket closes without ``end`` (the trainer
was SIGKILLed or crashed), or the trainer is gone while another process holds its end of the
socket (its parent pid changes), it writes what it holds, ends the run FAILED with a note saying
so, and exits. Its output goes to the trainer's stderr (train.log), redacted.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import sys
import traceback
from typing import Any

from trainer.redaction import install_log_redaction, redact_text
from trainer.startup_gc import hold as hold_collector
from trainer.startup_gc import release as release_collector
from trainer.tracking.sidecar import (
    ANSWER,
    CALL_FAILED,
    RAISED,
    SILENT_AFTER_FAILURE,
    START_FAILED,
    STARTED,
    FrameReader,
    portable_error,
    send_message,
)

CHILD_NICENESS = 5  # lower priority than the trainer's (nice 0): see main
USAGE_LINE = "MLflow tracking process done:"  # + its peak RSS and CPU (benchmarks/first_step.py)
ORPHANED_NOTE = (
    "The training process ended without closing its run (killed, or it crashed before it could "
    "say why); the metrics it sent are kept. See train.log in the job folder."
)
_CALLS = frozenset(
    {
        "log_config",
        "log_params",
        "log_metrics",
        "flush",
        "log_image",
        "log_artifact",
        "log_artifacts",
        "log_text",
        "set_tags",
        "set_description",
        "log_dataset_input",
        "end",
    }
)


class TrackingChild:
    """Runs the calls read from ``sock`` on an ``MlflowTracker`` made by the ``start`` call."""

    def __init__(self, sock: socket.socket, parent_pid: int) -> None:
        self.sock = sock
        self.parent_pid = parent_pid
        self.tracker: Any = None
        self.failed = False  # the start failed
        self.ended = False
        self._parent_alive = True

    def serve(self) -> None:
        """Run calls until the socket closes or the trainer is gone; then close the run if the
        trainer did not."""
        reader = FrameReader(self.sock)
        while True:
            try:
                message = reader.next_message(idle=self._trainer_gone)
            except (EOFError, OSError):
                break
            except Exception as err:  # a message that does not unpickle: said, then skipped
                self._say(f"could not read a call: {err}")
                continue
            self.handle(*message)
        self.close_orphaned_run()

    def _trainer_gone(self) -> bool:
        return os.getppid() != self.parent_pid  # reparented: the trainer has exited

    def handle(self, number: int, name: str, args: tuple, kwargs: dict) -> None:
        if name == "start":
            self.start(*args, **kwargs)
            return
        try:
            value = self.call(name, args, kwargs)
        except Exception as err:
            self._say(f"{name} failed: {err}", with_traceback=True)
            self._reply(
                RAISED if number else CALL_FAILED,
                *([number] if number else []),
                portable_error(err),
            )
            return
        if number:
            self._reply(ANSWER, number, value)

    def start(
        self,
        tracking_uri: str,
        cfg: Any,
        *,
        run_id: str | None,
        tags: dict[str, str],
        started_at: float | None,
    ) -> None:
        from trainer.tracking.mlflow_tracker import MlflowTracker  # why: this process's job

        when = {} if started_at is None else {"started_at": started_at}
        try:
            self.tracker = MlflowTracker(tracking_uri)
            made = self.tracker.start(cfg, run_id=run_id, tags=tags, **when)
        except Exception as err:  # the trainer raises it at its next call
            self.failed = True
            made_id = getattr(self.tracker, "run_id", None)
            self._reply(START_FAILED, portable_error(err), made_id)
            return
        finally:  # MLflow and its store are loaded: frozen (trainer.startup_gc)
            release_collector()
        self._reply(STARTED, made)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        tracker = self.tracker
        if name == "set_unlogged_folder":
            if tracker is not None:
                tracker.unlogged.folder = args[0]
            return None
        if name not in _CALLS:
            raise ValueError(f"not a tracker call: {name!r}")
        if tracker is None or (
            self.failed and (name not in SILENT_AFTER_FAILURE or tracker.run_id is None)
        ):
            return [] if name == "log_params" else None  # nothing to record into
        value = getattr(tracker, name)(*args, **kwargs)
        if name == "end":
            self.ended = True
        return value

    def close_orphaned_run(self) -> None:
        """The socket closed (or the trainer is gone) without ``end``: write what is held and
        end the run FAILED, saying why."""
        tracker = self.tracker
        if tracker is None or tracker.run_id is None or self.ended:
            return
        self._say("the training process ended without closing its run: ending it FAILED")
        try:
            tracker.set_description(ORPHANED_NOTE)
            tracker.end("FAILED")  # flushes first
        except Exception as err:
            self._say(f"could not end the run: {err}", with_traceback=True)
        self.ended = True

    def _reply(self, *message: Any) -> None:
        try:
            send_message(self.sock, message)
        except OSError:  # the trainer is gone: its end of the run is closed at EOF
            pass
        except Exception as err:  # an answer that does not pickle
            self._say(f"could not answer: {err}")

    @staticmethod
    def _say(text: str, with_traceback: bool = False) -> None:
        said = f"MLflow tracking process: {text}"
        if with_traceback:
            said += "\n" + traceback.format_exc()
        print(redact_text(said), file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    hold_collector()  # until the MLflow run has started (trainer.startup_gc)
    fd, parent_pid = int(argv[0]), int(argv[1])
    # The trainer decides how its run ends; a stop to the process group is not for this process.
    # Started with both blocked (TrackerProcess): ignored first, then unblocked, none is lost.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    os.dup2(2, 1)  # anything printed goes to the trainer's log, never to its stdout
    # Where cores are short, the training comes first: this process catches up after (its
    # calls are queued in the trainer meanwhile); where a core is free, nice changes nothing.
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICENESS)
    install_log_redaction()
    sock = socket.socket(fileno=fd)
    try:
        TrackingChild(sock, parent_pid).serve()
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # its memory is real memory: said
    print(
        f"{USAGE_LINE} peak RSS {usage.ru_maxrss / 1024:.0f} MB, "
        f"CPU {usage.ru_utime + usage.ru_stime:.2f} s",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The run is ended and written: skip the interpreter's teardown, which collects every
    # object of MLflow's imports (~800 MB) and, niced on a busy machine, outlasted the trainer's
    # 10 s wait for this process (it was killed after saying it was done).
    os._exit(code)
