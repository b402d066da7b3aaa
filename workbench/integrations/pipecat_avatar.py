"""A Pipecat video service: TTS audio frames in, the avatar's lip-synced image frames and that audio out.

Place it after TTS (or after a speech-to-speech service) and before the output transport:

    pipeline = Pipeline([transport.input(), stt, llm, tts, avatar, transport.output()])

Every reply audio frame moving downstream (`TTSAudioRawFrame`, or any `OutputAudioRawFrame`) goes into a
`LipSyncStream` instead of on to the transport. On a 25 fps clock the service then pushes one
`OutputImageRawFrame` per tick and, while a reply plays, the 40 ms of audio that belongs to that picture, so the
transport receives picture and sound already paired. The pictures are marked `sync_with_audio`: the output
transport shows each one only after the audio before it has been sent, so network pacing cannot pull them apart.
`TTSStoppedFrame` is held back until the reply's last picture went out (the transport reads it as "the bot
stopped speaking"). An `InterruptionFrame` (the user barged in) stops speech at the next tick and drops every
queued sample and frame; the idle loop goes on. An `EndFrame` waits for the reply in progress to be shown.

Transport settings it needs: `video_out_enabled=True`, `video_out_is_live=False` (pictures are shown as the audio
reaches them), `video_out_width/height=service.frame_size[::-1]`, `video_out_framerate=25`,
`audio_out_sample_rate=24000`. `transport_params()` returns them.

Needs the optional extra `agents` (`pipecat-ai`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any

import cv2
import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from workbench.config import FPS, REALTIME_SAMPLE_RATE
from workbench.integrations.streams import frame_clock, shown
from workbench.lipsync.stream import LipSyncStream

END_DRAIN_S = 30.0  # longest a graceful end waits for the reply in progress to be shown


class AvatarAudioFrame(TTSAudioRawFrame):
    """The 40 ms of reply audio that goes out with one avatar picture (never fed back into the stream)."""


class LipSyncVideoService(FrameProcessor):
    """TTS audio in, avatar pictures paired with their audio out, at 25 fps; interruption-aware."""

    def __init__(self, stream: LipSyncStream, *, max_height: int | None = 720, **kwargs: Any):
        super().__init__(**kwargs)
        self.stream = stream
        h, w = stream.avatar.frame_size
        scale = min(1.0, max_height / h) if max_height else 1.0
        self.frame_size = (max(2, int(h * scale) // 2 * 2), max(2, int(w * scale) // 2 * 2))  # (H, W), even
        self.frames_out = 0  # pictures pushed
        self.interruptions = 0
        self._ids = itertools.count(1)
        self._open: str | None = None  # the reply receiving audio
        self._held: deque[tuple[str | None, TTSStoppedFrame]] = deque()  # stops waiting for their last picture
        self._clock: asyncio.Task | None = None
        self._running = False

    def transport_params(self, **overrides: Any) -> dict[str, Any]:
        """The `TransportParams` fields this service's output needs (pass them with your own)."""
        h, w = self.frame_size
        return {
            "audio_out_enabled": True,
            "audio_out_sample_rate": REALTIME_SAMPLE_RATE,
            "video_out_enabled": True,
            "video_out_is_live": False,
            "video_out_width": w,
            "video_out_height": h,
            "video_out_framerate": FPS,
            **overrides,
        }

    # ---- frames in ---------------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, OutputAudioRawFrame) and not isinstance(frame, AvatarAudioFrame):
            self._take_audio(frame)
            return  # it goes out later, beside its pictures
        if isinstance(frame, TTSStartedFrame):
            self._end_open()
        elif isinstance(frame, TTSStoppedFrame):
            self._held.append((self._end_open(), frame))
            return
        elif isinstance(frame, InterruptionFrame):
            self.stream.interrupt()
            self._open = None
            self._held.clear()
            self.interruptions += 1
        elif isinstance(frame, EndFrame):
            # A graceful end: the reply in progress (a goodbye) plays out first, for at most END_DRAIN_S.
            self._end_open()
            await self._drain()
            await self._stop()
        elif isinstance(frame, CancelFrame):
            await self._stop()
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._running = True
            self._clock = self.create_task(self._run_clock())

    def _take_audio(self, frame: OutputAudioRawFrame) -> None:
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if self._open is None:
            context = getattr(frame, "context_id", None)
            self._open = f"{context or 'reply'}-{next(self._ids)}"
        self.stream.push_audio(pcm, frame.sample_rate, item_id=self._open)

    def _end_open(self) -> str | None:
        reply, self._open = self._open, None
        if reply is not None:
            self.stream.end_utterance(reply)
        return reply

    # ---- frames out --------------------------------------------------------------------------------
    async def _run_clock(self) -> None:
        h, w = self.frame_size
        async for _ in frame_clock(lambda: self._running):
            f = self.stream.next_frame()
            rgb = cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB)
            if rgb.shape[:2] != (h, w):
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            picture = OutputImageRawFrame(image=rgb.tobytes(), size=(w, h), format="RGB")
            picture.sync_with_audio = True
            await self.push_frame(picture)
            self.frames_out += 1
            if f.kind == "speech" or (f.kind == "hold" and self.stream.speaking):
                await self.push_frame(AvatarAudioFrame(f.audio.tobytes(), REALTIME_SAMPLE_RATE, 1))
            # A reply has been shown once the stream has moved past it: now the transport may hear it stopped.
            while self._held and shown(self.stream, self._held[0][0]):
                await self.push_frame(self._held.popleft()[1])

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + END_DRAIN_S
        while self._clock is not None and (self.stream.speaking or self._held) and loop.time() < deadline:
            await asyncio.sleep(0.04)

    async def _stop(self) -> None:
        self._running = False
        if self._clock is not None:
            await self.cancel_task(self._clock)
            self._clock = None

    async def cleanup(self) -> None:
        await self._stop()
        await super().cleanup()
