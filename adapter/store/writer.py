"""A single background writer: the hook path enqueues rows and never waits for the database.

Under 32 concurrent hooks, a write per hook through a thread pool made connections queue for SQLite's
write lock (p99 > 1 s). One thread writing batches in one transaction each removes the contention; the
queue is drained on shutdown, so a clean stop loses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("axiom_cds.store")

T = TypeVar("T")
_STOP = object()
MAX_BATCH = 200


class BackgroundWriter(Generic[T]):
    def __init__(self, write_batch: Callable[[list[T]], None], name: str = "axiom-writer") -> None:
        self._write = write_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, *items: T) -> None:
        """Queue rows; rows submitted together are written in the same batch (one transaction)."""
        self._queue.put(items)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[object] = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for b in batch if isinstance(b, tuple) for item in b]
            if items:
                try:
                    self._write(items)
                except Exception:  # keep writing later batches; say how many rows were lost, nothing else
                    log.exception("background write of %d rows failed", len(items))
            for b in batch:
                if isinstance(b, threading.Event):
                    b.set()
            if any(b is _STOP for b in batch):
                return
