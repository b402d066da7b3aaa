"""A LiveKit Agents `VideoGenerator` over the engine's `LipSyncStream` (any renderer: CPU, MuseTalk, TAESD).

LiveKit's `AvatarRunner` feeds it the agent's speech (`push_audio`: `rtc.AudioFrame`s, then `AudioSegmentEnd`
when a reply's audio is complete), calls `clear_buffer` on barge-in (the agent's `lk.clear_buffer` RPC), and
forwards what it yields through `rtc.AVSynchronizer` into the room. This generator yields, on a 25 fps clock,
one `rtc.VideoFrame` per tick and, while a reply plays, the 40 ms of 24 kHz audio that belongs to that picture
(the stream renders frame j of a reply from exactly the audio handed out beside it, so sound and mouth stay
aligned by construction). After the last frame of a reply has been shown it yields `AudioSegmentEnd`, and the
runner answers the agent with `lk.playback_finished`.

Needs the optional extra `agents` (`livekit-agents`, `livekit`).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import cv2
import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from workbench.config import REALTIME_SAMPLE_RATE
from workbench.integrations.streams import FRAME_SECONDS, frame_clock, shown
from workbench.lipsync.stream import SAMPLES_24K_PER_FRAME, FrameKind, LipSyncStream


@dataclass
class Tick:
    """What one tick of the generator's clock sent (kept for tests, logs and the latency readout)."""

    index: int  # video frame number since the generator started
    timestamp: float  # media time of the picture, index / FPS seconds
    kind: FrameKind
    segment: str | None  # the reply segment whose audio went out with the picture, if any
    audio_samples: int  # 24 kHz samples sent with this picture (0 or 960)


class LipSyncVideoGenerator(VideoGenerator):
    """Audio frames in, lip-synced video (and the matching audio) out at 25 fps, for `AvatarRunner`."""

    def __init__(self, stream: LipSyncStream, *, max_height: int | None = None, keep_ticks: int = 25 * 60):
        self.stream = stream
        h, w = stream.avatar.frame_size
        # A 1080p avatar is sent smaller: the room's encoder and every subscriber pay for each pixel.
        scale = min(1.0, max_height / h) if max_height else 1.0
        self.frame_size = (max(2, int(h * scale) // 2 * 2), max(2, int(w * scale) // 2 * 2))  # (H, W), even
        self.ticks: deque[Tick] = deque(maxlen=keep_ticks)
        self.cleared = 0  # barge-ins handled
        self._ids = itertools.count(1)
        self._open: str | None = None  # the segment receiving audio
        self._ended: deque[str | None] = deque()  # segments complete whose AudioSegmentEnd is not yet out
        self._playing: str | None = None  # the segment whose audio is going out
        self._closed = False

    # ---- the runner's input side ------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            if self._open is not None:
                self.stream.end_utterance(self._open)
            self._ended.append(self._open)  # None: an empty segment, answered at the next tick
            self._open = None
            return
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:  # the stream is mono: mix down
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if self._open is None:
            self._open = f"segment-{next(self._ids)}"
        self.stream.push_audio(pcm, frame.sample_rate, item_id=self._open)

    def clear_buffer(self) -> None:
        """Barge-in: speech stops at the next tick; the runner itself tells the agent how much was played."""
        self.stream.interrupt()
        self._open = self._playing = None
        self._ended.clear()
        self.cleared += 1

    # ---- the runner's output side -----------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def aclose(self) -> None:
        self._closed = True

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        async for k in frame_clock(lambda: not self._closed):
            f = self.stream.next_frame()
            yield to_video_frame(f.image, self.frame_size)
            # Audio goes out with speech pictures, and as silence with the pictures held while the next frame of
            # a reply is late, so the reply's sound never runs ahead of its mouth.
            speaking = f.kind == "speech" or (f.kind == "hold" and self._playing is not None)
            if f.kind == "speech":
                self._playing = f.item_id
            self.ticks.append(
                Tick(k, k * FRAME_SECONDS, f.kind, self._playing if speaking else None, len(f.audio) if speaking else 0)
            )
            if speaking:
                yield to_audio_frame(f.audio)
            # A reply is done once the stream has moved past it (its last frame was shown on an earlier tick).
            while self._ended and shown(self.stream, self._ended[0]):
                done = self._ended.popleft()
                if done == self._playing:
                    self._playing = None
                yield AudioSegmentEnd()


def to_video_frame(image_bgr: np.ndarray, size: tuple[int, int] | None = None) -> rtc.VideoFrame:
    h, w = size or image_bgr.shape[:2]
    if (h, w) != image_bgr.shape[:2]:
        image_bgr = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA)
    return rtc.VideoFrame(w, h, rtc.VideoBufferType.BGRA, cv2.cvtColor(image_bgr, cv2.COLOR_BGR2BGRA).tobytes())


def to_audio_frame(pcm24: np.ndarray) -> rtc.AudioFrame:
    pcm = np.ascontiguousarray(pcm24, dtype=np.int16)
    if len(pcm) != SAMPLES_24K_PER_FRAME:
        raise ValueError(f"a tick carries {SAMPLES_24K_PER_FRAME} samples, not {len(pcm)}")
    return rtc.AudioFrame(pcm.tobytes(), REALTIME_SAMPLE_RATE, 1, len(pcm))


def video_frame_to_bgr(frame: rtc.VideoFrame) -> np.ndarray:
    """The picture of a BGRA `rtc.VideoFrame` as HxWx3 BGR (for tests and for reading frames back)."""
    bgra = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 4)
    return np.ascontiguousarray(bgra[:, :, :3])
