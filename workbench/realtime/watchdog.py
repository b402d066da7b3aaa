"""The session watchdog: a call that never connects, sits idle, or runs past the longest call is ended.

The limits are settings (`session_connect_timeout_s`, `session_idle_timeout_s`, `session_max_s`); each live
call has one watcher task that checks them every `WATCH_PERIOD_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from workbench.config import Settings

log = logging.getLogger(__name__)
WATCH_PERIOD_S = 1.0  # how often a call's idle and length limits are checked


class WatchedCall(Protocol):
    """What the watchdog reads of a call (a `ChatSession`)."""

    id: str
    created: float
    connected_at: float | None
    last_activity: float

    def notify(self, event: dict) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class CallLimits:
    connect_timeout_s: float
    idle_timeout_s: float
    max_call_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> CallLimits:
        return cls(float(s.session_connect_timeout_s), float(s.session_idle_timeout_s), float(s.session_max_s))


def overdue(call: WatchedCall, now: float, limits: CallLimits) -> str | None:
    """Why `call` must end now, or None."""
    if call.connected_at is None:
        if now - call.created > limits.connect_timeout_s:
            return f"the browser did not connect within {limits.connect_timeout_s:.0f} s"
        return None
    if now - call.connected_at > limits.max_call_s:
        return f"calls last at most {limits.max_call_s / 60:.0f} min"
    if now - max(call.connected_at, call.last_activity) > limits.idle_timeout_s:
        return f"nothing was said for {limits.idle_timeout_s / 60:.0f} min"
    return None


async def watch(call: WatchedCall, limits: CallLimits, is_open: Callable[[], bool]) -> None:
    """End `call` when `overdue` says so; returns when it ends or `is_open()` turns false."""
    try:
        while is_open():
            await asyncio.sleep(WATCH_PERIOD_S)
            reason = overdue(call, time.time(), limits)
            if reason is not None:
                log.info("realtime session %s: %s; closing it", call.id, reason)
                call.notify({"type": "error", "message": f"call ended: {reason}", "code": "call_limit"})
                await call.close()
                return
    except asyncio.CancelledError:
        pass
