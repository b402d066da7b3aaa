"""The process's budget of decoded avatar frames: fair shares, a loop longer than the budget still hits, idle
avatars give way, a dropped avatar releases its frames, and the stored avatars use it."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from workbench.avatars.frame_memory import FrameMemory
from workbench.avatars.frames import EncodedFrames, write_frames

FRAME = np.zeros((10, 10, 3), np.uint8)  # 300 bytes


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_loop_longer_than_the_budget_keeps_what_fits_and_hits_it():
    mem = FrameMemory(4 * FRAME.nbytes)
    hits = 0
    for _ in range(3):  # three passes of a 10-frame loop with room for 4
        for i in range(10):
            if mem.get("a", i) is not None:
                hits += 1
            else:
                mem.offer("a", i, FRAME.copy())
    # Plain LRU would hit nothing here; keeping the first 4 hits them on every later pass.
    assert hits == 2 * 4 and mem.nbytes == 4 * FRAME.nbytes


def test_avatars_shown_together_share_the_budget_and_an_idle_one_gives_way():
    clock = Clock()
    mem = FrameMemory(6 * FRAME.nbytes, idle_s=10.0, clock=clock)
    for i in range(6):
        assert mem.offer("a", i, FRAME.copy())  # alone: the whole budget
    clock.t = 1.0
    kept_b = sum(mem.offer("b", i, FRAME.copy()) for i in range(6))
    assert kept_b == 3  # both shown: b takes up to half, from a
    assert sum(mem.get("a", i) is not None for i in range(6)) == 3
    clock.t = 20.0  # a unread for 19 s: idle
    kept_c = sum(mem.offer("c", i, FRAME.copy()) for i in range(6))
    # b was read at t=1 too, so both are idle: c, alone shown, takes the whole budget from them.
    assert kept_c == 6 and mem.nbytes == 6 * FRAME.nbytes
    assert all(mem.get("a", i) is None and mem.get("b", i) is None for i in range(6))


def test_zero_budget_keeps_nothing_and_a_negative_one_is_refused():
    mem = FrameMemory(0)
    assert not mem.offer("a", 0, FRAME) and mem.get("a", 0) is None
    with pytest.raises(ValueError, match=">= 0"):
        FrameMemory(-1)


def test_encoded_frames_decode_each_frame_once_and_release_on_drop(tmp_path, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    write_frames(frames, tmp_path)
    mem = FrameMemory(10 * frames[0].nbytes)
    enc = EncodedFrames(tmp_path, frames.shape[1:3], keep=1, memory=mem)
    decoded = []
    real = EncodedFrames._decode
    monkeypatch.setattr(EncodedFrames, "_decode", lambda self, i: decoded.append(i) or real(self, i))
    for _ in range(3):
        for i in range(6):
            assert enc[i].shape == (32, 48, 3)
    assert decoded == list(range(6))  # one decode per frame, not one per read (keep=1 alone would re-decode)
    assert mem.nbytes == 6 * frames[0].nbytes
    del enc
    gc.collect()
    assert mem.nbytes == 0


def test_the_store_gives_loaded_avatars_the_engines_budget(tmp_path, yongen_avatar):
    from workbench.avatars.store import AvatarCache

    mem = FrameMemory(64 * 2**20)
    cache = AvatarCache(tmp_path, frame_memory=mem)
    cache.save(yongen_avatar)
    avatar = cache.load(yongen_avatar.avatar_id)
    avatar.frames[0]
    assert mem.nbytes == avatar.frames[0].nbytes


def test_a_release_fired_inside_a_locked_call_neither_deadlocks_nor_breaks_it():
    """A finalizer runs wherever the garbage collector happens to run, also inside `offer` with the lock held."""
    import threading

    mem = FrameMemory(8 * FRAME.nbytes)
    mem.offer("b", 0, FRAME.copy())
    fired = []

    def clock():  # called under the lock: stands in for a collection that finalizes avatar b right there
        if not fired:
            fired.append(True)
            mem.release("b")
        return 0.0

    mem._clock = clock
    done = threading.Event()
    t = threading.Thread(target=lambda: (mem.offer("a", 0, FRAME.copy()), done.set()), daemon=True)
    t.start()
    assert done.wait(10), "release from inside a locked call deadlocked"
    assert mem.get("b", 0) is None and mem.get("a", 0) is not None and mem.nbytes == FRAME.nbytes
