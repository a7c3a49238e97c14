"""Batches made ready ahead of the step: a thread loads and encodes the next ones while the
current step trains.

``Ahead(batches, prepare, count)`` pulls ``count`` batches from ``batches`` in a background
thread, runs ``prepare`` on each (``ModelInputs.prepare``: images decoded, latents and text
embeddings encoded) and keeps up to ``depth`` of them ready; iterating it hands them out in order.
The step then waits only when loading and encoding take longer than training itself.

- Order and values do not change: the batches are the ones the plan gives, in its order, and
  encoding draws no random numbers, so losses are the same as with everything on the training
  thread.
- An error in the thread (an unreadable image) is raised by ``next()`` in the training thread,
  where the run fails as it always did.
- ``close()`` (or leaving the ``with`` block) stops the thread; it never outlives the loop.
  Then it closes ``batches`` too: a loader's persistent worker processes end there and then,
  not whenever a garbage collection happens to free the loader (the interpreter's exit handlers
  wait for them).
- The encoders are shared with previews and validation on the training thread: both take the
  ``ModelInputs.lock`` around their use, so the two threads never run them at the same time
  (layer offloading moves their weights while they run).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

DONE = object()


class Ahead:
    def __init__(
        self,
        batches: Iterator[dict],
        prepare: Callable[[dict], dict],
        count: int,
        depth: int = 2,
    ) -> None:
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._batches = batches
        self._thread = threading.Thread(
            target=self._produce, args=(batches, prepare, count), name="batches-ahead", daemon=True
        )
        self._thread.start()

    def _produce(
        self, batches: Iterator[dict], prepare: Callable[[dict], dict], count: int
    ) -> None:
        try:
            for _ in range(count):
                if not self._put(prepare(next(batches))):
                    return
        except BaseException as err:  # handed to the training thread, raised there
            self._put(err)
            return
        self._put(DONE)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        item = self._ready.get()
        if item is DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        closing = getattr(self._batches, "close", None)
        if closing is not None and not self._thread.is_alive():  # a generator: its loader ends
            closing()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
