"""Streaming lip-sync: reply audio in, one frame and its 40 ms of audio out per tick of a 25 fps clock.

`LipSyncStream` knows no transport. A voice session pushes reply audio (24 kHz PCM16 deltas, or any
rate) with `push_audio`; a worker thread resamples it to 16 kHz, runs the renderer's incremental
`AudioFrontend` and renders frames in batches ahead of the clock; whoever owns the clock (the WebRTC
tracks, a benchmark, a test) calls `next_frame()` once per frame period and gets the frame to show
together with the exact audio to play while it shows.

A/V sync holds by construction: frame j of an utterance is conditioned on 16 kHz samples
[640 j, 640 (j+1)) and is handed out with 24 kHz samples [960 j, 960 (j+1)) of the same audio, so
audio playback follows the frames. When a frame is late the clock repeats the last picture with
silence (a stall) instead of letting the sound run ahead of the mouth.

Between replies an idle loop shows the avatar's own frames (`Avatar.loop_index`, ping-pong, so the
body never jumps) rendered with the renderer's `silence_condition()` (closed mouth). Idle frames are
rendered once per avatar and shared by every stream of that avatar and renderer (`IdleFrameCache`).
Speech frames continue the same body position, and a short crossfade blends the face between the
idle render and the speech render of the same avatar frame, into and out of speech.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import soxr

from workbench.avatars.model import Avatar
from workbench.config import FPS, REALTIME_SAMPLE_RATE, SAMPLE_RATE
from workbench.lipsync.base import Renderer
from workbench.lipsync.compositor import blend_faces
from workbench.lipsync.loop import RenderLoop
from workbench.timing import FrameTiming, write_latency_log

log = logging.getLogger(__name__)

FRAME_SECONDS = 1.0 / FPS
SAMPLES_24K_PER_FRAME = REALTIME_SAMPLE_RATE // FPS  # 960: the audio played while one frame shows
SAMPLES_16K_PER_FRAME = SAMPLE_RATE // FPS  # 640: the audio one frame is conditioned on
MIN_INPUT_RATE, MAX_INPUT_RATE = 8_000, 96_000
# Speech frames rendered ahead of the playhead, at most: 1.5 s at 25 fps, several batches of slack for a
# renderer that is briefly slow, and a few hundred MB at most for a 1080p avatar.
DEFAULT_RENDER_AHEAD_FRAMES = 36

FrameKind = Literal["idle", "speech", "hold"]


class StreamError(ValueError):
    """Bad input to a lip-sync stream (wrong shape, sample rate, non-finite audio) or use after close."""


@dataclass
class StreamFrame:
    """One tick of the clock: the picture to show and the audio to play while it shows."""

    index: int  # output frame number since the stream started
    image: np.ndarray  # (H, W, 3) uint8 BGR
    audio: np.ndarray  # (960,) int16 at 24 kHz
    timing: FrameTiming
    kind: FrameKind  # idle loop, lip-synced speech, or a hold (late frame: last picture, silence)
    body_index: int  # avatar frame the picture is built on
    item_id: str | None = None  # the reply item this audio belongs to (speech only)
    utterance_frame: int | None = None  # j: this is frame j of the utterance (speech only)
    audio_offset: int | None = None  # first 24 kHz sample of `audio` within the utterance (speech only)

    def __iter__(self) -> Iterator[Any]:
        # Lets `image, audio, timing = stream.next_frame()` read naturally.
        return iter((self.image, self.audio, self.timing))


@dataclass
class Interruption:
    """What a barge-in stopped: the item that was playing and how much of it the user heard."""

    item_id: str | None
    audio_end_ms: int  # audio of `item_id` actually handed to playback, in ms
    dropped_frames: int  # rendered or pending speech frames thrown away
    dropped_items: list[str] = field(default_factory=list)  # queued items that never started playing


@dataclass
class UtteranceStats:
    item_id: str | None
    first_audio_at: float  # perf_counter of the first pushed sample
    frames: int = 0  # frames in the utterance (known once it ends)
    first_frame_rendered_at: float | None = None
    first_frame_shown_at: float | None = None
    holds: int = 0  # ticks the clock had to repeat a picture because the next frame was late
    interrupted: bool = False

    @property
    def first_frame_ms(self) -> float | None:
        """First lip-synced frame handed out, after the first audio delta arrived."""
        if self.first_frame_shown_at is None:
            return None
        return 1000.0 * (self.first_frame_shown_at - self.first_audio_at)

    @property
    def first_render_ms(self) -> float | None:
        if self.first_frame_rendered_at is None:
            return None
        return 1000.0 * (self.first_frame_rendered_at - self.first_audio_at)


class IdleFrameCache:
    """Closed-mouth renders of an avatar's frames, stored as the changed region only.

    A renderer only changes pixels inside the face box (the compositor guarantees it), so the cache
    keeps that region and pastes it onto the avatar frame on demand: a few hundred KB per frame
    instead of a full frame. One cache is shared by every stream of the same avatar and renderer.
    """

    _registry: weakref.WeakValueDictionary[tuple, IdleFrameCache] = weakref.WeakValueDictionary()
    _registry_lock = threading.Lock()

    def __init__(self, avatar: Avatar):
        self.avatar = avatar
        self._regions: dict[int, tuple[int, int, int, int, np.ndarray]] = {}
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, renderer: Renderer, avatar: Avatar) -> IdleFrameCache:
        key = (id(renderer), avatar.avatar_id, id(avatar.frames))
        with cls._registry_lock:
            cache = cls._registry.get(key)
            if cache is None:
                cache = cls(avatar)
                cls._registry[key] = cache
            return cache

    def __contains__(self, i: int) -> bool:
        return i in self._regions

    def __len__(self) -> int:
        return len(self._regions)

    def missing(self, indices: list[int]) -> list[int]:
        with self._lock:
            seen: set[int] = set()
            out = []
            for i in indices:
                if i not in self._regions and i not in seen:
                    seen.add(i)
                    out.append(i)
            return out

    def put(self, i: int, rendered: np.ndarray) -> None:
        base = self.avatar.frames[i]
        # Which rows and columns changed, by OpenCV's reductions (numpy's `!=` and `any` over a full frame cost
        # more than rendering the frame did).
        diff = cv2.absdiff(rendered, base).reshape(base.shape[0], -1)
        rows = cv2.reduce(diff, 1, cv2.REDUCE_MAX).ravel() > 0
        cols = cv2.reduce(diff, 0, cv2.REDUCE_MAX).reshape(base.shape[1], -1).max(axis=1) > 0
        if not rows.any():
            region = (0, 0, 0, 0, np.zeros((0, 0, 3), np.uint8))
        else:
            y1, y2 = int(np.argmax(rows)), int(len(rows) - np.argmax(rows[::-1]))
            x1, x2 = int(np.argmax(cols)), int(len(cols) - np.argmax(cols[::-1]))
            region = (y1, y2, x1, x2, rendered[y1:y2, x1:x2].copy())
        with self._lock:
            self._regions[i] = region

    def image(self, i: int) -> np.ndarray | None:
        """The full closed-mouth frame i, or None while it is not rendered yet."""
        r = self._regions.get(i)
        if r is None:
            return None
        y1, y2, x1, x2, region = r
        out = self.avatar.frames[i].copy()
        if region.size:
            out[y1:y2, x1:x2] = region
        return out


class _Utterance:
    """One reply item's audio on its way through resampling, features, rendering and playback."""

    def __init__(self, item_id: str | None, loop: RenderLoop, now: float):
        self.item_id = item_id
        self.loop = loop  # this reply's audio → conditions → frames
        self.start_pos = loop.start  # body position of frame 0
        self.lookahead = loop.lookahead_frames
        self.audio24 = np.zeros(SAMPLES_24K_PER_FRAME * 64, np.int16)
        self.n24 = 0  # real (unpadded) 24 kHz samples received
        self.arrivals: list[tuple[int, float]] = []  # (cumulative 24 kHz samples, perf_counter)
        self.pending: deque[np.ndarray] = deque()  # float32 24 kHz chunks not yet fed to the frontend
        self.to16 = soxr.ResampleStream(REALTIME_SAMPLE_RATE, SAMPLE_RATE, 1, dtype="float32")
        self.fed16 = 0
        self.ended = False
        self.flushed = False
        self.n_total: int | None = None  # frames in the utterance, known once it ends
        self.conditions: deque[tuple[int, Any, float]] = deque()  # (j, condition, features_ready)
        self.n_conditions = 0
        self.frames: dict[int, tuple[np.ndarray, FrameTiming]] = {}
        self.next_show = 0
        self.stats = UtteranceStats(item_id=item_id, first_audio_at=now)

    def append(self, pcm24: np.ndarray, now: float) -> None:
        need = self.n24 + len(pcm24)
        if need > len(self.audio24):
            grown = np.zeros(max(need, 2 * len(self.audio24)), np.int16)
            grown[: self.n24] = self.audio24[: self.n24]
            self.audio24 = grown
        self.audio24[self.n24 : need] = pcm24
        self.n24 = need
        self.arrivals.append((need, now))
        self.pending.append(pcm24.astype(np.float32) / 32768.0)

    def audio_in_time(self, j: int) -> float:
        """When the last 24 kHz sample frame j (with its look-ahead) needs arrived."""
        need = (j + 1 + self.lookahead) * SAMPLES_24K_PER_FRAME
        if self.ended:
            need = min(need, self.n24)
        for cum, t in self.arrivals:
            if cum >= need:
                return t
        return self.arrivals[-1][1]

    def chunk(self, j: int) -> np.ndarray:
        a = j * SAMPLES_24K_PER_FRAME
        out = np.zeros(SAMPLES_24K_PER_FRAME, np.int16)
        real = self.audio24[a : min(a + SAMPLES_24K_PER_FRAME, self.n24)]
        out[: len(real)] = real
        return out


def _to_mono_float(pcm: np.ndarray | bytes) -> np.ndarray:
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % 2:
            raise StreamError("PCM16 bytes must have an even length")
        pcm = np.frombuffer(pcm, dtype="<i2")
    a = np.asarray(pcm)
    if a.ndim == 2:
        # (N, C) or (C, N) with a small channel count: average the channels.
        a = a.mean(axis=1 if a.shape[1] <= 8 and a.shape[0] > a.shape[1] else 0)
    if a.ndim != 1:
        raise StreamError(f"audio must be mono 1-D (or 2-D channels), got shape {np.shape(pcm)}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if not np.issubdtype(a.dtype, np.floating):
        raise StreamError(f"audio must be int16 PCM or float in [-1, 1], got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise StreamError("audio contains NaN or infinite samples")
    return np.clip(a, -1.0, 1.0)


class LipSyncStream:
    """Audio deltas → lip-synced frames on a fixed 25 fps clock, with an idle loop between replies.

    Thread model: `push_audio`, `end_utterance`, `interrupt` and `next_frame` may be called from any
    one thread (usually the event loop); a worker thread does the heavy work. Renderer calls can be
    serialised across streams with a shared `render_lock`, or handed to a shared `batcher`
    (`workbench.lipsync.batcher.RenderBatcher`) that batches the due frames of every stream in one model call.
    """

    def __init__(
        self,
        renderer: Renderer,
        avatar: Avatar,
        *,
        batch_size: int = 8,
        crossfade_frames: int = 3,
        tail_frames: int = 3,
        lead_frames: int | None = None,
        idle_prefetch: int = 8,
        max_render_ahead: int | None = None,
        render_lock: AbstractContextManager[Any] | None = None,
        batcher: Any = None,
        clock: Callable[[], float] = time.perf_counter,
        max_log_frames: int = 25 * 60 * 60,
        name: str = "stream",
    ):
        if len(avatar) == 0:
            raise StreamError("the avatar has no frames")
        self.renderer = renderer
        self.avatar = avatar
        self.batch_size = max(1, int(batch_size))
        self.crossfade_frames = max(0, int(crossfade_frames))
        self.tail_frames = max(0, int(tail_frames))
        self._fixed_lead = lead_frames
        self._lead_ema: float | None = None  # seconds from first audio to first frame ready
        self.idle_prefetch = max(1, int(idle_prefetch))
        # Rendered speech frames are full pictures (MBs each); without a bound a reply that arrives faster
        # than real time (the Realtime API sends audio at several times real time) would be rendered in
        # full and kept until the clock shows it, so memory would grow with the length of the reply.
        # Audio and features are small and queue freely; frames stop this many ahead of the playhead.
        self.max_render_ahead = max(
            self.batch_size, int(max_render_ahead if max_render_ahead is not None else DEFAULT_RENDER_AHEAD_FRAMES)
        )
        self.render_lock = render_lock or threading.Lock()
        self.batcher = batcher  # a RenderBatcher: renders go to its worker instead of under render_lock
        self.clock = clock
        self.name = name
        self.idle_cache = IdleFrameCache.shared(renderer, avatar)
        self._silence = renderer.silence_condition()
        self._cv = threading.Condition()
        self._utterances: deque[_Utterance] = deque()
        self._pos = 0  # body position of the next frame shown
        self._tick = 0  # frames handed out so far
        self._last_image: np.ndarray | None = None
        self._last_body = 0
        self._last_kind: FrameKind = "idle"
        self._fade_out: tuple[np.ndarray, int, int] | None = None  # (image, body index, frames left)
        self._closed = False
        self._error: BaseException | None = None
        self._resamplers_in: dict[tuple[str | None, int], soxr.ResampleStream] = {}
        self._cut_items: deque[str] = deque(maxlen=64)  # interrupted items: their late deltas are ignored
        self._idle_wanted: list[int] = []  # avatar frames `warm_idle` asked for beyond the prefetch window
        self.max_lateness = 0.0  # worst delay of a tick behind its scheduled time, seconds
        self.timings: deque[FrameTiming] = deque(maxlen=max_log_frames)
        self.utterance_stats: list[UtteranceStats] = []
        self.counters = {"idle": 0, "speech": 0, "hold": 0, "stall": 0, "idle_uncached": 0, "interruptions": 0}
        self._worker = threading.Thread(target=self._work, name=f"lipsync-{name}", daemon=True)
        self._worker.start()

    # ---- input side -------------------------------------------------------------------------
    @property
    def lead_frames(self) -> int:
        """Idle frames the body runs on before speech takes over, from the measured first-frame latency.

        Rounded to the nearest frame, not up: if the first frame is a little late the clock holds the
        idle picture for a tick (a freeze nobody notices) instead of adding a frame of latency to every reply.
        """
        if self._fixed_lead is not None:
            return max(0, int(self._fixed_lead))
        if self._lead_ema is None:
            return 1
        return int(min(12, max(0, round(self._lead_ema / FRAME_SECONDS))))

    def push_audio(
        self, pcm: np.ndarray | bytes, sample_rate: int = REALTIME_SAMPLE_RATE, item_id: str | None = None
    ) -> None:
        """Add reply audio. A new `item_id` ends the current utterance and starts the next one.

        Audio of an item cut by `interrupt` is ignored: the server may still have deltas in flight.
        """
        if not (MIN_INPUT_RATE <= int(sample_rate) <= MAX_INPUT_RATE):
            raise StreamError(f"sample rate {sample_rate} Hz is outside {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz")
        audio = _to_mono_float(pcm)
        if int(sample_rate) != REALTIME_SAMPLE_RATE:
            audio = self._resample_in(audio, int(sample_rate), item_id)
        if audio.size == 0:
            return
        # x / 32768 on the way in and round(x * 32768) on the way out give int16 input back bit-exact.
        pcm24 = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
        now = self.clock()
        with self._cv:
            self._check_open()
            if item_id is not None and item_id in self._cut_items:
                return  # a delta still in flight for a reply the user already interrupted
            u = self._open_utterance()
            if u is None or u.item_id != item_id:
                if u is not None:
                    self._end(u)
                u = self._begin(item_id, now)
            u.append(pcm24, now)
            self._cv.notify_all()

    def end_utterance(self, item_id: str | None = None) -> None:
        """The reply's audio is complete: flush the frontend so its last frames can render."""
        with self._cv:
            u = self._open_utterance()
            if u is not None and (item_id is None or u.item_id == item_id):
                self._end(u)
                self._cv.notify_all()

    def interrupt(self) -> Interruption:
        """Barge-in: stop speech at once, drop every queued sample, feature and frame.

        Returns the item that was playing and how many ms of it were handed to playback, the value
        `conversation.item.truncate` needs.
        """
        with self._cv:
            self.counters["interruptions"] += 1
            item_id, end_ms, dropped, dropped_items = None, 0, 0, []
            for k, u in enumerate(self._utterances):
                dropped += len(u.frames) + len(u.conditions)
                u.stats.interrupted = True
                if k == 0:
                    item_id = u.item_id
                    end_ms = int(1000 * min(u.next_show * SAMPLES_24K_PER_FRAME, u.n24) / REALTIME_SAMPLE_RATE)
                elif u.item_id is not None:
                    dropped_items.append(u.item_id)
                if u.item_id is not None:
                    self._cut_items.append(u.item_id)
            self._utterances.clear()
            self._resamplers_in.clear()
            if self._last_kind == "speech" and self._last_image is not None and self.crossfade_frames:
                self._fade_out = (self._last_image, self._last_body, self.crossfade_frames)
            self._cv.notify_all()
        return Interruption(item_id=item_id, audio_end_ms=end_ms, dropped_frames=dropped, dropped_items=dropped_items)

    @property
    def speaking(self) -> bool:
        """True while reply audio is queued or playing."""
        with self._cv:
            return bool(self._utterances)

    @property
    def current_item_id(self) -> str | None:
        with self._cv:
            return self._utterances[0].item_id if self._utterances else None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._utterances.clear()
            self._cv.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout=10)

    # ---- clock side -------------------------------------------------------------------------
    def next_frame(self, t: float | None = None) -> StreamFrame:
        """The frame for the next tick and the 40 ms of 24 kHz audio to play while it shows.

        `t` is the tick's scheduled time on `clock`, if the caller keeps a schedule; how late ticks
        run behind it is kept in `max_lateness`.
        """
        if t is not None:
            self.max_lateness = max(self.max_lateness, self.clock() - t)
        with self._cv:
            self._check_open()
            frame = self._next_locked()
            self._tick += 1
            self.timings.append(frame.timing)
            self._cv.notify_all()  # the worker may prefetch idle frames for the new position
        return frame

    def _next_locked(self) -> StreamFrame:
        while self._utterances:
            u = self._utterances[0]
            if u.next_show == 0 and self._pos < u.start_pos:
                break  # the idle body runs on until the reserved start position
            j = u.next_show
            if u.ended and u.n_total is not None and j >= u.n_total:
                self._utterances.popleft()  # fully played: hand over to the next one or to idle
                continue
            hit = u.frames.pop(j, None)
            if hit is None:
                self.counters["hold" if j == 0 else "stall"] += 1
                u.stats.holds += 1
                return self._hold()
            image, timing = hit
            image = self._crossfade_speech(u, j, image)
            timing.frame = self._tick
            timing.composited = self.clock()
            audio = u.chunk(j)
            if j == 0:
                u.stats.first_frame_shown_at = timing.composited
                ready = u.stats.first_frame_rendered_at or timing.composited
                self._update_lead(ready - u.stats.first_audio_at)
            u.next_show += 1
            body = self.avatar.loop_index(u.start_pos + j)
            self._pos = u.start_pos + j + 1
            self._remember(image, body, "speech")
            self._fade_out = None
            self.counters["speech"] += 1
            return StreamFrame(
                self._tick, image, audio, timing, "speech", body, u.item_id, j, j * SAMPLES_24K_PER_FRAME
            )
        return self._idle()

    def _idle(self) -> StreamFrame:
        body = self.avatar.loop_index(self._pos)
        image = self.idle_cache.image(body)
        if image is None:
            self.counters["idle_uncached"] += 1
            image = self.avatar.frames[body].copy()
        if self._fade_out is not None:
            src, src_body, left = self._fade_out
            alpha = left / (self.crossfade_frames + 1)
            image = blend_faces(self.avatar, image, body, src, src_body, alpha)
            self._fade_out = (src, src_body, left - 1) if left > 1 else None
        self._pos += 1
        self._remember(image, body, "idle")
        self.counters["idle"] += 1
        timing = FrameTiming(frame=self._tick, composited=self.clock(), idle=True)
        return StreamFrame(self._tick, image, np.zeros(SAMPLES_24K_PER_FRAME, np.int16), timing, "idle", body)

    def _hold(self) -> StreamFrame:
        if self._last_image is None:
            self._remember(self.avatar.frames[self._last_body].copy(), self._last_body, "idle")
        timing = FrameTiming(frame=self._tick, composited=self.clock(), idle=True)
        return StreamFrame(
            self._tick, self._last_image, np.zeros(SAMPLES_24K_PER_FRAME, np.int16), timing, "hold", self._last_body
        )

    def _remember(self, image: np.ndarray, body: int, kind: FrameKind) -> None:
        self._last_image, self._last_body, self._last_kind = image, body, kind

    def _crossfade_speech(self, u: _Utterance, j: int, image: np.ndarray) -> np.ndarray:
        """Blend the face toward the idle render of the same avatar frame at both ends of speech."""
        c = self.crossfade_frames
        if not c:
            return image
        n = u.n_total if u.ended else None
        if j < c:
            w_idle = (c - j) / (c + 1)
        elif n is not None and j >= n - c:
            w_idle = (j - (n - c) + 1) / (c + 1)
        else:
            return image
        body = self.avatar.loop_index(u.start_pos + j)
        idle = self.idle_cache.image(body)
        if idle is None:
            return image
        return blend_faces(self.avatar, image, body, idle, body, w_idle)

    def _update_lead(self, seconds: float) -> None:
        self._lead_ema = seconds if self._lead_ema is None else 0.7 * self._lead_ema + 0.3 * seconds

    # ---- bookkeeping under the lock ----------------------------------------------------------
    def _resample_in(self, audio: np.ndarray, rate: int, item_id: str | None) -> np.ndarray:
        # One streaming resampler per (item, rate) so chunk edges leave no clicks.
        with self._cv:
            key = (item_id, rate)
            rs = self._resamplers_in.get(key)
            if rs is None:
                self._resamplers_in.clear()
                rs = soxr.ResampleStream(rate, REALTIME_SAMPLE_RATE, 1, dtype="float32")
                self._resamplers_in[key] = rs
        return rs.resample_chunk(audio)

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError("the lip-sync stream is closed")
        if self._error is not None:
            raise StreamError(f"the lip-sync worker failed: {self._error}") from self._error

    def _open_utterance(self) -> _Utterance | None:
        if self._utterances and not self._utterances[-1].ended:
            return self._utterances[-1]
        return None

    def _begin(self, item_id: str | None, now: float) -> _Utterance:
        start = self._pos + self.lead_frames
        if self._utterances:
            last = self._utterances[-1]
            start = max(start, last.start_pos + (last.n_total or 0))
        lock = self.render_lock if self.batcher is None else self.batcher.frontend_lock
        u = _Utterance(item_id, RenderLoop(self.renderer, self.avatar, start=start, lock=lock), now)
        self._utterances.append(u)
        self.utterance_stats.append(u.stats)
        return u

    def _end(self, u: _Utterance) -> None:
        if u.ended:
            return
        u.ended = True
        u.n_total = math.ceil(u.n24 / SAMPLES_24K_PER_FRAME) + self.tail_frames
        u.stats.frames = u.n_total
        u.arrivals.append((u.n_total * SAMPLES_24K_PER_FRAME, self.clock()))

    # ---- worker ---------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                with self._cv:
                    job = self._next_job()
                    while job is None and not self._closed:
                        self._cv.wait(timeout=0.5)
                        job = self._next_job()
                    if self._closed:
                        return
                job()
        except BaseException as exc:  # the clock side reports it on its next call
            log.exception("lip-sync worker %s failed", self.name)
            with self._cv:
                self._error = exc

    def _next_job(self) -> Callable[[], None] | None:
        # Speech first, oldest utterance first: features, then frames; idle prefetch only when free.
        # Frames rendered and not yet shown, over every queued utterance: the bound on rendering ahead.
        room = self.max_render_ahead - sum(len(u.frames) for u in self._utterances)
        for u in self._utterances:
            if u.conditions and room > 0:
                # Batches grow with the frames already rendered ahead of the playhead (1, 2, 4, …):
                # the first frame is not kept waiting for a full batch, later ones get throughput.
                ahead = len(u.frames)
                n = min(self.batch_size, len(u.conditions), max(1, ahead), room)
                take = [u.conditions.popleft() for _ in range(n)]
                # The conditions still pending after these: a renderer that plans ahead (the CPU mouth bank)
                # solves over them and commits only `take`, so one-frame calls keep runs as a file does.
                look = [(j, c) for j, c, _ in itertools.islice(u.conditions, self.renderer.lookahead_frames)]
                return lambda u=u, take=take, look=look: self._render_speech(u, take, look)
            if u.pending or (u.ended and not u.flushed):
                chunks = list(u.pending)
                u.pending.clear()
                flush = u.ended and not u.flushed
                if flush:
                    u.flushed = True
                return lambda u=u, chunks=chunks, flush=flush: self._features(u, chunks, flush)
        upcoming = [self.avatar.loop_index(self._pos + k) for k in range(self.lead_frames + 1 + self.idle_prefetch)]
        for u in self._utterances:  # crossfades need the idle render of the first and last speech frames
            upcoming += [self.avatar.loop_index(u.start_pos + k) for k in range(self.crossfade_frames)]
        # Small idle batches, so speech arriving meanwhile waits at most for two idle frames.
        missing = self.idle_cache.missing(upcoming + self._idle_wanted)[: min(2, self.batch_size)]
        if missing:
            return lambda missing=missing: self._render_idle(missing)
        return None

    def _features(self, u: _Utterance, chunks: list[np.ndarray], flush: bool) -> None:
        conds: list[Any] = []
        for c in chunks:
            a16 = u.to16.resample_chunk(c)
            u.fed16 += len(a16)
            conds += u.loop.conditions(a16)
        if flush:
            tail = u.to16.resample_chunk(np.zeros(0, np.float32), last=True)
            target = (u.n_total or 0) * SAMPLES_16K_PER_FRAME
            room = max(0, target - u.fed16)
            tail = tail[:room]
            pad = np.zeros(max(0, room - len(tail)), np.float32)
            conds += u.loop.conditions(np.concatenate([tail, pad]), flush=True)
            u.fed16 += room
        t = self.clock()
        with self._cv:
            if self._is_dropped(u):
                return
            for cond in conds:
                if u.n_total is not None and u.n_conditions >= u.n_total:
                    break  # a frontend that pads past the audio: keep frames and audio the same length
                u.conditions.append((u.n_conditions, cond, t))
                u.n_conditions += 1
            if flush and u.n_total is not None and u.n_conditions < u.n_total:
                log.warning(
                    "frontend gave %d conditions for %d frames; closing the mouth for the rest",
                    u.n_conditions,
                    u.n_total,
                )
                while u.n_conditions < u.n_total:
                    u.conditions.append((u.n_conditions, self._silence, t))
                    u.n_conditions += 1
            self._cv.notify_all()

    def _due(self, pos: int) -> float:
        """perf_counter time body position `pos` is shown if the clock keeps time (the batcher's deadline)."""
        return time.perf_counter() + max(0, pos - self._pos) * FRAME_SECONDS

    def _render_speech(
        self, u: _Utterance, take: list[tuple[int, Any, float]], look: list[tuple[int, Any]] | None = None
    ) -> None:
        js, conds = [j for j, _, _ in take], [c for _, c, _ in take]
        if self.batcher is None:
            images = u.loop.render(js, conds, look or ())
        else:
            images = self.batcher.render(
                self.avatar, [u.loop.body(j) for j in js], conds, deadline=self._due(u.start_pos + js[0]), session=self
            )
        t = self.clock()
        with self._cv:
            if self._is_dropped(u):
                return
            for (j, _, ready), image in zip(take, images, strict=True):
                timing = FrameTiming(frame=-1, audio_in=u.audio_in_time(j), features_ready=ready, rendered=t)
                u.frames[j] = (image, timing)
            if u.stats.first_frame_rendered_at is None:
                u.stats.first_frame_rendered_at = t
            self._cv.notify_all()

    def _render_idle(self, indices: list[int]) -> None:
        conds = [self._silence] * len(indices)
        if self.batcher is not None:
            # Idle frames are due after the lead and the frames already cached: behind any speech frame.
            due = self._due(self._pos + self.lead_frames + 1)
            images = self.batcher.render(self.avatar, indices, conds, deadline=due, session=self)
        else:
            with self.render_lock:
                images = self.renderer.render(self.avatar, indices, conds)
        for i, image in zip(indices, images, strict=True):
            self.idle_cache.put(i, image)

    def _is_dropped(self, u: _Utterance) -> bool:
        return self._closed or not any(x is u for x in self._utterances)

    # ---- reporting ------------------------------------------------------------------------------
    def warm_idle(self, n: int | None = None, timeout: float = 30.0) -> int:
        """Block until the first `n` idle positions (default: lead + prefetch) are rendered."""
        n = n or (self.lead_frames + self.idle_prefetch)
        want = sorted({self.avatar.loop_index(self._pos + k) for k in range(n)})
        with self._cv:
            self._idle_wanted = want
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        while self.idle_cache.missing(want) and time.monotonic() < deadline:
            with self._cv:
                self._check_open()
            time.sleep(0.005)
        with self._cv:
            self._idle_wanted = []
        return len(want) - len(self.idle_cache.missing(want))

    def stats(self) -> dict[str, Any]:
        firsts = [s.first_frame_ms for s in self.utterance_stats if s.first_frame_ms is not None]
        return {
            "frames": self._tick,
            **self.counters,
            "utterances": len(self.utterance_stats),
            "first_frame_ms": firsts,
            "lead_frames": self.lead_frames,
            "idle_cached": len(self.idle_cache),
            "max_lateness_ms": round(1000 * self.max_lateness, 1),
        }

    def write_latency_log(self, path: Path, meta: dict | None = None) -> None:
        """Per-frame stage timestamps as JSON lines (`workbench.timing` format) for the evaluation."""
        with self._cv:
            timings = list(self.timings)
        info = {"source": "streaming", "fps": FPS, "renderer": self.renderer.describe(), **self.stats(), **(meta or {})}
        write_latency_log(Path(path), timings, meta=info)
