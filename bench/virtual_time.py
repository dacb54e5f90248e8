"""An asyncio event loop on a virtual clock, for replaying real-time streams deterministically.

Time moves only when every task waits on a timer: it jumps to the next one, instead of sleeping
until it is due. Work on other threads (`run_in_executor`, and anything the caller marks with
`VirtualTimeLoop.off_loop`) stops the clock until it comes back, so a pass on the model's worker
thread takes no virtual time at all; the caller charges it what it would take on the machine it
models, with `asyncio.sleep`. A stream replayed so sees the same audio arrive at the same moments
and its passes start at the same moments in every run, whatever else the machine is doing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import selectors
from collections.abc import Iterator


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waiting_on_threads = 0


class _VirtualSelector(selectors.DefaultSelector):
    """Blocks for real only while work is out on a thread; otherwise advances the clock."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list:
        if self._clock.waiting_on_threads:
            # The thread wakes the loop through its self-pipe when its work is done.
            return super().select(0 if timeout == 0 else None)
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise RuntimeError("every task waits, with no timer and no thread to wake one")
        self._clock.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._clock = _Clock()
        super().__init__(selector=_VirtualSelector(self._clock))

    def time(self) -> float:
        return self._clock.now

    @contextlib.contextmanager
    def off_loop(self) -> Iterator[None]:
        """Work awaited in this block runs on another thread: the clock waits for it."""
        self._clock.waiting_on_threads += 1
        try:
            yield
        finally:
            self._clock.waiting_on_threads -= 1

    def run_in_executor(self, executor, func, *args) -> asyncio.Future:  # type: ignore[override]
        self._clock.waiting_on_threads += 1
        future = super().run_in_executor(executor, func, *args)
        future.add_done_callback(self._thread_done)
        return future

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        with self.off_loop():  # its threads are joined on a thread of its own
            await super().shutdown_default_executor(timeout)

    def _thread_done(self, _: asyncio.Future | concurrent.futures.Future) -> None:
        self._clock.waiting_on_threads -= 1


def run(coroutine):
    """`asyncio.run` on a fresh VirtualTimeLoop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coroutine)
