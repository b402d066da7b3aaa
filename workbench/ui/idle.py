"""An idle app sleeps: Gradio's queue waits for work on an event instead of polling.

Gradio 6's `Queue` polls for new events every 1 ms (`sleep_when_free`) and for progress every 10 ms, even with
no visitor at all: about 1,100 wake-ups a second, 5-6 % of a core on a machine that does nothing (a steady cost
on a free Space). `quiet_gradio_queue` keeps Gradio's loops as they are and changes only what their idle sleeps
do: they wait until an event is pushed or a job starts or ends (or at most `IDLE_MAX_S`, so a wake-up Gradio
takes by another path than those is late by that much at worst, never lost).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from typing import Any

log = logging.getLogger(__name__)

IDLE_MAX_S = 1.0
# Distinct values for the queue's two idle sleeps, so the shim tells them from any other sleep in queueing.py.
_FREE = 0.0010001
_PROGRESS_FREE = 0.0100001

_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = weakref.WeakKeyDictionary()
_running = 0  # process_events coroutines in progress (jobs running): the progress loop must tick then
_installed = False


def _event() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    ev = _wakers.get(loop)
    if ev is None:
        ev = _wakers[loop] = asyncio.Event()
    return ev


def wake() -> None:
    """Work arrived or finished: every idle queue loop on this event loop looks again."""
    try:
        _event().set()
    except RuntimeError:  # no running loop (called from a thread): the bounded wait covers it
        pass


class _AsyncioShim:
    """`asyncio` as gradio.queueing sees it: the same module, except that its idle sleeps wait for `wake`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        idle = delay == _FREE or (delay == _PROGRESS_FREE and _running == 0)
        if not idle:
            return await asyncio.sleep(_PROGRESS_FREE if delay == _PROGRESS_FREE else delay, result)
        ev = _event()
        try:
            await asyncio.wait_for(ev.wait(), IDLE_MAX_S)
        except TimeoutError:
            pass
        ev.clear()  # every waiter re-checks its own condition after waking
        return result


def quiet_gradio_queue() -> bool:
    """Install the event-driven idle wait into Gradio's queue (once per process). False where this Gradio's
    queue does not look as expected: it then keeps polling, and says so in the log."""
    global _installed
    if _installed:
        return True
    from gradio import queueing

    queue_cls = getattr(queueing, "Queue", None)
    needed = ("push", "process_events", "start_processing", "start_progress_updates")
    if queue_cls is None or not all(hasattr(queue_cls, n) for n in needed) or queueing.asyncio is not asyncio:
        log.warning("Gradio's queue is not the one expected; it keeps polling while idle")
        return False

    original_init, original_push, original_process = queue_cls.__init__, queue_cls.push, queue_cls.process_events

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.sleep_when_free = _FREE
        self.progress_update_sleep_when_free = _PROGRESS_FREE

    @functools.wraps(original_push)
    async def push(self, *args, **kwargs):
        try:
            return await original_push(self, *args, **kwargs)
        finally:
            wake()

    @functools.wraps(original_process)
    async def process_events(self, *args, **kwargs):
        global _running
        _running += 1
        wake()  # the progress loop starts ticking
        try:
            return await original_process(self, *args, **kwargs)
        finally:
            _running -= 1
            wake()  # a worker slot is free: the next queued event may start

    queue_cls.__init__, queue_cls.push, queue_cls.process_events = __init__, push, process_events
    queueing.asyncio = _AsyncioShim()
    _installed = True
    return True
