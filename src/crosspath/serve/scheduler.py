"""Fair batching of concurrent requests into LeaP batches.

Requests (`Job`s) wait in one FIFO list. A worker thread takes the OLDEST pending job, waits until
it is `window` seconds old (or a batch is full) so that requests arriving together share a batch,
then takes every pending job with the same batch key (equal settings), oldest first, up to
`max_batch`, and runs them as one call of the method (`leap.solve` takes a list of problems).
Every batch contains the oldest pending job, so no request starves behind newer ones.

Shutdown: `drain()` refuses new jobs; `wait_idle(timeout)` waits for the pending and running
ones; `cancel_all()` fails what is left with 503 (a running batch stops at its next generator
call, see `service.GuardedStore`); `close()` ends the worker threads.

A job reports through `emit(kind, payload)` to the sink its creator gave it (the HTTP layer puts
events on an asyncio queue): "start" (batch info), "round" (LeaP progress), then exactly one of
"done" (the answer) or "error" (a RequestError); later events are dropped.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from .config import RequestError

log = logging.getLogger("crosspath.serve")
_ids = itertools.count()


def unavailable(why: str) -> RequestError:
    return RequestError(503, why, type="server_error", code="unavailable")


@dataclass(eq=False)
class Job:
    """One request waiting for (or inside) a batch."""

    key: Hashable  # jobs with equal keys may share a batch
    payload: Any  # what the batch runner needs (see service.Request)
    sink: Callable[[str, Any], None] = lambda kind, payload: None
    id: int = field(default_factory=lambda: next(_ids))
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # the client went away before its batch started
    _over: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, kind: str, payload: Any = None) -> bool:
        """Deliver an event; False when the job was already over (the event is dropped)."""
        with self._lock:
            if self._over:
                return False
            self._over = kind in ("done", "error")
        try:
            self.sink(kind, payload)
        except Exception:  # a sink whose event loop is gone: the client will not read it anyway
            log.debug("job %s: dropped %s event", self.id, kind, exc_info=True)
        return True

    @property
    def over(self) -> bool:
        return self._over


class Scheduler:
    def __init__(self, run_batch: Callable[[list[Job]], None], max_batch: int = 8, window: float = 0.015,
                 max_queue: int = 256, workers: int = 1):
        if max_batch < 1 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1")
        self.run_batch, self.max_batch, self.window, self.max_queue = run_batch, max_batch, window, max_queue
        self._pending: list[Job] = []
        self._running: list[Job] = []
        self._cv = threading.Condition()
        self._accepting, self._closed = True, False
        self.batch_sizes: list[int] = []  # every batch's number of requests, in order
        self._threads = [threading.Thread(target=self._work, name=f"crosspath-batch-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    # ---- callers --------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cv:
            if not self._accepting:
                raise unavailable("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise RequestError(429, f"{len(self._pending)} requests are waiting already (--max-queue); "
                                        "retry later", type="rate_limit_error", code="queue_full")
            self._pending.append(job)
            self._cv.notify_all()

    def cancel(self, job: Job) -> None:
        """The client is gone: drop the job if its batch has not started."""
        with self._cv:
            job.cancelled = True
            if job in self._pending:
                self._pending.remove(job)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def counts(self) -> dict[str, int]:
        with self._cv:
            return {"pending": len(self._pending), "running": len(self._running), "batches": len(self.batch_sizes)}

    # ---- shutdown -------------------------------------------------------------------------
    def drain(self) -> None:
        with self._cv:
            self._accepting = False

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True when nothing is pending or running any more (False on timeout)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._pending or self._running:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left if left is None else min(left, 0.1))
            return True

    def cancel_all(self, why: str = "the server is shutting down; the request was cancelled") -> int:
        """Fail every pending and running job with 503; returns how many were still unanswered."""
        with self._cv:
            self._accepting = False
            jobs, self._pending = self._pending + self._running, []
            self._cv.notify_all()
        return sum(j.emit("error", unavailable(why)) for j in jobs)

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._accepting, self._closed = False, True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)

    # ---- the worker -----------------------------------------------------------------------
    def _take(self) -> list[Job]:
        """Oldest job + compatible ones (FIFO) up to max_batch. Call with the lock held."""
        head = self._pending[0]
        batch = [j for j in self._pending if j.key == head.key][: self.max_batch]
        self._pending = [j for j in self._pending if j not in batch]
        return batch

    def _work(self) -> None:
        while True:
            with self._cv:
                while True:  # until the oldest job has waited its window, or a batch is full
                    if self._closed:
                        return
                    if not self._pending:
                        self._cv.wait()
                        continue
                    head = self._pending[0]
                    left = head.arrived + self.window - time.monotonic()
                    if left <= 0 or sum(j.key == head.key for j in self._pending) >= self.max_batch:
                        break
                    self._cv.wait(left)
                batch = self._take()
                self._running.extend(batch)
                self.batch_sizes.append(len(batch))
            try:
                self.run_batch(batch)
            except Exception:  # run_batch reports per job; this is a last resort (details: the log only)
                log.exception("batch failed")
                for j in batch:
                    j.emit("error", RequestError(500, "internal error (the details are in the server log)",
                                                 type="server_error"))
            finally:
                with self._cv:
                    self._running = [j for j in self._running if j not in batch]
                    self._cv.notify_all()
