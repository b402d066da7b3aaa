"""Lip-sync streams for framework sessions (LiveKit jobs, Pipecat pipelines) over one engine, with a cap and a load.

Every session of a worker process shares the engine's renderer; a model on a device (MuseTalk) renders the due
frames of all sessions in one `RenderBatcher`, as the built-in WebRTC endpoint does. The load a dispatcher
balances on is the larger of the batcher's occupancy (how busy the model is) and the share of session slots taken.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from workbench.avatars.model import Avatar
from workbench.config import FPS
from workbench.lipsync.batcher import RenderBatcher, has_device_stage
from workbench.lipsync.stream import LipSyncStream


class SessionLimitError(RuntimeError):
    """Every session slot of this worker is taken."""


class StreamPool:
    """Opens and closes `LipSyncStream`s for one engine (anything with `renderer`, `load_avatar`, `list_avatars`)."""

    def __init__(self, engine: Any, *, max_sessions: int = 4, batch_size: int = 8, serialize: bool | None = None):
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.engine = engine
        self.max_sessions = int(max_sessions)
        self.batch_size = int(batch_size)
        self.serialize = serialize  # None: a device model is serialised (and batched), the CPU renderer is not
        self._lock = threading.Lock()
        self._open: set[LipSyncStream] = set()
        self.batcher: RenderBatcher | None = None

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._open)

    def avatar(self, avatar_id: str | None) -> Avatar:
        """The named avatar, or the first prepared one; a clear message when there is none."""
        if avatar_id:
            return self.engine.load_avatar(avatar_id)
        listed = self.engine.list_avatars()
        if not listed:
            raise LookupError("no prepared avatar: run `workbench prepare VIDEO` first, or name one with --avatar")
        return self.engine.load_avatar(listed[0].avatar_id)

    def open(self, avatar: Avatar, name: str = "stream") -> LipSyncStream:
        with self._lock:
            if len(self._open) >= self.max_sessions:
                raise SessionLimitError(f"all {self.max_sessions} avatar sessions of this worker are busy")
            renderer = self.engine.renderer
            serialize = self.serialize if self.serialize is not None else getattr(renderer, "name", "") != "cpu"
            lock = getattr(self.engine, "render_lock", None) if serialize else None
            if serialize and has_device_stage(renderer):
                self.batcher = RenderBatcher.shared(renderer, lock=lock)
            stream = LipSyncStream(
                renderer, avatar, batch_size=self.batch_size, render_lock=lock, batcher=self.batcher, name=name
            )
            self._open.add(stream)
        return stream

    def close(self, stream: LipSyncStream) -> None:
        with self._lock:
            self._open.discard(stream)
        stream.close()

    def load(self) -> float:
        """0..1: the busier of the renderer (batcher occupancy) and the session slots."""
        slots = self.active / self.max_sessions
        busy = self.batcher.occupancy() if self.batcher is not None else 0.0
        return min(1.0, max(slots, busy))


FRAME_SECONDS = 1.0 / FPS
MAX_LATE_S = 0.2  # behind schedule by more than this, the clock starts afresh instead of sending a burst


async def frame_clock(running: Callable[[], bool]) -> AsyncIterator[int]:
    """Tick numbers 0, 1, 2, … at 25 fps on the event loop's clock, while `running()`.

    A stalled loop does not cause a burst of catch-up ticks: once more than MAX_LATE_S behind, the schedule
    restarts from now, keeping the 40 ms spacing that the pictures' timestamps promise."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    while running():
        wait = start + k * FRAME_SECONDS - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        elif -wait > MAX_LATE_S:
            start = loop.time() - k * FRAME_SECONDS
        yield k
        k += 1


def shown(stream: LipSyncStream, reply: str | None) -> bool:
    """Whether a reply that has ended has been shown in full: the stream has moved past it (replies play in order,
    so the head of its queue is a later one or none). A reply with no audio at all (None) is shown at once."""
    return reply is None or reply != stream.current_item_id
