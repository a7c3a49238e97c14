"""MLflow in a process of its own: ``TrackerProcess``, the training process's tracker, starts
``python -m trainer.tracking.sidecar_child`` (the real ``MlflowTracker``) at once and forwards the
``Tracker`` calls to it over a socket, pickled, in order. Also the framing both ends share.

Why: importing mlflow and opening its SQLite store costs ~165 MB and ~3 CPU-s that hold the GIL
(pandas, sqlalchemy, alembic... come with it). In a child that memory is not the trainer's, and
the import runs beside the model load instead of taking turns with it for the GIL.

What waits: nothing that records. A call is put in a queue that a writer thread sends (a full
socket never blocks the loop); the child runs the calls one by one, in order. Calls that need an
answer wait for it: ``wait_started``, ``run_id`` while the store has yet to make it (known at once
when given: MLFLOW_RUN_ID, a resume), ``log_params`` once the run is ready (before, it returns []
like ``BackgroundStart``: no key refused yet), ``flush(wait=True)`` and ``end``.

Failures, as ``BackgroundStart``: a start that fails (store unreachable, run deleted) is raised
by every later recording call and by ``wait_started``; ``set_description``/``end`` then reach the
run only if it was made. The child's error travels as itself when it is a builtin or trainer type
that pickles; otherwise (MLflow's types would import mlflow here) as a ``TrackingError`` subclass
named after it, with its message, so the run's note reads the same. A fire-and-forget call that
fails in the child is raised once by the next recording call. A child that dies fails the run the
same way. The child ignores SIGINT/SIGTERM (the trainer decides how the run ends) and, when the
socket closes without ``end`` (trainer SIGKILLed or crashed), ends the run FAILED and exits.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.tracking.background import SILENT_AFTER_FAILURE
from trainer.tracking.connect import check_tracking_uri
from trainer.tracking.layout import now_ms
from trainer.tracking.mlflow_tracker import process_tags

if TYPE_CHECKING:  # pragma: no cover
    from trainer.config.schema import TrainingConfig

CHILD_MODULE = "trainer.tracking.sidecar_child"
IN_PROCESS_ENV = "STUDIO_TRACKING_IN_PROCESS"  # "1": MLflow in the training process after all
CLOSE_TIMEOUT_S = 10.0  # after ``end`` answered, how long the child may take to exit
# Child -> trainer messages: (kind, ...)
STARTED, START_FAILED, ANSWER, RAISED, CALL_FAILED = (
    "started",
    "start_failed",
    "answer",
    "raised",
    "call_failed",
)
_HEADER = struct.Struct("!Q")  # each message: its length, then its pickle
_STOP_SIGNALS = frozenset(
    {signal.SIGINT, signal.SIGTERM}
)  # the trainer's to act on, not the child's


class TrackingError(RuntimeError):
    """An error of the tracking process that could not travel as itself (``remote_type``: its
    type's name there), or the tracking process itself ended unexpectedly."""

    remote_type = "TrackingError"


def error_from_child(sent: tuple[BaseException | None, str, str]) -> BaseException:
    """The exception the child sent: itself, or a ``TrackingError`` subclass named like it
    (``explain_failure`` writes ``TypeName: message``, as for the in-process error)."""
    error, type_name, message = sent
    if error is not None:
        return error
    if not type_name.isidentifier():
        type_name = TrackingError.__name__
    named = type(type_name, (TrackingError,), {"remote_type": type_name, "__module__": __name__})
    return named(message)


def portable_error(error: BaseException) -> tuple[BaseException | None, str, str]:
    """What crosses the socket for ``error``: the error itself when a builtin or trainer type
    that pickles (never one whose unpickling would import mlflow), always its name and text."""
    module = type(error).__module__
    own = module == "builtins" or module == "trainer" or module.startswith("trainer.")
    if own:
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # a constructor that unpickling cannot call
            own = False
    return (error if own else None), type(error).__name__, str(error)


def send_message(sock: socket.socket, message: Any) -> None:
    """One message, framed: length, then pickle (one writer per socket)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)))
    sock.sendall(data)


class FrameReader:
    """Reads framed messages from a socket; EOFError once the other end closed it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def next_message(self, idle: Callable[[], bool] | None = None, every_s: float = 1.0) -> Any:
        """The next message. ``idle`` is asked every ``every_s`` without data; when it says
        True, reading stops: EOFError, as for a closed socket."""
        while True:
            if len(self._buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buffer)
                end = _HEADER.size + size
                if len(self._buffer) >= end:
                    data = bytes(self._buffer[_HEADER.size : end])
                    del self._buffer[:end]
                    return pickle.loads(data)
            if idle is not None and not select.select([self.sock], [], [], every_s)[0]:
                if idle():
                    raise EOFError("stopped waiting")
                continue
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("the other end closed the socket")
            self._buffer += chunk


def use_tracking_process(wanted: bool) -> bool:
    """Whether MLflow runs in a child: when the caller wants it (the CLI) and
    ``STUDIO_TRACKING_IN_PROCESS`` is not set to 1."""
    return wanted and os.environ.get(IN_PROCESS_ENV, "").strip() not in {"1", "true", "yes"}


class _Answer:
    """One call's answer, waited for by the calling thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error
        self._done.set()

    def wait(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class RemoteUnlogged:
    """``tracker.unlogged`` of the child: setting ``folder`` (the job folder) tells the child
    where to keep the metrics its store refuses. Never raises."""

    def __init__(self, tell: Callable[..., None]) -> None:
        self._tell = tell
        self._folder: Path | None = None

    @property
    def folder(self) -> Path | None:
        return self._folder

    @folder.setter
    def folder(self, folder: str | Path | None) -> None:
        self._folder = Path(folder) if folder is not None else None
        self._tell("set_unlogged_folder", None if folder is None else str(folder))


class TrackerProcess:
    """The ``Tracker`` of the training process, ``MlflowTracker`` running in a child process;
    see the module docstring. ``on_ready`` is called (reader thread) when the child's run is
    ready; ``started_at`` (epoch seconds): the run's start time if it is created."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        on_ready: Callable[[], None] | None = None,
        started_at: float | None = None,
    ) -> None:
        self.tracking_uri = check_tracking_uri(tracking_uri)
        self.unlogged = RemoteUnlogged(self._tell_quietly)
        self.process: subprocess.Popen[bytes] | None = None
        self._on_ready = on_ready
        self._started_at = started_at
        self._sock: socket.socket | None = None
        self._outbox: queue.SimpleQueue[tuple[int, str, tuple, dict] | None] = queue.SimpleQueue()
        self._numbers = itertools.count(1)  # 0: no answer wanted
        self._answers: dict[int, _Answer] = {}
        self._lock = threading.Lock()
        self._known_run_id: str | None = None
        self._run_id: str | None = None
        self._ready = False  # the child's run is ready
        self._settled = threading.Event()  # ready, failed, or the child is gone
        self._error: BaseException | None = None  # a failed start or a dead child: every call
        self._late_error: BaseException | None = None  # a fire-and-forget call failed: once
        self._gone = False  # the socket is closed: nothing more is sent or answered
        self._closing = False
        self._threads: list[threading.Thread] = []

    # -- lifecycle
    def start(
        self,
        cfg: TrainingConfig,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Start the child and its run; the run id when it is known up front, else None (ask
        ``run_id`` or ``wait_started`` where it is needed)."""
        self._known_run_id = run_id or os.environ.get("MLFLOW_RUN_ID") or None
        self._launch()
        # The run records the trainer's pid, not the child's: dead-run detection watches it.
        tags = {**process_tags(), **dict(tags or {})}
        self._put(
            0,
            "start",
            (self.tracking_uri, cfg),
            {
                "run_id": run_id,
                "tags": tags,
                "started_at": self._started_at,
            },
        )
        return self._known_run_id

    def _launch(self) -> None:
        if self.process is not None:
            raise RuntimeError("TrackerProcess.start() was already called")
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])  # the child imports `trainer`
        paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        # The child starts with the stop signals blocked (a mask survives exec) and ignores them
        # before it unblocks them: a stop at this moment cannot kill it before it can ignore it.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            theirs.close()
        self._sock = ours
        for target, name in ((self._write_loop, "writer"), (self._read_loop, "reader")):
            thread = threading.Thread(target=target, name=f"tracker-process-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_started(self) -> str:
        """Wait for the child's run; its id, or the start's own error."""
        self._settled.wait()
        if self._error is not None:
            raise self._error
        return self._run_id or ""

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def run_id(self) -> str | None:
        """The run's id; asked before the store made it, this waits for the start (None if it
        failed)."""
        if self._ready or self._known_run_id is not None:
            return self._run_id if self._ready else self._known_run_id
        if self.process is None:
            return None
        self._settled.wait()
        return self._run_id

    def close(self) -> None:
        """Close the socket (after everything queued is sent) and wait for the child to exit;
        without ``end`` before, the child ends the run FAILED."""
        if self.process is None or self._closing:
            return
        self._closing = True
        self._outbox.put(None)  # the writer sends what is queued, then shuts the socket
        try:
            self.process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # never left behind by the trainer
            self.process.kill()
            self.process.wait()
        for thread in self._threads:
            thread.join(CLOSE_TIMEOUT_S)

    # -- the trainer's side of the socket
    def _put(self, number: int, name: str, args: tuple, kwargs: dict) -> None:
        self._outbox.put((number, name, args, kwargs))

    def _write_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while (message := self._outbox.get()) is not None:
            try:
                send_message(sock, message)
            except OSError:  # the child is gone: the reader says so
                break
            except Exception as err:  # an argument that does not pickle: the caller's error
                self._answer_or_keep(message, err)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # the child reads EOF once it ran everything sent

    def _read_loop(self) -> None:
        assert self._sock is not None
        reader = FrameReader(self._sock)
        while True:
            try:
                message = reader.next_message()
            except (EOFError, OSError):
                break
            except Exception as err:  # a message that does not unpickle here
                message = (CALL_FAILED, portable_error(err))
            self._receive(message)
        self._child_gone()

    def _receive(self, message: tuple) -> None:
        kind = message[0]
        if kind == STARTED:
            self._run_id, self._ready = message[1], True
            self._settled.set()
            if self._on_ready is not None:
                with contextlib.suppress(Exception):  # a timing mark never fails the run
                    self._on_ready()
        elif kind == START_FAILED:
            self._error, self._run_id = error_from_child(message[1]), message[2]
            self._settled.set()
        elif kind in (ANSWER, RAISED):
            with self._lock:
                answer = self._answers.pop(message[1], None)
            if answer is not None:
                if kind == ANSWER:
                    answer.set(message[2])
                else:
                    answer.set(error=error_from_child(message[2]))
        elif kind == CALL_FAILED:
            self._late_error = error_from_child(message[1])

    def _answer_or_keep(self, message: tuple[int, str, tuple, dict], error: BaseException) -> None:
        number, name = message[0], message[1]
        if name == "start":  # no run will be made: as a start that failed
            self._error = error
            self._settled.set()
            return
        with self._lock:
            answer = self._answers.pop(number, None)
        if answer is not None:
            answer.set(error=error)
        else:
            self._late_error = error

    def _child_gone(self) -> None:
        code = self.process.poll() if self.process is not None else None
        if not self._closing and self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.process.wait(2.0)
        lost = TrackingError(
            "the MLflow tracking process ended unexpectedly"
            + (f" (exit code {code})" if code is not None else "")
            + "; its last words are in the log above"
        )
        with self._lock:
            self._gone = True
            waiting, self._answers = self._answers, {}
            if self._error is None and not self._closing:
                self._error = lost
        for answer in waiting.values():  # the failure path's own calls: quiet, as after a failure
            quiet = self._closing or answer.name in SILENT_AFTER_FAILURE
            answer.set(error=None if quiet else lost)
        self._settled.set()

    # -- the calls
    def _skip(self, name: str) -> bool:
        """Whether ``name`` does nothing now; raises the failed start's or child's error, or a
        fire-and-forget call's, where a recording call would meet it."""
        if self._closing:
            return True
        failed = self._error
        if failed is not None:
            if name not in SILENT_AFTER_FAILURE:
                raise failed
            return self._gone or self._run_id is None  # no run to describe or end
        late = self._late_error
        if late is not None and name not in SILENT_AFTER_FAILURE:
            self._late_error = None
            raise late
        return False

    def _tell(self, name: str, *args: Any, **kwargs: Any) -> None:
        if not self._skip(name):
            self._put(0, name, args, kwargs)

    def _tell_quietly(self, name: str, *args: Any) -> None:
        if self.process is not None and not self._closing and not self._gone:
            self._put(0, name, args, {})

    def _ask(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._skip(name):
            return None
        answer = _Answer(name)
        with self._lock:
            if self._gone:  # the error was set with it: raised, or quiet for the silent calls
                if name in SILENT_AFTER_FAILURE:
                    return None
                raise self._error or TrackingError("the MLflow tracking process has ended")
            number = next(self._numbers)
            self._answers[number] = answer
        self._put(number, name, args, kwargs)
        return answer.wait()

    # -- the Tracker protocol
    def log_config(self, cfg: TrainingConfig) -> None:
        self._tell("log_config", cfg)

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        if not self._ready:  # queued, as BackgroundStart does: no key refused yet
            self._tell("log_params", dict(params))
            return []
        return list(self._ask("log_params", dict(params)) or [])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        # stamped now: the child may write them a while later
        self._tell("log_metrics", dict(metrics), step, timestamp_ms=now_ms())

    def flush(self, wait: bool = False) -> None:
        if wait:
            self._ask("flush", wait=True)
        else:
            self._tell("flush")

    def log_image(
        self, image: Any, key: str, step: int, extra: Mapping[str, Any] | None = None
    ) -> None:
        self._tell("log_image", image, key, step, None if extra is None else dict(extra))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._tell("log_artifact", str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self._tell("log_artifacts", str(folder), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._tell("log_text", text, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._tell("set_tags", dict(tags))

    def set_description(self, text: str) -> None:
        self._tell("set_description", text)

    def log_dataset_input(
        self,
        name: str,
        digest: str,
        source: str,
        profile: Mapping[str, Any] | None = None,
        context: str = "train",
    ) -> None:
        profile = None if profile is None else dict(profile)
        self._tell("log_dataset_input", name, digest, source, profile, context)

    def end(self, status: str = "FINISHED") -> None:
        """End the run (waits for everything before it to be written), then close the child."""
        if self.process is None:
            return
        try:
            self._ask("end", status)
        finally:
            self.close()
