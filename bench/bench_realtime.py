"""Realtime lip-sync benchmark: first-frame latency, sustained 25 fps, concurrent sessions on one renderer.

    .venv/bin/python bench/bench_realtime.py                       # CPU renderer, 1..3 sessions
    .venv/bin/python bench/bench_realtime.py --renderer musetalk   # on a GPU with MuseTalk weights in models/
    .venv/bin/python bench/bench_realtime.py --renderer musetalk --random-weights   # same cost, random init

What runs is the server side of a realtime conversation, per session: a `LipSyncStream` on the shared
renderer, a 25 fps session clock calling `next_frame`, and (unless `--no-encode`) the WebRTC video path
of `workbench.realtime.session` — resize to 720 lines and VP8-encode with aiortc's encoder in a thread
pool, as aiortc's sender does. Each session gets two replies of real speech (eng.wav, resampled to the
Realtime 24 kHz PCM16) pushed as 100 ms audio deltas at 8x real time, the way the Realtime API sends
them, with staggered starts.

Measured per session and reply:
* first frame: from the arrival of the reply's first audio delta to its first lip-synced frame handed to
  the transport (target <= 150 ms);
* speech fps: 25 x speech frames / (speech frames + stalls), where a stall is a tick whose frame was not
  rendered in time (the clock repeats the last picture and holds the audio back);
* encoded fps: frames through the encoder per second of session time (target >= 24);
* CPU time per frame and load average (the machine may be shared);
* peak resident memory of the process while the sessions run (sampled every 50 ms), which must not grow
  with the length of a reply (`--reply-seconds 50` within 1.5x of `--reply-seconds 6`).

Prints a table and writes bench/results/realtime-<renderer>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import atomic  # noqa: E402
from workbench.avatars.model import PrepParams  # noqa: E402
from workbench.config import FPS, REALTIME_SAMPLE_RATE, Settings  # noqa: E402
from workbench.lipsync.stream import LipSyncStream  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples"
TARGET_FIRST_MS = 150.0
TARGET_FPS = 24.0


def reply_audio(seconds: float) -> np.ndarray:
    """Real speech at 24 kHz int16: eng.wav (16 kHz) resampled, the first `seconds`."""
    import soundfile as sf
    import soxr

    audio, rate = sf.read(SAMPLES / "eng.wav", dtype="float32", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = soxr.resample(audio, rate, REALTIME_SAMPLE_RATE)[: int(seconds * REALTIME_SAMPLE_RATE)]
    audio = audio / max(1e-3, float(np.abs(audio).max())) * 0.7
    return np.round(audio * 32767).astype(np.int16)


def make_engine(args: argparse.Namespace):
    from workbench.engine import Engine

    settings = Settings()
    if args.random_weights:
        from testkit.models import make_tiny_models

        models = Path(tempfile.mkdtemp(prefix="bench-models-"))
        make_tiny_models(models, size=args.model_size)
        settings = Settings(models_dir=models, cache_dir=Path(tempfile.mkdtemp(prefix="bench-cache-")))
    return Engine(settings, renderer=args.renderer)


class Encoder:
    """The video half of an aiortc sender: drop-oldest queue, resize to 720 lines, VP8 in a thread."""

    def __init__(self, max_height: int = 720):
        from aiortc.codecs import get_encoder
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters

        self.codec = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
        self.max_height = max_height
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=3)
        self.encoded = 0
        self.dropped = 0

    def put(self, frame) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(frame)

    def _encode(self, frame) -> None:
        import av
        import cv2

        image = frame.image
        h, w = image.shape[:2]
        if h > self.max_height:
            s = self.max_height / h
            image = cv2.resize(image, (int(w * s) // 2 * 2, self.max_height // 2 * 2), interpolation=cv2.INTER_LINEAR)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        vf.pts, vf.time_base = frame.index * 3600, fractions.Fraction(1, 90000)
        self.codec.encode(vf)
        frame.timing.sent = time.perf_counter()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.queue.get()
            await loop.run_in_executor(None, self._encode, frame)
            self.encoded += 1


async def run_session(
    stream: LipSyncStream, audio: np.ndarray, start_delay: float, seconds: float, encode: bool, gap: float
) -> dict:
    from workbench.realtime.session import SessionClock

    clock = SessionClock()
    encoder = Encoder() if encode else None
    enc_task = asyncio.create_task(encoder.run()) if encoder else None

    async def voice() -> None:
        await asyncio.sleep(start_delay)
        step = REALTIME_SAMPLE_RATE // 10  # 100 ms deltas
        for reply in range(2):
            t0 = time.perf_counter()
            item = f"reply{reply}"
            for k, i in enumerate(range(0, len(audio), step)):
                stream.push_audio(audio[i : i + step], REALTIME_SAMPLE_RATE, item_id=item)
                await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.1 / 8 - time.perf_counter()))
            stream.end_utterance(item)
            while stream.speaking:
                await asyncio.sleep(0.05)
            await asyncio.sleep(gap)

    voice_task = asyncio.create_task(voice())
    clock.start()
    t_start = time.perf_counter()
    k = 0
    while time.perf_counter() - t_start < seconds and not (voice_task.done() and k > 10):
        t = await clock.wait(k)
        frame = stream.next_frame(t)
        if encoder:
            encoder.put(frame)
        k += 1
    elapsed = time.perf_counter() - t_start
    voice_task.cancel()
    if enc_task:
        await asyncio.sleep(0.2)
        enc_task.cancel()
    s = stream.stats()
    firsts = [u.first_frame_ms for u in stream.utterance_stats if u.first_frame_ms is not None]
    return {
        "ticks": k,
        "seconds": round(elapsed, 2),
        "clock_fps": round(k / elapsed, 2),
        "speech_frames": s["speech"],
        "stalls": s["stall"],
        "holds": s["hold"],
        "speech_fps": round(FPS * s["speech"] / max(1, s["speech"] + s["stall"]), 2),
        "first_frame_ms": [round(x, 1) for x in firsts],
        "first_render_ms": [round(u.first_render_ms, 1) for u in stream.utterance_stats if u.first_render_ms],
        "encoded_fps": round(encoder.encoded / elapsed, 2) if encoder else None,
        "encoder_dropped": encoder.dropped if encoder else None,
        "max_lateness_ms": s["max_lateness_ms"],
        "clock_rebases": clock.rebases,
        "replies_done": sum(1 for u in stream.utterance_stats if u.frames),
    }


def rss_mb() -> float:
    """Resident memory of this process now, MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


class PeakRss:
    """Samples RSS in a thread while the block runs; `peak_mb` is the largest sample."""

    def __init__(self, period_s: float = 0.05):
        import threading

        self.period_s = period_s
        self.peak_mb = self.start_mb = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def run_concurrent(engine, avatar, n: int, audio: np.ndarray, args: argparse.Namespace, serialize: bool) -> dict:
    import threading

    lock = threading.RLock() if serialize else None
    streams = [
        LipSyncStream(engine.renderer, avatar, batch_size=args.batch_size, render_lock=lock, name=f"s{i}")
        for i in range(n)
    ]
    for s in streams:
        s.warm_idle(n=len(avatar), timeout=300)
    reply_s = len(audio) / REALTIME_SAMPLE_RATE
    seconds = 1.0 + 0.37 * n + 2 * (reply_s + args.gap) + 2.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    with PeakRss() as mem:
        results = await asyncio.gather(
            *[
                run_session(s, audio, 0.5 + 0.37 * i, seconds, not args.no_encode, args.gap)
                for i, s in enumerate(streams)
            ]
        )
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    for s in streams:
        s.close()
    firsts = [x for r in results for x in r["first_frame_ms"]]
    frames = sum(r["ticks"] for r in results)
    row = {
        "sessions": n,
        "serialize_renders": serialize,
        "per_session": results,
        "first_frame_ms_median": round(float(np.median(firsts)), 1) if firsts else None,
        "first_frame_ms_max": round(max(firsts), 1) if firsts else None,
        "speech_fps_min": min(r["speech_fps"] for r in results),
        "encoded_fps_min": min(r["encoded_fps"] for r in results) if not args.no_encode else None,
        "stalls": sum(r["stalls"] for r in results),
        "cpu_percent": round(100 * cpu / wall, 1),
        "cpu_ms_per_frame": round(1000 * cpu / max(1, frames), 2),
        "load_avg": os.getloadavg()[0],
        "rss_start_mb": round(mem.start_mb, 1),
        "rss_peak_mb": round(mem.peak_mb, 1),
    }
    row["meets_targets"] = bool(
        firsts
        and row["first_frame_ms_max"] <= TARGET_FIRST_MS
        and row["speech_fps_min"] >= TARGET_FPS
        and (args.no_encode or row["encoded_fps_min"] >= TARGET_FPS)
        and all(r["replies_done"] == 2 for r in results)
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renderer", choices=["cpu", "musetalk"], default="cpu")
    ap.add_argument(
        "--random-weights", action="store_true", help="MuseTalk with random weights in the published shapes"
    )
    ap.add_argument(
        "--model-size",
        choices=["full", "tiny"],
        default="full",
        help="with --random-weights: the published sizes (timings) or tiny ones (a smoke test on CPU)",
    )
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--reply-seconds", type=float, default=8.0)
    ap.add_argument("--gap", type=float, default=1.0, help="idle seconds between the two replies")
    ap.add_argument("--frames", type=int, default=50, help="avatar frames taken from yongen.mp4")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--serialize",
        choices=["auto", "on", "off", "both"],
        default="auto",
        help="one render lock for all sessions (auto: on for musetalk, off for cpu)",
    )
    ap.add_argument("--no-encode", action="store_true", help="leave out the VP8 encoding of the WebRTC path")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console()
    engine = make_engine(args)
    t = time.perf_counter()
    avatar = engine.prepare(SAMPLES / "yongen.mp4", PrepParams(max_frames=args.frames))
    console.print(
        f"avatar {avatar.avatar_id}: {len(avatar)} frames {avatar.frame_size}, ready in {time.perf_counter() - t:.1f} s; "
        f"renderer {engine.renderer.describe()}"
    )
    audio = reply_audio(args.reply_seconds)
    modes = {"auto": [args.renderer != "cpu"], "on": [True], "off": [False], "both": [False, True]}[args.serialize]
    rows = []
    for n in args.sessions:
        for serialize in modes:
            console.print(f"running {n} session(s), serialize_renders={serialize} …")
            rows.append(asyncio.run(run_concurrent(engine, avatar, n, audio, args, serialize)))

    table = Table(
        title=f"Realtime lip-sync, {args.renderer} renderer, yongen {avatar.frame_size[1]}x{avatar.frame_size[0]}"
    )
    for col in (
        "sessions",
        "lock",
        "first frame ms (median / max)",
        "speech fps (min)",
        "encoded fps (min)",
        "stalls",
        "CPU %",
        "CPU ms/frame",
        "load",
        "peak RSS MB",
        "targets",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["sessions"]),
            "shared" if r["serialize_renders"] else "per session",
            f"{r['first_frame_ms_median']} / {r['first_frame_ms_max']}",
            f"{r['speech_fps_min']:.2f}",
            "-" if r["encoded_fps_min"] is None else f"{r['encoded_fps_min']:.2f}",
            str(r["stalls"]),
            f"{r['cpu_percent']:.0f}",
            f"{r['cpu_ms_per_frame']:.1f}",
            f"{r['load_avg']:.1f}",
            f"{r['rss_peak_mb']:.0f}",
            "yes" if r["meets_targets"] else "no",
        )
    console.print(table)
    passing = [r["sessions"] for r in rows if r["meets_targets"]]
    summary = {
        "renderer": engine.renderer.describe(),
        "random_weights": args.random_weights,
        "model_size": args.model_size if args.random_weights else None,
        "avatar": {"id": avatar.avatar_id, "frames": len(avatar), "size_hw": list(avatar.frame_size)},
        "reply_seconds": args.reply_seconds,
        "encode": not args.no_encode,
        "targets": {"first_frame_ms": TARGET_FIRST_MS, "fps": TARGET_FPS},
        "max_sessions_meeting_targets": max(passing) if passing else 0,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "gpu": _gpu_name(),
        "rows": rows,
    }
    out = args.out or ROOT / "bench" / "results" / f"realtime-{args.renderer}.json"
    atomic.write_json(out, summary)
    console.print(
        f"max concurrent sessions meeting the targets: {summary['max_sessions_meeting_targets']}; wrote {out}"
    )


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


if __name__ == "__main__":
    main()
