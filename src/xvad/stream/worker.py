"""A background worker: one thread, a bounded queue of jobs, never a wait for the caller.

Detection hands slow work (explanations, reports) to a worker; when its queue is full the job is
refused at once and the caller records that it was skipped, so detection never waits for it. A worker
made with ``maxsize=0`` (finishing alert clips) has no bound and refuses nothing.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any

from .priority import BACKGROUND, lower_this_thread


class Worker:
    """Runs :meth:`handle` on each submitted job in one thread with one torch thread."""

    name = "xvad-worker"

    def __init__(self, maxsize: int = 2) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.busy = False
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def handle(self, job: Any) -> None:
        raise NotImplementedError

    def submit(self, job: Any) -> bool:
        """Queue ``job`` without waiting; False when the worker is busy."""
        try:
            self.queue.put_nowait(job)
            return True
        except queue.Full:
            return False

    @property
    def pending(self) -> int:
        return self.queue.qsize() + int(self.busy)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                if not self._thread.is_alive() or (deadline is not None and time.monotonic() > deadline):
                    return
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._thread.join(left)

    def _main(self) -> None:
        from .source import one_thread

        one_thread()          # detection keeps its threads; the worker takes what is left
        lower_this_thread(BACKGROUND)      # and only the CPU that detection leaves
        while True:
            job = self.queue.get()
            if job is None:
                return
            self.busy = True
            try:
                self.handle(job)
            finally:
                self.busy = False
