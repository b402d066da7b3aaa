"""LipSyncStream with the real CPU renderer on a prepared sample: the mouth moves with the audio handed out beside it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf
import soxr

from workbench.lipsync.stream import LipSyncStream


@pytest.fixture(scope="module")
def renderer():
    from workbench.lipsync.cpu.renderer import CPURenderer

    return CPURenderer()


def _speech_24k(samples_dir, seconds: float) -> np.ndarray:
    audio, rate = sf.read(samples_dir / "eng.wav", dtype="float32", always_2d=False)
    audio = soxr.resample(audio[: int(seconds * rate)], rate, 24_000)
    return np.round(audio / np.abs(audio).max() * 0.7 * 32767).astype(np.int16)


def test_mouth_motion_follows_the_audio_played_with_it(renderer, yongen_avatar, samples_dir):
    audio = _speech_24k(samples_dir, 10.0)
    stream = LipSyncStream(renderer, yongen_avatar, crossfade_frames=0, tail_frames=0, name="cpu-sync")
    try:
        stream.warm_idle(n=len(yongen_avatar), timeout=120)
        for i in range(0, len(audio), 2400):  # 100 ms deltas, as the Realtime API sends them
            stream.push_audio(audio[i : i + 2400], 24_000, item_id="reply")
        stream.end_utterance()
        frames, seen = [], False
        for _ in range(5000):
            f = stream.next_frame()
            frames.append(f)
            seen |= f.kind == "speech"
            if seen and not stream.speaking:
                break
            if f.kind == "hold":
                time.sleep(0.005)
    finally:
        stream.close()
    speech = [f for f in frames if f.kind == "speech"]
    assert len(speech) == int(np.ceil(len(audio) / 960))
    # How far each picture's face is from the closed-mouth render of the same avatar frame, from pixels.
    motion = []
    for f in speech:
        closed = stream.idle_cache.image(f.body_index)
        x1, y1, x2, y2 = (int(v) for v in yongen_avatar.boxes[f.body_index])
        lower = slice(y1 + (y2 - y1) // 2, y2), slice(x1, x2)
        motion.append(np.abs(f.image[lower].astype(np.int16) - closed[lower].astype(np.int16)).mean())
    loud = [np.sqrt(np.mean((f.audio / 32768.0) ** 2)) for f in speech]
    motion, loud = np.array(motion), np.array(loud)
    corr = {lag: np.corrcoef(np.roll(motion, lag)[5:-5], loud[5:-5])[0, 1] for lag in range(-4, 5)}
    best = max(corr, key=corr.get)
    assert abs(best) <= 1, corr  # within one frame
    assert corr[best] > 0.7, corr
    assert np.array_equal(np.concatenate([f.audio for f in speech])[: len(audio)], audio)
