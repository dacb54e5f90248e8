"""Worker threads per model that take queued decodes in batches, answers first.

Jobs wait in two queues: urgent ones (a client is waiting for its transcript) and the rest
(streaming updates, which only move partial text along). The worker always starts with the
oldest urgent job, so one satellite's answer never waits behind another's partial results, then
fills the batch with the oldest jobs that can share its decoder call, urgent first. A job that
shares with nothing runs alone. The queue's bound is enforced by the engine (per model, counted
on the event loop), so the workers never hold more than that.

With several workers (one per decoder replica), batches run side by side: an answer that is due
while another stream's update is being decoded starts at once on a free worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One decode; `key` says which jobs may share a batch (None: this one runs alone)."""

    payload: Any
    key: Hashable | None
    urgent: bool
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0
    # Nobody waits for the answer any more: a queued job is dropped, and `run_batch` may stop a
    # running one between its stages (a running future cannot be cancelled).
    abandoned: bool = False

    def abandon(self) -> None:
        self.abandoned = True
        self.future.cancel()  # only succeeds while it is queued


class BatchScheduler:
    """Runs `run_batch(jobs)` on `workers` threads of its own; it must settle every job's future."""

    def __init__(
        self, name: str, run_batch: Callable[[list[Job]], None], max_batch: int, workers: int = 1
    ) -> None:
        self._run_batch = run_batch
        self.max_batch = max(1, max_batch)
        self._urgent: list[Job] = []
        self._later: list[Job] = []
        self._ready = threading.Condition()
        self._closed = False
        self.batches = 0  # batches run, and jobs in them: their ratio is the mean batch size
        self.batched_jobs = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"asr-{name}-{index}", daemon=True)
            for index in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, payload: Any, key: Hashable | None, urgent: bool) -> Job:
        job = Job(payload, key, urgent)
        with self._ready:
            if self._closed:
                raise RuntimeError("the model is shutting down")
            (self._urgent if urgent else self._later).append(job)
            self._ready.notify()
        return job

    def close(self) -> None:
        """Finish the batches in progress, cancel the queued jobs and stop the threads."""
        with self._ready:
            self._closed = True
            pending, self._urgent, self._later = self._urgent + self._later, [], []
            self._ready.notify_all()
        for job in pending:
            job.future.cancel()
        for thread in self._threads:
            thread.join()

    def _next_batch(self) -> list[Job]:
        queued = self._urgent + self._later
        head = queued[0]
        batch = [head]
        if head.key is not None:
            batch += [job for job in queued[1:] if job.key == head.key][: self.max_batch - 1]
        for job in batch:
            (self._urgent if job.urgent else self._later).remove(job)
        return batch

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._closed and not (self._urgent or self._later):
                    self._ready.wait()
                if self._closed:
                    return
                batch = self._next_batch()
            # A job whose client went away is dropped; the others can no longer be cancelled.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.perf_counter()
            for job in batch:
                job.started_at = started
            with self._ready:
                self.batches += 1
                self.batched_jobs += len(batch)
            try:
                self._run_batch(batch)
            except BaseException as err:  # never leave a client waiting on a dead future
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
