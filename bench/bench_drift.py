"""Long-session A/V drift through the real WebRTC path: the offset in the first and the last minute of a call.

    .venv/bin/python bench/bench_drift.py --minutes 10                     # level renderer: an exact reading
    .venv/bin/python bench/bench_drift.py --minutes 3 --renderer cpu       # the real CPU renderer on yongen

Users of LiveTalking report sound and picture drifting apart in long sessions (#153: 3–4 s after one night;
#244, #366). This measures it here. The server is the real realtime endpoint (FastAPI + aiortc,
`workbench.realtime.server`, local *echo* voice speaking with espeak-ng or the neural voice) on an avatar of
yongen.mp4, served by uvicorn on 127.0.0.1 in a child process. In this process `--calls` aiortc callers (HTTP
and WebRTC over loopback, as a browser) each hold one call for `--minutes`: they type a sentence, the avatar
says it back, the caller waits until it has finished and pauses 0.8–2.5 s (the silences of a conversation),
then types the next — so the avatar talks most of the time. The caller's microphone sends silence: the local
ears (Whisper) would otherwise compete for the same two cores and the text turn is what makes the reply.

Every received audio frame (20 ms Opus) and picture is kept with its RTP timestamp and its arrival time, and
every RTCP sender report with its RTP/NTP pair; `drift_measure.measure` then finds, per minute, the lag that
best lines up the picture's mouth signal with the received loudness, by the RTP clock (placed on the sender's
clock with the sender reports, as a browser does) and by arrival (a naive player). Drift = last − first.

Mouth signal, `--renderer`:
* `level` (default): testkit's `LevelRenderer` (the grey level of a block = the RMS of the frame's audio),
  which also stamps that level into the picture's top-left corner; read exactly from the decoded picture.
  A bench-only engine wrapper hands it to the child server; the public app has no way to choose it.
* `cpu`: the real CPU renderer; the mouth signal is the darkness of the mouth box (outer lips, landmarks 48–59 of
  the prepared avatar over all its frames, grown a little): an open mouth shows its dark inside.

Writes bench/results/drift.json (or `--out`): per-minute offsets by both clocks and their correlation, clock
rates (pictures per second of sound), skipped ticks, stalls and audio gaps, the server's own counters
(clock rebases, queue drops), and the machine's load.

Loopback only, bounded (`--minutes` ≤ 1440, `--calls` ≤ 4); the child server stops with the bench, and by itself
(removing its work folder) when the bench is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import drift_measure  # noqa: E402

from testkit.processes import stop  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples"
CORNER = 64  # the level renderer stamps the level into frame[:CORNER, :CORNER]
CONNECT_S = 8.0
MAX_VIDEO_HEIGHT = 720  # what the session sends (AvatarVideoTrack's default)
LINES = [
    "Hello, and thank you for calling. How can I help you today?",
    "The weather is lovely this morning, with a light wind from the west and a few clouds.",
    "Let me read that back to you: two large pizzas, one salad, and a bottle of sparkling water.",
    "I am sorry, I did not quite catch that. Could you say it once more, a little slower?",
    "Our opening hours are from nine in the morning until six in the evening, Monday to Saturday.",
    "Yes.",
    "That is a very good question, and the answer depends on what you would like to do next.",
    "The train leaves at a quarter past four from platform seven and arrives just before six.",
    "Of course. I will send you a confirmation by email within the next few minutes.",
    "Hmm, let me think about that for a moment.",
]


# ---- the server (child process) ---------------------------------------------------------------
class BenchEngine:
    """The real engine with another renderer in its place. Bench-only: this file's child server is the only
    place that builds it, so no visitor of the app can pick the level renderer."""

    def __init__(self, engine, renderer):
        self._engine, self._renderer = engine, renderer
        self.settings = engine.settings
        self.render_lock = engine.render_lock

    @property
    def renderer(self):
        return self._renderer

    def renderer_for(self, choice=None):
        return self._renderer

    def list_avatars(self):
        return self._engine.list_avatars()

    def load_avatar(self, avatar_id):
        return self._engine.load_avatar(avatar_id)


def corner_level_renderer():
    from testkit.realtime import LevelRenderer, level_of

    class CornerLevelRenderer(LevelRenderer):
        """LevelRenderer, plus the level stamped into a corner block of the full frame (the face block is
        blended by the mask and moves with the body; the corner reads the same on every picture)."""

        name = "level-bench"

        def render(self, avatar, frame_indices, conditions):
            out = super().render(avatar, frame_indices, conditions)
            for img, rms in zip(out, conditions, strict=True):
                img[:CORNER, :CORNER] = level_of(rms)
            return out

    return CornerLevelRenderer()


def mouth_box(avatar, scale: float) -> list[int]:
    """The outer lips (landmarks 48–59) over all the avatar's frames, grown by 0.1 of their width on each side and
    0.15 below and above (where an opening mouth goes), in sent pixels."""
    pts = avatar.landmarks[:, 48:60].reshape(-1, 2)
    x1, y1 = pts.min(0)
    x2, y2 = pts.max(0)
    w = x2 - x1
    box = np.array([x1 - 0.1 * w, y1 - 0.15 * w, x2 + 0.1 * w, y2 + 0.15 * w]) * scale
    return [int(v) for v in np.round(box)]


def watch_parent(work: Path) -> None:
    """End this child server, and remove its work folder, when the bench that started it is gone however it went
    (killed, crashed): the bench must not leave a server or a prepared avatar behind."""
    import shutil
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        shutil.rmtree(work, ignore_errors=True)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(port: int, renderer: str, frames: int, work: Path) -> None:
    import logging

    import uvicorn
    from fastapi import FastAPI

    from workbench.avatars.model import PrepParams
    from workbench.config import Settings
    from workbench.engine import Engine
    from workbench.realtime.server import mount_realtime

    logging.basicConfig(level=logging.WARNING)
    watch_parent(work)
    settings = Settings(
        renderer="cpu",
        runs_dir=work / "runs",
        cache_dir=work / "cache",
        max_sessions=4,
        openai_api_key=None,
        session_connect_timeout_s=20.0,
        session_max_s=4 * 3600.0,
    )
    engine = Engine(settings)
    avatar = engine.prepare(SAMPLES / "yongen.mp4", PrepParams(max_frames=frames))
    h = avatar.frames.shape[1]
    scale = min(1.0, MAX_VIDEO_HEIGHT / h)
    (work / "avatar.json").write_text(
        json.dumps({"avatar_id": avatar.avatar_id, "mouth_box": mouth_box(avatar, scale), "scale": scale})
    )
    if renderer == "level":
        engine = BenchEngine(engine, corner_level_renderer())
    app = FastAPI()
    mount_realtime(app, engine, settings, open_avatars=True, serialize_renders=False)
    print("READY", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- what the client keeps --------------------------------------------------------------------
class SenderReportLog:
    """Keeps every RTCP sender report the client's receivers get, with the RTP timestamp made relative to the
    stream's first (the same origin aiortc gives the decoded frames' pts). aiortc does not expose sender reports,
    so its receiver's handler is wrapped — in this bench's process only."""

    def __init__(self):
        self.rows: dict[int, list[tuple[str, float, float]]] = {}  # id(pc) is not known here: keyed by receiver
        self._orig = None

    def install(self) -> None:
        from aiortc import rtcrtpreceiver
        from aiortc.rtp import RtcpSrPacket

        cls = rtcrtpreceiver.RTCRtpReceiver
        self._orig = orig = cls._handle_rtcp_packet
        log = self

        async def handle(receiver, packet):
            if isinstance(packet, RtcpSrPacket):
                kind = receiver._RTCRtpReceiver__kind
                origin = receiver._RTCRtpReceiver__timestamp_mapper._origin
                if origin is not None:
                    rate = 90_000 if kind == "video" else 48_000
                    media = rtp_seconds(packet.sender_info.rtp_timestamp, origin, rate)
                    unix = ntp_to_unix(packet.sender_info.ntp_timestamp)
                    log.rows.setdefault(id(receiver), []).append((kind, unix, media))
            await orig(receiver, packet)

        cls._handle_rtcp_packet = handle

    def uninstall(self) -> None:
        from aiortc import rtcrtpreceiver

        if self._orig is not None:
            rtcrtpreceiver.RTCRtpReceiver._handle_rtcp_packet = self._orig


def rtp_seconds(rtp: int, origin: int, rate: int) -> float:
    """A 32-bit RTP timestamp in seconds after the stream's first one (`origin`), across a wrap either way."""
    return (((rtp - origin + 2**31) % 2**32) - 2**31) / rate


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp (seconds since 1900 in 32.32 fixed point) as Unix seconds."""
    return (ntp >> 32) - 2_208_988_800 + (ntp & 0xFFFFFFFF) / 2**32


def audio_rms(frame) -> float:
    a = frame.to_ndarray().astype(np.float64) / 32768
    return float(np.sqrt(np.mean(a**2)))


def luma(frame) -> np.ndarray:
    """The Y plane of a decoded yuv420p picture, without a colour conversion."""
    plane = frame.planes[0]
    buf = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return buf[: frame.height, : frame.width]


def corner_signal(frame) -> float:
    c = max(4, int(CORNER * 0.25))
    return float(np.median(luma(frame)[c // 2 : c, c // 2 : c]))


def mouth_signal(box: list[int]):
    """Darkness of the mouth box: an open mouth shows its dark inside. Checked offline on 8 s of eng.wav through
    the CPU renderer on yongen: correlation with the frame's RMS 0.91 at lag 0, 0.76–0.85 one frame either side
    (the spread of the luminance, 0.80; the inner-lip box alone, 0.67)."""
    x1, y1, x2, y2 = box

    def read(frame) -> float:
        return 255.0 - float(luma(frame)[y1:y2, x1:x2].mean())

    return read


class Call:
    """One caller: holds a call for the whole run and keeps every received frame."""

    def __init__(self, n: int, base: str, avatar_id: str, signal, rng: random.Random):
        self.n, self.base, self.avatar_id, self.signal, self.rng = n, base, avatar_id, signal, rng
        self.audio: list[tuple[float, float, float]] = []  # media_s, arrival_s, rms
        self.video: list[tuple[float, float, float]] = []  # media_s, arrival_s, mouth signal
        self.turns = 0
        self.last_stats: dict = {}
        self.speaking = False
        self.errors: list[str] = []
        self.receivers: dict[str, int] = {}

    async def run(self, http, until: float) -> None:
        from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection()
        tasks = []

        @pc.on("track")
        def _on_track(track):
            async def pull():
                keep = self.audio if track.kind == "audio" else self.video
                read = audio_rms if track.kind == "audio" else self.signal
                while True:
                    try:
                        frame = await track.recv()
                    except Exception:
                        return
                    keep.append((float(frame.pts * frame.time_base), time.time(), read(frame)))

            tasks.append(asyncio.ensure_future(pull()))

        pc.addTransceiver("video", direction="recvonly")
        pc.addTrack(AudioStreamTrack())  # a silent microphone
        channel = pc.createDataChannel("chat")

        @channel.on("message")
        def _on_message(message):
            msg = json.loads(message)
            if msg.get("type") == "stats":
                self.last_stats = msg
                self.speaking = bool(msg.get("speaking"))

        try:
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "mode": "echo", "avatar_id": self.avatar_id}
            r = await http.post(f"{self.base}/rtc/offer", json=body)
            if r.status_code != 200:
                raise RuntimeError(f"offer refused: {r.status_code} {r.text[:200]}")
            answer = r.json()
            sid = answer["session_id"]
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            for r_ in pc.getReceivers():
                self.receivers[r_.track.kind] = id(r_)
            t0 = time.monotonic()
            while channel.readyState != "open":
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("the data channel never opened")
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.0)  # the voice loads; the idle loop plays meanwhile
            while time.monotonic() < until:
                channel.send(json.dumps({"type": "text", "text": self.rng.choice(LINES)}))
                self.turns += 1
                # wait for the reply to start and to end (stats arrive once a second), bounded
                t_turn = time.monotonic()
                while not self.speaking and time.monotonic() - t_turn < 10 and time.monotonic() < until:
                    await asyncio.sleep(0.05)
                while self.speaking and time.monotonic() - t_turn < 60 and time.monotonic() < until:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(self.rng.uniform(0.8, 2.5))
            stats = await http.get(f"{self.base}/rtc/session/{sid}/stats")
            if stats.status_code == 200:
                self.last_stats = stats.json()
            await http.delete(f"{self.base}/rtc/session/{sid}")
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            await pc.close()
            for t in tasks:
                t.cancel()

    def result(self, reports: SenderReportLog, window_s: float) -> dict:
        def stream(rows, hold):
            arr = np.array(rows, float).reshape(-1, 3)
            return drift_measure.Stream(arr[:, 0], arr[:, 1], arr[:, 2], hold)

        def srs(kind):
            rows = reports.rows.get(self.receivers.get(kind, -1), [])
            return drift_measure.Reports([r[1] for r in rows], [r[2] for r in rows])

        try:
            measured = drift_measure.measure(
                stream(self.audio, 0.02), stream(self.video, 0.04), srs("audio"), srs("video"), window_s=window_s
            )
        except ValueError as exc:  # a call that never got media: say so in the JSON instead of losing the run
            measured = {"windows": [], "measure_error": str(exc)}
        return {
            "turns": self.turns,
            "sender_reports": {k: len(reports.rows.get(v, [])) for k, v in self.receivers.items()},
            "server_stats": {
                k: self.last_stats.get(k)
                for k in (
                    "ticks",
                    "clock_fps",
                    "video_sent",
                    "video_dropped",
                    "audio_sent",
                    "audio_dropped",
                    "clock_rebases",
                    "holds",
                    "stalls",
                )
            },
            "errors": self.errors,
            **measured,
        }


async def drive(args: argparse.Namespace, base: str, avatar: dict, load: list) -> list[dict]:
    import httpx

    signal = corner_signal if args.renderer == "level" else mouth_signal(avatar["mouth_box"])
    reports = SenderReportLog()
    reports.install()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            # the call connects and the voice loads in the first seconds: add them, so that the run holds
            # `--minutes` whole windows of received media
            until = time.monotonic() + 60 * args.minutes + CONNECT_S
            calls = [
                Call(i, base, avatar["avatar_id"], signal, random.Random(args.seed + i)) for i in range(args.calls)
            ]
            tasks = [asyncio.create_task(c.run(http, until)) for c in calls]
            while not all(t.done() for t in tasks):
                await asyncio.sleep(5)
                load.append(round(os.getloadavg()[0], 2))
            await asyncio.gather(*tasks)
        await asyncio.sleep(0.5)
        return [c.result(reports, args.window_s) for c in calls]
    finally:
        reports.uninstall()


def summarize(calls: list[dict]) -> dict:
    """The key numbers, of the call whose RTP offset drifted most (the only call, by default)."""
    ok = [c for c in calls if c.get("windows")]
    if not ok:
        return {"error": "no call was measured"}
    c = max(ok, key=lambda c: abs(c["drift_rtp_ms"] or 0))
    first, last = c["windows"][0], c["windows"][-1]
    server = c["server_stats"]
    return {
        "calls_measured": len(ok),
        "minutes_measured": len(c["windows"]) * c["window_s"] / 60,
        "first_minute_rtp_lag_ms": first["rtp_lag_ms"],
        "last_minute_rtp_lag_ms": last["rtp_lag_ms"],
        "drift_rtp_ms": c["drift_rtp_ms"],
        "first_minute_arrival_lag_ms": first["arrival_lag_ms"],
        "last_minute_arrival_lag_ms": last["arrival_lag_ms"],
        "drift_arrival_ms": c["drift_arrival_ms"],
        "rtp_corr_first_last": [first["rtp_corr"], last["rtp_corr"]],
        "video_fps_per_audio_s_first_last": [first.get("video_fps_per_audio_s"), last.get("video_fps_per_audio_s")],
        "rtp_lag_ms_min_max": [
            min(w["rtp_lag_ms"] for w in c["windows"] if w["rtp_lag_ms"] is not None),
            max(w["rtp_lag_ms"] for w in c["windows"] if w["rtp_lag_ms"] is not None),
        ],
        "video_skipped_ticks": c["totals"]["video_skipped_ticks"],
        "video_stalls_over_100ms": c["totals"]["video_stalls_over_100ms"],
        "video_repeats": c["totals"]["video_repeats"],
        "audio_gaps": c["totals"]["audio_gaps"],
        "server_clock_rebases": server.get("clock_rebases"),
        "server_video_dropped": server.get("video_dropped"),
        "server_audio_dropped": server.get("audio_dropped"),
        "turns": c["turns"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of each call")
    ap.add_argument("--calls", type=int, default=1, help="concurrent calls (each measured on its own)")
    ap.add_argument("--renderer", choices=["level", "cpu"], default="level")
    ap.add_argument("--window-s", type=float, default=60.0, help="measure the offset per window of this length")
    ap.add_argument("--frames", type=int, default=50, help="avatar frames taken from yongen.mp4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift.json")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # internal: the child process
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve, args.renderer, args.frames, args.work)
        return
    if not (0 < args.minutes <= 24 * 60) or not (1 <= args.calls <= 4) or not (10 <= args.window_s <= 3600):
        ap.error("--minutes must be in (0, 1440], --calls in 1..4, --window-s in 10..3600")

    import shutil
    import signal
    import tempfile

    from workbench import atomic

    # SIGTERM (a timeout, a kill) ends the bench through its `finally`, which stops the server and removes its files
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="drift-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--work", str(work), "--renderer", args.renderer]
        + ["--frames", str(args.frames)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    load: list[float] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "READY":
                break
        else:
            raise SystemExit("the server child exited before it was ready")
        time.sleep(2.0)  # uvicorn binds after READY
        avatar = json.loads((work / "avatar.json").read_text())
        t0 = time.time()
        load_start = os.getloadavg()[0]
        calls = asyncio.run(drive(args, f"http://127.0.0.1:{port}", avatar, load))
    finally:
        stop(child)
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("serve", "work", "out")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": round(load_start, 2),
            "loadavg": float(np.median(load)) if load else None,  # the median over the run, sampled every 5 s
            "loadavg_max": max(load) if load else None,
        },
        "data": f"yongen.mp4 ({args.frames} frames), local echo voice, {len(LINES)} typed lines at random",
        "summary": summarize(calls),
        "calls": calls,
    }
    atomic.write_json(args.out, summary)
    for i, c in enumerate(calls):
        print(f"call {i}: {c['turns']} turns, server {c['server_stats']}, errors {c['errors']}")
        print(drift_measure.table(c) if c["windows"] else f"not measured: {c.get('measure_error')}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
