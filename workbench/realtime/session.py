"""One browser conversation: voice session + lip-sync stream + the WebRTC tracks that carry them.

A single session clock ticks at 25 fps. Each tick takes one `StreamFrame` from the `LipSyncStream`
and hands its picture to the video track (pts = tick × 3600 on the 90 kHz clock) and its 40 ms of
audio, as two 20 ms frames, to the audio track (pts = tick × 960 on the 24 kHz clock). Audio and
video therefore come from one timeline and carry matching RTP timestamps; the browser lines them up
with the sender reports, so the picture shown at time t belongs to the sound played at t.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from workbench.config import FPS, REALTIME_SAMPLE_RATE
from workbench.lipsync.stream import SAMPLES_24K_PER_FRAME, LipSyncStream, StreamError, StreamFrame
from workbench.realtime.voices.contract import VoiceError, VoiceEvent, VoiceSession

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, REALTIME_SAMPLE_RATE)
AUDIO_FRAME = SAMPLES_24K_PER_FRAME // 2  # 20 ms packets, what Opus and the browser expect
MIC_BATCH = REALTIME_SAMPLE_RATE // 10  # send microphone audio upstream in 100 ms pieces
MAX_TEXT_CHARS = 2000


class _DropOldest:
    """A small queue between the clock and a track: when the encoder falls behind, old items go."""

    def __init__(self, maxlen: int):
        self._items: deque[Any] = deque()
        self.maxlen = maxlen
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, item: Any) -> None:
        if len(self._items) >= self.maxlen:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Any:
        while not self._items:
            if self.closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class AvatarVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, max_height: int | None = 720):
        super().__init__()
        self.max_height = max_height
        self.queue = _DropOldest(maxlen=3)
        self.sent = 0
        self.last_pts: int | None = None

    def put(self, frame: StreamFrame) -> None:
        self.queue.put(frame)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        sf: StreamFrame = await self.queue.get()
        image = sf.image
        h, w = image.shape[:2]
        if self.max_height and h > self.max_height:
            scale = self.max_height / h
            # Even sizes: the encoder works in 4:2:0 chroma.
            size = (max(2, int(w * scale) // 2 * 2), max(2, int(self.max_height) // 2 * 2))
            # Bilinear is 6x cheaper than INTER_AREA and alias-free enough down to half size.
            interp = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
            image = cv2.resize(image, size, interpolation=interp)
        elif w % 2 or h % 2:
            image = image[: h // 2 * 2, : w // 2 * 2]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = sf.index * (VIDEO_CLOCK // FPS)
        frame.time_base = VIDEO_TIME_BASE
        sf.timing.sent = time.perf_counter()
        self.sent += 1
        self.last_pts = frame.pts
        return frame

    def stop(self) -> None:
        super().stop()
        self.queue.close()


class AvatarAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue = _DropOldest(maxlen=2 * 12)  # ~0.5 s: enough to ride out a slow encoder call
        self.sent = 0
        self.sent_samples = 0
        self.last_pts: int | None = None

    def put(self, frame: StreamFrame) -> None:
        for half in range(2):
            pcm = frame.audio[half * AUDIO_FRAME : (half + 1) * AUDIO_FRAME]
            self.queue.put((frame.index * SAMPLES_24K_PER_FRAME + half * AUDIO_FRAME, pcm))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts, pcm = await self.queue.get()
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = REALTIME_SAMPLE_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        self.sent += 1
        self.sent_samples += len(pcm)
        self.last_pts = pts
        return frame

    def stop(self) -> None:
        super().stop()
        self.queue.close()


class SessionClock:
    """The one timeline of a session: tick k is due at t0 + k / 25 on `time.perf_counter`."""

    def __init__(self, fps: int = FPS, max_lag: float = 0.25):
        self.period = 1.0 / fps
        self.max_lag = max_lag
        self.t0: float | None = None
        self.rebases = 0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def due(self, k: int) -> float:
        assert self.t0 is not None
        return self.t0 + k * self.period

    async def wait(self, k: int) -> float:
        t = self.due(k)
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > self.max_lag:
            # Far behind (a stalled loop): move the schedule instead of bursting frames out.
            self.t0 = time.perf_counter() - k * self.period
            self.rebases += 1
            t = self.due(k)
        return t


class ChatSession:
    """A conversation: its own avatar stream, voice session and tracks; the renderer is shared."""

    def __init__(
        self,
        session_id: str,
        stream: LipSyncStream,
        voice: VoiceSession,
        *,
        max_video_height: int | None = 720,
        latency_dir: Path | None = None,
        on_closed: Callable[[ChatSession], Any] | None = None,
    ):
        self.id = session_id
        self.stream = stream
        self.voice = voice
        self.video = AvatarVideoTrack(max_video_height)
        self.audio = AvatarAudioTrack()
        self.clock = SessionClock()
        self.latency_dir = latency_dir
        self.on_closed = on_closed
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=500)  # what the browser was told, newest last
        self._event_seq = 0
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self.created = time.time()
        self.connected_at: float | None = None
        self.last_activity = self.created  # time.time() of the last speech, text or reply: the idle limit
        self.mic_samples = 0
        self.barge_ins = 0
        self.truncations: list[tuple[str, int]] = []
        self.ticks = 0

    # ---- wiring ---------------------------------------------------------------------------------
    def attach(self, pc: RTCPeerConnection) -> None:
        """Add the outgoing tracks and listen for the browser's microphone and data channel."""
        self.pc = pc
        pc.addTrack(self.audio)
        pc.addTrack(self.video)

        @pc.on("datachannel")
        def _on_channel(channel: RTCDataChannel) -> None:
            self.channel = channel

            @channel.on("message")
            def _on_message(message: str | bytes) -> None:
                self._spawn(self.handle_client_message(message))

            for e in list(self.events):  # catch the page up on what happened before the channel opened
                self._send_channel(e)

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._spawn(self._read_mic(track))

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            state = pc.connectionState
            self.notify({"type": "rtc", "state": state})
            if state == "connected" and self.connected_at is None:
                self.connected_at = time.time()
            if state in ("failed", "closed"):
                await self.close()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
        return task

    async def start(self) -> None:
        self.clock.start()
        self._spawn(self._run_clock())
        self._spawn(self._pump_voice())
        self._spawn(self._connect_voice())

    async def _connect_voice(self) -> None:
        try:
            await self.voice.connect()
        except VoiceError as exc:
            self.notify({"type": "error", "message": str(exc), "code": "voice_connect_failed"})

    # ---- the clock ----------------------------------------------------------------------------
    async def _run_clock(self) -> None:
        k = 0
        last_stats = time.perf_counter()
        try:
            while not self._closed:
                t = await self.clock.wait(k)
                frame = self.stream.next_frame(t)
                self.video.put(frame)
                self.audio.put(frame)
                if frame.kind == "speech" and frame.utterance_frame == 0:
                    stats = self.stream.utterance_stats[-1] if self.stream.utterance_stats else None
                    if stats is not None and stats.first_frame_ms is not None:
                        self.notify(
                            {
                                "type": "latency",
                                "item_id": frame.item_id,
                                "first_frame_ms": round(stats.first_frame_ms, 1),
                            }
                        )
                k += 1
                self.ticks = k
                if time.perf_counter() - last_stats > 1.0:
                    last_stats = time.perf_counter()
                    self.notify({"type": "stats", **self.stats()}, keep=False)
        except StreamError as exc:
            log.exception("session %s: lip-sync stream failed", self.id)
            self.notify({"type": "error", "message": f"lip-sync failed: {exc}", "code": "render_failed"})
        except asyncio.CancelledError:
            pass

    # ---- voice events → stream and page -----------------------------------------------------
    async def _pump_voice(self) -> None:
        try:
            async for ev in self.voice.iter_events():
                await self._on_voice_event(ev)
        except asyncio.CancelledError:
            pass

    async def _on_voice_event(self, ev: VoiceEvent) -> None:
        if ev.kind in ("audio", "speech_started", "user_transcript", "transcript"):
            self.last_activity = time.time()
        if ev.kind == "audio" and ev.audio is not None:
            try:
                self.stream.push_audio(ev.audio, REALTIME_SAMPLE_RATE, item_id=ev.item_id)
            except StreamError as exc:
                self.notify({"type": "error", "message": str(exc), "code": "bad_audio"})
            return
        if ev.kind == "audio_done":
            self.stream.end_utterance(ev.item_id)
        elif ev.kind == "response_done":
            self.stream.end_utterance()
        elif ev.kind == "speech_started":
            await self.barge_in("speech")
        elif ev.kind == "status" and ev.status in ("reconnecting", "failed", "closed"):
            self.stream.interrupt()  # the avatar goes idle while the voice is away
        if ev.kind == "error":
            self.notify({"type": "error", "message": ev.text, "code": ev.code})
        else:
            self.notify({"type": ev.kind, **ev.public()})

    async def barge_in(self, reason: str) -> None:
        """Stop the avatar at once and tell the voice how much of its reply the user heard."""
        if not self.stream.speaking and not self.voice.response_active:
            return
        cut = self.stream.interrupt()
        self.barge_ins += 1
        if reason != "speech":
            # Server VAD cancels its own response on speech; a typed message or stop button must ask.
            await self.voice.cancel_response()
        if cut.item_id is not None:
            self.truncations.append((cut.item_id, cut.audio_end_ms))
            await self.voice.truncate(cut.item_id, cut.audio_end_ms)
        self.notify(
            {
                "type": "barge_in",
                "reason": reason,
                "item_id": cut.item_id,
                "audio_end_ms": cut.audio_end_ms,
                "dropped_frames": cut.dropped_frames,
            }
        )

    # ---- page → session -------------------------------------------------------------------------
    async def handle_client_message(self, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
            kind = msg.get("type")
        except (ValueError, AttributeError):
            self.notify({"type": "error", "message": "messages must be JSON objects", "code": "bad_message"})
            return
        self.last_activity = time.time()
        if kind == "text":
            await self.send_text(str(msg.get("text", "")))
        elif kind == "interrupt":
            await self.barge_in("button")
        elif kind == "ping":
            self.notify({"type": "pong", "t": msg.get("t")}, keep=False)
        else:
            self.notify({"type": "error", "message": f"unknown message type {kind!r}", "code": "bad_message"})

    async def send_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if len(text) > MAX_TEXT_CHARS:
            self.notify(
                {
                    "type": "error",
                    "message": f"message too long (limit {MAX_TEXT_CHARS} characters)",
                    "code": "text_too_long",
                }
            )
            return
        self.last_activity = time.time()
        await self.barge_in("text")
        self.notify({"type": "user_text", "text": text})
        await self.voice.send_text(text)

    async def _read_mic(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=REALTIME_SAMPLE_RATE)
        pending: list[np.ndarray] = []
        size = 0
        while not self._closed:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                return
            for f in resampler.resample(frame):
                pcm = f.to_ndarray().reshape(-1).astype(np.int16)
                pending.append(pcm)
                size += len(pcm)
                self.mic_samples += len(pcm)
            if size >= MIC_BATCH:
                batch = np.concatenate(pending)
                pending, size = [], 0
                await self.voice.send_user_audio(batch)

    # ---- page notifications ---------------------------------------------------------------------
    def notify(self, message: dict[str, Any], keep: bool = True) -> None:
        """Tell the page (data channel) and keep it for polling clients (`events_after`)."""
        if keep:
            self._event_seq += 1
            message = {"seq": self._event_seq, **message}
            self.events.append(message)
        self._send_channel(message)

    def _send_channel(self, message: dict[str, Any]) -> None:
        ch = self.channel
        # A channel can still read "open" for a moment after the peer went away; sending then only leaves a
        # failed task in aiortc's transport ("Task exception was never retrieved").
        if self.pc is not None and self.pc.connectionState != "connected":
            return
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(message, default=str))
            except Exception as exc:  # a channel closing under us: the page is gone
                log.debug("data channel send failed: %s", exc)

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["seq"] > seq]

    def stats(self) -> dict[str, Any]:
        s = self.stream.stats()
        elapsed = max(1e-6, time.perf_counter() - (self.clock.t0 or time.perf_counter()))
        return {
            "session": self.id,
            "voice": self.voice.describe(),
            "voice_status": self.voice.status,
            "speaking": self.stream.speaking,
            "ticks": self.ticks,
            "clock_fps": round(self.ticks / elapsed, 2),
            "video_sent": self.video.sent,
            "video_dropped": self.video.queue.dropped,
            "audio_sent": self.audio.sent,
            "audio_dropped": self.audio.queue.dropped,
            "clock_rebases": self.clock.rebases,
            "mic_seconds": round(self.mic_samples / REALTIME_SAMPLE_RATE, 2),
            "barge_ins": self.barge_ins,
            "holds": s["hold"],
            "stalls": s["stall"],
            "first_frame_ms": [round(x, 1) for x in s["first_frame_ms"]],
        }

    def write_latency_log(self, path: Path | None = None) -> Path | None:
        path = path or (self.latency_dir / f"{self.id}.jsonl" if self.latency_dir else None)
        if path is None:
            return None
        self.stream.write_latency_log(path, meta={"session": self.id, "voice": self.voice.describe()})
        return path

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        try:
            await self.voice.close()
        except Exception as exc:  # the voice may already be broken; closing must go on
            log.debug("voice close: %s", exc)
        self.video.stop()
        self.audio.stop()
        if self.pc is not None:
            await self.pc.close()
        try:
            # Only calls that connected have timings worth keeping; refused or abandoned offers leave nothing.
            if self.connected_at is not None:
                await asyncio.to_thread(self.write_latency_log)
        except OSError as exc:
            log.warning("session %s: could not write the latency log: %s", self.id, exc)
        await asyncio.to_thread(self.stream.close)  # joins the render worker: keep the loop free
        if self.on_closed is not None:
            self.on_closed(self)
