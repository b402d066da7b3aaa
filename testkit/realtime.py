"""Helpers shared by the realtime and streaming tests: a readable renderer, sessions, a fake engine, a peer.

`LevelRenderer` satisfies the renderer contract with a condition anyone can read back from the
picture: each frame's condition is the RMS of its 640 samples of 16 kHz audio, drawn as the grey
level of a block inside the face crop and pasted through the real `Compositor`. Reading that level
from an output frame and comparing it with the audio handed out beside the frame measures A/V sync
without trusting any bookkeeping of the code under test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription

from workbench.avatars.model import Avatar, PrepParams
from workbench.config import CROP_SIZE, SAMPLES_PER_FRAME
from workbench.lipsync.base import AudioFrontend, Renderer
from workbench.lipsync.compositor import Compositor

LEVEL_GAIN = 4.0  # grey level = 255 * min(1, LEVEL_GAIN * rms)
BLOCK = (slice(150, 230), slice(64, 192))  # rows, cols of the level block inside the 256x256 crop


class LevelFrontend(AudioFrontend):
    """Per-frame RMS of 16 kHz audio, with one frame of look-ahead like a real windowed frontend."""

    lookahead_frames = 1

    def __init__(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._emitted = 0

    def _ready(self, final: bool) -> list[float]:
        n_frames = len(self._buf) // SAMPLES_PER_FRAME
        if final:
            n_frames = -(-len(self._buf) // SAMPLES_PER_FRAME)
            usable = n_frames
        else:
            usable = max(0, n_frames - self.lookahead_frames)
        out = []
        for j in range(self._emitted, usable):
            w = self._buf[j * SAMPLES_PER_FRAME : (j + 1) * SAMPLES_PER_FRAME]
            out.append(float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) if len(w) else 0.0)
        self._emitted = max(self._emitted, usable)
        return out

    def push(self, audio: np.ndarray) -> list[float]:
        self._buf = np.concatenate([self._buf, np.asarray(audio, np.float32)])
        return self._ready(final=False)

    def flush(self) -> list[float]:
        return self._ready(final=True)


class LevelRenderer(Renderer):
    name = "level-test"

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls = 0

    def new_frontend(self) -> LevelFrontend:
        return LevelFrontend()

    def silence_condition(self) -> float:
        return 0.0

    def render(self, avatar: Avatar, frame_indices: Sequence[int], conditions: Sequence[float]) -> list[np.ndarray]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s * len(frame_indices))
        comp = Compositor(avatar)
        out = []
        for i, rms in zip(frame_indices, conditions, strict=True):
            face = avatar.crops[i].copy()
            face[BLOCK] = level_of(rms)
            out.append(comp.paste(i, face))
        return out


def level_of(rms: float) -> int:
    return int(round(255 * min(1.0, LEVEL_GAIN * float(rms))))


def make_avatar(n: int = 12, h: int = 240, w: int = 200, avatar_id: str = "synthetic") -> Avatar:
    """A small avatar whose frame index is written in the top-left pixel and whose mouth mask is solid."""
    rng = np.random.default_rng(0)
    frames = np.empty((n, h, w, 3), np.uint8)
    base = rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)
    for i in range(n):
        frames[i] = np.roll(base, i, axis=1)
        frames[i, :4, :4] = i * 10
    boxes = np.tile(np.array([[50, 60, 150, 180]], np.int32), (n, 1))
    crops = np.stack([_crop(frames[i], boxes[i]) for i in range(n)])
    masks = np.zeros((n, CROP_SIZE, CROP_SIZE), np.uint8)
    masks[:, 128:, :] = 255
    return Avatar(
        avatar_id=avatar_id,
        source="synthetic",
        params=PrepParams(),
        fps=25.0,
        frames=frames,
        boxes=boxes,
        landmarks=np.zeros((n, 68, 2), np.float32),
        has_face=np.ones(n, bool),
        crops=crops,
        masks=masks,
    )


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(frame[y1:y2, x1:x2], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LANCZOS4)


def read_level(avatar: Avatar, image: np.ndarray, body_index: int) -> int:
    """The grey level of the block in an output frame (the middle of the block, in frame coordinates)."""
    x1, y1, x2, y2 = (int(v) for v in avatar.boxes[body_index])
    ry = (BLOCK[0].start + BLOCK[0].stop) / 2 / CROP_SIZE
    rx = (BLOCK[1].start + BLOCK[1].stop) / 2 / CROP_SIZE
    y, x = int(y1 + ry * (y2 - y1)), int(x1 + rx * (x2 - x1))
    return int(np.median(image[y - 2 : y + 3, x - 2 : x + 3]))


def read_body_index(image: np.ndarray) -> int:
    return int(round(float(image[1, 1, 0]) / 10))


def speech_like(seconds: float, rate: int = 24_000, seed: int = 1) -> np.ndarray:
    """Noise under a random syllable envelope: bursts of 80–300 ms with pauses, int16."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    env = np.zeros(n, np.float32)
    t = int(0.1 * rate)
    while t < n:
        dur = int(rng.uniform(0.08, 0.3) * rate)
        amp = rng.uniform(0.05, 0.22)
        seg = np.sin(np.linspace(0, np.pi, max(dur, 2))) * amp
        env[t : t + dur] = seg[: max(0, min(dur, n - t))]
        t += dur + int(rng.uniform(0.02, 0.25) * rate)
    # Band-limited to 4 kHz like speech, so resampling to 16 kHz keeps its loudness.
    from scipy.signal import butter, sosfilt

    noise = sosfilt(butter(8, 4000, fs=rate, output="sos"), rng.standard_normal(n))
    noise = (noise / noise.std()).astype(np.float32)
    return np.clip(env * noise * 32767, -32768, 32767).astype(np.int16)


def need_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")


class SessionHarness:
    """A `ChatSession` without a browser: tasks pull its tracks as aiortc's senders would and keep
    every `StreamFrame` the clock handed out, so tests can see exactly what would have been sent."""

    def __init__(self, session):
        self.session = session
        self.frames = []
        self.video_frames = []
        self.audio_frames = []
        self._tasks = []
        original = session.video.put

        def put(frame):
            self.frames.append(frame)
            original(frame)

        session.video.put = put

    async def start(self):
        import asyncio

        await self.session.start()
        self._tasks = [
            asyncio.create_task(self._pull(self.session.video, self.video_frames)),
            asyncio.create_task(self._pull(self.session.audio, self.audio_frames)),
        ]
        return self

    @staticmethod
    async def _pull(track, out):
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                out.append(await track.recv())
            except MediaStreamError:
                return

    async def wait_for(self, predicate, timeout=20.0, what="condition"):
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                kinds = [e.get("type") for e in self.session.events]
                raise AssertionError(f"timed out waiting for {what}; page events: {kinds}")
            await asyncio.sleep(0.01)

    def page_events(self, type_):
        return [e for e in self.session.events if e.get("type") == type_]

    def speech(self, item_id=None):
        return [f for f in self.frames if f.kind == "speech" and (item_id is None or f.item_id == item_id)]

    async def stop(self):
        await self.session.close()
        for t in self._tasks:
            t.cancel()


def make_session(voice, renderer=None, avatar=None, session_id="test"):
    from workbench.lipsync.stream import LipSyncStream
    from workbench.realtime.session import ChatSession

    stream = LipSyncStream(renderer or LevelRenderer(), avatar or make_avatar(), name=session_id)
    stream.warm_idle()
    return ChatSession(session_id, stream, voice)


class FakeEngine:
    """The two things the realtime endpoint needs from `workbench.engine.Engine`."""

    def __init__(self, avatars):
        self.renderer = LevelRenderer()
        self.avatars = {a.avatar_id: a for a in avatars}

    def list_avatars(self):
        class Info:
            def __init__(self, avatar_id):
                self.avatar_id = avatar_id

        return [Info(i) for i in self.avatars]

    def load_avatar(self, avatar_id):
        if avatar_id not in self.avatars:
            raise KeyError(avatar_id)
        return self.avatars[avatar_id]


class Peer:
    """An aiortc browser stand-in: receives the avatar's tracks, sends a (silent) microphone."""

    def __init__(self, http: httpx.AsyncClient):
        self.http = http
        self.pc = RTCPeerConnection()
        self.video, self.audio, self.messages = [], [], []
        self.session_id = None

    async def connect(self, **body) -> httpx.Response:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTrack(AudioStreamTrack())
        self.channel = self.pc.createDataChannel("chat")
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))

        @self.pc.on("track")
        def _on_track(track):
            async def pull():
                while True:
                    try:
                        frame = await track.recv()
                    except Exception:
                        return
                    (self.video if track.kind == "video" else self.audio).append((time.perf_counter(), frame))

            asyncio.ensure_future(pull())

        await self.pc.setLocalDescription(await self.pc.createOffer())
        res = await self.http.post("/rtc/offer", json={"sdp": self.pc.localDescription.sdp, "type": "offer", **body})
        if res.status_code == 200:
            answer = res.json()
            self.session_id = answer["session_id"]
            await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            await self.until(lambda: self.channel.readyState == "open", 10)
        return res

    async def until(self, predicate, timeout=20.0):
        deadline = time.perf_counter() + timeout
        while not predicate():
            if time.perf_counter() > deadline:
                raise AssertionError(f"timed out; messages: {[m.get('type') for m in self.messages]}")
            await asyncio.sleep(0.02)

    def said(self, text):
        self.channel.send(json.dumps({"type": "text", "text": text}))

    def of(self, type_):
        return [m for m in self.messages if m.get("type") == type_]

    def frames(self, t0, t1):
        """The video frames received in [t0, t1) of wall time."""
        return [f for t, f in self.video if t0 <= t < t1]

    def clock_ticks(self, t0, t1, fps=25):
        """The gaps between consecutive frames received in [t0, t1), in ticks of an `fps` clock on the frames' own
        timestamps (RTP video runs at 90 kHz): whole numbers when the sender stamps on that clock. A frame dropped
        by the network or a loaded machine leaves a gap of two ticks, not another clock."""
        pts = [f.pts for f in self.frames(t0, t1)]
        return [(b - a) / (90000 / fps) for a, b in zip(pts, pts[1:], strict=False)]

    def on_clock(self, t0, t1, fps=25):
        """Every frame received in [t0, t1) is a whole number (at least one) of `fps` ticks after the one before."""
        ticks = self.clock_ticks(t0, t1, fps)
        return bool(ticks) and all(t >= 1 and t == int(t) for t in ticks)

    def in_order(self, t0, t1):
        """Every frame received in [t0, t1) is later in the sender's clock than the one before it."""
        pts = [f.pts for f in self.frames(t0, t1)]
        return all(b > a for a, b in zip(pts, pts[1:], strict=False))

    def audio_energy(self, t0, t1):
        chunks = [f.to_ndarray().astype(np.float64) for t, f in self.audio if t0 <= t < t1]
        return float(np.sqrt(np.mean(np.concatenate(chunks, axis=None) ** 2))) if chunks else 0.0

    async def close(self):
        await self.pc.close()


def offer_sdp() -> str:
    """A real browser-like offer (aiortc: video and audio to receive, a data channel) that will never complete:
    nobody applies the answer. The hostile probes (tests/test_security.py, bench/bench_hostile.py) send it."""

    async def make():
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())
