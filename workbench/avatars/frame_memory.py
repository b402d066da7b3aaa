"""Decoded avatar frames kept in memory, one budget for the whole process.

A cached avatar's full frames are JPEGs (`frames.EncodedFrames`): decoding a 704x1216 frame costs ~6 ms of CPU,
more than the CPU renderer's whole mouth edit (~5 ms). Every realtime session shows one full frame per 40 ms
tick, so with six sessions decoding alone took a third of the process's CPU (py-spy, `bench/bench_realtime.py
--sessions 6`). An avatar's frames are few and replayed in a loop, so keeping them decoded turns that cost into a
lookup.

The loop is also why plain LRU is the wrong policy: a loop longer than the budget evicts every frame just before
it is needed again (no hit at all). Here each avatar being shown may fill an equal share of the budget and then
stops adding (a loop of N frames with room for K hits K/N of the time); frames of an avatar that nobody has read
for `idle_s` give way to the others first; an avatar that is dropped (garbage collected) releases its frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

import numpy as np

IDLE_S = 10.0  # an avatar not read for this long counts as not shown: its frames make room for the others


class _Pack:
    __slots__ = ("frames", "nbytes", "last")

    def __init__(self, now: float):
        self.frames: dict[int, np.ndarray] = {}
        self.nbytes = 0
        self.last = now


class FrameMemory:
    """Decoded frames of every avatar, within `max_bytes` (0: keep none). Thread-safe; keys are the callers'."""

    def __init__(self, max_bytes: int, idle_s: float = IDLE_S, clock: Callable[[], float] = time.monotonic):
        if max_bytes < 0:
            raise ValueError(f"the decoded-frame budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.idle_s = float(idle_s)
        self._clock = clock
        self._packs: dict[Hashable, _Pack] = {}
        self._nbytes = 0
        self._lock = threading.Lock()
        # Packs whose avatar was collected, dropped at the next call. `release` runs from a garbage collector's
        # finalizer, which may fire in any thread at any allocation, even inside `offer` while the lock is held:
        # it must not take the lock or touch the dicts, only append (atomic).
        self._released: deque[Hashable] = deque()

    @property
    def nbytes(self) -> int:
        with self._lock:
            self._drop_released()
            return self._nbytes

    def get(self, pack: Hashable, i: int) -> np.ndarray | None:
        with self._lock:
            self._drop_released()
            p = self._packs.get(pack)
            if p is None:
                return None
            p.last = self._clock()
            return p.frames.get(i)

    def offer(self, pack: Hashable, i: int, frame: np.ndarray) -> bool:
        """Keep `frame` as frame i of `pack` if its share of the budget has room; True when kept."""
        size = int(frame.nbytes)
        with self._lock:
            self._drop_released()
            now = self._clock()
            p = self._packs.get(pack)
            if p is None:
                p = self._packs[pack] = _Pack(now)
            p.last = now
            if i in p.frames:
                return True
            shown = [q for q in self._packs.values() if now - q.last <= self.idle_s]
            if p.nbytes + size > self.max_bytes // max(1, len(shown)):
                return False
            while self._nbytes + size > self.max_bytes:
                if not self._evict_one(now, p):
                    return False
            p.frames[i] = frame
            p.nbytes += size
            self._nbytes += size
            return True

    def _evict_one(self, now: float, keep: _Pack) -> bool:
        """Drop one frame of another avatar, the longest unread first; False when only `keep` holds frames."""
        others = [q for q in self._packs.values() if q is not keep and q.frames]
        if not others:
            return False
        victim = min(others, key=lambda q: q.last)
        if now - victim.last <= self.idle_s:
            # Every other avatar is being shown too: take only from one above its (new) equal share.
            shown = sum(1 for q in self._packs.values() if now - q.last <= self.idle_s)
            over = [q for q in others if q.nbytes > self.max_bytes // max(1, shown)]
            if not over:
                return False
            victim = max(over, key=lambda q: q.nbytes)
        _, frame = victim.frames.popitem()
        victim.nbytes -= int(frame.nbytes)
        self._nbytes -= int(frame.nbytes)
        return True

    def release(self, pack: Hashable) -> None:
        """Forget every frame of `pack` (its avatar is gone), at the next call; safe from a finalizer."""
        self._released.append(pack)

    def _drop_released(self) -> None:
        while self._released:
            p = self._packs.pop(self._released.popleft(), None)
            if p is not None:
                self._nbytes -= p.nbytes
